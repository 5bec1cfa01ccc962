// A column's sum over a GEMV's split-K partials (split s's at s * stride + column), shared by reduce.wgsl (the
// reduce passes) and gemv_finish.wgsl (the GEMVs' own epilogues), which include it and declare `partials` and the
// constant SPLITS. The splits are added in split order, so a sum has the same bits whichever adds it. Their
// loads go out sixteen at a time (past the last split clamped, not added): as a loop of one load a trip,
// NVIDIA's compiler left them one L2 round trip apart, and on the H200 the passes after o, gate|up and down took
// 1.3-2.5 us a layer more (2026-12-04, docs/benchmarks.md).
fn split_sum(col: u32, stride: u32) -> f32 {
  let last = SPLITS - 1u;
  var sum = 0.0;
  for (var s = 0u; s < SPLITS; s += 16u) {
    let v0 = partials[min(s, last) * stride + col];
    let v1 = partials[min(s + 1u, last) * stride + col];
    let v2 = partials[min(s + 2u, last) * stride + col];
    let v3 = partials[min(s + 3u, last) * stride + col];
    let v4 = partials[min(s + 4u, last) * stride + col];
    let v5 = partials[min(s + 5u, last) * stride + col];
    let v6 = partials[min(s + 6u, last) * stride + col];
    let v7 = partials[min(s + 7u, last) * stride + col];
    let v8 = partials[min(s + 8u, last) * stride + col];
    let v9 = partials[min(s + 9u, last) * stride + col];
    let v10 = partials[min(s + 10u, last) * stride + col];
    let v11 = partials[min(s + 11u, last) * stride + col];
    let v12 = partials[min(s + 12u, last) * stride + col];
    let v13 = partials[min(s + 13u, last) * stride + col];
    let v14 = partials[min(s + 14u, last) * stride + col];
    let v15 = partials[min(s + 15u, last) * stride + col];
    sum += v0;
    if (s + 1u < SPLITS) { sum += v1; }
    if (s + 2u < SPLITS) { sum += v2; }
    if (s + 3u < SPLITS) { sum += v3; }
    if (s + 4u < SPLITS) { sum += v4; }
    if (s + 5u < SPLITS) { sum += v5; }
    if (s + 6u < SPLITS) { sum += v6; }
    if (s + 7u < SPLITS) { sum += v7; }
    if (s + 8u < SPLITS) { sum += v8; }
    if (s + 9u < SPLITS) { sum += v9; }
    if (s + 10u < SPLITS) { sum += v10; }
    if (s + 11u < SPLITS) { sum += v11; }
    if (s + 12u < SPLITS) { sum += v12; }
    if (s + 13u < SPLITS) { sum += v13; }
    if (s + 14u < SPLITS) { sum += v14; }
    if (s + 15u < SPLITS) { sum += v15; }
  }
  return sum;
}

// split_sum(a) and split_sum(b) in one walk, so that both columns' loads go out together (SwiGLU's gate and up:
// as two walks, the second's loads waited for the first's). Each column added in split order.
fn split_sum2(a: u32, b: u32, stride: u32) -> vec2<f32> {
  let last = SPLITS - 1u;
  var sum = vec2<f32>(0.0);
  for (var s = 0u; s < SPLITS; s += 8u) {
    let r0 = min(s, last) * stride;
    let r1 = min(s + 1u, last) * stride;
    let r2 = min(s + 2u, last) * stride;
    let r3 = min(s + 3u, last) * stride;
    let r4 = min(s + 4u, last) * stride;
    let r5 = min(s + 5u, last) * stride;
    let r6 = min(s + 6u, last) * stride;
    let r7 = min(s + 7u, last) * stride;
    let v0 = vec2<f32>(partials[r0 + a], partials[r0 + b]);
    let v1 = vec2<f32>(partials[r1 + a], partials[r1 + b]);
    let v2 = vec2<f32>(partials[r2 + a], partials[r2 + b]);
    let v3 = vec2<f32>(partials[r3 + a], partials[r3 + b]);
    let v4 = vec2<f32>(partials[r4 + a], partials[r4 + b]);
    let v5 = vec2<f32>(partials[r5 + a], partials[r5 + b]);
    let v6 = vec2<f32>(partials[r6 + a], partials[r6 + b]);
    let v7 = vec2<f32>(partials[r7 + a], partials[r7 + b]);
    sum += v0;
    if (s + 1u < SPLITS) { sum += v1; }
    if (s + 2u < SPLITS) { sum += v2; }
    if (s + 3u < SPLITS) { sum += v3; }
    if (s + 4u < SPLITS) { sum += v4; }
    if (s + 5u < SPLITS) { sum += v5; }
    if (s + 6u < SPLITS) { sum += v6; }
    if (s + 7u < SPLITS) { sum += v7; }
  }
  return sum;
}
