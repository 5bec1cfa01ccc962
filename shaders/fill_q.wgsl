// Fills one segment of a group-quantized matrix (layout of gemv_q.wgsl) on the GPU, so benchmark models at
// 7B/8B shapes need no host transfer: code words get random bits from a hash of (seed, index), metadata words
// a constant (two f16: int8 two group scales, int4 scale and offset), row padding zero.
// bindings: 0 params (uniform), 1 dst (u32 words, write)
struct Params {
  base: u32,       // first word of the segment's block
  stride: u32,     // words per row
  scale0: u32,     // word of a row's metadata
  n: u32,          // words of the block (rows * stride)
  seed: u32,
  metaWord: u32,   // value of every metadata word
  metaWords: u32,  // metadata words per row
  _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;

fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  let w = i % p.stride;
  var v = 0u;
  if (w < p.scale0) {
    v = pcg(i ^ pcg(p.seed));
  } else if (w < p.scale0 + p.metaWords) {
    v = p.metaWord;
  }
  dst[p.base + i] = v;
}
