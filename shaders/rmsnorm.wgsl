// RMSNorm: out[row] = x[inRow + row] / sqrt(mean(x^2) + eps) * weight, one workgroup per row.
// bindings: 0 params (uniform), 1 x (f32 [rows][n], read), 2 weight (f32 [n], read),
//           3 out (f32 [rows][n], write)
override WG: u32 = 256u;
struct Params {
  n: u32,
  rows: u32,
  eps: f32,
  inRow: u32,  // first input row (the last prompt row before lm_head)
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> outv: array<f32>;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let row = wid.x;
  let base = (row + p.inRow) * p.n;
  var ss = 0.0;
  for (var i = t; i < p.n; i += WG) {
    let v = x[base + i];
    ss += v * v;
  }
  partial[t] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { partial[t] += partial[t + s]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(partial[0] / f32(p.n) + p.eps);
  for (var i = t; i < p.n; i += WG) {
    outv[row * p.n + i] = x[base + i] * inv * weight[i];
  }
}
