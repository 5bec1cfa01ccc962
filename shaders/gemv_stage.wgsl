// The GEMV kernels' input staging (gemv_body.wgsl and gemv_q_body.wgsl include it inside main, after the
// workgroup's segment, chunk and EARLY loads): the fused RMSNorm's scale, then the chunk's inputs in act_val
// and, when SPARSE, its active channels compacted in channel order into act_idx (n_act of them), counted at
// counters[p.counter + s]; a barrier publishes them. Statements, not a function: as a function in a shared
// fragment, Deno 2.9.6's WGSL compiler panicked (an override declared there) or seemed to corrupt memory
// (declared in the kernel; the heap aborts of that time were libEGL's, docs/testing.md).
  var inv_rms = 1.0;
  if (INPUT == 1u) {
    var sum = 0.0;
    for (var i = 0u; i < NSS; i++) { sum += ss[i]; }
    inv_rms = inverseSqrt(sum / f32(p.K) + p.eps);
  }

  var n_act = n_k;
  if (SPARSE) {
    // Compact this split's active channels, in channel order, into workgroup memory.
    let thr = thresholds[seg.thr];
    let k0 = t * PER;
    var cnt = 0u;
    var keep = 0u;  // bit e: channel k0 + e is active (PER <= 32), so the compaction below reads no scale again
    for (var e = 0u; e < PER; e++) {
      // clamped, not guarded: the loads of every channel are issued before any is used
      let kk = k0 + e;
      let kc = k_base + min(kk, n_k - 1u);
      let v = input(kc, inv_rms);
      let sc = scales[s * p.K + kc];
      if (kk < n_k) {
        act_val[kk] = v;  // in place: the walk reads it through act_idx
        if (abs(v) * sc > thr) {
          cnt++;
          keep |= 1u << e;
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
    // a constant trip count (PER) so that the compiler can issue every thread's input loads together;
    // dense rows are k_base + j, so only the values are staged
    for (var e = 0u; e < PER; e++) {
      let kk = t + e * WG;
      // clamped, not guarded: the loads of every channel are issued before any is used
      let v = input(k_base + min(kk, n_k - 1u), inv_rms);
      if (kk < n_k) { act_val[kk] = v; }
    }
    if (eos) { return; }
  }
  workgroupBarrier();
