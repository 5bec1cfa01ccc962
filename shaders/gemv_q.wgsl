// Split-K GEMV over transposed group-quantized weights (int8 / int4), dense or TEAL-sparse: gemv.wgsl's
// contract (same bindings, params, split partials, fused inputs, compaction, counters and EOS early-out) with
// the weights dequantized in registers. Layout (src/gpu/quant.ts): one block [K][stride] of u32 words per
// segment; row k holds the codes of the segment's outputs (padded to a whole group), then at word `scale0` the
// row's group metadata: BITS 8: one f16 scale per group, w = q * s (q signed byte);
// BITS 4: an f16 pair (scale, offset) per group, w = q * s + offset (q nibble 0..15). A dropped channel is one
// contiguous run of codes + metadata that is never read.
// Workgroup (tile, split) owns TILE_N = TPR * COLS columns of one segment; each thread loads VEC words of
// codes per row (a vec4<u32>: COLS = 16 int8 or 32 int4 outputs; VEC 2, a vec2<u32> through the second view of
// the weights: 8 or 16, half the registers a row, so more warps fit an SM) inside one group, and one metadata
// word, UNROLL rows in flight (named registers: an array of rows went to memory). The decode is exact and costs
// no int->float conversion instruction (a quarter-rate unit on NVIDIA): each code is OR-ed (int8: XOR-ed, which
// also flips its sign bit) into the mantissa of 2^23 in place (byte 0/1 or nibble 0..3 of a half word), the bias
// subtracted exactly, and the power of two its place adds stays in the accumulators until the walk ends (exact;
// no multiply per place a row); the int4 offset adds x * offset once per row.
// bindings: 0 params (uniform), 1 x (f32 [K], read), 2 wt (vec4<u32>, segment blocks, read),
//           3 partials (f32 [splits][ncols], write), 4 thresholds (f32, read), 5 scales (f32 [nseg][K], read),
//           6 counters (atomic u32: active channels per segment, summed over calls), 7 aux (f32, read),
//           8 ss (f32 [NSS], read; EPI 2 writes it), 9 state (u32 decode state, read: [3] != 0 once EOS
//           was sampled), 10 outv (the split-K epilogue, gemv_finish.wgsl), 11 wt2 (the weights again, as
//           vec2<u32>: VEC 2 loads), 12 wt1 (the weights again, as u32: a row's metadata word in one load)
// The kernel (gemv_q_body.wgsl, with its split-K epilogue); below, the row arithmetic in f32 (gemv_qh.wgsl has it
// in packed f16).
// #include gemv_q_body

const MAGIC: u32 = 0x4b000000u;  // 2^23: its mantissa holds any integer below 2^23 exactly

// Four signed bytes as floats q0, 256 q1, q2, 256 q3 (the factors 256 stay in the accumulators). Each byte's
// sign bit is flipped (q + 128, unsigned) by the same XOR that sets MAGIC's bits, which lie outside the byte's:
// one AND-XOR a byte (one three-input logic instruction where the GPU has them), no XOR of the whole word.
fn bytes4(w: u32) -> vec4<f32> {
  let h = w >> 16u;
  let m = vec4<u32>(w & 0xffu, w & 0xff00u, h & 0xffu, h & 0xff00u) ^
    vec4<u32>(MAGIC | 0x80u, MAGIC | 0x8000u, MAGIC | 0x80u, MAGIC | 0x8000u);
  return bitcast<vec4<f32>>(m) - vec4<f32>(8388736.0, 8421376.0, 8388736.0, 8421376.0);
}

// The four nibbles of a half word as floats n0, 16 n1, 256 n2, 4096 n3.
fn nibbles4(w: u32) -> vec4<f32> {
  let m = vec4<u32>(w & 0xfu, w & 0xf0u, w & 0xf00u, w & 0xf000u) | vec4<u32>(MAGIC);
  return bitcast<vec4<f32>>(m) - vec4<f32>(8388608.0);
}


// The place factors of bytes4 / nibbles4 stay in the accumulators until place_scaled divides them out: scaling
// by a power of two is exact, so the sums are the same bits, and a row costs no multiply per place.
fn fma_row(acc: ptr<function, Acc>, q: vec4<u32>, ab: vec2<f32>) {
  let c = ab.x;
  if (BITS == 8u) {
    (*acc).a0 += c * bytes4(q.x);
    (*acc).a1 += c * bytes4(q.y);
    if (VEC == 4u) {
      (*acc).a2 += c * bytes4(q.z);
      (*acc).a3 += c * bytes4(q.w);
    }
  } else {
    (*acc).a0 += c * nibbles4(q.x);
    (*acc).a1 += c * nibbles4(q.x >> 16u);
    (*acc).a2 += c * nibbles4(q.y);
    (*acc).a3 += c * nibbles4(q.y >> 16u);
    if (VEC == 4u) {
      (*acc).a4 += c * nibbles4(q.z);
      (*acc).a5 += c * nibbles4(q.z >> 16u);
      (*acc).a6 += c * nibbles4(q.w);
      (*acc).a7 += c * nibbles4(q.w >> 16u);
    }
    (*acc).b += ab.y;
  }
}

// The accumulators with the place factors of bytes4 / nibbles4 divided out (exact: powers of two).
fn place_scaled(acc: Acc) -> Acc {
  var r = acc;
  if (BITS == 8u) {
    let f = vec4<f32>(1.0, 1.0 / 256.0, 1.0, 1.0 / 256.0);
    r.a0 *= f; r.a1 *= f; r.a2 *= f; r.a3 *= f;
  } else {
    let f = vec4<f32>(1.0, 1.0 / 16.0, 1.0 / 256.0, 1.0 / 4096.0);
    r.a0 *= f; r.a1 *= f; r.a2 *= f; r.a3 *= f; r.a4 *= f; r.a5 *= f; r.a6 *= f; r.a7 *= f;
  }
  return r;
}

// Adds a loaded trip (walk positions j, j + KG, ...) into the accumulators, row by row in walk order.
fn fma_trip(acc: ptr<function, Acc>, r: Trip, j: u32, k_base: u32, hsel: u32, tail: bool, lim: u32) {
  fma_row(acc, r.q0, coef(r.m0, hsel, val_at(j, k_base, tail, lim)));
  fma_row(acc, r.q1, coef(r.m1, hsel, val_at(j + KG, k_base, tail, lim)));
  fma_row(acc, r.q2, coef(r.m2, hsel, val_at(j + 2u * KG, k_base, tail, lim)));
  fma_row(acc, r.q3, coef(r.m3, hsel, val_at(j + 3u * KG, k_base, tail, lim)));
  if (UNROLL == 8u) {
    fma_row(acc, r.q4, coef(r.m4, hsel, val_at(j + 4u * KG, k_base, tail, lim)));
    fma_row(acc, r.q5, coef(r.m5, hsel, val_at(j + 5u * KG, k_base, tail, lim)));
    fma_row(acc, r.q6, coef(r.m6, hsel, val_at(j + 6u * KG, k_base, tail, lim)));
    fma_row(acc, r.q7, coef(r.m7, hsel, val_at(j + 7u * KG, k_base, tail, lim)));
  }
}
