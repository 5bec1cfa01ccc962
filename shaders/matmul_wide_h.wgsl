enable f16;
// Prefill GEMM for passes of many rows in f16 arithmetic, over the transposed f16 weights (an opt-in variant of
// matmul_wide.wgsl, MATMUL_WIDE.half; a module of its own because `enable f16` compiles only on devices with
// the shader-f16 feature). Why: the f32 kernel is bound by its FMAs (19-29 TFLOP/s on the H200, f32 peak ~67),
// and a vec2<f16> FMA (NVIDIA's HFMA2) does two products an instruction.
// Same contract as matmul_wide.wgsl: y[m][n] (=|+=) sum_k x[m][k] * wt[k][n] (+ bias), tiles of TM = 16 * RM
// rows (64 or 128) x 128 columns, 256 threads in 16x16, each RM rows x 8 columns (tx*4.. and 64 + tx*4..);
// SPARSE TEAL mask on x with the kept counter, ACCUM, BIAS; segments as in matmul.wgsl; K % 4 == 0.
// What differs:
// - the x tile and the weight tile are f16 in workgroup memory: x converted from f32 once, as it is staged
//   (|x| beyond 65504 would become inf; the mask is applied to the f32 values, so the kept count is exact), the
//   weights stored as loaded (the wt binding is read as vec4<f16>, four columns);
// - a K step's products are summed in vec4<f16> registers (RM * 2 of them, each FMA two HFMA2), and at the end
//   of each step of BK inputs added into f32 accumulators: no f16 sum runs over more than BK products, so the
//   error does not grow with K (per output at most about (BK + 2) * 2^-11 * sum_k |x_k * w_k|);
// - half the bytes a tile leave room for two of each: the next step's tiles, loaded into registers before this
//   step's arithmetic, are stored into the other buffer after it, one barrier a step instead of two. A buffer's
//   readers have all passed the barrier that ends their step before anyone stores into it again.
// Layout: xs holds per buffer [BK][4 * RM] vec4<f16> of 4 rows of one input. A thread loads x as vec4<f32>
// (4 inputs of one row; BK / 4 neighbouring threads a row, so a warp reads whole 64- or 128-byte row pieces)
// and stores each input's f16 in its row's slot; the slot index is XORed with 2 * (k / 4) (the readers undo it)
// so that the stores of threads holding other inputs land in other banks without padding (with padding the
// two 128x32 tiles would not fit in 32 KiB). ws holds per buffer [BK][32] vec4<f16>: 128 columns.
// BK 32 halves the per-step costs (barrier, stores, the f16 -> f32 adds) against BK 16 for 8 more prefetch
// registers a thread; RM 8 keeps 64 f32 + 32 packed f16 accumulator registers a thread, RM 4 half that.
// SPARSE: each thread of the segment's first column tile adds its kept count to the counter itself (no
// workgroup atomic: at RM 8, BK 32 the tiles fill 32 KiB).
// bindings: 0 params (uniform, matmul.wgsl's), 1 x (f32 [M][K] as vec4, read), 2 wt (4 f16 a vec4<f16>,
//           segment blocks, read), 3 y (f32 [M][ldy], read_write), 4 bias (f32, read), 5 thresholds (f32,
//           read), 6 scales (f32 [nseg][K] as vec4, read), 7 counters (atomic u32: kept (row, channel) pairs)
override SPARSE: bool = false;
override ACCUM: bool = false;  // y += result (residual add)
override BIAS: bool = false;
override RM: u32 = 8u;   // rows per thread: 8 (128-row tiles) or 4 (64-row tiles)
override BK: u32 = 32u;  // inputs a K step: 16 or 32
// workgroup array sizes, set from TS as plain values: Deno 2.9.6's WGSL compiler (naga 29) panics on an
// override expression as an array size
override XS: u32 = 2048u;  // 2 * BK * 4 * RM: the two x tiles
override WS: u32 = 2048u;  // 2 * BK * 32: the two weight tiles
override XR: u32 = 4u * RM;        // slots (4 rows each) an input of the x tile
override NX: u32 = RM * BK / 64u;  // x vec4<f32> a thread loads a step: 1, 2 or 4
override NW: u32 = BK / 8u;        // weight vec4<f16> a thread loads a step: 2 or 4

