enable f16;
// gemv_q.wgsl with its row arithmetic in packed f16 (needs the device's shader-f16 feature): the same kernel,
// bindings and results to within f16 rounding. Why: the int8/int4 GEMVs spend much of a row on decoding codes and
// multiply-adds (three f32 instructions a code in gemv_q.wgsl), and a vec2<f16> instruction does two. Each code
// is AND-ed (int8: also XOR-ed, flipping its sign bit) into the mantissa of 1024.0h in place, two codes a
// 32-bit word (the same place in both halves), 1024 (int8: 1152) subtracted exactly, and multiplied by x * scale
// in f16 into a trip's f16 sums; those go into the f32 accumulators once a trip (UNROLL rows), so a sum of f16
// terms never runs longer than a trip. int4 nibbles are shifted down to bits 0..3 first (no place factor: a
// product stays below 16 |x * scale|, far from f16's range). The int4 offset term x * offset stays in f32.
// The codes are exact in f16 (integers below 2048); x * scale is rounded to f16 once a row (relative 2^-11).
// #include gemv_q_body

// A trip's f16 sums, two columns each: int8, per word of codes, bytes (0, 2) and (1, 3); int4, per word, nibbles
// (i, 4 + i) for i = 0..3 (h0..h3 the thread's first word, h4..h7 its second, ...). Named registers.
struct Half {
  h0: vec2<f16>, h1: vec2<f16>, h2: vec2<f16>, h3: vec2<f16>,
  h4: vec2<f16>, h5: vec2<f16>, h6: vec2<f16>, h7: vec2<f16>,
  h8: vec2<f16>, h9: vec2<f16>, h10: vec2<f16>, h11: vec2<f16>,
  h12: vec2<f16>, h13: vec2<f16>, h14: vec2<f16>, h15: vec2<f16>,
}

fn half_zero() -> Half {
  let z = vec2<f16>(0.0h);
  return Half(z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z);
}

const ONE024: u32 = 0x64006400u;  // 1024.0h in both halves

// The two f16 of a word. Deno 2.9.6's WGSL compiler (naga 29) types bitcast<vec2<f16>>(u32) as f32, so the
// halves go through f32 and back, both exact: a compiler can fold the round trip away (whether NVIDIA's does is
// what `bench --gemv-half` measures).
fn halves(w: u32) -> vec2<f16> {
  return vec2<f16>(unpack2x16float(w));
}

// Bytes b and b + 2 of w (b = 0 or 1: `w` pre-shifted by 8 b) as signed f16 codes: the XOR flips each byte's
// sign bit (q + 128) and sets 1024's bits, which lie outside the byte.
fn bytes2(w: u32) -> vec2<f16> {
  return halves((w & 0x00ff00ffu) ^ (ONE024 | 0x00800080u)) - vec2<f16>(1152.0h);
}

// Nibbles i and 4 + i of w (`w` pre-shifted by 4 i) as f16 codes 0..15.
fn nibbles2(w: u32) -> vec2<f16> {
  return halves((w & 0x000f000fu) | ONE024) - vec2<f16>(1024.0h);
}

// A row's codes times c (x * scale) added to a trip's f16 sums.
fn half_row(h0: Half, q: vec4<u32>, c: vec2<f16>) -> Half {
  var h = h0;
  if (BITS == 8u) {
    h.h0 = fma(bytes2(q.x), c, h.h0);
    h.h1 = fma(bytes2(q.x >> 8u), c, h.h1);
    h.h2 = fma(bytes2(q.y), c, h.h2);
    h.h3 = fma(bytes2(q.y >> 8u), c, h.h3);
    if (VEC == 4u) {
      h.h4 = fma(bytes2(q.z), c, h.h4);
      h.h5 = fma(bytes2(q.z >> 8u), c, h.h5);
      h.h6 = fma(bytes2(q.w), c, h.h6);
      h.h7 = fma(bytes2(q.w >> 8u), c, h.h7);
    }
  } else {
    h.h0 = fma(nibbles2(q.x), c, h.h0);
    h.h1 = fma(nibbles2(q.x >> 4u), c, h.h1);
    h.h2 = fma(nibbles2(q.x >> 8u), c, h.h2);
    h.h3 = fma(nibbles2(q.x >> 12u), c, h.h3);
    h.h4 = fma(nibbles2(q.y), c, h.h4);
    h.h5 = fma(nibbles2(q.y >> 4u), c, h.h5);
    h.h6 = fma(nibbles2(q.y >> 8u), c, h.h6);
    h.h7 = fma(nibbles2(q.y >> 12u), c, h.h7);
    if (VEC == 4u) {
      h.h8 = fma(nibbles2(q.z), c, h.h8);
      h.h9 = fma(nibbles2(q.z >> 4u), c, h.h9);
      h.h10 = fma(nibbles2(q.z >> 8u), c, h.h10);
      h.h11 = fma(nibbles2(q.z >> 12u), c, h.h11);
      h.h12 = fma(nibbles2(q.w), c, h.h12);
      h.h13 = fma(nibbles2(q.w >> 4u), c, h.h13);
      h.h14 = fma(nibbles2(q.w >> 8u), c, h.h14);
      h.h15 = fma(nibbles2(q.w >> 12u), c, h.h15);
    }
  }
  return h;
}

