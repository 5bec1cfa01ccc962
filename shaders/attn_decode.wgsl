// Decode attention split over the KV length (flash-decoding): workgroup (head, split) scores its chunk of
// cached keys, takes a local softmax and writes the unnormalised weighted sum of values with its max and sum;
// attn_combine merges the splits. The position comes from the decode state; splits past it write nothing.
// FUSED_ROPE (the decode step): q, k and v of the new token are summed from the q|k|v GEMV's split partials
// (+ bias) and rotated here, so RoPE needs no dispatch of its own: every workgroup rotates its head's q, the
// one holding the new position takes that key and value from registers, and the first q head of each KV
// head in it stores them (f16) in the cache for later steps. Earlier positions come from the cache.
// bindings: 0 params (uniform), 1 q (f32 [numHeads*headDim], read), 2 kcache (u32, read_write),
//           3 vcache (u32, read_write), 4 part (f32 [splits][numHeads][headDim + 2], write), 5 state (u32,
//           read), 6 turns (f32 [headDim/2]: RoPE inverse frequencies over 2 pi), 7 qkv partials (f32
//           [RSPLITS][ldq]), 8 bias (f32 [ldq])
const WG: u32 = 128u;
override CHUNK: u32 = 512u;
// the head size as a constant: the loops over a key's or a value's dims unroll, and their loads go out together
override HEAD_DIM: u32 = 128u;
override FUSED_ROPE: bool = false;
override RSPLITS: u32 = 1u;  // FUSED_ROPE: splits of the q|k|v partials
struct Params {
  numHeads: u32,
  numKv: u32,
  headDim: u32,
  maxSeq: u32,
  window: u32,  // 0: no sliding window
  scale: f32,
  splits: u32,
  ldq: u32,      // FUSED_ROPE: floats per q|k|v row
  hasBias: u32,  // FUSED_ROPE
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> kcache: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> vcache: array<u32>;
@group(0) @binding(4) var<storage, read_write> part: array<f32>;
@group(0) @binding(5) var<storage, read> state: array<u32>;
@group(0) @binding(6) var<storage, read> turns: array<f32>;
@group(0) @binding(7) var<storage, read> qkvp: array<f32>;
@group(0) @binding(8) var<storage, read> bias: array<f32>;

var<workgroup> qs: array<f32, 256>;
var<workgroup> sc: array<f32, CHUNK>;
var<workgroup> red: array<f32, WG>;
var<workgroup> vred: array<vec2<f32>, WG>;
var<workgroup> kcur: array<f32, 256>;  // FUSED_ROPE: the new token's rotated key and its value, f16-rounded
var<workgroup> vcur: array<f32, 256>;

const TAU: f32 = 6.283185307179586;

// FUSED_ROPE: element `at` of the new token's q|k|v row
fn qkv_at(at: u32) -> f32 {
  var v = select(0.0, bias[at], p.hasBias != 0u);
  for (var s = 0u; s < RSPLITS; s++) { v += qkvp[s * p.ldq + at]; }
  return v;
}

// FUSED_ROPE: dims (i, i + HEAD_DIM/2) of the row segment at `base`, rotated for position pos (rotate-half)
fn rotated(base: u32, i: u32, pos: u32) -> vec2<f32> {
  let a = qkv_at(base + i);
  let b = qkv_at(base + i + HEAD_DIM / 2u);
  let ang = fract(f32(pos) * turns[i]) * TAU;
  let c = cos(ang);
  let s = sin(ang);
  return vec2<f32>(a * c - b * s, b * c + a * s);
}

fn f16r(v: f32) -> f32 {
  return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let head = wid.x;
  let split = wid.y;
  let pos = state[0];
  var lo = 0u;
  if (p.window > 0u && pos + 1u > p.window) { lo = pos + 1u - p.window; }
  let j0 = max(lo, split * CHUNK);
  let j1 = min(pos + 1u, (split + 1u) * CHUNK);
  let out = (split * p.numHeads + head) * (p.headDim + 2u);
  if (j0 >= j1) {
    // nothing visible in this chunk: an empty partial (zeros, max -inf, sum 0)
    for (var d = t; d < p.headDim; d += WG) { part[out + d] = 0.0; }
    if (t == 0u) {
      part[out + p.headDim] = -3.0e38;
      part[out + p.headDim + 1u] = 0.0;
    }
    return;
  }
  let n = j1 - j0;
  let kvh = head / (p.numHeads / p.numKv);
  let half = HEAD_DIM / 2u;
  let has_pos = FUSED_ROPE && j1 == pos + 1u;  // this chunk ends at the new token
  if (FUSED_ROPE) {
    for (var i = t; i < half; i += WG) {
      let r = rotated(head * HEAD_DIM, i, pos);
      qs[i] = r.x * p.scale;
      qs[i + half] = r.y * p.scale;
      if (has_pos) {
        let kr = rotated((p.numHeads + kvh) * HEAD_DIM, i, pos);
        kcur[i] = f16r(kr.x);
        kcur[i + half] = f16r(kr.y);
        let vb0 = (p.numHeads + p.numKv + kvh) * HEAD_DIM;
        vcur[i] = f16r(qkv_at(vb0 + i));
        vcur[i + half] = f16r(qkv_at(vb0 + i + half));
      }
    }
  } else {
    for (var d = t; d < p.headDim; d += WG) { qs[d] = q[head * p.headDim + d] * p.scale; }
  }
  workgroupBarrier();
  if (has_pos && head % (p.numHeads / p.numKv) == 0u) {
    // later steps read this position from the cache
    let kb0 = (kvh * p.maxSeq + pos) * (HEAD_DIM / 8u);
    for (var w = t; w < HEAD_DIM / 8u; w += WG) {
      let o = 8u * w;
      kcache[kb0 + w] = vec4<u32>(
        pack2x16float(vec2<f32>(kcur[o], kcur[o + 1u])),
        pack2x16float(vec2<f32>(kcur[o + 2u], kcur[o + 3u])),
        pack2x16float(vec2<f32>(kcur[o + 4u], kcur[o + 5u])),
        pack2x16float(vec2<f32>(kcur[o + 6u], kcur[o + 7u])),
      );
    }
    let vb1 = (kvh * p.maxSeq + pos) * half;
    for (var w = t; w < half; w += WG) { vcache[vb1 + w] = pack2x16float(vec2<f32>(vcur[2u * w], vcur[2u * w + 1u])); }
  }

  // scores, 8 dims per 16-byte load
  let hv = HEAD_DIM / 8u;
  var m = -3.0e38;
  for (var i = t; i < n; i += WG) {
    let kb = (kvh * p.maxSeq + j0 + i) * hv;
    var s = 0.0;
    if (has_pos && j0 + i == pos) {
      for (var d = 0u; d < HEAD_DIM; d++) { s += qs[d] * kcur[d]; }
      sc[i] = s;
      m = max(m, s);
      continue;
    }
    for (var w = 0u; w < hv; w++) {
      let k4 = kcache[kb + w];
      let a = unpack2x16float(k4.x);
      let b = unpack2x16float(k4.y);
      let c = unpack2x16float(k4.z);
      let e = unpack2x16float(k4.w);
      let o = 8u * w;
      s += qs[o] * a.x + qs[o + 1u] * a.y + qs[o + 2u] * b.x + qs[o + 3u] * b.y +
        qs[o + 4u] * c.x + qs[o + 5u] * c.y + qs[o + 6u] * e.x + qs[o + 7u] * e.y;
    }
    sc[i] = s;
    m = max(m, s);
  }
  red[t] = m;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (t < k) { red[t] = max(red[t], red[t + k]); }
    workgroupBarrier();
  }
  let mx = red[0];
  workgroupBarrier();
  var l = 0.0;
  for (var i = t; i < n; i += WG) {
    let e = exp(sc[i] - mx);
    sc[i] = e;
    l += e;
  }
  red[t] = l;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (t < k) { red[t] += red[t + k]; }
    workgroupBarrier();
  }
  // values: thread t owns the dim pair d2 = t % hw of the keys i = t / hw (mod G), eight keys a step so that
  // eight loads are in flight; the G groups' sums meet in workgroup memory
  let hw = HEAD_DIM / 2u;
  let G = WG / hw;
  let g = t / hw;
  let d2 = t % hw;
  var acc = vec2<f32>(0.0);
  let n_cached = select(n, n - 1u, has_pos);  // the new token's value is in vcur, not yet read from the cache
  if (g < G) {
    let vb = (kvh * p.maxSeq + j0) * hw + d2;
    var i = g;
    for (; i + 7u * G < n_cached; i += 8u * G) {
      let v0 = unpack2x16float(vcache[vb + i * hw]);
      let v1 = unpack2x16float(vcache[vb + (i + G) * hw]);
      let v2 = unpack2x16float(vcache[vb + (i + 2u * G) * hw]);
      let v3 = unpack2x16float(vcache[vb + (i + 3u * G) * hw]);
      let v4 = unpack2x16float(vcache[vb + (i + 4u * G) * hw]);
      let v5 = unpack2x16float(vcache[vb + (i + 5u * G) * hw]);
      let v6 = unpack2x16float(vcache[vb + (i + 6u * G) * hw]);
      let v7 = unpack2x16float(vcache[vb + (i + 7u * G) * hw]);
      acc += sc[i] * v0 + sc[i + G] * v1 + sc[i + 2u * G] * v2 + sc[i + 3u * G] * v3 + sc[i + 4u * G] * v4 +
        sc[i + 5u * G] * v5 + sc[i + 6u * G] * v6 + sc[i + 7u * G] * v7;
    }
    for (; i < n_cached; i += G) { acc += sc[i] * unpack2x16float(vcache[vb + i * hw]); }
    if (has_pos && g == 0u) { acc += sc[n - 1u] * vec2<f32>(vcur[2u * d2], vcur[2u * d2 + 1u]); }
  }
  vred[t] = acc;
  workgroupBarrier();
  if (t < hw) {
    var sum = vec2<f32>(0.0);
    for (var k = 0u; k < G; k++) { sum += vred[k * hw + t]; }
    part[out + 2u * t] = sum.x;
    part[out + 2u * t + 1u] = sum.y;
  }
  if (t == 0u) {
    part[out + p.headDim] = mx;
    part[out + p.headDim + 1u] = red[0];
  }
}