// #include gemm_params
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f16>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> thresholds: array<f32>;
@group(0) @binding(6) var<storage, read> scales: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> counters: array<atomic<u32>>;

var<workgroup> xs: array<vec4<f16>, XS>;  // [2][BK][XR], slots swizzled
var<workgroup> ws: array<vec4<f16>, WS>;  // [2][BK][32]: 128 columns

// a thread's i-th x vec4 of the step at k0: inputs k..k+3 of row m (zero past the rows or K), TEAL-masked
// when SPARSE; kept counts what the mask kept
fn load_x(t: u32, i: u32, k0: u32, row0: u32, s: u32, thr: f32, kept: ptr<function, u32>) -> vec4<f32> {
  let idx = t + i * 256u;
  let m = row0 + idx / (BK / 4u);
  let k = k0 + (idx % (BK / 4u)) * 4u;
  // #include matmul_wide_x
}

// a thread's i-th weight vec4 of the step at k0: columns col..col+3 of input k (zero past K or the segment's
// block; its stride is a multiple of 8, so a vec4 is all in or all out); 32 threads an input
fn load_w(t: u32, i: u32, k0: u32, col0: u32, seg: Seg) -> vec4<f16> {
  let idx = t + i * 256u;
  let k = k0 + idx / 32u;
  let col = col0 + (idx % 32u) * 4u;
  if (k >= p.K || col >= seg.stride) { return vec4<f16>(0.0h); }
  return wt[(seg.base + k * seg.stride + col) / 4u];
}

// x vec4 i of a thread (inputs 4kq..4kq+3 of a tile row) into buffer b, as f16, at the swizzled slot
fn store_x(b: u32, t: u32, i: u32, v: vec4<f32>) {
  let idx = t + i * 256u;
  let m = idx / (BK / 4u);
  let kq = idx % (BK / 4u);
  let h = vec4<f16>(v);
  let at = b * BK * XR + kq * 4u * XR + ((m / 4u) ^ (kq * 2u));
  let c = m % 4u;
  xs[at][c] = h.x;
  xs[at + XR][c] = h.y;
  xs[at + 2u * XR][c] = h.z;
  xs[at + 3u * XR][c] = h.w;
}

fn store_w(b: u32, t: u32, i: u32, v: vec4<f16>) {
  ws[b * BK * 32u + t + i * 256u] = v;
}

// one step's loads, held in registers (unused ones stay zero and are never stored)
struct Step {
  x0: vec4<f32>,
  x1: vec4<f32>,
  x2: vec4<f32>,
  x3: vec4<f32>,
  w0: vec4<f16>,
  w1: vec4<f16>,
  w2: vec4<f16>,
  w3: vec4<f16>,
  kept: u32,
}

fn load_step(t: u32, k0: u32, row0: u32, col0: u32, s: u32, seg: Seg, thr: f32) -> Step {
  var st: Step;
  var kept = 0u;
  st.x0 = load_x(t, 0u, k0, row0, s, thr, &kept);
  if (NX > 1u) { st.x1 = load_x(t, 1u, k0, row0, s, thr, &kept); }
  if (NX > 2u) {
    st.x2 = load_x(t, 2u, k0, row0, s, thr, &kept);
    st.x3 = load_x(t, 3u, k0, row0, s, thr, &kept);
  }
  st.w0 = load_w(t, 0u, k0, col0, seg);
  st.w1 = load_w(t, 1u, k0, col0, seg);
  if (NW > 2u) {
    st.w2 = load_w(t, 2u, k0, col0, seg);
    st.w3 = load_w(t, 3u, k0, col0, seg);
  }
  st.kept = kept;
  return st;
}

