// Adds the split-K partial sums of gemv.wgsl and applies the projection's epilogue.
// MODE 0: out[o] = sum (+ bias[o]); MODE 1: out[o] += sum (residual add); MODE 2: out[o] = silu(sum_a) * sum_b
// (SwiGLU of fused gate|up, b at column offB).
// bindings: 0 params (uniform), 1 partials (f32 [splits][np], read), 2 bias (f32, read),
//           3 out (f32, read_write)
override MODE: u32 = 0u;
struct Params {
  n: u32,          // outputs
  splits: u32,
  np: u32,         // padded columns per split
  srcOffset: u32,  // column of output 0 in partials
  offB: u32,       // column of the up half (MODE 2)
  outOffset: u32,  // element of output 0 in out
  hasBias: u32,
  _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> outv: array<f32>;

fn total(col: u32) -> f32 {
  var sum = 0.0;
  for (var s = 0u; s < p.splits; s++) { sum += partials[s * p.np + col]; }
  return sum;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let o = gid.x;
  if (o >= p.n) { return; }
  if (MODE == 2u) {
    let g = total(p.srcOffset + o);
    outv[p.outOffset + o] = g / (1.0 + exp(-g)) * total(p.offB + o);
    return;
  }
  var v = total(p.srcOffset + o);
  if (p.hasBias != 0u) { v += bias[o]; }
  if (MODE == 1u) {
    outv[p.outOffset + o] += v;
  } else {
    outv[p.outOffset + o] = v;
  }
}
