// A K step of the wide prefill GEMMs (matmul_wide.wgsl, matmul_wide_q.wgsl include it inside their K loop):
// each thread adds its RM rows x 8 columns (two vec4 halves of 64 columns apart) from the staged tiles xs and ws.
    for (var kk = 0u; kk < BK; kk++) {
      let b0 = ws[kk * 32u + tx];
      let b1 = ws[kk * 32u + 16u + tx];
      if (RM == 8u) {
        let a0 = xs[kk * XROW + ty * 2u];
        let a1 = xs[kk * XROW + ty * 2u + 1u];
        c0a += a0.x * b0;
        c0b += a0.x * b1;
        c1a += a0.y * b0;
        c1b += a0.y * b1;
        c2a += a0.z * b0;
        c2b += a0.z * b1;
        c3a += a0.w * b0;
        c3b += a0.w * b1;
        c4a += a1.x * b0;
        c4b += a1.x * b1;
        c5a += a1.y * b0;
        c5b += a1.y * b1;
        c6a += a1.z * b0;
        c6b += a1.z * b1;
        c7a += a1.w * b0;
        c7b += a1.w * b1;
      } else {
        let a0 = xs[kk * XROW + ty];
        c0a += a0.x * b0;
        c0b += a0.x * b1;
        c1a += a0.y * b0;
        c1b += a0.y * b1;
        c2a += a0.z * b0;
        c2b += a0.z * b1;
        c3a += a0.w * b0;
        c3b += a0.w * b1;
      }
    }
