// The prefill GEMM kernels' params (matmul.wgsl, matmul_q.wgsl, matmul_wide*.wgsl; matmulOps in
// src/gpu/kernels.ts writes them).
// #include segment
struct Params {
  M: u32,
  K: u32,
  ldy: u32,      // y row stride (elements)
  yOffset: u32,  // added to every output column
  nseg: u32,
  counter: u32,  // counters[counter + seg] counts kept inputs (SPARSE)
  klen: u32,     // split-K kernels (matmul.wgsl, matmul_q.wgsl): inputs per K split (workgroup z covers
                 // [z * klen, (z + 1) * klen)), K when not split; unused by the wide kernels
  ncols: u32,    // SPLITK: columns of a partial row (all segments); unused by the wide kernels
  seg: array<Seg, 3>,
}
