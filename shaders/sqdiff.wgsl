// Sum of squared differences a[i] - b[bOffset + i] into out[slot]: the block output error of the TEAL greedy
// search (sparse layer output against the dense one). One workgroup.
// bindings: 0 params (uniform), 1 a (f32 [n], read), 2 b (f32 [n], read), 3 out (f32, read_write)
const WG: u32 = 256u;
struct Params {
  n: u32,
  slot: u32,
  bOffset: u32,
  _pad1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> outv: array<f32>;
var<workgroup> part: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32) {
  var s = 0.0;
  for (var i = t; i < p.n; i += WG) {
    let d = a[i] - b[p.bOffset + i];
    s += d * d;
  }
  part[t] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (t < k) { part[t] += part[t + k]; }
    workgroupBarrier();
  }
  if (t == 0u) { outv[p.slot] = part[0]; }
}
