// The decode GEMVs' staging memory and the functions over it (gemv_body.wgsl, gemv_q_body.wgsl include it after
// gemv_finish): a chunk's inputs (act_val) and active channels (act_idx), the compaction's scan, the column
// sums' reduction (red); the fused input of a channel, and the j-th row walked with its input value.
var<workgroup> act_idx: array<u32, KCHUNK>;
var<workgroup> act_val: array<f32, KCHUNK>;
var<workgroup> scan: array<u32, WG>;
var<workgroup> red: array<f32, WG * 8u>;  // KG * TILE_N (f16 kernels); eight columns a thread a pass (quantized)

fn input(k: u32, inv_rms: f32) -> f32 {
  if (INPUT == 1u) { return x[k] * inv_rms * aux[k]; }
  if (INPUT == 2u) {
    // AUX_SPLITS is a constant so the loop unrolls and its loads are all in flight at once: a loop bound read
    // from the uniform left them one L2 round trip apart (about 20 us per down GEMV at 8B shapes)
    var g = 0.0;
    var u = 0.0;
    let half_cols = p.auxCols / 2u;
    for (var s = 0u; s < AUX_SPLITS; s++) {
      g += aux[s * p.auxCols + k];
      u += aux[s * p.auxCols + half_cols + k];
    }
    return g / (1.0 + exp(-g)) * u;
  }
  return x[k];
}

// The channel a thread stages at place e of its trips (clamped to the position's last and the chunk's last):
// sparse, each thread takes PER consecutive channels (the compaction keeps them in order); dense, channel
// t + e * WG.
fn first_channel(t: u32, e: u32, k_base: u32, n_k: u32) -> u32 {
  let ec = min(e, PER - 1u);
  if (SPARSE) { return k_base + min(t * PER + ec, n_k - 1u); }
  return k_base + min(t + ec * WG, n_k - 1u);
}

// input(k), with INPUT 1's x[k] and norm weight given in `xa` when `first` (loaded before the RMSNorm's scale
// was known).
fn staged_input(k: u32, inv_rms: f32, first: bool, xa: vec2<f32>) -> f32 {
  if (INPUT == 1u && first) { return xa.x * inv_rms * xa.y; }
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
