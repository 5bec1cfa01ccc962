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
      // process's exit (a CI run once aborted with heap corruption after every test had passed).
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
