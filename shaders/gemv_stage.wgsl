// The GEMV kernels' input staging (gemv_body.wgsl and gemv_q_body.wgsl include it inside main, after the
// workgroup's segment, chunk and EARLY loads): the fused RMSNorm's scale, then the chunk's inputs in act_val
// and, when SPARSE, its active channels compacted in channel order into act_idx (n_act of them), counted at
// counters[p.counter + s]; a barrier publishes them. Statements, not a function: as a function in a shared
// fragment, Deno 2.9.6's WGSL compiler panicked (an override declared there) or seemed to corrupt memory
// (declared in the kernel; the heap aborts of that time were libEGL's, docs/testing.md).
  // The first trip's channels (four a thread; PER <= 4 in every tuned variant, so their only trip) and what of
  // them does not depend on the RMSNorm's scale: raw inputs and norm weights (INPUT 1), gate and up sums
  // (INPUT 2), TEAL scales and threshold (SPARSE). Loaded here, before the loop over the sums of squares: after
  // it, their loads waited for the loop's, two L2 round trips in a row.
  let ch0 = first_channel(t, 0u, k_base, n_k);
  let ch1 = first_channel(t, 1u, k_base, n_k);
  let ch2 = first_channel(t, 2u, k_base, n_k);
  let ch3 = first_channel(t, 3u, k_base, n_k);
  var xa0 = vec2<f32>(0.0);
  var xa1 = vec2<f32>(0.0);
  var xa2 = vec2<f32>(0.0);
  var xa3 = vec2<f32>(0.0);
  if (INPUT == 1u) {
    xa0 = vec2<f32>(x[ch0], aux[ch0]);
    xa1 = vec2<f32>(x[ch1], aux[ch1]);
    xa2 = vec2<f32>(x[ch2], aux[ch2]);
    xa3 = vec2<f32>(x[ch3], aux[ch3]);
  }
  if (INPUT == 2u) {
    // the four channels' gate and up split sums, their loads together: each gate_up() is a loop, and a load
    // after a loop waits for it
    let half_cols = p.auxCols / 2u;
    let last = AUX_SPLITS - 1u;
    for (var a = 0u; a < AUX_SPLITS; a += 4u) {
      let r0 = min(a, last) * p.auxCols;
      let r1 = min(a + 1u, last) * p.auxCols;
      let r2 = min(a + 2u, last) * p.auxCols;
      let r3 = min(a + 3u, last) * p.auxCols;
      let a0 = vec2<f32>(aux[r0 + ch0], aux[r0 + half_cols + ch0]);
      let a1 = vec2<f32>(aux[r0 + ch1], aux[r0 + half_cols + ch1]);
      let a2 = vec2<f32>(aux[r0 + ch2], aux[r0 + half_cols + ch2]);
      let a3 = vec2<f32>(aux[r0 + ch3], aux[r0 + half_cols + ch3]);
      let b0 = vec2<f32>(aux[r1 + ch0], aux[r1 + half_cols + ch0]);
      let b1 = vec2<f32>(aux[r1 + ch1], aux[r1 + half_cols + ch1]);
      let b2 = vec2<f32>(aux[r1 + ch2], aux[r1 + half_cols + ch2]);
      let b3 = vec2<f32>(aux[r1 + ch3], aux[r1 + half_cols + ch3]);
      let c0 = vec2<f32>(aux[r2 + ch0], aux[r2 + half_cols + ch0]);
      let c1 = vec2<f32>(aux[r2 + ch1], aux[r2 + half_cols + ch1]);
      let c2 = vec2<f32>(aux[r2 + ch2], aux[r2 + half_cols + ch2]);
      let c3 = vec2<f32>(aux[r2 + ch3], aux[r2 + half_cols + ch3]);
      let d0 = vec2<f32>(aux[r3 + ch0], aux[r3 + half_cols + ch0]);
      let d1 = vec2<f32>(aux[r3 + ch1], aux[r3 + half_cols + ch1]);
      let d2 = vec2<f32>(aux[r3 + ch2], aux[r3 + half_cols + ch2]);
      let d3 = vec2<f32>(aux[r3 + ch3], aux[r3 + half_cols + ch3]);
      xa0 += a0;
      xa1 += a1;
      xa2 += a2;
      xa3 += a3;
      if (a + 1u < AUX_SPLITS) {
        xa0 += b0;
        xa1 += b1;
        xa2 += b2;
        xa3 += b3;
      }
      if (a + 2u < AUX_SPLITS) {
        xa0 += c0;
        xa1 += c1;
        xa2 += c2;
        xa3 += c3;
      }
      if (a + 3u < AUX_SPLITS) {
        xa0 += d0;
        xa1 += d1;
        xa2 += d2;
        xa3 += d3;
      }
    }
  }
  var sc0 = 0.0;
  var sc1 = 0.0;
  var sc2 = 0.0;
  var sc3 = 0.0;
  var thr = 0.0;
  if (SPARSE) {
    thr = thresholds[seg.thr];
    sc0 = scales[s * p.K + ch0];
    sc1 = scales[s * p.K + ch1];
    sc2 = scales[s * p.K + ch2];
    sc3 = scales[s * p.K + ch3];
  }
  var inv_rms = 1.0;
  if (INPUT == 1u) {
    // sixteen loads in flight at a time, added in order (past the last clamped, not added): NVIDIA's compiler
    // did not unroll a loop of one load a trip, which left its loads one L2 round trip apart (reduce.wgsl)
    var sum = 0.0;
    for (var i = 0u; i < NSS; i += 16u) {
      let s0 = ss[min(i, NSS - 1u)];
      let s1 = ss[min(i + 1u, NSS - 1u)];
      let s2 = ss[min(i + 2u, NSS - 1u)];
      let s3 = ss[min(i + 3u, NSS - 1u)];
      let s4 = ss[min(i + 4u, NSS - 1u)];
      let s5 = ss[min(i + 5u, NSS - 1u)];
      let s6 = ss[min(i + 6u, NSS - 1u)];
      let s7 = ss[min(i + 7u, NSS - 1u)];
      let s8 = ss[min(i + 8u, NSS - 1u)];
      let s9 = ss[min(i + 9u, NSS - 1u)];
      let s10 = ss[min(i + 10u, NSS - 1u)];
      let s11 = ss[min(i + 11u, NSS - 1u)];
      let s12 = ss[min(i + 12u, NSS - 1u)];
      let s13 = ss[min(i + 13u, NSS - 1u)];
      let s14 = ss[min(i + 14u, NSS - 1u)];
      let s15 = ss[min(i + 15u, NSS - 1u)];
      sum += s0;
      if (i + 1u < NSS) { sum += s1; }
      if (i + 2u < NSS) { sum += s2; }
      if (i + 3u < NSS) { sum += s3; }
      if (i + 4u < NSS) { sum += s4; }
      if (i + 5u < NSS) { sum += s5; }
      if (i + 6u < NSS) { sum += s6; }
      if (i + 7u < NSS) { sum += s7; }
      if (i + 8u < NSS) { sum += s8; }
      if (i + 9u < NSS) { sum += s9; }
      if (i + 10u < NSS) { sum += s10; }
      if (i + 11u < NSS) { sum += s11; }
      if (i + 12u < NSS) { sum += s12; }
      if (i + 13u < NSS) { sum += s13; }
      if (i + 14u < NSS) { sum += s14; }
      if (i + 15u < NSS) { sum += s15; }
    }
    inv_rms = inverseSqrt(sum / f32(p.K) + p.eps);
  }

  var n_act = n_k;
  if (SPARSE) {
    // Compact this split's active channels, in channel order, into workgroup memory.
    let k0 = t * PER;
    var cnt = 0u;
    var keep = 0u;  // bit e: channel k0 + e is active (PER <= 32), so the compaction below reads no scale again
    // four channels a trip, clamped, not guarded: their loads are all issued before any is used (as one loop
    // of a channel a trip, NVIDIA's compiler left them one L2 round trip apart); the first trip's were loaded
    // above
    for (var e = 0u; e < PER; e += 4u) {
      let first = e == 0u;
      let kc0 = select(first_channel(t, e, k_base, n_k), ch0, first);
      let kc1 = select(first_channel(t, e + 1u, k_base, n_k), ch1, first);
      let kc2 = select(first_channel(t, e + 2u, k_base, n_k), ch2, first);
      let kc3 = select(first_channel(t, e + 3u, k_base, n_k), ch3, first);
      let v0 = staged_input(kc0, inv_rms, first, xa0);
      let v1 = staged_input(kc1, inv_rms, first, xa1);
      let v2 = staged_input(kc2, inv_rms, first, xa2);
      let v3 = staged_input(kc3, inv_rms, first, xa3);
      // the first trip's scales were loaded above (select() would load them again: it evaluates both sides)
      var c0 = sc0;
      var c1 = sc1;
      var c2 = sc2;
      var c3 = sc3;
      if (!first) {
        c0 = scales[s * p.K + kc0];
        c1 = scales[s * p.K + kc1];
        c2 = scales[s * p.K + kc2];
        c3 = scales[s * p.K + kc3];
      }
      if (e < PER && k0 + e < n_k) {
        act_val[k0 + e] = v0;  // in place: the walk reads it through act_idx
        if (abs(v0) * c0 > thr) {
          cnt++;
          keep |= 1u << e;
        }
      }
      if (e + 1u < PER && k0 + e + 1u < n_k) {
        act_val[k0 + e + 1u] = v1;  // in place: the walk reads it through act_idx
        if (abs(v1) * c1 > thr) {
          cnt++;
          keep |= 1u << (e + 1u);
        }
      }
      if (e + 2u < PER && k0 + e + 2u < n_k) {
        act_val[k0 + e + 2u] = v2;  // in place: the walk reads it through act_idx
        if (abs(v2) * c2 > thr) {
          cnt++;
          keep |= 1u << (e + 2u);
        }
      }
      if (e + 3u < PER && k0 + e + 3u < n_k) {
        act_val[k0 + e + 3u] = v3;  // in place: the walk reads it through act_idx
        if (abs(v3) * c3 > thr) {
          cnt++;
          keep |= 1u << (e + 3u);
        }
      }
    }
    if (eos) { return; }
    scan[t] = cnt;
    workgroupBarrier();
    // Kogge-Stone with SCAN_RADIX - 1 counts added a round: each round multiplies the span every thread
    // holds by SCAN_RADIX, so there are log_SCAN_RADIX(WG) rounds of two barriers.
    // The reads of a round in straight-line code (up to SCAN_RADIX 16): as a loop of one read a trip they
    // would wait for each other.
    for (var off = 1u; off < WG; off *= SCAN_RADIX) {
      var add = scan_read(t, 1u, off);
      if (SCAN_RADIX > 2u) { add += scan_read(t, 2u, off) + scan_read(t, 3u, off); }
      if (SCAN_RADIX > 4u) {
        add += scan_read(t, 4u, off) + scan_read(t, 5u, off) + scan_read(t, 6u, off) + scan_read(t, 7u, off);
      }
      if (SCAN_RADIX > 8u) {
        add += scan_read(t, 8u, off) + scan_read(t, 9u, off) + scan_read(t, 10u, off) + scan_read(t, 11u, off) +
          scan_read(t, 12u, off) + scan_read(t, 13u, off) + scan_read(t, 14u, off) + scan_read(t, 15u, off);
      }
      workgroupBarrier();
      scan[t] += add;
      workgroupBarrier();
    }
    var slot = scan[t] - cnt;
    for (var e = 0u; e < PER; e++) {
      if ((keep & (1u << e)) != 0u) {
        act_idx[slot] = k_base + k0 + e;
        slot++;
      }
    }
    n_act = scan[WG - 1u];
    if (t == 0u && tile == seg.tile0) { atomicAdd(&counters[p.counter + s], n_act); }
  } else {
    // dense rows are k_base + j, so only the values are staged; four channels a trip, clamped, not guarded:
    // their loads are all issued before any is used (as in the sparse path)
    for (var e = 0u; e < PER; e += 4u) {
      let first = e == 0u;
      let kk0 = t + e * WG;
      let kk1 = t + min(e + 1u, PER - 1u) * WG;
      let kk2 = t + min(e + 2u, PER - 1u) * WG;
      let kk3 = t + min(e + 3u, PER - 1u) * WG;
      let v0 = staged_input(select(first_channel(t, e, k_base, n_k), ch0, first), inv_rms, first, xa0);
      let v1 = staged_input(select(first_channel(t, e + 1u, k_base, n_k), ch1, first), inv_rms, first, xa1);
      let v2 = staged_input(select(first_channel(t, e + 2u, k_base, n_k), ch2, first), inv_rms, first, xa2);
      let v3 = staged_input(select(first_channel(t, e + 3u, k_base, n_k), ch3, first), inv_rms, first, xa3);
      if (kk0 < n_k) { act_val[kk0] = v0; }
      if (e + 1u < PER && kk1 < n_k) { act_val[kk1] = v1; }
      if (e + 2u < PER && kk2 < n_k) { act_val[kk2] = v2; }
      if (e + 3u < PER && kk3 < n_k) { act_val[kk3] = v3; }
    }
    if (eos) { return; }
  }
  workgroupBarrier();
