// A fused weight matrix's segment as the GEMV and GEMM kernels read it from their params (segWords in
// src/gpu/kernels.ts writes these eight words): up to three segments (q|k|v, gate|up) share one dispatch,
// each with its own block, threshold and output columns.
struct Seg {
  base: u32,    // first element of the segment's [K][stride] block: an f16, or a u32 word (int8/int4)
  stride: u32,  // elements per row: f16, a multiple of 8; int8/int4 words, the codes (padded to a whole
                // group) then the row's group metadata
  len: u32,     // columns of the segment
  tile0: u32,   // first workgroup tile of the segment
  thr: u32,     // index into thresholds
  out: u32,     // column of the segment's output 0 (in partials, y and bias)
  scale0: u32,  // int8/int4: word of a row's group metadata, after its codes (f16 weights: 0, unused)
  _pad1: u32,
}
