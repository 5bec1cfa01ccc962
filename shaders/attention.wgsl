// Causal GQA attention over the f16 KV cache, one workgroup per (head, query row), keys in tiles of WG with
// an online softmax (running max and sum), so memory is O(headDim) whatever the context length.
// Query at position pos sees keys j with lo <= j <= pos, lo = pos + 1 - window for a sliding window.
// bindings: 0 params (uniform), 1 qkv (f32 [rows][ldq], q heads first, read), 2 kcache (u32, read),
//           3 vcache (u32, read), 4 out (f32 [rows][numHeads*headDim], write), 5 state (u32, read)
const WG: u32 = 64u;
struct Params {
  rows: u32,
  numHeads: u32,
  numKv: u32,
  headDim: u32,
  maxSeq: u32,
  posBase: u32,
  fromState: u32,
  ldq: u32,
  window: u32,  // 0: no sliding window
  scale: f32,   // 1 / sqrt(headDim)
  _pad0: u32,
  _pad1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> kcache: array<u32>;
@group(0) @binding(3) var<storage, read> vcache: array<u32>;
@group(0) @binding(4) var<storage, read_write> outv: array<f32>;
@group(0) @binding(5) var<storage, read> state: array<u32>;

var<workgroup> qs: array<f32, 256>;
var<workgroup> sc: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let head = wid.x;
  let row = wid.y;
  // fromState: rows at state[0] - posBase + row (the speculative verify pass, queued without the host)
  let pos = select(p.posBase + row, state[0] - p.posBase + row, p.fromState != 0u);
  let kvh = head / (p.numHeads / p.numKv);
  var lo = 0u;
  if (p.window > 0u && pos + 1u > p.window) { lo = pos + 1u - p.window; }
  for (var d = t; d < p.headDim; d += WG) { qs[d] = qkv[row * p.ldq + head * p.headDim + d] * p.scale; }
  workgroupBarrier();

  let kv_base = kvh * p.maxSeq;
  let hw = p.headDim / 2u;
  var m = -3.0e38;
  var l = 0.0;
  var acc = vec4<f32>(0.0);  // dims t, t+WG, t+2WG, t+3WG (headDim <= 256)
  for (var j0 = lo; j0 <= pos; j0 += WG) {
    let j = j0 + t;
    var s = -3.0e38;
    if (j <= pos) {
      s = 0.0;
      let kb = (kv_base + j) * hw;
      for (var w = 0u; w < hw; w++) {
        let kk = unpack2x16float(kcache[kb + w]);
        s += qs[2u * w] * kk.x + qs[2u * w + 1u] * kk.y;
      }
    }
    sc[t] = s;
    workgroupBarrier();
    let n = min(WG, pos + 1u - j0);
    var mt = m;
    for (var i = 0u; i < n; i++) { mt = max(mt, sc[i]); }
    let corr = exp(m - mt);
    l *= corr;
    acc *= corr;
    for (var i = 0u; i < n; i++) {
      let pj = exp(sc[i] - mt);
      l += pj;
      let vb = (kv_base + j0 + i) * hw;
      for (var r = 0u; r < 4u; r++) {
        let d = t + r * WG;
        if (d < p.headDim) {
          let vv = unpack2x16float(vcache[vb + d / 2u]);
          acc[r] += pj * select(vv.x, vv.y, (d & 1u) == 1u);
        }
      }
    }
    m = mt;
    workgroupBarrier();
  }
  for (var r = 0u; r < 4u; r++) {
    let d = t + r * WG;
    if (d < p.headDim) { outv[(row * p.numHeads + head) * p.headDim + d] = acc[r] / l; }
  }
}
