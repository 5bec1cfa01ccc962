// The start of the wide prefill GEMMs' main (matmul_wide.wgsl, matmul_wide_q.wgsl, matmul_wide_h.wgsl): the
// workgroup's segment, its threshold, its tile of 16 * RM rows x 128 columns, the thread's place in it, and the
// thread's sums.
  var s = 0u;
  if (p.nseg > 1u && wid.x >= p.seg[1].tile0) { s = 1u; }
  if (p.nseg > 2u && wid.x >= p.seg[2].tile0) { s = 2u; }
  let seg = p.seg[s];
  let thr = thresholds[seg.thr];
  let col0 = (wid.x - seg.tile0) * 128u;  // first column of the tile within the segment
  let row0 = wid.y * 16u * RM;
  let tx = t % 16u;
  let ty = t / 16u;
  // f32 sums over the steps: rows ty * RM + i, columns tx*4.. (a) and 64 + tx*4.. (b)
  var c0a = vec4<f32>(0.0);
  var c0b = vec4<f32>(0.0);
  var c1a = vec4<f32>(0.0);
  var c1b = vec4<f32>(0.0);
  var c2a = vec4<f32>(0.0);
  var c2b = vec4<f32>(0.0);
  var c3a = vec4<f32>(0.0);
  var c3b = vec4<f32>(0.0);
  var c4a = vec4<f32>(0.0);
  var c4b = vec4<f32>(0.0);
  var c5a = vec4<f32>(0.0);
  var c5b = vec4<f32>(0.0);
  var c6a = vec4<f32>(0.0);
  var c6b = vec4<f32>(0.0);
  var c7a = vec4<f32>(0.0);
  var c7b = vec4<f32>(0.0);