fn store_step(b: u32, t: u32, st: Step) {
  store_x(b, t, 0u, st.x0);
  if (NX > 1u) { store_x(b, t, 1u, st.x1); }
  if (NX > 2u) {
    store_x(b, t, 2u, st.x2);
    store_x(b, t, 3u, st.x3);
  }
  store_w(b, t, 0u, st.w0);
  store_w(b, t, 1u, st.w1);
  if (NW > 2u) {
    store_w(b, t, 2u, st.w2);
    store_w(b, t, 3u, st.w3);
  }
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  // #include matmul_wide_begin

  var st = load_step(t, 0u, row0, col0, s, seg, thr);
  var my_kept = st.kept;
  store_step(0u, t, st);
  workgroupBarrier();
  var b = 0u;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    let more = k0 + BK < p.K;
    // the next step's loads go out before this step's arithmetic
    if (more) {
      st = load_step(t, k0 + BK, row0, col0, s, seg, thr);
      my_kept += st.kept;
    }
    // this step's products, summed in f16
    var h0a = vec4<f16>(0.0h);
    var h0b = vec4<f16>(0.0h);
    var h1a = vec4<f16>(0.0h);
    var h1b = vec4<f16>(0.0h);
    var h2a = vec4<f16>(0.0h);
    var h2b = vec4<f16>(0.0h);
    var h3a = vec4<f16>(0.0h);
    var h3b = vec4<f16>(0.0h);
    var h4a = vec4<f16>(0.0h);
    var h4b = vec4<f16>(0.0h);
    var h5a = vec4<f16>(0.0h);
    var h5b = vec4<f16>(0.0h);
    var h6a = vec4<f16>(0.0h);
    var h6b = vec4<f16>(0.0h);
    var h7a = vec4<f16>(0.0h);
    var h7b = vec4<f16>(0.0h);
    let xb = b * BK * XR;
    let wb = b * BK * 32u;
    for (var kk = 0u; kk < BK; kk++) {
      let sw = (kk / 4u) * 2u;  // the stores' swizzle of this input's slots
      let b0 = ws[wb + kk * 32u + tx];
      let b1 = ws[wb + kk * 32u + 16u + tx];
      if (RM == 8u) {
        let i0 = xb + kk * XR + ((ty * 2u) ^ sw);  // even, so rows 4..7 are the next slot
        let a0 = xs[i0];
        let a1 = xs[i0 + 1u];
        h0a += a0.x * b0;
        h0b += a0.x * b1;
        h1a += a0.y * b0;
        h1b += a0.y * b1;
        h2a += a0.z * b0;
        h2b += a0.z * b1;
        h3a += a0.w * b0;
        h3b += a0.w * b1;
        h4a += a1.x * b0;
        h4b += a1.x * b1;
        h5a += a1.y * b0;
        h5b += a1.y * b1;
        h6a += a1.z * b0;
        h6b += a1.z * b1;
        h7a += a1.w * b0;
        h7b += a1.w * b1;
      } else {
        let a0 = xs[xb + kk * XR + (ty ^ sw)];
        h0a += a0.x * b0;
        h0b += a0.x * b1;
        h1a += a0.y * b0;
        h1b += a0.y * b1;
        h2a += a0.z * b0;
        h2b += a0.z * b1;
        h3a += a0.w * b0;
        h3b += a0.w * b1;
      }
    }
    c0a += vec4<f32>(h0a);
    c0b += vec4<f32>(h0b);
    c1a += vec4<f32>(h1a);
    c1b += vec4<f32>(h1b);
    c2a += vec4<f32>(h2a);
    c2b += vec4<f32>(h2b);
    c3a += vec4<f32>(h3a);
    c3b += vec4<f32>(h3b);
    if (RM == 8u) {
      c4a += vec4<f32>(h4a);
      c4b += vec4<f32>(h4b);
      c5a += vec4<f32>(h5a);
      c5b += vec4<f32>(h5b);
      c6a += vec4<f32>(h6a);
      c6b += vec4<f32>(h6b);
      c7a += vec4<f32>(h7a);
      c7b += vec4<f32>(h7b);
    }
    // the other buffer's readers all passed the last barrier: store the next step there, then one barrier
    if (more) { store_step(b ^ 1u, t, st); }
    workgroupBarrier();
    b ^= 1u;
  }

  // one column tile per segment counts the kept inputs of its rows
  if (SPARSE && wid.x == seg.tile0 && my_kept > 0u) { atomicAdd(&counters[p.counter + s], my_kept); }
  // #include matmul_wide_store
}
