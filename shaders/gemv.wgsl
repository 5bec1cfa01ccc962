// Split-K GEMV over transposed f16 weights, dense or TEAL-sparse: y[n] = sum_k x[k] * wt[k][n].
// Weights are stored transposed, one block [K][stride] per segment (stride = columns padded to a multiple of 8),
// so the weights that one input channel k meets are one contiguous row: a channel TEAL zeroes is never read.
// Workgroup (tile, split) owns TILE_N = TPR*8 columns of one segment and input channels
// [split*KCHUNK, (split+1)*KCHUNK). Sparse: channels with |x[k]| * scale[seg][k] <= threshold[seg] are dropped
// while the chunk is compacted (in order, by a prefix sum) into workgroup memory; then each group of TPR
// threads walks the active channels. Partial sums go to partials[split][ncols]; reduce.wgsl adds the splits.
// Segments let fused q|k|v or gate|up share one pass over x with a threshold each.
// bindings: 0 params (uniform), 1 x (f32 [K], read), 2 wt (vec4<u32> = 8 f16, segment blocks, read),
//           3 partials (f32 [splits][ncols], write), 4 thresholds (f32, read), 5 scales (f32 [nseg][K], read),
//           6 counters (atomic u32: active channels per segment, summed over calls)
override TPR: u32 = 16u;
override KCHUNK: u32 = 512u;
override SPARSE: bool = false;
const WG: u32 = 256u;
override KG: u32 = WG / TPR;
override TILE_N: u32 = TPR * 8u;
override PER: u32 = KCHUNK / WG;

struct Seg {
  base: u32,    // first f16 of the segment's [K][stride] block
  stride: u32,  // f16 per row of the block (multiple of 8)
  len: u32,     // columns of the segment
  tile0: u32,   // first workgroup tile of the segment
  thr: u32,     // index into thresholds
  out: u32,     // column of the segment's output 0
  _pad0: u32,
  _pad1: u32,
}
struct Params {
  K: u32,
  ncols: u32,    // columns of partials (all segments)
  nseg: u32,
  counter: u32,  // counters[counter + seg] counts active channels of each segment
  seg: array<Seg, 3>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(0) @binding(4) var<storage, read> thresholds: array<f32>;
@group(0) @binding(5) var<storage, read> scales: array<f32>;
@group(0) @binding(6) var<storage, read_write> counters: array<atomic<u32>>;

var<workgroup> act_idx: array<u32, KCHUNK>;
var<workgroup> act_val: array<f32, KCHUNK>;
var<workgroup> scan: array<u32, WG>;
var<workgroup> red: array<f32, 2048>;  // KG * TILE_N = WG * 8

fn keep(k: u32, s: u32, v: f32, thr: f32) -> bool {
  if (!SPARSE) { return true; }
  return abs(v) * scales[s * p.K + k] > thr;
}

fn unpack8(w: vec4<u32>) -> array<vec4<f32>, 2> {
  let a = unpack2x16float(w.x);
  let b = unpack2x16float(w.y);
  let c = unpack2x16float(w.z);
  let d = unpack2x16float(w.w);
  return array<vec4<f32>, 2>(vec4<f32>(a, b), vec4<f32>(c, d));
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let tile = wid.x;
  let split = wid.y;
  var s = 0u;
  if (p.nseg > 1u && tile >= p.seg[1].tile0) { s = 1u; }
  if (p.nseg > 2u && tile >= p.seg[2].tile0) { s = 2u; }
  let seg = p.seg[s];
  let thr = thresholds[seg.thr];
  let k0 = split * KCHUNK + t * PER;

  // Compact this split's active channels, in channel order, into workgroup memory.
  var cnt = 0u;
  for (var e = 0u; e < PER; e++) {
    let k = k0 + e;
    if (k < p.K && keep(k, s, x[k], thr)) { cnt++; }
  }
  scan[t] = cnt;
  workgroupBarrier();
  for (var off = 1u; off < WG; off <<= 1u) {
    let add = select(0u, scan[t - off], t >= off);
    workgroupBarrier();
    scan[t] += add;
    workgroupBarrier();
  }
  var slot = scan[t] - cnt;
  for (var e = 0u; e < PER; e++) {
    let k = k0 + e;
    if (k < p.K) {
      let v = x[k];
      if (keep(k, s, v, thr)) {
        act_idx[slot] = k;
        act_val[slot] = v;
        slot++;
      }
    }
  }
  let n_act = scan[WG - 1u];
  if (SPARSE && t == 0u && tile == seg.tile0) { atomicAdd(&counters[p.counter + s], n_act); }
  workgroupBarrier();

  // Each group of TPR threads walks every KG-th active channel; thread c of the group owns 8 columns.
  let c = t % TPR;
  let kg = t / TPR;
  let col = (tile - seg.tile0) * TILE_N + c * 8u;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  if (col < seg.len) {
    let v_col = (seg.base + col) / 8u;
    let v_stride = seg.stride / 8u;
    for (var j = kg; j < n_act; j += KG) {
      let w = unpack8(wt[act_idx[j] * v_stride + v_col]);
      let v = act_val[j];
      acc0 += v * w[0];
      acc1 += v * w[1];
    }
  }
  let r = kg * TILE_N + c * 8u;
  red[r] = acc0.x; red[r + 1u] = acc0.y; red[r + 2u] = acc0.z; red[r + 3u] = acc0.w;
  red[r + 4u] = acc1.x; red[r + 5u] = acc1.y; red[r + 6u] = acc1.z; red[r + 7u] = acc1.w;
  workgroupBarrier();
  if (t < TILE_N) {
    let cl = (tile - seg.tile0) * TILE_N + t;
    if (cl < seg.len) {
      var sum = 0.0;
      for (var g = 0u; g < KG; g++) { sum += red[g * TILE_N + t]; }
      partials[split * p.ncols + seg.out + cl] = sum;
    }
  }
}
