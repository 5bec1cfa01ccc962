/**
 * Small statistics the benchmarks share.
 * @module
 */

/** The median of a non-empty list (the upper middle element when its length is even). */
export function median(v: number[]): number {
  if (v.length === 0) throw new RangeError("median of an empty list");
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
