// Gathers the rows of a speculative verify pass: ids[i] = tokens[step0 + i] for i in 0..k (the fed token and
// the k drafts), with step0 = state[2] - 1 - k read from the state the k draft steps left, so the round needs
// no host round trip.
// bindings: 0 params (uniform), 1 tokens (u32 [capacity], read), 2 state (u32 [4], read), 3 ids (u32 [k + 1],
//           read_write)
struct Params {
  k: u32,
  capacity: u32,
  _pad0: u32,
  _pad1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> state: array<u32>;
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i > p.k) { return; }
  let at = state[2] - 1u - p.k + i;
  ids[i] = select(0u, tokens[at], at < p.capacity);
}