// x * scale in both halves of an f16 pair.
fn coef_h(ab: vec2<f32>) -> vec2<f16> {
  return vec2<f16>(f16(ab.x));
}

// int8: a word's sums as its four columns in order; int4: a word's four sums as its columns 0..3 and 4..7.
fn cols8(s0: vec2<f16>, s1: vec2<f16>) -> vec4<f32> {
  return vec4<f32>(f32(s0.x), f32(s1.x), f32(s0.y), f32(s1.y));
}

fn lo4(s0: vec2<f16>, s1: vec2<f16>, s2: vec2<f16>, s3: vec2<f16>) -> vec4<f32> {
  return vec4<f32>(f32(s0.x), f32(s1.x), f32(s2.x), f32(s3.x));
}

fn hi4(s0: vec2<f16>, s1: vec2<f16>, s2: vec2<f16>, s3: vec2<f16>) -> vec4<f32> {
  return vec4<f32>(f32(s0.y), f32(s1.y), f32(s2.y), f32(s3.y));
}

// Adds a trip's f16 sums into the f32 accumulators, in gemv_q.wgsl's column order.
fn flush(acc: ptr<function, Acc>, h: Half) {
  if (BITS == 8u) {
    (*acc).a0 += cols8(h.h0, h.h1);
    (*acc).a1 += cols8(h.h2, h.h3);
    if (VEC == 4u) {
      (*acc).a2 += cols8(h.h4, h.h5);
      (*acc).a3 += cols8(h.h6, h.h7);
    }
  } else {
    (*acc).a0 += lo4(h.h0, h.h1, h.h2, h.h3);
    (*acc).a1 += hi4(h.h0, h.h1, h.h2, h.h3);
    (*acc).a2 += lo4(h.h4, h.h5, h.h6, h.h7);
    (*acc).a3 += hi4(h.h4, h.h5, h.h6, h.h7);
    if (VEC == 4u) {
      (*acc).a4 += lo4(h.h8, h.h9, h.h10, h.h11);
      (*acc).a5 += hi4(h.h8, h.h9, h.h10, h.h11);
      (*acc).a6 += lo4(h.h12, h.h13, h.h14, h.h15);
      (*acc).a7 += hi4(h.h12, h.h13, h.h14, h.h15);
    }
  }
}

// No place factors to divide out.
fn place_scaled(acc: Acc) -> Acc {
  return acc;
}

// Adds a loaded trip (walk positions j, j + KG, ...) into the accumulators: rows in walk order into f16 sums,
// then those into f32.
fn fma_trip(acc: ptr<function, Acc>, r: Trip, j: u32, k_base: u32, hsel: u32, tail: bool, lim: u32) {
  let ab0 = coef(r.m0, hsel, val_at(j, k_base, tail, lim));
  let ab1 = coef(r.m1, hsel, val_at(j + KG, k_base, tail, lim));
  let ab2 = coef(r.m2, hsel, val_at(j + 2u * KG, k_base, tail, lim));
  let ab3 = coef(r.m3, hsel, val_at(j + 3u * KG, k_base, tail, lim));
  var h = half_row(half_zero(), r.q0, coef_h(ab0));
  h = half_row(h, r.q1, coef_h(ab1));
  h = half_row(h, r.q2, coef_h(ab2));
  h = half_row(h, r.q3, coef_h(ab3));
  var b = ab0.y + ab1.y + ab2.y + ab3.y;
  if (UNROLL == 8u) {
    let ab4 = coef(r.m4, hsel, val_at(j + 4u * KG, k_base, tail, lim));
    let ab5 = coef(r.m5, hsel, val_at(j + 5u * KG, k_base, tail, lim));
    let ab6 = coef(r.m6, hsel, val_at(j + 6u * KG, k_base, tail, lim));
    let ab7 = coef(r.m7, hsel, val_at(j + 7u * KG, k_base, tail, lim));
    h = half_row(h, r.q4, coef_h(ab4));
    h = half_row(h, r.q5, coef_h(ab5));
    h = half_row(h, r.q6, coef_h(ab6));
    h = half_row(h, r.q7, coef_h(ab7));
    b += ab4.y + ab5.y + ab6.y + ab7.y;
  }
  flush(acc, h);
  if (BITS == 4u) { (*acc).b += b; }
}
