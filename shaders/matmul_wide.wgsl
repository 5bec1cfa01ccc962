// Prefill GEMM for passes of many rows, over the same transposed f16 weights as matmul.wgsl:
// y[m][n] = sum_k x[m][k] * wt[k][n]. Output tiles of TM = 16 * RM rows (64 or 128) x 128 columns; 256 threads
// in 16x16, each RM rows x 8 columns (columns tx*4.. and 64 + tx*4..) in named vec4 registers. K goes in steps
// of BK through workgroup memory, the next step's tiles loaded into registers during this step's arithmetic.
// Per input a thread reads RM/4 + 2 vec4 from workgroup memory for RM * 8 FMAs (matmul.wgsl's 4x4 threads read
// 8 scalars for 16), so the arithmetic, not workgroup memory, bounds it. x rows are read as vec4: K % 4 == 0.
// Workgroup x indexes column tiles of the segments (as in matmul.wgsl), y indexes row tiles.
// SPARSE applies the TEAL mask to x as it is loaded (sparse prefill and perplexity evaluation).
// bindings: 0 params (uniform, matmul.wgsl's), 1 x (f32 [M][K] as vec4, read), 2 wt (8 f16 a vec4<u32>,
//           segment blocks, read), 3 y (f32 [M][ldy], read_write), 4 bias (f32, read), 5 thresholds (f32,
//           read), 6 scales (f32 [nseg][K] as vec4, read), 7 counters (atomic u32: kept (row, channel) pairs)
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
@group(0) @binding(2) var<storage, read> wt: array<vec4<u32>>;
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

// weights of input k, columns col..col+7 of the segment (zero past K or the segment's block)
fn load_w(k: u32, col: u32, seg: Seg) -> vec4<u32> {
  if (k >= p.K || col >= seg.stride) { return vec4<u32>(0u); }
  return wt[(seg.base + k * seg.stride + col) / 8u];
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

struct Step {
  x0: vec4<f32>,
  x1: vec4<f32>,
  w: vec4<u32>,
  kept: u32,
}

fn load_step(t: u32, k0: u32, row0: u32, col0: u32, s: u32, seg: Seg, thr: f32) -> Step {
  var kept = 0u;
  let x0 = load_x(row0 + t / 4u, k0 + (t % 4u) * 4u, s, thr, &kept);
  var x1 = vec4<f32>(0.0);
  if (RM == 8u) { x1 = load_x(row0 + (t + 256u) / 4u, k0 + (t % 4u) * 4u, s, thr, &kept); }
  // BK inputs x 128 columns: 16 vec4<u32> an input, one a thread
  let w = load_w(k0 + t / 16u, col0 + (t % 16u) * 8u, seg);
  return Step(x0, x1, w, kept);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  // #include matmul_wide_begin
  var my_kept = 0u;

  var st = load_step(t, 0u, row0, col0, s, seg, thr);
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    store_x(t, 0u, st.x0);
    if (RM == 8u) { store_x(t, 1u, st.x1); }
    let wk = t / 16u;
    let wc = (t % 16u) * 2u;
    let lo = unpack2x16float(st.w.x);
    let lo2 = unpack2x16float(st.w.y);
    let hi = unpack2x16float(st.w.z);
    let hi2 = unpack2x16float(st.w.w);
    ws[wk * 32u + wc] = vec4<f32>(lo, lo2);
    ws[wk * 32u + wc + 1u] = vec4<f32>(hi, hi2);
    my_kept += st.kept;
    workgroupBarrier();
    // the next step's loads go out before this step's arithmetic
    if (k0 + BK < p.K) { st = load_step(t, k0 + BK, row0, col0, s, seg, thr); }
    // #include matmul_wide_fma
    workgroupBarrier();
  }

  // #include matmul_wide_out
}
