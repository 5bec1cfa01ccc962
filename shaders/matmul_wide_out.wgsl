// The end of the wide prefill GEMMs (matmul_wide.wgsl, matmul_wide_q.wgsl include it at the end of main): the
// kept-input count of a sparse GEMM's first column tile, then the outputs (matmul_wide_store).
  // one column tile per segment counts the kept inputs of its rows
  if (SPARSE && wid.x == seg.tile0) {
    atomicAdd(&kept, my_kept);
    workgroupBarrier();
    if (t == 0u) { atomicAdd(&counters[p.counter + s], atomicLoad(&kept)); }
  }
  // #include matmul_wide_store
