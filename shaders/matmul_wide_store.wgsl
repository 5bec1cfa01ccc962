// The wide prefill GEMMs' stores (matmul_wide_out.wgsl and matmul_wide_h.wgsl include it at the end of main):
// each thread's RM x 8 outputs (+ bias, or added to y) for the rows and columns inside the matrix.
  let acc = array<vec4<f32>, 16>(c0a, c0b, c1a, c1b, c2a, c2b, c3a, c3b, c4a, c4b, c5a, c5b, c6a, c6b, c7a, c7b);
  for (var i = 0u; i < RM; i++) {
    let m = row0 + ty * RM + i;
    if (m >= p.M) { continue; }
    for (var h = 0u; h < 2u; h++) {
      for (var j = 0u; j < 4u; j++) {
        let cl = col0 + h * 64u + tx * 4u + j;
        if (cl >= seg.len) { continue; }
        var v = acc[i * 2u + h][j];
        if (BIAS) { v += bias[seg.out + cl]; }
        let at = m * p.ldy + p.yOffset + seg.out + cl;
        if (ACCUM) { y[at] += v; } else { y[at] = v; }
      }
    }
  }
