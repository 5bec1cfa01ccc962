// The end of the tiled prefill GEMMs (matmul.wgsl, matmul_q.wgsl include it at the end of main): the kept-input
// count of a sparse GEMM's first column tile, then each thread's RPT x 4 outputs (split-K partials, or + bias,
// or added to y) for the rows and columns inside the matrix.
  // one column tile per segment counts the kept inputs of its rows
  if (SPARSE && wid.x == seg.tile0) {
    atomicAdd(&kept, my_kept);
    workgroupBarrier();
    if (t == 0u) { atomicAdd(&counters[p.counter + s], atomicLoad(&kept)); }
  }
  let acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
  for (var i = 0u; i < RPT; i++) {
    let m = row0 + ty * RPT + i;
    if (m >= p.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let cl = col0 + tx * 4u + j;
      if (cl >= seg.len) { continue; }
      var v = acc[i][j];
      if (SPLITK) {
        y[(wid.z * p.M + m) * p.ncols + seg.out + cl] = v;
        continue;
      }
      if (BIAS) { v += bias[seg.out + cl]; }
      let at = m * p.ldy + p.yOffset + seg.out + cl;
      if (ACCUM) { y[at] += v; } else { y[at] = v; }
    }
  }
