// Weight preparation at load, on the GPU: transposes rows of a checkpoint matrix W [out][in] (f32, uploaded
// as is) into the f16 [in][stride] block layout of the GEMV kernels, rounding to nearest even bit-exactly as
// the host's f32ToF16Bits does (so a model loads to the same bits either way). The host spent ~25 ns a weight
// on the strided transpose and the rounding, minutes for an 8B model.
// Workgroup (ntile, ktile) moves a 32 x 32 tile through workgroup memory, so both the reads (along in) and the
// writes (along out, two f16 a word) are contiguous. Columns [rows, cols) of the range are padding: zeros.
// bindings: 0 params (uniform), 1 src (f32 rows [rows][K] of W, read), 2 dst (u32 words of the block, write)
struct Params {
  K: u32,
  rows: u32,     // rows of W in src (columns of the block written from them)
  cols: u32,     // block columns to write from col0 on (rows, rounded up to the padding)
  stride: u32,   // f16 per block row
  base: u32,     // f16 index of the block's [0][col0] element (even)
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

const T: u32 = 32u;
var<workgroup> tile: array<u32, 1056>;  // 32 x 33 (a padded row: no bank conflicts on the transposed read)

// f16 bits of the f32 with bits u, round to nearest even: NaN stays NaN, overflow becomes infinity,
// subnormals are exact (src/model/dtype.ts f32BitsToF16, line for line).
fn f16_bits(u: u32) -> u32 {
  let sign = (u >> 16u) & 0x8000u;
  let a = u & 0x7fffffffu;
  if (a >= 0x38800000u && a < 0x47800000u) {
    return sign | ((a - 0x38000000u + 0xfffu + ((a >> 13u) & 1u)) >> 13u);
  }
  if (a > 0x7f800000u) { return sign | 0x7e00u | ((a >> 13u) & 0x3ffu); }
  if (a >= 0x47800000u) { return sign | 0x7c00u; }
  if (a < 0x33000000u) { return sign; }
  let e = a >> 23u;
  let full = (a & 0x7fffffu) | 0x800000u;
  let shift = 126u - e;  // 14..24
  let h = full >> shift;
  let rest = full & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  return sign | select(h, h + 1u, rest > half || (rest == half && (h & 1u) != 0u));
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let n0 = wid.x * T;  // block columns (rows of W)
  let k0 = wid.y * T;  // block rows (columns of W)
  // load W[n0 + r][k0 + c]: 4 elements a thread, c fastest (contiguous in src)
  for (var i = 0u; i < 4u; i++) {
    let e = t + i * 256u;
    let r = e / T;
    let c = e % T;
    var v = 0u;
    if (n0 + r < p.rows && k0 + c < p.K) { v = src[(n0 + r) * p.K + k0 + c]; }
    tile[r * (T + 1u) + c] = v;
  }
  workgroupBarrier();
  // write block row k0 + c, columns n0 + 2j, n0 + 2j + 1: 2 words a thread
  for (var i = 0u; i < 2u; i++) {
    let e = t + i * 256u;
    let c = e / (T / 2u);
    let j = e % (T / 2u);
    let n = n0 + 2u * j;
    if (k0 + c < p.K && n < p.cols) {
      let lo = f16_bits(tile[(2u * j) * (T + 1u) + c]);
      let hi = f16_bits(tile[(2u * j + 1u) * (T + 1u) + c]);
      dst[(p.base + (k0 + c) * p.stride + n) / 2u] = lo | (hi << 16u);
    }
  }
}
