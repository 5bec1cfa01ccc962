// RoPE (Hugging Face rotate-half convention) on q and k of the fused q|k|v rows, then k and v stored as f16 in
// the KV cache at their positions. One thread per (row, head slot, pair of dims): slots 0..H-1 are q heads
// (rotated in place), H..H+KV-1 k heads and H+KV.. v heads (both written to the cache).
// Prefill and the speculative verify pass; a decode step does this inside attn_decode.wgsl.
// The angle is pos * invFreq[i]; it is taken as fract(pos * turns[i]) * 2pi (turns = invFreq / 2pi) so that
// sin/cos see a small argument at any position.
// bindings: 0 params (uniform), 1 qkv (f32 [rows][ldq], read_write), 2 turns (f32 [headDim/2], read),
//           3 kcache (u32 = 2 f16, [numKv][maxSeq][headDim/2], read_write), 4 vcache (same),
//           5 state (u32: [0] = the position state-driven rows count back from, read)
struct Params {
  rows: u32,
  numHeads: u32,
  numKv: u32,
  headDim: u32,
  maxSeq: u32,
  posBase: u32,    // position of row 0 (prefill); with fromState, rows back from state[0]
  fromState: u32,  // 1: position state[0] - posBase + row (decode: posBase 0; speculative verify: k)
  ldq: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> turns: array<f32>;
@group(0) @binding(3) var<storage, read_write> kcache: array<u32>;
@group(0) @binding(4) var<storage, read_write> vcache: array<u32>;
@group(0) @binding(5) var<storage, read> state: array<u32>;

const TAU: f32 = 6.283185307179586;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let quarter = p.headDim / 4u;
  let half = p.headDim / 2u;
  let slot = gid.x / quarter;
  let row = gid.y;
  if (slot >= p.numHeads + 2u * p.numKv || row >= p.rows) { return; }
  let i0 = (gid.x % quarter) * 2u;  // dims i0, i0+1 and their partners i0+half, i0+1+half
  let pos = select(p.posBase + row, state[0] - p.posBase + row, p.fromState != 0u);
  let base = row * p.ldq + slot * p.headDim;
  var lo = vec2<f32>(qkv[base + i0], qkv[base + i0 + 1u]);
  var hi = vec2<f32>(qkv[base + i0 + half], qkv[base + i0 + half + 1u]);
  if (slot < p.numHeads + p.numKv) {
    let ang = fract(f32(pos) * vec2<f32>(turns[i0], turns[i0 + 1u])) * TAU;
    let c = cos(ang);
    let s = sin(ang);
    let a = lo;
    lo = a * c - hi * s;
    hi = hi * c + a * s;
  }
  if (slot < p.numHeads) {
    qkv[base + i0] = lo.x;
    qkv[base + i0 + 1u] = lo.y;
    qkv[base + i0 + half] = hi.x;
    qkv[base + i0 + half + 1u] = hi.y;
    return;
  }
  let kv_slot = (slot - p.numHeads) % p.numKv;
  let at = ((kv_slot * p.maxSeq + pos) * p.headDim + i0) / 2u;
  if (slot < p.numHeads + p.numKv) {
    kcache[at] = pack2x16float(lo);
    kcache[at + half / 2u] = pack2x16float(hi);
  } else {
    vcache[at] = pack2x16float(lo);
    vcache[at + half / 2u] = pack2x16float(hi);
  }
}
