// RMSNorm: out[row] = x[inRow + row] / sqrt(mean(x^2) + eps) * weight, one workgroup per row.
// bindings: 0 params (uniform), 1 x (f32 [rows][N], read), 2 weight (f32 [N], read),
//           3 out (f32 [rows][N], write)
override WG: u32 = 256u;
// the row length, a constant so that a thread's loads go out together (with the bound in the uniform they went
// one round trip apart: 16 of them at N = 4096)
override N: u32 = 256u;
override PER: u32 = (N + WG - 1u) / WG;
struct Params {
  rows: u32,
  eps: f32,
  inRow: u32,  // first input row (the last prompt row before lm_head)
  _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> outv: array<f32>;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let row = wid.x;
  let base = (row + p.inRow) * N;
  var ss = 0.0;
  for (var e = 0u; e < PER; e++) {
    let i = t + e * WG;
    // clamped, not guarded: every load is issued before any is used
    let v = x[base + min(i, N - 1u)];
    if (i < N) { ss += v * v; }
  }
  partial[t] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { partial[t] += partial[t + s]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(partial[0] / f32(N) + p.eps);
  for (var e = 0u; e < PER; e++) {
    let i = t + e * WG;
    let c = min(i, N - 1u);
    let v = x[base + c] * inv * weight[c];
    if (i < N) { outv[row * N + i] = v; }
  }
}
