// A K step of the tiled prefill GEMMs (matmul.wgsl, matmul_q.wgsl include it inside their K loop, after
// staging the step's tiles in xs and ws): the next step's loads go out, then each thread adds its RPT rows x 4
// columns; barriers on both sides of the tiles' use.
    my_kept += st.kept;
    workgroupBarrier();
    // the next step's loads go out before this step's arithmetic
    if (k0 + BK < ke) { st = load_step(t, k0 + BK, ke, row0, col0, s, seg, thr); }
    for (var kk = 0u; kk < BK; kk++) {
      let b = vec4<f32>(ws[kk * 64u + tx * 4u], ws[kk * 64u + tx * 4u + 1u], ws[kk * 64u + tx * 4u + 2u],
        ws[kk * 64u + tx * 4u + 3u]);
      a0 += xs[(ty * RPT) * BK + kk] * b;
      if (RPT == 4u) {
        a1 += xs[(ty * 4u + 1u) * BK + kk] * b;
        a2 += xs[(ty * 4u + 2u) * BK + kk] * b;
        a3 += xs[(ty * 4u + 3u) * BK + kk] * b;
      }
    }
    workgroupBarrier();
