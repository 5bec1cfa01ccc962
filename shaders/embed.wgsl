// Embedding gather: out[row][i] = table[token(row)][i], f16 table to f32 activations.
// The table is either row-major [vocab][hidden] or the transposed lm_head [hidden][vocab] of a model with
// tied embeddings; the element of (token, i) is at halves (token - tok0) * tokStride + i * elemStride.
// bindings: 0 params (uniform), 1 table (array<u32>, f16 pairs, read), 2 ids (array<u32>, read),
//           3 out (array<f32>, [rows][hidden], write)
struct Params {
  hidden: u32,      // elements per row
  rows: u32,        // tokens to gather
  idOffset: u32,    // ids[idOffset + row] is the token of row (1 with the decode state buffer)
  tok0: u32,        // first token this table part holds
  tok1: u32,        // one past the last
  tokStride: u32,   // halves between tokens
  elemStride: u32,  // halves between elements of one token
  _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> outv: array<f32>;

fn half_at(h: u32) -> f32 {
  let pair = unpack2x16float(table[h >> 1u]);
  return select(pair.x, pair.y, (h & 1u) == 1u);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  let row = gid.y;
  if (i >= p.hidden || row >= p.rows) { return; }
  let tok = ids[p.idOffset + row];
  if (tok < p.tok0 || tok >= p.tok1) { return; }
  outv[row * p.hidden + i] = half_at((tok - p.tok0) * p.tokStride + i * p.elemStride);
}
