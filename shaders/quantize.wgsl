// Weight quantization at load, on the GPU: rows of a checkpoint matrix W [out][in] (f32, uploaded as is)
// become the group-quantized [in][stride] block layout of gemv_q.wgsl (src/gpu/quant.ts), bit-exactly as the
// host's quantizeBlock makes it, which cost ~25 ns a weight (minutes for an 8B model).
// Thread (k, pair) quantizes input channel k of two consecutive groups of GROUP outputs (a pair fills one
// int8 metadata word): BITS 8: scale = the smallest f16 s with 127 s >= max |w|, q = round(w / s) in
// -127..127; BITS 4 with ZERO_POINT: offset = the largest f16 <= min w, scale = the smallest f16 s with
// 15 s >= max w - offset, q = round((w - offset) / s) in 0..15; BITS 4 symmetric: s with 7 s >= max |w|,
// offset -8 s. Differences are rounded to f32 once (the host's quantizeBlock does the same with Math.fround;
// an exact difference through two-sum did not survive the shader compiler), every comparison after that is
// exact (an f16 times a small integer or half-integer is exact in f32), and rounding is half up, as the
// host's Math.round.
// bindings: 0 params (uniform), 1 src (f32 rows [rows][K] of W, read), 2 dst (u32 words of the block, write)
override BITS: u32 = 8u;
override GROUP: u32 = 128u;
override ZERO_POINT: bool = true;
struct Params {
  K: u32,
  rows: u32,    // rows of W in src: the block's columns col0 .. col0 + rows
  pairs: u32,   // group pairs to write (the last group may be partial: columns past rows are code 0)
  stride: u32,  // u32 words per block row
  base: u32,    // word of the block's row 0
  col0: u32,    // first block column of src's row 0 (a multiple of 2 * GROUP)
  meta0: u32,   // word of a row's metadata
  _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

// f16 bits of x, round to nearest even (pack.wgsl's f16_bits; values here are finite).
fn f16_bits(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  let sign = (u >> 16u) & 0x8000u;
  let a = u & 0x7fffffffu;
  if (a >= 0x38800000u && a < 0x47800000u) {
    return sign | ((a - 0x38000000u + 0xfffu + ((a >> 13u) & 1u)) >> 13u);
  }
  if (a >= 0x47800000u) { return sign | 0x7c00u; }
  if (a < 0x33000000u) { return sign; }
  let e = a >> 23u;
  let full = (a & 0x7fffffu) | 0x800000u;
  let shift = 126u - e;
  let h = full >> shift;
  let rest = full & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  return sign | select(h, h + 1u, rest > half || (rest == half && (h & 1u) != 0u));
}

fn f16_val(b: u32) -> f32 { return unpack2x16float(b).x; }

// The next f16 up / down from bits b (sign-magnitude; ±0 step to the smallest subnormal of the direction).
fn f16_up(b: u32) -> u32 {
  if ((b & 0x7fffu) == 0u) { return 1u; }
  return select(b + 1u, b - 1u, (b & 0x8000u) != 0u);
}
fn f16_down(b: u32) -> u32 {
  if ((b & 0x7fffu) == 0u) { return 0x8001u; }
  return select(b - 1u, b + 1u, (b & 0x8000u) != 0u);
}

// The smallest f16 s >= 0 with n * s >= r (n a small integer: n * s is exact in f32, so the test is exact).
fn scale_up(r: f32, n: f32) -> u32 {
  var b = f16_bits(r / n) & 0x7fffu;
  for (var i = 0; i < 4 && n * f16_val(b) < r; i++) { b = f16_up(b); }
  for (var i = 0; i < 4 && b != 0u && n * f16_val(b - 1u) >= r; i++) { b = b - 1u; }
  return b;
}

// round(d / s), halves up: the q with (q - 1/2) s <= d < (q + 1/2) s ((q +- 1/2) s is exact in f32).
fn round_div(d: f32, s: f32) -> i32 {
  var q = i32(round(d / s));
  for (var i = 0; i < 3 && (f32(q) + 0.5) * s <= d; i++) { q++; }
  for (var i = 0; i < 3 && (f32(q) - 0.5) * s > d; i++) { q--; }
  return q;
}

// Scale and offset of group g (columns g * GROUP ..) of input channel k, as f16 bits: (scale, offset).
fn params(k: u32, g: u32) -> vec2<u32> {
  let n0 = g * GROUP;
  let n = min(GROUP, p.rows - n0);
  var lo = src[n0 * p.K + k];
  var hi = lo;
  var amax = abs(lo);
  for (var j = 1u; j < n; j++) {
    let v = src[(n0 + j) * p.K + k];
    lo = select(lo, v, v < lo);  // strict: the first of -0 and +0 stays, as on the host
    hi = select(hi, v, v > hi);
    amax = max(amax, abs(v));
  }
  if (BITS == 8u) { return vec2<u32>(select(scale_up(amax, 127.0), 0u, amax == 0.0), 0u); }
  if (!ZERO_POINT) {
    let sb = select(scale_up(amax, 7.0), 0u, amax == 0.0);
    return vec2<u32>(sb, f16_bits(-8.0 * f16_val(sb)));  // exact: -8 s is an f16
  }
  // offset: the largest f16 <= lo
  var ob = f16_bits(lo);
  if (f16_val(ob) > lo) { ob = f16_down(ob); }
  let o = f16_val(ob);
  let sb = select(scale_up(hi - o, 15.0), 0u, hi == o);
  return vec2<u32>(sb, ob);
}

// Code of column n (< p.rows) of input channel k with group parameters sp.
fn code(k: u32, n: u32, sp: vec2<u32>) -> u32 {
  let s = f16_val(sp.x);
  if (s == 0.0) { return select(select(8u, 0u, ZERO_POINT), 0u, BITS == 8u); }
  let q = round_div(src[n * p.K + k] - f16_val(sp.y), s);
  if (BITS == 8u) { return u32(clamp(q, -127, 127)) & 0xffu; }
  return u32(clamp(q, 0, 15));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let k = gid.x;
  let pair = gid.y;
  if (k >= p.K || pair >= p.pairs) { return; }
  let row = p.base + k * p.stride;
  var metas = vec2<u32>(0u);
  for (var h = 0u; h < 2u; h++) {
    let g = 2u * pair + h;
    if (g * GROUP >= p.rows) { break; }
    let sp = params(k, g);
    metas[h] = sp.x | (sp.y << 16u);
    // codes: 32 / BITS a word, columns past the rows stay 0
    let per = 32u / BITS;
    for (var w = 0u; w < GROUP / per; w++) {
      var word = 0u;
      for (var i = 0u; i < per; i++) {
        let n = g * GROUP + w * per + i;
        if (n < p.rows) { word |= code(k, n, sp) << (i * BITS); }
      }
      dst[row + (p.col0 + g * GROUP) / per + w] = word;
    }
  }
  // metadata: int8 one f16 scale per group, two a word; int4 an (scale, offset) word per group
  let g0 = p.col0 / GROUP + 2u * pair;
  if (BITS == 8u) {
    dst[row + p.meta0 + g0 / 2u] = (metas.x & 0xffffu) | ((metas.y & 0xffffu) << 16u);
  } else {
    dst[row + p.meta0 + g0] = metas.x;
    if ((2u * pair + 1u) * GROUP < p.rows) { dst[row + p.meta0 + g0 + 1u] = metas.y; }
  }
}
