// Split-K GEMV over transposed group-quantized weights (int8 / int4), dense or TEAL-sparse: gemv.wgsl's
// contract (same bindings, params, split partials, fused inputs, compaction, counters and EOS early-out) with
// the weights dequantized in registers. Layout (src/gpu/quant.ts): one block [K][stride] of u32 words per
// segment; row k holds the codes of the segment's outputs (padded to a whole group), then at word `scale0` the
// row's group metadata: BITS 8: one f16 scale per group, w = q * s (q signed byte);
// BITS 4: an f16 pair (scale, offset) per group, w = q * s + offset (q nibble 0..15). A dropped channel is one
// contiguous run of codes + metadata that is never read.
// Workgroup (tile, split) owns TILE_N = TPR * COLS columns of one segment; each thread loads one vec4<u32> of
// codes per row (COLS = 16 int8 or 32 int4 outputs, inside one group) and one metadata word, UNROLL rows in
// flight; x * scale and x * offset are formed once per row, so dequantization costs one FMA per weight.
// bindings: 0 params (uniform), 1 x (f32 [K], read), 2 wt (vec4<u32>, segment blocks, read),
//           3 partials (f32 [splits][ncols], write), 4 thresholds (f32, read), 5 scales (f32 [nseg][K], read),
//           6 counters (atomic u32: active channels per segment, summed over calls), 7 aux (f32, read),
//           8 ss (f32 [NSS], read), 9 state (u32 decode state, read: [3] != 0 once EOS was sampled)
override NSS: u32 = 1u;         // INPUT 1: partial sums of squares in ss
override AUX_SPLITS: u32 = 1u;  // INPUT 2: splits of the gate|up partials
override TPR: u32 = 8u;
override KCHUNK: u32 = 512u;
override SPARSE: bool = false;
override INPUT: u32 = 0u;
override BITS: u32 = 8u;     // 8 or 4
override GROUP: u32 = 128u;  // outputs per scale: 32, 64 or 128 (a multiple of COLS)
const WG: u32 = 256u;
const UNROLL: u32 = 4u;
override KG: u32 = WG / TPR;
override COLS: u32 = 128u / BITS;
override TILE_N: u32 = TPR * COLS;
override PER: u32 = KCHUNK / WG;

