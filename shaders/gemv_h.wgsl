enable f16;
// gemv.wgsl with its row arithmetic in packed f16 (needs the device's shader-f16 feature): the same kernel,
// bindings and results to within f16 rounding. Why: each weight of a row costs gemv.wgsl a conversion to f32 and
// a multiply-add; here a pair of weights meets its input in one vec2<f16> multiply-add, with no conversion. A
// trip's UNROLL rows are summed in f16, then added into the f32 accumulators, so a sum of f16 terms never runs
// longer than a trip. The input x is rounded to f16 once a row (relative 2^-11); the weights are f16 already.
// #include gemv_body

// The two f16 of a word. Deno 2.9.6's WGSL compiler (naga 29) types bitcast<vec2<f16>>(u32) as f32, so the
// halves go through f32 and back, both exact (gemv_qh.wgsl measured faster on the H200 this way all the same).
fn halves(w: u32) -> vec2<f16> {
  return vec2<f16>(unpack2x16float(w));
}

// A row's 8 weights (w) times its input (c, in both halves) added to a trip's f16 sums of columns 0..7 in pairs.
struct Half { s0: vec2<f16>, s1: vec2<f16>, s2: vec2<f16>, s3: vec2<f16> }

fn half_row(h: Half, w: vec4<u32>, c: vec2<f16>) -> Half {
  return Half(fma(halves(w.x), c, h.s0), fma(halves(w.y), c, h.s1), fma(halves(w.z), c, h.s2),
              fma(halves(w.w), c, h.s3));
}

fn f16x2(v: f32) -> vec2<f16> {
  return vec2<f16>(f16(v));
}

// Adds a loaded trip (walk positions j, j + KG, ...) into the accumulators: rows in walk order into f16 sums,
// then those into f32 (columns 0..3 in acc0, 4..7 in acc1, as gemv.wgsl's).
fn fma_trip(acc0: ptr<function, vec4<f32>>, acc1: ptr<function, vec4<f32>>, r: Trip, j: u32, k_base: u32,
            tail: bool, lim: u32) {
  let z = vec2<f16>(0.0h);
  var h = Half(z, z, z, z);
  h = half_row(h, r.w0, f16x2(val_at(j, k_base, tail, lim)));
  h = half_row(h, r.w1, f16x2(val_at(j + KG, k_base, tail, lim)));
  h = half_row(h, r.w2, f16x2(val_at(j + 2u * KG, k_base, tail, lim)));
  h = half_row(h, r.w3, f16x2(val_at(j + 3u * KG, k_base, tail, lim)));
  if (UNROLL == 8u) {
    h = half_row(h, r.w4, f16x2(val_at(j + 4u * KG, k_base, tail, lim)));
    h = half_row(h, r.w5, f16x2(val_at(j + 5u * KG, k_base, tail, lim)));
    h = half_row(h, r.w6, f16x2(val_at(j + 6u * KG, k_base, tail, lim)));
    h = half_row(h, r.w7, f16x2(val_at(j + 7u * KG, k_base, tail, lim)));
  }
  *acc0 += vec4<f32>(vec2<f32>(h.s0), vec2<f32>(h.s1));
  *acc1 += vec4<f32>(vec2<f32>(h.s2), vec2<f32>(h.s3));
}
