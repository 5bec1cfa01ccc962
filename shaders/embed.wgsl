// Embedding gather: out[row][i] = table[token(row)][i], f16 table to f32 activations.
// The table is either row-major [vocab][hidden] or the transposed lm_head [hidden][vocab] of a model with
// tied embeddings; the element of (token, i) is at halves (token - tok0) * tokStride + i * elemStride.
// With writeSs (decode, one row), each workgroup also writes the sum of squares of its 256 elements to
// ss[workgroup] for the first layer's fused RMSNorm.
// bindings: 0 params (uniform), 1 table (array<u32>, f16 pairs, read), 2 ids (array<u32>, read),
//           3 out (array<f32>, [rows][hidden], write), 4 ss (f32, write)
const WG: u32 = 256u;
struct Params {
  hidden: u32,      // elements per row
  rows: u32,        // tokens to gather
  idOffset: u32,    // ids[idOffset + row] is the token of row (1 with the decode state buffer)
  tok0: u32,        // first token this table part holds
  tok1: u32,        // one past the last
  tokStride: u32,   // halves between tokens
  elemStride: u32,  // halves between elements of one token
  writeSs: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> outv: array<f32>;
@group(0) @binding(4) var<storage, read_write> ss: array<f32>;
var<workgroup> part: array<f32, WG>;

fn half_at(h: u32) -> f32 {
  let pair = unpack2x16float(table[h >> 1u]);
  return select(pair.x, pair.y, (h & 1u) == 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) t: u32,
        @builtin(workgroup_id) wid: vec3<u32>) {
  let i = gid.x;
  let row = wid.y;
  let tok = ids[p.idOffset + row];
  if (row >= p.rows || tok < p.tok0 || tok >= p.tok1) { return; }
  var v = 0.0;
  if (i < p.hidden) {
    v = half_at((tok - p.tok0) * p.tokStride + i * p.elemStride);
    outv[row * p.hidden + i] = v;
  }
  if (p.writeSs != 0u) {
    part[t] = v * v;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
      if (t < k) { part[t] += part[t + k]; }
      workgroupBarrier();
    }
    if (t == 0u) { ss[wid.x] = part[0]; }
  }
}
