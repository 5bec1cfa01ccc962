// Few-row GEMM over transposed f16 weights, for prefill passes of at most 16 rows (and the speculative verify
// pass): part[split][m][n] = sum over the split's input channels k of x[m][k] * wt[k][n], m < ROWS. It is
// gemv.wgsl's layout and split over K with every weight row read once for all ROWS rows; the tiled GEMM
// (matmul.wgsl) reads at a few rows like a chain of small tiles, far from the bandwidth a GEMV reaches.
// splitk_sum.wgsl then adds the splits and applies bias / residual add.
// Workgroup (tile, split) owns TILE_N = TPR * 4 columns of one segment and input channels
// [split * KCHUNK, (split + 1) * KCHUNK), whose ROWS rows of x it stages in workgroup memory. Each thread loads
// four f16 (one vec2<u32>) of a channel's row, UNROLL channels in flight, and keeps one vec4 accumulator per row
// (named private variables: an array of accumulators may go to memory).
// bindings: 0 params (uniform), 1 x (f32 [ROWS][K], read), 2 wt (vec2<u32> = 4 f16, segment blocks, read),
//           3 part (f32 [splits][ROWS][ncols], write)
override ROWS: u32 = 4u;     // 1..16
override TPR: u32 = 64u;     // threads per column group
override KCHUNK: u32 = 256u;
override WG: u32 = 256u;
override UNROLL: u32 = 4u;   // channels in flight per thread: 4 or 8
override KG: u32 = WG / TPR;
override TILE_N: u32 = TPR * 4u;

