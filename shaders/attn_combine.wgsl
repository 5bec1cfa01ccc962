// Merges the per-split partials of attn_decode: out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s.
// bindings: 0 params (uniform), 1 part (f32 [splits][numHeads][headDim + 2], read),
//           2 out (f32 [numHeads*headDim], write), 3 state (u32, read)
override CHUNK: u32 = 512u;
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

@compute @workgroup_size(128)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let head = wid.x;
  let used = min(p.splits, state[0] / CHUNK + 1u);  // splits at or below the position
  let stride = p.headDim + 2u;
  var mx = -3.0e38;
  for (var s = 0u; s < used; s++) { mx = max(mx, part[(s * p.numHeads + head) * stride + p.headDim]); }
  var l = 0.0;
  for (var s = 0u; s < used; s++) {
    let b = (s * p.numHeads + head) * stride;
    l += exp(part[b + p.headDim] - mx) * part[b + p.headDim + 1u];
  }
  for (var d = t; d < p.headDim; d += 128u) {
    var acc = 0.0;
    for (var s = 0u; s < used; s++) {
      let b = (s * p.numHeads + head) * stride;
      acc += exp(part[b + p.headDim] - mx) * part[b + d];
    }
    outv[head * p.headDim + d] = acc / l;
  }
}
