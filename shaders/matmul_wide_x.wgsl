// The body of the wide prefill GEMMs' load_x (matmul_wide*.wgsl): x inputs k..k+3 of row m, zero past the rows
// or K, TEAL-masked when SPARSE, with `kept` counting what the mask kept.
  if (m >= p.M || k >= p.K) { return vec4<f32>(0.0); }
  var v = x[(m * p.K + k) / 4u];
  if (SPARSE) {
    let keep = abs(v) * scales[(s * p.K + k) / 4u] > vec4<f32>(thr);
    v = select(vec4<f32>(0.0), v, keep);
    *kept += u32(keep.x) + u32(keep.y) + u32(keep.z) + u32(keep.w);
  }
  return v;
