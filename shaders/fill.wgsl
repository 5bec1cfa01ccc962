// Fills a buffer on the GPU, so benchmark models at 7B/8B shapes need no host transfer of random weights.
// MODE 0: each u32 word holds two f16 uniform in [-scale, scale) from a hash of (seed, index);
// MODE 1: each word is the f32 `value`.
// bindings: 0 params (uniform), 1 dst (u32 words, write)
override MODE: u32 = 0u;
struct Params {
  n: u32,      // words
  seed: u32,
  scale: f32,
  value: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;

fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}

fn uniform_pm1(h: u32) -> f32 {
  return f32(h >> 8u) * (2.0 / 16777216.0) - 1.0;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  if (MODE == 1u) {
    dst[i] = bitcast<u32>(p.value);
    return;
  }
  let h = pcg(i ^ pcg(p.seed));
  let a = uniform_pm1(h) * p.scale;
  let b = uniform_pm1(pcg(h)) * p.scale;
  dst[i] = pack2x16float(vec2<f32>(a, b));
}
