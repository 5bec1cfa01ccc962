// The start of the GEMV kernels' main (gemv_body.wgsl, gemv_q_body.wgsl, gemv_rows.wgsl): the workgroup's
// column tile and K split, the segment the tile falls in, and the split's first channel and channel count.
  let tile = wid.x;
  let split = wid.y;
  var s = 0u;
  if (p.nseg > 1u && tile >= p.seg[1].tile0) { s = 1u; }
  if (p.nseg > 2u && tile >= p.seg[2].tile0) { s = 2u; }
  let seg = p.seg[s];
  let k_base = split * KCHUNK;
  let n_k = min(KCHUNK, p.K - k_base);
