// Adds the K-split partial tiles of matmul.wgsl / matmul_q.wgsl (SPLITK) and applies their epilogue:
// y[m][yOffset + c] (+)= sum_z part[z][m][c] (+ bias[c]).
// bindings: 0 params (uniform), 1 part (f32 [splits][M][ncols], read), 2 bias (f32 [ncols], read),
//           3 y (f32 [M][ldy], read_write)
override ACCUM: bool = false;  // y += sum (residual add)
override BIAS: bool = false;
// a constant, so that a thread's loads of its column's splits go out together
override SPLITS: u32 = 1u;
struct Params {
  M: u32,
  ncols: u32,
  ldy: u32,
  yOffset: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  let m = gid.y;
  if (c >= p.ncols || m >= p.M) { return; }
  var v = 0.0;
  for (var s = 0u; s < SPLITS; s++) { v += part[(s * p.M + m) * p.ncols + c]; }
  if (BIAS) { v += bias[c]; }
  let at = m * p.ldy + p.yOffset + c;
  if (ACCUM) {
    y[at] += v;
  } else {
    y[at] = v;
  }
}
