// Decode attention split over the KV length (flash-decoding): workgroup (head, split) scores its chunk of
// cached keys, takes a local softmax and writes the unnormalised weighted sum of values with its max and sum;
// attn_combine merges the splits. The position comes from the decode state; splits past it write nothing.
// bindings: 0 params (uniform), 1 q (f32 [numHeads*headDim], read), 2 kcache (u32, read),
//           3 vcache (u32, read), 4 part (f32 [splits][numHeads][headDim + 2], write), 5 state (u32, read)
const WG: u32 = 128u;
override CHUNK: u32 = 512u;
// the head size as a constant: the loops over a key's or a value's dims unroll, and their loads go out together
override HEAD_DIM: u32 = 128u;
struct Params {
  numHeads: u32,
  numKv: u32,
  headDim: u32,
  maxSeq: u32,
  window: u32,  // 0: no sliding window
  scale: f32,
  splits: u32,
  _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kcache: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> vcache: array<u32>;
@group(0) @binding(4) var<storage, read_write> part: array<f32>;
@group(0) @binding(5) var<storage, read> state: array<u32>;

var<workgroup> qs: array<f32, 256>;
var<workgroup> sc: array<f32, CHUNK>;
var<workgroup> red: array<f32, WG>;
var<workgroup> vred: array<vec2<f32>, WG>;

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
  for (var d = t; d < p.headDim; d += WG) { qs[d] = q[head * p.headDim + d] * p.scale; }
  workgroupBarrier();

  // scores, 8 dims per 16-byte load
  let hv = HEAD_DIM / 8u;
  var m = -3.0e38;
  for (var i = t; i < n; i += WG) {
    let kb = (kvh * p.maxSeq + j0 + i) * hv;
    var s = 0.0;
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
  if (g < G) {
    let vb = (kvh * p.maxSeq + j0) * hw + d2;
    var i = g;
    for (; i + 7u * G < n; i += 8u * G) {
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
    for (; i < n; i += G) { acc += sc[i] * unpack2x16float(vcache[vb + i * hw]); }
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
