/**
 * GGML tensor types and CPU dequantizers for the ones the GGUF loader reads: F32, F16, BF16 and the block
 * formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K. Layouts follow ggml's `ggml-common.h`
 * (`block_q8_0`, `block_q4_0`, ..., `block_q6_K`) and `dequantize_row_*` in `ggml-quants.c`; all fields are
 * little-endian.
 * @module
 */
import { bf16ToF32, f16BitsToF32, f16ToF32 } from "./dtype.ts";

/** A GGML tensor type the loader can dequantize. */
export type GgmlType =
  | "F32"
  | "F16"
  | "BF16"
  | "Q8_0"
  | "Q4_0"
  | "Q4_1"
  | "Q5_0"
  | "Q5_1"
  | "Q4_K"
  | "Q5_K"
  | "Q6_K";

/** Block geometry of a GGML type: `blockSize` elements take `blockBytes` bytes. */
export interface GgmlTypeInfo {
  /** Type name as ggml spells it. */
  name: GgmlType;
  /** Elements per block (1 for plain floats). */
  blockSize: number;
  /** Bytes per block. */
  blockBytes: number;
}

/** Supported types by their `ggml_type` enum value. */
export const GGML_TYPES: ReadonlyMap<number, GgmlTypeInfo> = new Map<number, GgmlTypeInfo>([
  [0, { name: "F32", blockSize: 1, blockBytes: 4 }],
  [1, { name: "F16", blockSize: 1, blockBytes: 2 }],
  [2, { name: "Q4_0", blockSize: 32, blockBytes: 18 }], // f16 d, 16 bytes of nibbles
  [3, { name: "Q4_1", blockSize: 32, blockBytes: 20 }], // f16 d, f16 m, 16 bytes of nibbles
  [6, { name: "Q5_0", blockSize: 32, blockBytes: 22 }], // f16 d, u32 of fifth bits, 16 bytes of nibbles
  [7, { name: "Q5_1", blockSize: 32, blockBytes: 24 }], // f16 d, f16 m, u32 of fifth bits, 16 bytes of nibbles
  [8, { name: "Q8_0", blockSize: 32, blockBytes: 34 }], // f16 d, 32 int8
  [12, { name: "Q4_K", blockSize: 256, blockBytes: 144 }], // f16 d, f16 dmin, 12 scale bytes, 128 nibble bytes
  [13, { name: "Q5_K", blockSize: 256, blockBytes: 176 }], // as Q4_K plus 32 bytes of fifth bits before qs
  [14, { name: "Q6_K", blockSize: 256, blockBytes: 210 }], // 128 ql, 64 qh, 16 int8 scales, f16 d
  [30, { name: "BF16", blockSize: 1, blockBytes: 2 }],
]);

/** Names of the `ggml_type` values the loader knows but does not read, so errors can name them. */
export const UNSUPPORTED_GGML_TYPES: ReadonlyMap<number, string> = new Map([
  [9, "Q8_1"],
  [10, "Q2_K"],
  [11, "Q3_K"],
  [15, "Q8_K"],
  [16, "IQ2_XXS"],
  [17, "IQ2_XS"],
  [18, "IQ3_XXS"],
  [19, "IQ1_S"],
  [20, "IQ4_NL"],
  [21, "IQ3_S"],
  [22, "IQ2_S"],
  [23, "IQ4_XS"],
  [24, "I8"],
  [25, "I16"],
  [26, "I32"],
  [27, "I64"],
  [28, "F64"],
  [29, "IQ1_M"],
  [34, "TQ1_0"],
  [35, "TQ2_0"],
  [39, "MXFP4"],
]);

/** Bytes that `elements` values of `type` take (elements must be a whole number of blocks). */
export function ggmlBytes(type: GgmlTypeInfo, elements: number): number {
  return (elements / type.blockSize) * type.blockBytes;
}

/**
 * Dequantizes `raw` (a whole number of blocks of `type`, starting at byte 0 of a fresh buffer or any view) to
 * f32, in storage order.
 */
export function dequantize(raw: Uint8Array, type: GgmlType): Float32Array {
  switch (type) {
    case "F32":
      return raw.byteOffset % 4 === 0
        ? new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4)
        : new Float32Array(raw.slice().buffer);
    case "F16":
      return f16ToF32(halves(raw));
    case "BF16":
      return bf16ToF32(halves(raw));
    case "Q8_0":
      return dequantizeQ8_0(raw);
    case "Q4_0":
      return dequantizeSmall(raw, false, false);
    case "Q4_1":
      return dequantizeSmall(raw, true, false);
    case "Q5_0":
      return dequantizeSmall(raw, false, true);
    case "Q5_1":
      return dequantizeSmall(raw, true, true);
    case "Q4_K":
      return dequantizeQ4K(raw, false);
    case "Q5_K":
      return dequantizeQ4K(raw, true);
    case "Q6_K":
      return dequantizeQ6K(raw);
  }
}

function halves(raw: Uint8Array): Uint16Array {
  return raw.byteOffset % 2 === 0
    ? new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2)
    : new Uint16Array(raw.slice().buffer);
}

const f16At = (b: Uint8Array, i: number): number => f16BitsToF32(b[i] | (b[i + 1] << 8));

/** The f16 at byte `at` of every `stride`-byte block, widened in one table pass (a call per block is slow). */
function blockScales(b: Uint8Array, stride: number, at: number): Float32Array {
  const n = b.length / stride;
  const bits = new Uint16Array(n);
  for (let i = 0; i < n; i++) bits[i] = b[i * stride + at] | (b[i * stride + at + 1] << 8);
  return f16ToF32(bits);
}

