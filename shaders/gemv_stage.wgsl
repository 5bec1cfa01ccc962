// The GEMV kernels' input staging (gemv_body.wgsl and gemv_q_body.wgsl include it inside main, after the
// workgroup's segment, chunk and EARLY loads): the fused RMSNorm's scale, then the chunk's inputs in act_val
// and, when SPARSE, its active channels compacted in channel order into act_idx (n_act of them), counted at
// counters[p.counter + s]; a barrier publishes them. Statements, not a function: as a function in a shared
// fragment, Deno 2.9.6's WGSL compiler panicked (an override declared there) or seemed to corrupt memory
// (declared in the kernel; the heap aborts of that time were libEGL's, docs/testing.md).
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
    let thr = thresholds[seg.thr];
    let k0 = t * PER;
    var cnt = 0u;
    var keep = 0u;  // bit e: channel k0 + e is active (PER <= 32), so the compaction below reads no scale again
    // four channels a trip, clamped, not guarded: their loads are all issued before any is used (as one loop
    // of a channel a trip, NVIDIA's compiler left them one L2 round trip apart)
    for (var e = 0u; e < PER; e += 4u) {
      let kc0 = k_base + min(k0 + e, n_k - 1u);
      let kc1 = k_base + min(k0 + min(e + 1u, PER - 1u), n_k - 1u);
      let kc2 = k_base + min(k0 + min(e + 2u, PER - 1u), n_k - 1u);
      let kc3 = k_base + min(k0 + min(e + 3u, PER - 1u), n_k - 1u);
      let v0 = input(kc0, inv_rms);
      let c0 = scales[s * p.K + kc0];
      let v1 = input(kc1, inv_rms);
      let c1 = scales[s * p.K + kc1];
      let v2 = input(kc2, inv_rms);
      let c2 = scales[s * p.K + kc2];
      let v3 = input(kc3, inv_rms);
      let c3 = scales[s * p.K + kc3];
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
    for (var off = 1u; off < WG; off *= SCAN_RADIX) {
      var add = 0u;
      for (var r = 1u; r < SCAN_RADIX; r++) { add += select(0u, scan[t - r * off], t >= r * off); }
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
      let kk0 = t + e * WG;
      let kk1 = t + min(e + 1u, PER - 1u) * WG;
      let kk2 = t + min(e + 2u, PER - 1u) * WG;
      let kk3 = t + min(e + 3u, PER - 1u) * WG;
      let v0 = input(k_base + min(kk0, n_k - 1u), inv_rms);
      let v1 = input(k_base + min(kk1, n_k - 1u), inv_rms);
      let v2 = input(k_base + min(kk2, n_k - 1u), inv_rms);
      let v3 = input(k_base + min(kk3, n_k - 1u), inv_rms);
      if (kk0 < n_k) { act_val[kk0] = v0; }
      if (e + 1u < PER && kk1 < n_k) { act_val[kk1] = v1; }
      if (e + 2u < PER && kk2 < n_k) { act_val[kk2] = v2; }
      if (e + 3u < PER && kk3 < n_k) { act_val[kk3] = v3; }
    }
    if (eos) { return; }
  }
  workgroupBarrier();
