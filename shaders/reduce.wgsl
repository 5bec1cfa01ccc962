// Adds the split-K partial sums of gemv.wgsl and applies the projection's epilogue.
// MODE 0: out[o] = sum (+ bias[o]); MODE 1: out[o] += sum (residual add), and each workgroup writes the sum of
// squares of its 256 new values to ss[workgroup] (the next RMSNorm, fused into the next GEMV, adds them up);
// MODE 2: out[o] = silu(sum_a) * sum_b (SwiGLU of fused gate|up, b at column offB).
// bindings: 0 params (uniform), 1 partials (f32 [splits][np], read), 2 bias (f32, read),
//           3 out (f32, read_write), 4 ss (f32 [ceil(n / 256)], write)
override MODE: u32 = 0u;
// a constant, so that each thread's loads of its column's splits are all in flight at once (a loop bound from
// the uniform kept them one L2 round trip apart)
override SPLITS: u32 = 1u;
const WG: u32 = 256u;
struct Params {
  n: u32,          // outputs
  splits: u32,
  np: u32,         // columns per split
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
@group(0) @binding(4) var<storage, read_write> ss: array<f32>;
var<workgroup> part: array<f32, WG>;
var<workgroup> part2: array<f32, 16>;

fn total(col: u32) -> f32 {
  var sum = 0.0;
  for (var s = 0u; s < SPLITS; s++) { sum += partials[s * p.np + col]; }
  return sum;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) t: u32,
        @builtin(workgroup_id) wid: vec3<u32>) {
  let o = gid.x;
  let live = o < p.n;
  if (MODE == 2u) {
    if (live) {
      let g = total(p.srcOffset + o);
      outv[p.outOffset + o] = g / (1.0 + exp(-g)) * total(p.offB + o);
    }
    return;
  }
  var v = 0.0;
  if (live) {
    v = total(p.srcOffset + o);
    if (p.hasBias != 0u) { v += bias[o]; }
  }
  if (MODE == 1u) {
    var nv = 0.0;
    if (live) {
      nv = outv[p.outOffset + o] + v;
      outv[p.outOffset + o] = nv;
    }
    // two levels (16 sums of 16, then one of 16): two barriers where a tree takes nine
    part[t] = nv * nv;
    workgroupBarrier();
    if (t < 16u) {
      var sum = 0.0;
      for (var i = 0u; i < 16u; i++) { sum += part[16u * t + i]; }
      part2[t] = sum;
    }
    workgroupBarrier();
    if (t == 0u) {
      var sum = 0.0;
      for (var i = 0u; i < 16u; i++) { sum += part2[i]; }
      ss[wid.x] = sum;
    }
  } else if (live) {
    outv[p.outOffset + o] = v;
  }
}
