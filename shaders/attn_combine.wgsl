// Merges the per-split partials of attn_decode: out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s.
// The max and the sum over splits are spread over the workgroup (a long context has hundreds of splits), and
// each thread's loop over the splits keeps four loads in flight.
// bindings: 0 params (uniform), 1 part (f32 [splits][numHeads][headDim + 2], read),
//           2 out (f32 [numHeads*headDim], write), 3 state (u32, read)
override CHUNK: u32 = 64u;
const WG: u32 = 128u;
struct Params {
  numHeads: u32,
  headDim: u32,
  splits: u32,
  _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> outv: array<f32>;
@group(0) @binding(3) var<storage, read> state: array<u32>;

var<workgroup> red: array<f32, WG>;

fn reduce_max(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (t < k) { red[t] = max(red[t], red[t + k]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (t < k) { red[t] += red[t + k]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let head = wid.x;
  let used = min(p.splits, state[0] / CHUNK + 1u);  // splits at or below the position
  let stride = p.headDim + 2u;
  let hs = p.numHeads * stride;  // floats between one split's partials and the next
  let b0 = head * stride;
  var m = -3.0e38;
  for (var s = t; s < used; s += WG) { m = max(m, part[s * hs + b0 + p.headDim]); }
  let mx = reduce_max(t, m);
  var l = 0.0;
  for (var s = t; s < used; s += WG) {
    let b = s * hs + b0;
    l += exp(part[b + p.headDim] - mx) * part[b + p.headDim + 1u];
  }
  let total = reduce_sum(t, l);
  for (var d = t; d < p.headDim; d += WG) {
    var acc = 0.0;
    var s = 0u;
    for (; s + 3u < used; s += 4u) {
      let b = s * hs + b0;
      acc += exp(part[b + p.headDim] - mx) * part[b + d] + exp(part[b + hs + p.headDim] - mx) * part[b + hs + d] +
        exp(part[b + 2u * hs + p.headDim] - mx) * part[b + 2u * hs + d] +
        exp(part[b + 3u * hs + p.headDim] - mx) * part[b + 3u * hs + d];
    }
    for (; s < used; s++) {
      let b = s * hs + b0;
      acc += exp(part[b + p.headDim] - mx) * part[b + d];
    }
    outv[head * p.headDim + d] = acc / total;
  }
}
