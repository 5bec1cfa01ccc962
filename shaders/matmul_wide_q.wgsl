// Prefill GEMM for passes of many rows over group-quantized weights (int8 / int4, layout of gemv_q.wgsl and
// matmul_q.wgsl): matmul_wide.wgsl's structure and contract (tiles of TM = 16 * RM rows (64 or 128) x 128
// columns, 256 threads each RM rows x 8 columns in named vec4 registers, K in steps of BK through workgroup
// memory with the next step's loads in registers during this step's arithmetic; SPARSE mask with counters,
// ACCUM, BIAS; no split-K: few rows take matmul_q.wgsl). Each 16-input x 128-column weight tile is dequantized
// to f32 as it is staged: a thread takes 8 consecutive outputs of one input row (int8: 2 code words, int4: 1)
// and the metadata word of their group (8 outputs aligned to 8 never cross a group: GROUP >= 32). The raw
// words, not the dequantized values, wait in registers, so the prefetch costs 3 registers, not 8.
// x rows are read as vec4: K % 4 == 0. Workgroup x indexes column tiles of the segments, y indexes row tiles.
// bindings: 0 params (uniform, matmul_q.wgsl's), 1 x (f32 [M][K] as vec4, read), 2 wt (u32 words, segment
//           blocks, read), 3 y (f32 [M][ldy], read_write), 4 bias (f32, read), 5 thresholds (f32, read),
//           6 scales (f32 [nseg][K] as vec4, read), 7 counters (atomic u32: kept (row, channel) pairs)
override BITS: u32 = 8u;     // 8 or 4
override GROUP: u32 = 128u;  // outputs per scale (32, 64 or 128)
override SPARSE: bool = false;
override ACCUM: bool = false;  // y += result (residual add)
override BIAS: bool = false;
override RM: u32 = 8u;  // rows per thread: 8 (128-row tiles) or 4 (64-row tiles, for passes of fewer rows)
const BK: u32 = 16u;
// a K step's x tile, [BK][TM rows] in vec4 of 4 rows; rows of 33 vec4, not 32, so that the stores of
// neighbouring threads (one row, four inputs each) fall in different banks
const XROW: u32 = 33u;

// #include gemm_params
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> wt: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> thresholds: array<f32>;
@group(0) @binding(6) var<storage, read> scales: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> counters: array<atomic<u32>>;

var<workgroup> xs: array<vec4<f32>, 528>;  // [BK][XROW]
var<workgroup> ws: array<vec4<f32>, 512>;  // [BK][32]: 128 columns
var<workgroup> kept: atomic<u32>;

// x inputs k..k+3 of row m (zero past the rows or K), TEAL-masked when SPARSE; kept counts what the mask kept
fn load_x(m: u32, k: u32, s: u32, thr: f32, kept: ptr<function, u32>) -> vec4<f32> {
  // #include matmul_wide_x
}

// Code words (int8: two, int4: one and 0) and metadata word of outputs col..col+7 of input k. Zero past K and
// past the segment's outputs: the stride's words after the codes are metadata, not outputs. A block of 8 that
// straddles len stays inside the codes (padded to a whole group); its columns past len are never stored.
fn load_w(k: u32, col: u32, seg: Seg) -> vec3<u32> {
  if (k >= p.K || col >= seg.len) { return vec3<u32>(0u); }
  let row = seg.base + k * seg.stride;
  let g = col / GROUP;
  if (BITS == 8u) {
    return vec3<u32>(wt[row + col / 4u], wt[row + col / 4u + 1u], wt[row + seg.scale0 + g / 2u]);
  }
  return vec3<u32>(wt[row + col / 8u], 0u, wt[row + seg.scale0 + g]);
}

// a thread's x share of a K step: TM rows x BK inputs is TM * 4 vec4, one (RM 4) or two (RM 8) a thread;
// four neighbouring threads take one row, so a warp reads 8 rows of 64 contiguous bytes
fn store_x(t: u32, i: u32, v: vec4<f32>) {
  let idx = t + i * 256u;
  let m = idx / 4u;
  let k = (idx % 4u) * 4u;
  let at = m / 4u;
  let c = m % 4u;
  xs[k * XROW + at][c] = v.x;
  xs[(k + 1u) * XROW + at][c] = v.y;
  xs[(k + 2u) * XROW + at][c] = v.z;
  xs[(k + 3u) * XROW + at][c] = v.w;
}

// the 4 signed bytes of an int8 code word, low byte first
fn int8x4(q: u32) -> vec4<f32> {
  return vec4<f32>((vec4<i32>(bitcast<i32>(q)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Stages a thread's 8 weights of a K step in ws as f32, dequantized as matmul_q.wgsl's `dequant` does (words
// of 0 past the matrix decode to 0): int8 q * scale (the group's f16 of the pair in the metadata word), int4
// q * scale + offset (the word's f16 pair).
fn store_w(t: u32, w: vec3<u32>, g: u32) {
  let at = (t / 16u) * 32u + (t % 16u) * 2u;
  let mw = unpack2x16float(w.z);
  if (BITS == 8u) {
    let sc = select(mw.x, mw.y, (g & 1u) == 1u);
    ws[at] = int8x4(w.x) * sc;
    ws[at + 1u] = int8x4(w.y) * sc;
  } else {
    let q = vec4<u32>(w.x);
    ws[at] = vec4<f32>((q >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) * mw.x + mw.y;
    ws[at + 1u] = vec4<f32>((q >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)) * mw.x + mw.y;
  }
}

struct Step {
  x0: vec4<f32>,
  x1: vec4<f32>,
  w: vec3<u32>,
  kept: u32,
}

fn load_step(t: u32, k0: u32, row0: u32, col: u32, s: u32, seg: Seg, thr: f32) -> Step {
  var kept = 0u;
  let x0 = load_x(row0 + t / 4u, k0 + (t % 4u) * 4u, s, thr, &kept);
  var x1 = vec4<f32>(0.0);
  if (RM == 8u) { x1 = load_x(row0 + (t + 256u) / 4u, k0 + (t % 4u) * 4u, s, thr, &kept); }
  // BK inputs x 128 columns: 16 threads of 8 outputs an input
  let w = load_w(k0 + t / 16u, col, seg);
  return Step(x0, x1, w, kept);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  // #include matmul_wide_begin
  // the 8 outputs this thread stages each step, and their group
  let wcol = col0 + tx * 8u;
  let wg = wcol / GROUP;
  var my_kept = 0u;

  var st = load_step(t, 0u, row0, wcol, s, seg, thr);
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    store_x(t, 0u, st.x0);
    if (RM == 8u) { store_x(t, 1u, st.x1); }
    store_w(t, st.w, wg);
    my_kept += st.kept;
    workgroupBarrier();
    // the next step's loads go out before this step's arithmetic
    if (k0 + BK < p.K) { st = load_step(t, k0 + BK, row0, wcol, s, seg, thr); }
    // #include matmul_wide_fma
    workgroupBarrier();
  }

  // #include matmul_wide_out
}
