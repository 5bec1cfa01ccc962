// Split-K GEMV over transposed f16 weights, dense or TEAL-sparse: y[n] = sum_k x[k] * wt[k][n].
// Weights are stored transposed, one block [K][stride] per segment (stride = columns padded to a multiple of 8),
// so the weights that one input channel k meets are one contiguous row: a channel TEAL zeroes is never read.
// Workgroup (tile, split) owns TILE_N = TPR*8 columns of one segment and input channels
// [split*KCHUNK, (split+1)*KCHUNK). The chunk of x is staged in workgroup memory, transformed on the way in:
//   INPUT 0: x as is; INPUT 1: RMSNorm(x) * aux (aux = norm weight; sum of squares = sum of ss[0..NSS), the
//   partial sums the previous residual add wrote); INPUT 2: silu(gate) * up, summed from the fused gate|up
//   GEMV's split partials in aux (so neither RMSNorm nor the SwiGLU epilogue needs a dispatch of its own).
// Sparse: channels with |x[k]| * scale[seg][k] <= threshold[seg] are dropped while the chunk is compacted (in
// order, by a prefix sum); then each group of TPR threads walks the active channels, UNROLL rows at a time so
// several 16-byte loads are in flight. Partial sums go to partials[split][ncols]; the tile's last workgroup
// adds the splits and applies the epilogue (EPI, gemv_finish.wgsl), or a reduce pass does (EPI 0).
// bindings: 0 params (uniform), 1 x (f32 [K], read), 2 wt (vec4<u32> = 8 f16, segment blocks, read),
//           3 partials (f32 [splits][ncols], write), 4 thresholds (f32, read), 5 scales (f32 [nseg][K], read),
//           6 counters (atomic u32: active channels per segment, summed over calls), 7 aux (f32, read),
//           8 ss (f32 [nss], read; EPI 2 writes it), 9 state (u32 decode state, read: [3] != 0 once EOS
//           was sampled, so the steps queued past it skip their weight reads), 10 outv (gemv_finish.wgsl)
// The kernel (gemv_body.wgsl, with its split-K epilogue); below, the row arithmetic in f32 (gemv_h.wgsl has it in
// packed f16).
// #include gemv_body

fn lo4(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn hi4(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)); }

// Adds a loaded trip (walk positions j, j + KG, ...) into the accumulators, in the order every path uses.
fn fma_trip(acc0: ptr<function, vec4<f32>>, acc1: ptr<function, vec4<f32>>, r: Trip, j: u32, k_base: u32,
            tail: bool, lim: u32) {
  let v0 = val_at(j, k_base, tail, lim);
  let v1 = val_at(j + KG, k_base, tail, lim);
  let v2 = val_at(j + 2u * KG, k_base, tail, lim);
  let v3 = val_at(j + 3u * KG, k_base, tail, lim);
  *acc0 += v0 * lo4(r.w0) + v1 * lo4(r.w1) + v2 * lo4(r.w2) + v3 * lo4(r.w3);
  *acc1 += v0 * hi4(r.w0) + v1 * hi4(r.w1) + v2 * hi4(r.w2) + v3 * hi4(r.w3);
  if (UNROLL == 8u) {
    let v4 = val_at(j + 4u * KG, k_base, tail, lim);
    let v5 = val_at(j + 5u * KG, k_base, tail, lim);
    let v6 = val_at(j + 6u * KG, k_base, tail, lim);
    let v7 = val_at(j + 7u * KG, k_base, tail, lim);
    *acc0 += v4 * lo4(r.w4) + v5 * lo4(r.w5) + v6 * lo4(r.w6) + v7 * lo4(r.w7);
    *acc1 += v4 * hi4(r.w4) + v5 * hi4(r.w5) + v6 * hi4(r.w6) + v7 * hi4(r.w7);
  }
}
