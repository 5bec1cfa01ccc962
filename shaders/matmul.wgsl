// Prefill GEMM over the same transposed f16 weights as gemv.wgsl: y[m][n] = sum_k x[m][k] * wt[k][n].
// 64x64 output tiles, 16x16 threads of 4x4 outputs, K in steps of 16 through workgroup memory.
// Workgroup x indexes column tiles of the segments (as in gemv.wgsl), y indexes row tiles.
// SPARSE applies the TEAL mask to x as it is loaded (sparse prefill and perplexity evaluation).
// bindings: 0 params (uniform), 1 x (f32 [M][K], read), 2 wt (u32 = 2 f16, segment blocks, read),
//           3 y (f32 [M][ldy], read_write), 4 bias (f32, read), 5 thresholds (f32, read),
//           6 scales (f32 [nseg][K], read), 7 counters (atomic u32: kept (row, channel) pairs per segment)
override SPARSE: bool = false;
override ACCUM: bool = false;  // y += result (residual add)
override BIAS: bool = false;
const BK: u32 = 16u;

struct Seg {
  base: u32,    // first f16 of the segment's [K][stride] block
  stride: u32,  // f16 per row of the block (multiple of 8)
  len: u32,
  tile0: u32,
  thr: u32,
  out: u32,     // column of the segment's output 0 in y (and in bias)
  _pad0: u32,
  _pad1: u32,
}
struct Params {
  M: u32,
  K: u32,
  ldy: u32,      // y row stride (elements)
  yOffset: u32,  // added to every output column
  nseg: u32,
  counter: u32,  // counters[counter + seg] counts kept inputs (SPARSE)
  _pad1: u32,
  _pad2: u32,
  seg: array<Seg, 3>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> thresholds: array<f32>;
@group(0) @binding(6) var<storage, read> scales: array<f32>;
@group(0) @binding(7) var<storage, read_write> counters: array<atomic<u32>>;

var<workgroup> xs: array<f32, 1024>;  // [64 rows][BK]
var<workgroup> ws: array<f32, 1024>;  // [BK][64 cols]
var<workgroup> kept: atomic<u32>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  var s = 0u;
  if (p.nseg > 1u && wid.x >= p.seg[1].tile0) { s = 1u; }
  if (p.nseg > 2u && wid.x >= p.seg[2].tile0) { s = 2u; }
  let seg = p.seg[s];
  let thr = thresholds[seg.thr];
  let col0 = (wid.x - seg.tile0) * 64u;  // first column of the tile within the segment
  let row0 = wid.y * 64u;
  let tx = t % 16u;
  let ty = t / 16u;
  var acc: array<vec4<f32>, 4>;
  for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
  var my_kept = 0u;

  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    for (var i = 0u; i < 4u; i++) {
      let idx = t + i * 256u;
      let r = idx / BK;
      let k = k0 + idx % BK;
      var v = 0.0;
      if (row0 + r < p.M && k < p.K) {
        v = x[(row0 + r) * p.K + k];
        if (SPARSE) {
          if (abs(v) * scales[s * p.K + k] > thr) { my_kept++; } else { v = 0.0; }
        }
      }
      xs[idx] = v;
    }
    for (var i = 0u; i < 2u; i++) {
      let idx = t + i * 256u;
      let kk = idx / 32u;
      let cw = idx % 32u;
      let k = k0 + kk;
      let col = col0 + cw * 2u;
      var w = vec2<f32>(0.0);
      if (k < p.K && col < seg.stride) { w = unpack2x16float(wt[(seg.base + k * seg.stride + col) / 2u]); }
      ws[kk * 64u + cw * 2u] = w.x;
      ws[kk * 64u + cw * 2u + 1u] = w.y;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let b = vec4<f32>(ws[kk * 64u + tx * 4u], ws[kk * 64u + tx * 4u + 1u], ws[kk * 64u + tx * 4u + 2u],
        ws[kk * 64u + tx * 4u + 3u]);
      for (var i = 0u; i < 4u; i++) {
        acc[i] += xs[(ty * 4u + i) * BK + kk] * b;
      }
    }
    workgroupBarrier();
  }

  // one column tile per segment counts the kept inputs of its rows
  if (SPARSE && wid.x == seg.tile0) {
    atomicAdd(&kept, my_kept);
    workgroupBarrier();
    if (t == 0u) { atomicAdd(&counters[p.counter + s], atomicLoad(&kept)); }
  }
  for (var i = 0u; i < 4u; i++) {
    let m = row0 + ty * 4u + i;
    if (m >= p.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let cl = col0 + tx * 4u + j;
      if (cl >= seg.len) { continue; }
      var v = acc[i][j];
      if (BIAS) { v += bias[seg.out + cl]; }
      let at = m * p.ldy + p.yOffset + seg.out + cl;
      if (ACCUM) { y[at] += v; } else { y[at] = v; }
    }
  }
}
