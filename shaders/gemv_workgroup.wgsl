// The decode GEMVs' staging memory and the functions over it (gemv_body.wgsl, gemv_q_body.wgsl include it after
// gemv_finish): a chunk's inputs (act_val) and active channels (act_idx), the compaction's scan, the column
// sums' reduction (red); the fused input of a channel, and the j-th row walked with its input value.
var<workgroup> act_idx: array<u32, KCHUNK>;
var<workgroup> act_val: array<f32, KCHUNK>;
var<workgroup> scan: array<u32, WG>;
var<workgroup> red: array<f32, WG * 8u>;  // KG * TILE_N (f16 kernels); eight columns a thread a pass (quantized)

fn input(k: u32, inv_rms: f32) -> f32 {
  if (INPUT == 1u) { return x[k] * inv_rms * aux[k]; }
  if (INPUT == 2u) { return swiglu_of(gate_up(k)); }
  return x[k];
}

// INPUT 2: channel k's gate and up, each summed over the gate|up GEMV's splits in split order (as reduce.wgsl's
// SwiGLU pass adds them), four splits' loads at a time (past the last clamped, not added): as a loop of one
// split a trip their loads waited for each other.
fn gate_up(k: u32) -> vec2<f32> {
  let half_cols = p.auxCols / 2u;
  let last = AUX_SPLITS - 1u;
  var gu = vec2<f32>(0.0);
  for (var s = 0u; s < AUX_SPLITS; s += 4u) {
    let r0 = min(s, last) * p.auxCols + k;
    let r1 = min(s + 1u, last) * p.auxCols + k;
    let r2 = min(s + 2u, last) * p.auxCols + k;
    let r3 = min(s + 3u, last) * p.auxCols + k;
    let v0 = vec2<f32>(aux[r0], aux[r0 + half_cols]);
    let v1 = vec2<f32>(aux[r1], aux[r1 + half_cols]);
    let v2 = vec2<f32>(aux[r2], aux[r2 + half_cols]);
    let v3 = vec2<f32>(aux[r3], aux[r3 + half_cols]);
    gu += v0;
    if (s + 1u < AUX_SPLITS) { gu += v1; }
    if (s + 2u < AUX_SPLITS) { gu += v2; }
    if (s + 3u < AUX_SPLITS) { gu += v3; }
  }
  return gu;
}

fn swiglu_of(gu: vec2<f32>) -> f32 { return gu.x / (1.0 + exp(-gu.x)) * gu.y; }

// The channel a thread stages at place e of its trips (clamped to the position's last and the chunk's last):
// sparse, each thread takes PER consecutive channels (the compaction keeps them in order); dense, channel
// t + e * WG.
fn first_channel(t: u32, e: u32, k_base: u32, n_k: u32) -> u32 {
  let ec = min(e, PER - 1u);
  if (SPARSE) { return k_base + min(t * PER + ec, n_k - 1u); }
  return k_base + min(t + ec * WG, n_k - 1u);
}

// input(k), with what the first trip loaded early given in `xa` when `first`: INPUT 1, x[k] and the norm weight
// (loaded before the RMSNorm's scale was known); INPUT 2, the channel's gate and up sums.
fn staged_input(k: u32, inv_rms: f32, first: bool, xa: vec2<f32>) -> f32 {
  if (INPUT == 1u && first) { return xa.x * inv_rms * xa.y; }
  if (INPUT == 2u && first) { return swiglu_of(xa); }
  return input(k, inv_rms);
}

// The count r * off places before thread t's in the compaction's scan (0 before the first).
fn scan_read(t: u32, r: u32, off: u32) -> u32 {
  return select(0u, scan[max(t, r * off) - r * off], t >= r * off);
}

// Column i's sum over the KG row groups' partial sums in red (group g's at g * stride + i), added in group order,
// read eight at a time: as a loop of one read a trip, NVIDIA's compiler left the reads one round trip apart.
fn row_groups_sum(i: u32, stride: u32) -> f32 {
  var sum = 0.0;
  for (var g = 0u; g < KG; g += 8u) {
    let r0 = red[g * stride + i];
    let r1 = red[min(g + 1u, KG - 1u) * stride + i];
    let r2 = red[min(g + 2u, KG - 1u) * stride + i];
    let r3 = red[min(g + 3u, KG - 1u) * stride + i];
    let r4 = red[min(g + 4u, KG - 1u) * stride + i];
    let r5 = red[min(g + 5u, KG - 1u) * stride + i];
    let r6 = red[min(g + 6u, KG - 1u) * stride + i];
    let r7 = red[min(g + 7u, KG - 1u) * stride + i];
    sum += r0;
    if (g + 1u < KG) { sum += r1; }
    if (g + 2u < KG) { sum += r2; }
    if (g + 3u < KG) { sum += r3; }
    if (g + 4u < KG) { sum += r4; }
    if (g + 5u < KG) { sum += r5; }
    if (g + 6u < KG) { sum += r6; }
    if (g + 7u < KG) { sum += r7; }
  }
  return sum;
}

// Input channel of the j-th row walked: the j-th active channel when sparse, else the chunk's j-th.
fn row(j: u32, k_base: u32) -> u32 {
  if (SPARSE) { return act_idx[j]; }
  return k_base + j;
}

// Input value of the j-th row walked: staged at its channel's place in the chunk, dense or sparse (so the
// compaction moves only indices and the chunk needs 8 bytes of workgroup memory a channel, not 12).
fn val(j: u32, k_base: u32) -> f32 {
  if (SPARSE) { return act_val[act_idx[j] - k_base]; }
  return act_val[j];
}

// Walk position j, clamped below `lim` in the walk's last, partial trip (`tail`): the trip's positions past
// the rows left re-read the last one (a cache hit) and add it with the value 0, so the tail is one round trip
// with no branch, where a row at a time took one a row (up to UNROLL - 1 more in every sparse chunk).
fn at(j: u32, tail: bool, lim: u32) -> u32 {
  return select(j, min(j, lim - 1u), tail);
}

// val(j); 0 past `lim` in a tail trip.
fn val_at(j: u32, k_base: u32, tail: bool, lim: u32) -> f32 {
  return select(val(at(j, tail, lim), k_base), 0.0, tail && j >= lim);
}
