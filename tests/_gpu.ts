/**
 * Shared helpers for GPU tests: one device for the whole run, seeded random data, poisoned outputs.
 * @module
 */
import { createGpuContext, type GpuContext } from "../src/gpu/context.ts";
import { f16ToF32, f32ToF16Bits } from "../src/model/dtype.ts";

let shared: Promise<GpuContext> | null = null;
/** The test run's GPU context (lavapipe in CI). */
export function gpu(): Promise<GpuContext> {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  if (!shared) {
    shared = createGpuContext().then((ctx) => {
      // Free the device when the test module ends, while the runtime is whole, rather than leave it to the
      // module's teardown. (The heap-corruption aborts at exit that this was once meant to stop came from libEGL,
      // now never loaded: docs/testing.md.)
      globalThis.addEventListener("unload", () => ctx.device.destroy());
      return ctx;
    });
  }
  return shared;
}

/** Mulberry32: small seeded generator so failures reproduce. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform values in [-scale, scale). */
export function randn(n: number, r: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

/** A value no kernel writes: an unwritten element fails every comparison. */
export const POISON = 0x7fc0dead;

/** A storage buffer full of the poison pattern. */
export function poisoned(ctx: GpuContext, count: number, label = "poisoned"): GPUBuffer {
  return ctx.buffer(count * 4, label, new Uint32Array(count).fill(POISON));
}

/** Largest |a - b| relative to max |b| (NaN if any element is NaN). */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (Number.isNaN(d)) return NaN;
    num = Math.max(num, d);
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / Math.max(den, 1e-30);
}

/** f16-rounded copy, so a CPU reference sees the weights the GPU sees. */
export function f16round(a: Float32Array): Float32Array {
  return f16ToF32(f32ToF16Bits(a));
}

/** An L2 prefetch as the tests ask for it: shaders/prefetch.wgsl's range fields (L2Prefetch without a buffer). */
export interface PrefetchCase {
  startVec4: number;
  countVec4: number;
  workgroups?: number;
  ranges?: number;
  strideVec4?: number;
}

/**
 * The prefetches the kernel tests run: slices of 4334 (8-load trips, then a tail that not every thread
 * reaches); slices of 1 with the last two workgroups empty; the default count of workgroups, slices of 79;
 * 5 ranges of 701 vec4s 2003 apart on 12 workgroups (2 or 3 a range); 3 ranges of 4 on 7 workgroups (some with
 * nothing to read). All within 16000 vec4s.
 */
export const PREFETCH_CASES: readonly PrefetchCase[] = [
  { startVec4: 37, countVec4: 13001, workgroups: 3 },
  { startVec4: 15000, countVec4: 5, workgroups: 7 },
  { startVec4: 3, countVec4: 9999 },
  { startVec4: 11, countVec4: 701, workgroups: 12, ranges: 5, strideVec4: 2003 },
  { startVec4: 900, countVec4: 4, workgroups: 7, ranges: 3, strideVec4: 5000 },
];

/**
 * What each of `wg` prefetch workgroups writes (shaders/prefetch.wgsl): the XOR of its slice of `words` as two
 * exact 16-bit halves. Range r gets workgroups [ceil(r wg / R), ceil((r + 1) wg / R)), each an even share of it.
 */
export function prefetchChecksums(words: Uint32Array, pre: PrefetchCase, wg: number): Float32Array {
  const nr = pre.ranges ?? 1;
  const sums = new Float32Array(2 * wg);
  for (let i = 0; i < wg; i++) {
    const r = Math.floor((i * nr) / wg);
    const w0 = Math.ceil((r * wg) / nr);
    const per = Math.ceil(pre.countVec4 / (Math.ceil(((r + 1) * wg) / nr) - w0));
    const start = pre.startVec4 + r * (pre.strideVec4 ?? 0);
    const lo = start + Math.min((i - w0) * per, pre.countVec4);
    const hi = start + Math.min((i - w0 + 1) * per, pre.countVec4);
    let x = 0;
    for (let k = 4 * lo; k < 4 * hi; k++) x ^= words[k];
    sums[2 * i] = (x >>> 0) & 0xffff;
    sums[2 * i + 1] = x >>> 16;
  }
  return sums;
}
