/**
 * Host-side conversions between the checkpoint float formats (bf16, f16, f32). They run over every weight of
 * multi-gigabyte models, so they work on bit patterns in place: no per-element allocation, no Math calls.
 * @module
 */

// Scratch view for the scalar helpers; module-level so that a call allocates nothing.
const scratchF32 = new Float32Array(1);
const scratchI32 = new Int32Array(scratchF32.buffer);

/** f32 bit pattern (as an int32) of an f16 bit pattern (exact: every f16 value, NaN payloads included, is an f32). */
function f16ToF32BitsOf(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let man = h & 0x3ff;
  if (exp === 31) return sign | 0x7f800000 | (man << 13);
  if (exp !== 0) return sign | ((exp + 112) << 23) | (man << 13);
  if (man === 0) return sign;
  // Subnormal m * 2^-24: shift the leading one up to the implicit-bit position to renormalize.
  let e = 113;
  while ((man & 0x400) === 0) {
    man <<= 1;
    e--;
  }
  return sign | (e << 23) | ((man & 0x3ff) << 13);
}

/**
 * f16 bit pattern of an f32 bit pattern (as an int32), rounding to nearest even (the IEEE default). The common
 * normal range is branch-free: adding 0xfff plus the lowest kept bit before the shift is round-half-even.
 */
function f32BitsToF16(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const abs = u & 0x7fffffff;
  // Normal f16 range [2^-14, 2^16). A carry out of the mantissa bumps the exponent, which is exactly right,
  // up to 0x7c00 (infinity) for values that round past 65504.
  if (abs >= 0x38800000 && abs < 0x47800000) {
    return sign | ((abs - 0x38000000 + 0xfff + ((abs >>> 13) & 1)) >>> 13);
  }
  if (abs > 0x7f800000) return sign | 0x7e00 | ((abs >>> 13) & 0x3ff); // NaN: quiet, keeps the top payload bits
  if (abs >= 0x47800000) return sign | 0x7c00; // infinity, or finite beyond f16's range
  if (abs < 0x33000000) return sign; // at most 2^-25, half the smallest subnormal: rounds (ties even) to zero
  // Subnormal f16 (unit 2^-24): shift the full 24-bit significand right; a carry makes the smallest normal.
  const exp = abs >>> 23;
  const full = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - exp; // 14..24
  const h = full >>> shift;
  const rest = full & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return sign | (rest > half || (rest === half && (h & 1) !== 0) ? h + 1 : h);
}

// Bit patterns go through Int32Array views: V8 keeps int32 values unboxed, while Uint32Array elements above
// 2^31 (every negative float) would become heap doubles and slow the loops several-fold.

// f16 -> f32 is a pure lookup: 256 KiB built on first use beats branching per element.
let f16Table: Int32Array | null = null;
function table(): Int32Array {
  if (f16Table) return f16Table;
  const t = new Int32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = f16ToF32BitsOf(h);
  return f16Table = t;
}

/** Widens bf16 bit patterns to f32 exactly (a bf16 is the upper half of an f32). */
export function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  // Writing through an integer view keeps NaN payloads and avoids float canonicalization.
  const bits = new Int32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

/** Widens f16 bit patterns to f32 exactly. */
export function f16ToF32(src: Uint16Array): Float32Array {
  const t = table();
  const out = new Float32Array(src.length);
  const bits = new Int32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = t[src[i]];
  return out;
}

/**
 * Narrows f32 values to f16 bit patterns with round-to-nearest-even; subnormals are produced exactly, values
 * beyond the f16 range become ±Infinity and NaN stays NaN. Writes into `out` when given (it must be at least
 * as long as `src`).
 */
export function f32ToF16Bits(src: Float32Array, out?: Uint16Array): Uint16Array {
  const dst = out ?? new Uint16Array(src.length);
  if (dst.length < src.length) throw new RangeError(`output holds ${dst.length} values, need ${src.length}`);
  const bits = new Int32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) dst[i] = f32BitsToF16(bits[i]);
  return dst;
}

/** The value of one f16 bit pattern (low 16 bits of `bits`). */
export function f16BitsToF32(bits: number): number {
  scratchI32[0] = f16ToF32BitsOf(bits & 0xffff);
  return scratchF32[0];
}

/** The f16 bit pattern nearest to `x` after rounding it to f32 first (round to nearest even at each step). */
export function f32ToF16Bit(x: number): number {
  scratchF32[0] = x;
  return f32BitsToF16(scratchI32[0]);
}