struct Seg {
  base: u32,    // first u32 word of the segment's [K][stride] block (multiple of 4)
  stride: u32,  // u32 words per row (multiple of 4)
  len: u32,     // columns of the segment
  tile0: u32,   // first workgroup tile of the segment
  thr: u32,     // index into thresholds
  out: u32,     // column of the segment's output 0
  scale0: u32,    // word of a row's group metadata, after its codes
  _pad1: u32,
}
struct Params {
  K: u32,
  ncols: u32,      // columns of partials (all segments)
  nseg: u32,
  counter: u32,    // counters[counter + seg] counts active channels of each segment
  _pad0: u32,
  eps: f32,        // INPUT 1
  _pad1: u32,
  auxCols: u32,    // INPUT 2: columns of the gate|up partials; up starts at auxCols / 2
  seg: array<Seg, 3>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(0) @binding(4) var<storage, read> thresholds: array<f32>;
@group(0) @binding(5) var<storage, read> scales: array<f32>;
@group(0) @binding(6) var<storage, read_write> counters: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read> aux: array<f32>;
@group(0) @binding(8) var<storage, read> ss: array<f32>;
@group(0) @binding(9) var<storage, read> state: array<u32>;

var<workgroup> xs: array<f32, KCHUNK>;
var<workgroup> act_idx: array<u32, KCHUNK>;
var<workgroup> act_val: array<f32, KCHUNK>;
var<workgroup> scan: array<u32, WG>;
var<workgroup> red: array<f32, 2048>;  // KG * TPR * 8 = WG * 8: eight columns per thread per pass

fn input(k: u32, inv_rms: f32) -> f32 {
  if (INPUT == 1u) { return x[k] * inv_rms * aux[k]; }
  if (INPUT == 2u) {
    var g = 0.0;
    var u = 0.0;
    let half_cols = p.auxCols / 2u;
    for (var s = 0u; s < AUX_SPLITS; s++) {  // a constant bound: the loads go out together (gemv.wgsl)
      g += aux[s * p.auxCols + k];
      u += aux[s * p.auxCols + half_cols + k];
    }
    return g / (1.0 + exp(-g)) * u;
  }
  return x[k];
}

// (x * scale, x * offset) for row word `row` and group g.
fn coef(row: u32, g: u32, v: f32) -> vec2<f32> {
  if (BITS == 8u) {
    let i = row + g / 2u;
    let s = unpack2x16float(wt[i / 4u][i % 4u]);
    return vec2<f32>(v * select(s.x, s.y, (g & 1u) == 1u), 0.0);
  }
  let i = row + g;
  return v * unpack2x16float(wt[i / 4u][i % 4u]);
}

// acc += a * q + b for the COLS codes of one vec4<u32>.
fn accum(acc: ptr<function, array<vec4<f32>, 8>>, w: vec4<u32>, ab: vec2<f32>) {
  if (BITS == 8u) {
    for (var i = 0u; i < 4u; i++) {
      // sign-extend each byte: shift it to the top, arithmetic shift back
      let q = (vec4<i32>(bitcast<i32>(w[i])) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
      (*acc)[i] += ab.x * vec4<f32>(q);
    }
  } else {
    for (var i = 0u; i < 4u; i++) {
      let lo = (vec4<u32>(w[i]) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u);
      let hi = (vec4<u32>(w[i]) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u);
      (*acc)[2u * i] += ab.x * vec4<f32>(lo) + ab.y;
      (*acc)[2u * i + 1u] += ab.x * vec4<f32>(hi) + ab.y;
    }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  if (state[3] != 0u) { return; }
  let tile = wid.x;
  let split = wid.y;
  var s = 0u;
  if (p.nseg > 1u && tile >= p.seg[1].tile0) { s = 1u; }
  if (p.nseg > 2u && tile >= p.seg[2].tile0) { s = 2u; }
  let seg = p.seg[s];
  let k_base = split * KCHUNK;
  let n_k = min(KCHUNK, p.K - k_base);

  var inv_rms = 1.0;
  if (INPUT == 1u) {
    var sum = 0.0;
    for (var i = 0u; i < NSS; i++) { sum += ss[i]; }
    inv_rms = inverseSqrt(sum / f32(p.K) + p.eps);
  }

  var n_act = n_k;
  if (SPARSE) {
    // Compact this split's active channels, in channel order, into workgroup memory.
    let thr = thresholds[seg.thr];
    let k0 = t * PER;
    var cnt = 0u;
    for (var e = 0u; e < PER; e++) {
      let kk = k0 + e;
      if (kk < n_k) {
        let v = input(k_base + kk, inv_rms);
        xs[kk] = v;
        if (abs(v) * scales[s * p.K + k_base + kk] > thr) { cnt++; }
      }
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
      let kk = k0 + e;
      if (kk < n_k) {
        let v = xs[kk];
        if (abs(v) * scales[s * p.K + k_base + kk] > thr) {
          act_idx[slot] = k_base + kk;
          act_val[slot] = v;
          slot++;
        }
      }
    }
    n_act = scan[WG - 1u];
    if (t == 0u && tile == seg.tile0) { atomicAdd(&counters[p.counter + s], n_act); }
  } else {
    for (var e = 0u; e < PER; e++) {
      let kk = t + e * WG;
      if (kk < n_k) {
        act_idx[kk] = k_base + kk;
        act_val[kk] = input(k_base + kk, inv_rms);
      }
    }
  }
  workgroupBarrier();

  // Each group of TPR threads walks every KG-th active channel; thread c of the group owns COLS columns.
  let c = t % TPR;
  let kg = t / TPR;
  let col = (tile - seg.tile0) * TILE_N + c * COLS;
  var acc: array<vec4<f32>, 8>;
  for (var i = 0u; i < 8u; i++) { acc[i] = vec4<f32>(0.0); }
  if (col < seg.len) {
    let w_off = seg.base + col * BITS / 32u;  // first code word of this thread's columns in row 0
    let m_off = seg.base + seg.scale0;          // first metadata word of row 0
    let g = col / GROUP;
    var j = kg;
    for (; j + (UNROLL - 1u) * KG < n_act; j += UNROLL * KG) {
      let r0 = act_idx[j] * seg.stride;
      let r1 = act_idx[j + KG] * seg.stride;
      let r2 = act_idx[j + 2u * KG] * seg.stride;
      let r3 = act_idx[j + 3u * KG] * seg.stride;
      let w0 = wt[(r0 + w_off) / 4u];
      let w1 = wt[(r1 + w_off) / 4u];
      let w2 = wt[(r2 + w_off) / 4u];
      let w3 = wt[(r3 + w_off) / 4u];
      let c0 = coef(r0 + m_off, g, act_val[j]);
      let c1 = coef(r1 + m_off, g, act_val[j + KG]);
      let c2 = coef(r2 + m_off, g, act_val[j + 2u * KG]);
      let c3 = coef(r3 + m_off, g, act_val[j + 3u * KG]);
      accum(&acc, w0, c0);
      accum(&acc, w1, c1);
      accum(&acc, w2, c2);
      accum(&acc, w3, c3);
    }
    for (; j < n_act; j += KG) {
      let r = act_idx[j] * seg.stride;
      accum(&acc, wt[(r + w_off) / 4u], coef(r + m_off, g, act_val[j]));
    }
  }
  // Reduce over the KG channel groups, eight columns per thread per pass (bounded workgroup memory).
  for (var part = 0u; part < COLS / 8u; part++) {
    let r = kg * TPR * 8u + c * 8u;
    let a = acc[2u * part];
    let b = acc[2u * part + 1u];
    red[r] = a.x; red[r + 1u] = a.y; red[r + 2u] = a.z; red[r + 3u] = a.w;
    red[r + 4u] = b.x; red[r + 5u] = b.y; red[r + 6u] = b.z; red[r + 7u] = b.w;
    workgroupBarrier();
    if (t < TPR * 8u) {
      let cl = (tile - seg.tile0) * TILE_N + (t / 8u) * COLS + part * 8u + t % 8u;
      if (cl < seg.len) {
        var sum = 0.0;
        for (var q = 0u; q < KG; q++) { sum += red[q * TPR * 8u + t]; }
        partials[split * p.ncols + seg.out + cl] = sum;
      }
    }
    workgroupBarrier();
  }
}
