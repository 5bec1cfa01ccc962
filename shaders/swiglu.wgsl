// SwiGLU for prefill: out[m][i] = silu(gu[m][i]) * gu[m][offB + i], gu being the fused gate|up GEMM output.
// bindings: 0 params (uniform), 1 gu (f32 [rows][ld], read), 2 out (f32 [rows][n], write)
struct Params {
  rows: u32,
  n: u32,
  ld: u32,
  offB: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gu: array<f32>;
@group(0) @binding(2) var<storage, read_write> outv: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  let m = gid.y;
  if (i >= p.n || m >= p.rows) { return; }
  let g = gu[m * p.ld + i];
  outv[m * p.n + i] = g / (1.0 + exp(-g)) * gu[m * p.ld + p.offB + i];
}
