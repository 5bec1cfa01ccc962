// Prefill GEMM over the same transposed f16 weights as gemv.wgsl: y[m][n] = sum_k x[m][k] * wt[k][n].
// TMx64 output tiles (TM 64 or 16), 16x16 threads of RPTx4 outputs (named registers, not an indexed array),
// K in steps of BK through workgroup memory; each step's tiles are loaded into registers while the previous
// step computes, so a step costs its arithmetic, not a global round trip (few rows are latency-bound).
// Workgroup x indexes column tiles of the segments (as in gemv.wgsl), y indexes row tiles.
// SPARSE applies the TEAL mask to x as it is loaded (sparse prefill and perplexity evaluation).
// bindings: 0 params (uniform), 1 x (f32 [M][K], read), 2 wt (u32 = 2 f16, segment blocks, read),
//           3 y (f32 [M][ldy], read_write), 4 bias (f32, read), 5 thresholds (f32, read),
//           6 scales (f32 [nseg][K], read), 7 counters (atomic u32: kept (row, channel) pairs per segment)
override SPARSE: bool = false;
override ACCUM: bool = false;  // y += result (residual add)
override BIAS: bool = false;
// split-K (few rows, where the K loop's latency dominates): y gets the partial tile of split z,
// y[(z * M + m) * ncols + column]; splitk_sum.wgsl adds the splits and applies BIAS and ACCUM
override SPLITK: bool = false;
const BK: u32 = 32u;
// rows per tile: 64 (4 a thread), or 16 (1 a thread) for passes of few rows, which would otherwise compute
// 64 rows of which most are padding
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

var<workgroup> xs: array<f32, 2048>;  // [TM rows][BK]
var<workgroup> ws: array<f32, 2048>;  // [BK][64 cols]
var<workgroup> kept: atomic<u32>;

// One K step's share of a thread: XPT (8 or 2) inputs (x of TM rows x BK, TEAL-masked when SPARSE) and 4 weight words
// (BK rows x 64 columns of f16 pairs), and how many inputs the mask kept.
struct Step {
  x0: f32, x1: f32, x2: f32, x3: f32, x4: f32, x5: f32, x6: f32, x7: f32,
  w0: u32, w1: u32, w2: u32, w3: u32,
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

fn load_w(t: u32, i: u32, k0: u32, ke: u32, col0: u32, seg: Seg) -> u32 {
  let idx = t + i * 256u;
  let k = k0 + idx / 32u;
  let col = col0 + (idx % 32u) * 2u;
  if (k < ke && col < seg.stride) { return wt[(seg.base + k * seg.stride + col) / 2u]; }
  return 0u;
}

fn load_step(t: u32, k0: u32, ke: u32, row0: u32, col0: u32, s: u32, seg: Seg, thr: f32) -> Step {
  var kept = 0u;
  let x0 = load_x(t, 0u, k0, ke, row0, s, thr, &kept);
  let x1 = load_x(t, 1u, k0, ke, row0, s, thr, &kept);
  var x2 = 0.0;
  var x3 = 0.0;
  var x4 = 0.0;
  var x5 = 0.0;
  var x6 = 0.0;
  var x7 = 0.0;
  if (XPT == 8u) {
    x2 = load_x(t, 2u, k0, ke, row0, s, thr, &kept);
    x3 = load_x(t, 3u, k0, ke, row0, s, thr, &kept);
    x4 = load_x(t, 4u, k0, ke, row0, s, thr, &kept);
    x5 = load_x(t, 5u, k0, ke, row0, s, thr, &kept);
    x6 = load_x(t, 6u, k0, ke, row0, s, thr, &kept);
    x7 = load_x(t, 7u, k0, ke, row0, s, thr, &kept);
  }
  return Step(x0, x1, x2, x3, x4, x5, x6, x7, load_w(t, 0u, k0, ke, col0, seg), load_w(t, 1u, k0, ke, col0, seg),
    load_w(t, 2u, k0, ke, col0, seg), load_w(t, 3u, k0, ke, col0, seg), kept);
}

fn store_w(t: u32, i: u32, w: u32) {
  let idx = t + i * 256u;
  let v = unpack2x16float(w);
  let at = (idx / 32u) * 64u + (idx % 32u) * 2u;
  ws[at] = v.x;
  ws[at + 1u] = v.y;
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
    xs[t + 256u] = st.x1;
    if (XPT == 8u) {
      xs[t + 512u] = st.x2;
      xs[t + 768u] = st.x3;
      xs[t + 1024u] = st.x4;
      xs[t + 1280u] = st.x5;
      xs[t + 1536u] = st.x6;
      xs[t + 1792u] = st.x7;
    }
    store_w(t, 0u, st.w0);
    store_w(t, 1u, st.w1);
    store_w(t, 2u, st.w2);
    store_w(t, 3u, st.w3);
    // #include matmul_step
  }

  // #include matmul_out
}