/** `block_q8_0`: x = d * q, q int8. */
function dequantizeQ8_0(b: Uint8Array): Float32Array {
  const blocks = b.length / 34;
  const out = new Float32Array(blocks * 32);
  const ds = blockScales(b, 34, 0);
  for (let i = 0; i < blocks; i++) {
    const p = i * 34;
    const d = ds[i];
    for (let j = 0; j < 32; j++) out[i * 32 + j] = d * ((b[p + 2 + j] << 24) >> 24);
  }
  return out;
}

/**
 * The 32-element formats `block_q4_0`, `block_q4_1`, `block_q5_0`, `block_q5_1`: f16 d, (`_1`: f16 m), (`5`: a
 * u32 of fifth bits, bit j for element j), 16 bytes whose low nibbles are elements 0..15 and high nibbles
 * 16..31. `_0`: x = d * (q - 8 or 16); `_1`: x = d * q + m.
 */
function dequantizeSmall(b: Uint8Array, withMin: boolean, fifth: boolean): Float32Array {
  const size = 18 + (withMin ? 2 : 0) + (fifth ? 4 : 0);
  const blocks = b.length / size;
  const out = new Float32Array(blocks * 32);
  const ds = blockScales(b, size, 0);
  const ms = withMin ? blockScales(b, size, 2) : null;
  const bias = withMin ? 0 : fifth ? 16 : 8;
  const qhAt = withMin ? 4 : 2;
  const qsAt = qhAt + (fifth ? 4 : 0);
  for (let i = 0; i < blocks; i++) {
    const p = i * size;
    const d = ds[i], m = ms ? ms[i] : 0;
    const qh = fifth
      ? (b[p + qhAt] | (b[p + qhAt + 1] << 8) | (b[p + qhAt + 2] << 16) | (b[p + qhAt + 3] << 24)) >>> 0
      : 0;
    for (let j = 0; j < 16; j++) {
      const q = b[p + qsAt + j];
      out[i * 32 + j] = d * (((q & 0xf) | (((qh >>> j) & 1) << 4)) - bias) + m;
      out[i * 32 + j + 16] = d * (((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - bias) + m;
    }
  }
  return out;
}

/** ggml `get_scale_min_k4`: 6-bit scale and min of sub-block j (0..7) packed in 12 bytes at `s`. */
function scaleMinK4(b: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [b[s + j] & 63, b[s + j + 4] & 63];
  return [
    (b[s + j + 4] & 0xf) | ((b[s + j - 4] >> 6) << 4),
    (b[s + j + 4] >> 4) | ((b[s + j] >> 6) << 4),
  ];
}

/**
 * `block_q4_K`: 8 sub-blocks of 32; sub-block k has scale d * sc[k] and offset dmin * m[k]; each 32 bytes of
 * `qs` hold two sub-blocks (low nibbles first); x = d * sc * q - dmin * m. `block_q5_K` (`fifth`) has 32 bytes
 * `qh` before `qs`: bit k of qh[l] is the fifth bit of element l of sub-block k.
 */
function dequantizeQ4K(b: Uint8Array, fifth: boolean): Float32Array {
  const size = fifth ? 176 : 144;
  const blocks = b.length / size;
  const out = new Float32Array(blocks * 256);
  for (let i = 0; i < blocks; i++) {
    const p = i * size;
    const d = f16At(b, p);
    const dmin = f16At(b, p + 2);
    const qh = p + 16;
    const qs = p + (fifth ? 48 : 16);
    let y = i * 256;
    for (let j = 0; j < 4; j++) {
      const [sc1, m1] = scaleMinK4(b, p + 4, 2 * j);
      const [sc2, m2] = scaleMinK4(b, p + 4, 2 * j + 1);
      const q = qs + 32 * j;
      for (let l = 0; l < 32; l++) {
        const h1 = fifth ? ((b[qh + l] >> (2 * j)) & 1) << 4 : 0;
        const h2 = fifth ? ((b[qh + l] >> (2 * j + 1)) & 1) << 4 : 0;
        out[y + l] = d * sc1 * ((b[q + l] & 0xf) | h1) - dmin * m1;
        out[y + 32 + l] = d * sc2 * ((b[q + l] >> 4) | h2) - dmin * m2;
      }
      y += 64;
    }
  }
  return out;
}

/**
 * `block_q6_K`: 16 sub-blocks of 16 with int8 scales; each 6-bit q is 4 bits of `ql` and 2 of `qh`, stored
 * in two halves of 128 elements; x = d * sc * (q - 32).
 */
function dequantizeQ6K(b: Uint8Array): Float32Array {
  const blocks = b.length / 210;
  const out = new Float32Array(blocks * 256);
  for (let i = 0; i < blocks; i++) {
    const p = i * 210;
    const d = f16At(b, p + 208);
    for (let half = 0; half < 2; half++) {
      const ql = p + 64 * half;
      const qh = p + 128 + 32 * half;
      const sc = p + 192 + 8 * half;
      const y = i * 256 + 128 * half;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = b[qh + l];
        const q1 = ((b[ql + l] & 0xf) | ((h & 3) << 4)) - 32;
        const q2 = ((b[ql + l + 32] & 0xf) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((b[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((b[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
        const s = (k: number) => (b[sc + is + k] << 24) >> 24;
        out[y + l] = d * s(0) * q1;
        out[y + l + 32] = d * s(2) * q2;
        out[y + l + 64] = d * s(4) * q3;
        out[y + l + 96] = d * s(6) * q4;
      }
    }
  }
  return out;
}
