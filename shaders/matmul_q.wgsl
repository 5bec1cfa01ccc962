// Prefill GEMM over group-quantized weights (int8 / int4, layout of gemv_q.wgsl): matmul.wgsl's contract
// (64x64 tiles, SPARSE mask with counters, ACCUM, BIAS) with each weight tile dequantized as it is staged in
// workgroup memory: every thread loads 4 consecutive outputs of one row (inside one group) and their scale.
// As in matmul.wgsl, the accumulators are named registers and each K step's loads go out while the previous
// step computes.
// bindings: 0 params (uniform), 1 x (f32 [M][K], read), 2 wt (u32 words, segment blocks, read),
//           3 y (f32 [M][ldy], read_write), 4 bias (f32, read), 5 thresholds (f32, read),
//           6 scales (f32 [nseg][K], read), 7 counters (atomic u32: kept (row, channel) pairs per segment)
override BITS: u32 = 8u;     // 8 or 4
override GROUP: u32 = 128u;  // outputs per scale
override SPARSE: bool = false;
override ACCUM: bool = false;  // y += result (residual add)
override BIAS: bool = false;
// split-K (few rows, where the K loop's latency dominates): y gets the partial tile of split z,
// y[(z * M + m) * ncols + column]; splitk_sum.wgsl adds the splits and applies BIAS and ACCUM
override SPLITK: bool = false;
const BK: u32 = 16u;
// rows per tile: 64 (4 a thread), or 16 (1 a thread) for passes of few rows (matmul.wgsl)
override TM: u32 = 64u;
override RPT: u32 = TM / 16u;     // rows per thread
override XPT: u32 = TM * BK / 256u;  // inputs each thread stages per K step

// #include gemm_params
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> thresholds: array<f32>;
@group(0) @binding(6) var<storage, read> scales: array<f32>;
@group(0) @binding(7) var<storage, read_write> counters: array<atomic<u32>>;

var<workgroup> xs: array<f32, 1024>;  // [TM rows][BK]
var<workgroup> ws: array<f32, 1024>;  // [BK][64 cols]
var<workgroup> kept: atomic<u32>;

// One K step's share of a thread: 4 inputs (TEAL-masked when SPARSE), the code word and metadata word of its 4
// outputs of one weight row, and how many inputs the mask kept.
struct Step {
  x0: f32, x1: f32, x2: f32, x3: f32,
  q: u32,
  m: u32,
  kept: u32,
}

fn load_x(t: u32, i: u32, k0: u32, ke: u32, row0: u32, s: u32, thr: f32, kept: ptr<function, u32>) -> f32 {
  let idx = t + i * 256u;
  let r = idx / BK;
  let k = k0 + idx % BK;
  var v = 0.0;
  if (row0 + r < p.M && k < ke) {
    v = x[(row0 + r) * p.K + k];
    if (SPARSE) {
      if (abs(v) * scales[s * p.K + k] > thr) { *kept += 1u; } else { v = 0.0; }
    }
  }
  return v;
}

fn load_step(t: u32, k0: u32, ke: u32, row0: u32, col0: u32, s: u32, seg: Seg, thr: f32) -> Step {
  var kept = 0u;
  let x0 = load_x(t, 0u, k0, ke, row0, s, thr, &kept);
  var x1 = 0.0;
  var x2 = 0.0;
  var x3 = 0.0;
  if (XPT == 4u) {
    x1 = load_x(t, 1u, k0, ke, row0, s, thr, &kept);
    x2 = load_x(t, 2u, k0, ke, row0, s, thr, &kept);
    x3 = load_x(t, 3u, k0, ke, row0, s, thr, &kept);
  }
  let k = k0 + t / 16u;
  let col = col0 + (t % 16u) * 4u;
  var q = 0u;
  var m = 0u;
  if (k < ke && col < seg.len) {
    let row = seg.base + k * seg.stride;
    let g = col / GROUP;
    if (BITS == 8u) {
      q = wt[row + col / 4u];
      m = wt[row + seg.scale0 + g / 2u];
    } else {
      q = wt[row + col / 8u];
      m = wt[row + seg.scale0 + g];
    }
  }
  return Step(x0, x1, x2, x3, q, m, kept);
}

// The 4 weights of a step's code and metadata words (0 past the matrix: both words 0 decode to 0).
fn dequant(st: Step, col0: u32, t: u32) -> vec4<f32> {
  let col = col0 + (t % 16u) * 4u;
  let g = col / GROUP;
  if (BITS == 8u) {
    let q = (vec4<i32>(bitcast<i32>(st.q)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
    let sc = unpack2x16float(st.m);
    return vec4<f32>(q) * select(sc.x, sc.y, (g & 1u) == 1u);
  }
  let sh = (col % 8u) * 4u;
  let q = (vec4<u32>(st.q) >> (vec4<u32>(0u, 4u, 8u, 12u) + sh)) & vec4<u32>(15u);
  let so = unpack2x16float(st.m);
  return vec4<f32>(q) * so.x + so.y;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  var s = 0u;
  if (p.nseg > 1u && wid.x >= p.seg[1].tile0) { s = 1u; }
  if (p.nseg > 2u && wid.x >= p.seg[2].tile0) { s = 2u; }
  let seg = p.seg[s];
  let thr = thresholds[seg.thr];
  let col0 = (wid.x - seg.tile0) * 64u;  // first column of the tile within the segment
  let row0 = wid.y * TM;
  let tx = t % 16u;
  let ty = t / 16u;
  var a0 = vec4<f32>(0.0);
  var a1 = vec4<f32>(0.0);
  var a2 = vec4<f32>(0.0);
  var a3 = vec4<f32>(0.0);
  var my_kept = 0u;

  let kb = wid.z * p.klen;
  let ke = min(p.K, kb + p.klen);
  var st = load_step(t, kb, ke, row0, col0, s, seg, thr);
  for (var k0 = kb; k0 < ke; k0 += BK) {
    xs[t] = st.x0;
    if (XPT == 4u) {
      xs[t + 256u] = st.x1;
      xs[t + 512u] = st.x2;
      xs[t + 768u] = st.x3;
    }
    let w = dequant(st, col0, t);
    let c4 = (t % 16u) * 4u;
    let kr = (t / 16u) * 64u;
    ws[kr + c4] = w.x;
    ws[kr + c4 + 1u] = w.y;
    ws[kr + c4 + 2u] = w.z;
    ws[kr + c4 + 3u] = w.w;
    // #include matmul_step
  }

  // #include matmul_out
}
