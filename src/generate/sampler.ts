/**
 * The CPU mirror of shaders/sample.wgsl: the same selection rule and the same counter-based random numbers,
 * so a seeded generation can be checked (and reproduced) without the GPU.
 * @module
 */

/** Sampling settings. */
export interface SamplingOptions {
  /** 0 is greedy. */
  temperature: number;
  /** 0 disables top-k. */
  topK: number;
  /** 1 disables top-p. */
  topP: number;
  /** Seed (u32). */
  seed: number;
}

/** PCG hash (u32 -> u32), as in sample.wgsl. */
export function pcg(v: number): number {
  const s = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const w = Math.imul(((s >>> ((s >>> 28) + 4)) ^ s) >>> 0, 277803737) >>> 0;
  return ((w >>> 22) ^ w) >>> 0;
}

/** The uniform number in [0, 1) used for the token of generation step `step`. */
export function samplerUniform(seed: number, step: number): number {
  return (pcg((pcg(step) + seed) >>> 0) >>> 8) / 16777216;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** Order-preserving u32 key of an f32. */
export function keyOf(x: number): number {
  f32[0] = x;
  const b = u32[0];
  return (b & 0x80000000 ? ~b : b | 0x80000000) >>> 0;
}

/** Index of the largest value, lowest index on ties. */
export function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/**
 * Picks a token: greedy at temperature 0; otherwise top-k (ties at the k-th value kept), then top-p (smallest
 * set of most likely tokens holding top_p of the mass, ties kept), then inverse CDF in id order.
 */
export function sampleToken(logits: ArrayLike<number>, o: SamplingOptions, step: number): number {
  const best = argmax(logits);
  if (!(o.temperature > 0)) return best;
  const V = logits.length;
  const zmax = logits[best];
  const inv = Math.fround(1 / o.temperature);
  const z = new Float64Array(V);
  const keys = new Uint32Array(V);
  for (let i = 0; i < V; i++) {
    z[i] = Math.fround(Math.fround(logits[i] - zmax) * inv);
    keys[i] = keyOf(z[i]);
  }
  let thr = 0;
  if (o.topK > 0 && o.topK < V) {
    const sorted = Array.from(keys).sort((a, b) => b - a);
    thr = sorted[o.topK - 1];
  }
  if (o.topP < 1) {
    let mass = 0;
    for (let i = 0; i < V; i++) if (keys[i] >= thr) mass += Math.exp(z[i]);
    const target = mass * o.topP;
    // the largest key whose kept mass still reaches the target: walk keys from the top
    const order = Array.from(keys.keys()).filter((i) => keys[i] >= thr).sort((a, b) => keys[b] - keys[a]);
    let acc = 0;
    for (let j = 0; j < order.length; j++) {
      acc += Math.exp(z[order[j]]);
      const next = j + 1 < order.length ? keys[order[j + 1]] : -1;
      if (acc >= target && next !== keys[order[j]]) {
        thr = keys[order[j]];
        break;
      }
    }
  }
  let total = 0;
  let last = best;
  for (let i = 0; i < V; i++) {
    if (keys[i] >= thr) {
      total += Math.exp(z[i]);
      last = i;
    }
  }
  const target = samplerUniform(o.seed, step) * total;
  let acc = 0;
  for (let i = 0; i < V; i++) {
    if (keys[i] >= thr) {
      acc += Math.exp(z[i]);
      if (target < acc) return i;
    }
  }
  return last;
}