// #include segment
struct Params {
  K: u32,
  ncols: u32,  // columns of part (all segments)
  nseg: u32,
  _pad: u32,
  seg: array<Seg, 3>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>;

var<workgroup> xs: array<f32, ROWS * KCHUNK>;
var<workgroup> red: array<f32, WG * 4u>;  // KG * TILE_N

var<private> a0: vec4<f32>;
var<private> a1: vec4<f32>;
var<private> a2: vec4<f32>;
var<private> a3: vec4<f32>;
var<private> a4: vec4<f32>;
var<private> a5: vec4<f32>;
var<private> a6: vec4<f32>;
var<private> a7: vec4<f32>;
var<private> a8: vec4<f32>;
var<private> a9: vec4<f32>;
var<private> a10: vec4<f32>;
var<private> a11: vec4<f32>;
var<private> a12: vec4<f32>;
var<private> a13: vec4<f32>;
var<private> a14: vec4<f32>;
var<private> a15: vec4<f32>;

fn f4(w: vec2<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }

// acc_m += x[m][j] * w for every row m (the tests on ROWS fold away)
fn fma_rows(j: u32, w: vec4<f32>) {
  a0 += xs[j] * w;
  if (ROWS > 1u) { a1 += xs[KCHUNK + j] * w; }
  if (ROWS > 2u) { a2 += xs[2u * KCHUNK + j] * w; }
  if (ROWS > 3u) { a3 += xs[3u * KCHUNK + j] * w; }
  if (ROWS > 4u) { a4 += xs[4u * KCHUNK + j] * w; }
  if (ROWS > 5u) { a5 += xs[5u * KCHUNK + j] * w; }
  if (ROWS > 6u) { a6 += xs[6u * KCHUNK + j] * w; }
  if (ROWS > 7u) { a7 += xs[7u * KCHUNK + j] * w; }
  if (ROWS > 8u) { a8 += xs[8u * KCHUNK + j] * w; }
  if (ROWS > 9u) { a9 += xs[9u * KCHUNK + j] * w; }
  if (ROWS > 10u) { a10 += xs[10u * KCHUNK + j] * w; }
  if (ROWS > 11u) { a11 += xs[11u * KCHUNK + j] * w; }
  if (ROWS > 12u) { a12 += xs[12u * KCHUNK + j] * w; }
  if (ROWS > 13u) { a13 += xs[13u * KCHUNK + j] * w; }
  if (ROWS > 14u) { a14 += xs[14u * KCHUNK + j] * w; }
  if (ROWS > 15u) { a15 += xs[15u * KCHUNK + j] * w; }
}

fn acc(m: u32) -> vec4<f32> {
  switch (m) {
    case 0u: { return a0; }
    case 1u: { return a1; }
    case 2u: { return a2; }
    case 3u: { return a3; }
    case 4u: { return a4; }
    case 5u: { return a5; }
    case 6u: { return a6; }
    case 7u: { return a7; }
    case 8u: { return a8; }
    case 9u: { return a9; }
    case 10u: { return a10; }
    case 11u: { return a11; }
    case 12u: { return a12; }
    case 13u: { return a13; }
    case 14u: { return a14; }
    default: { return a15; }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  // #include gemv_split

  // stage x[m][k_base ..] for every row; channels past K are zeros
  for (var i = t; i < ROWS * KCHUNK; i += WG) {
    let kk = i % KCHUNK;
    let v = x[(i / KCHUNK) * p.K + k_base + min(kk, n_k - 1u)];
    xs[i] = select(0.0, v, kk < n_k);
  }
  workgroupBarrier();

  let c = t % TPR;
  let kg = t / TPR;
  let col = (tile - seg.tile0) * TILE_N + c * 4u;
  if (col < seg.len) {
    // the block's columns are padded to a multiple of 8 with zeros: all four are readable
    let vs = seg.stride / 4u;
    let w_col = (seg.base + col) / 4u;
    var j = kg;
    if (UNROLL == 8u) {
      for (; j + 7u * KG < n_k; j += 8u * KG) {
        let w0 = wt[(k_base + j) * vs + w_col];
        let w1 = wt[(k_base + j + KG) * vs + w_col];
        let w2 = wt[(k_base + j + 2u * KG) * vs + w_col];
        let w3 = wt[(k_base + j + 3u * KG) * vs + w_col];
        let w4 = wt[(k_base + j + 4u * KG) * vs + w_col];
        let w5 = wt[(k_base + j + 5u * KG) * vs + w_col];
        let w6 = wt[(k_base + j + 6u * KG) * vs + w_col];
        let w7 = wt[(k_base + j + 7u * KG) * vs + w_col];
        fma_rows(j, f4(w0));
        fma_rows(j + KG, f4(w1));
        fma_rows(j + 2u * KG, f4(w2));
        fma_rows(j + 3u * KG, f4(w3));
        fma_rows(j + 4u * KG, f4(w4));
        fma_rows(j + 5u * KG, f4(w5));
        fma_rows(j + 6u * KG, f4(w6));
        fma_rows(j + 7u * KG, f4(w7));
      }
    }
    for (; j + 3u * KG < n_k; j += 4u * KG) {
      let w0 = wt[(k_base + j) * vs + w_col];
      let w1 = wt[(k_base + j + KG) * vs + w_col];
      let w2 = wt[(k_base + j + 2u * KG) * vs + w_col];
      let w3 = wt[(k_base + j + 3u * KG) * vs + w_col];
      fma_rows(j, f4(w0));
      fma_rows(j + KG, f4(w1));
      fma_rows(j + 2u * KG, f4(w2));
      fma_rows(j + 3u * KG, f4(w3));
    }
    for (; j < n_k; j += KG) { fma_rows(j, f4(wt[(k_base + j) * vs + w_col])); }
  }

  // per row: add the KG channel groups' sums of each column, then write the tile's partial sums
  let r = kg * TILE_N + c * 4u;
  for (var m = 0u; m < ROWS; m++) {
    let a = acc(m);
    red[r] = a.x; red[r + 1u] = a.y; red[r + 2u] = a.z; red[r + 3u] = a.w;
    workgroupBarrier();
    for (var ct = t; ct < TILE_N; ct += WG) {
      let cl = (tile - seg.tile0) * TILE_N + ct;
      if (cl < seg.len) {
        var sum = 0.0;
        for (var g = 0u; g < KG; g++) { sum += red[g * TILE_N + ct]; }
        part[(split * ROWS + m) * p.ncols + seg.out + cl] = sum;
      }
    }
    workgroupBarrier();
  }
}
