// Copies n f32 (or u32) words: dst[dstOffset + i] = src[srcOffset + i]. Used between ops of one compute pass
// (calibration captures a projection's input; the greedy search restores a layer's input).
// bindings: 0 params (uniform), 1 src (read), 2 dst (read_write)
struct Params {
  n: u32,
  srcOffset: u32,
  dstOffset: u32,
  _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  dst[p.dstOffset + i] = src[p.srcOffset + i];
}
