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

/** The kept set of one logits row after temperature, top-k and top-p, as sample.wgsl computes it. */
interface Kept {
  /** argmax, lowest id on ties. */
  best: number;
  /** z_i = (logit_i - max) / temperature, rounded to f32 as the GPU does. */
  z: Float64Array;
  /** Order-preserving keys of z. */
  keys: Uint32Array;
  /** Tokens whose key is at least this are kept. */
  thr: number;
}

function keptSet(logits: ArrayLike<number>, o: SamplingOptions): Kept {
  const best = argmax(logits);
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
  return { best, z, keys, thr };
}

/** Inverse CDF in id order over non-negative weights; the last positive id catches rounding; -1 if none. */
function drawIndex(w: ArrayLike<number>, u: number): number {
  let total = 0;
  let last = -1;
  for (let i = 0; i < w.length; i++) {
    if (w[i] > 0) {
      total += w[i];
      last = i;
    }
  }
  const target = u * total;
  let acc = 0;
  for (let i = 0; i < w.length; i++) {
    if (w[i] > 0) {
      acc += w[i];
      if (target < acc) return i;
    }
  }
  return last;
}

/**
 * Picks a token: greedy at temperature 0; otherwise top-k (ties at the k-th value kept), then top-p (smallest
 * set of most likely tokens holding top_p of the mass, ties kept), then inverse CDF in id order.
 */
export function sampleToken(logits: ArrayLike<number>, o: SamplingOptions, step: number): number {
  if (!(o.temperature > 0)) return argmax(logits);
  const { best, z, keys, thr } = keptSet(logits, o);
  let total = 0;
  let last = best;
  for (let i = 0; i < z.length; i++) {
    if (keys[i] >= thr) {
      total += Math.exp(z[i]);
      last = i;
    }
  }
  const target = samplerUniform(o.seed, step) * total;
  let acc = 0;
  for (let i = 0; i < z.length; i++) {
    if (keys[i] >= thr) {
      acc += Math.exp(z[i]);
      if (target < acc) return i;
    }
  }
  return last;
}

/**
 * The distribution a token is sampled from at temperature > 0: softmax of logits / temperature restricted to
 * the top-k / top-p kept set (zero elsewhere), summing to 1. At temperature 0, all mass on the argmax.
 */
export function tokenProbabilities(logits: ArrayLike<number>, o: SamplingOptions): Float64Array {
  const out = new Float64Array(logits.length);
  if (!(o.temperature > 0)) {
    out[argmax(logits)] = 1;
    return out;
  }
  const k = keptSet(logits, o);
  let total = 0;
  for (let i = 0; i < out.length; i++) {
    if (k.keys[i] >= k.thr) total += out[i] = Math.exp(k.z[i]);
  }
  for (let i = 0; i < out.length; i++) out[i] /= total;
  return out;
}

/**
 * Seeds of the two random streams of speculative acceptance, derived from the generation seed so that they
 * are independent of the draft sampler's stream u(seed, step).
 */
export function specSeeds(seed: number): { accept: number; residual: number } {
  return { accept: pcg((seed ^ 0x5bd1e995) >>> 0), residual: pcg((seed ^ 0x1b873593) >>> 0) };
}

/** What one speculative round decided. */
export interface SpecDecision {
  /** Drafts accepted (a prefix of the k drafts). */
  accepted: number;
  /** The token after them: the residual sample at the first rejection, or the bonus token from p_k. */
  token: number;
}

/**
 * The speculative sampling rule (Leviathan et al. 2023; Chen et al. 2023), the CPU mirror of
 * shaders/spec_accept.wgsl. drafts[i] was drawn from q_i = the distribution of draftLogits[i] (after the same
 * temperature / top-k / top-p); p_i is that of verifyLogits[i] (k + 1 rows). Draft i is accepted when
 * u_i * q_i(x) < p_i(x); at the first rejection n the token is drawn from norm(max(0, p_n - q_n)), and after
 * k acceptances from p_k, so the emitted tokens follow the verify (dense) distribution exactly. Random
 * numbers: u(specSeeds(seed).accept, step0 + 1 + i) and u(specSeeds(seed).residual, step0 + 1 + n). At
 * temperature 0: accept while drafts[i] is the argmax of p_i, then the argmax of p_n.
 * @param step0 Index (generation step) of the token fed to the round: draft i is step step0 + 1 + i.
 */
export function speculativeAccept(
  draftLogits: ArrayLike<number>[],
  verifyLogits: ArrayLike<number>[],
  drafts: number[],
  o: SamplingOptions,
  step0: number,
): SpecDecision {
  const k = drafts.length;
  if (draftLogits.length < k || verifyLogits.length < k + 1) {
    throw new RangeError(`k = ${k} drafts need ${k} draft rows and ${k + 1} verify rows`);
  }
  if (!(o.temperature > 0)) {
    let n = 0;
    while (n < k && drafts[n] === argmax(verifyLogits[n])) n++;
    return { accepted: n, token: argmax(verifyLogits[n]) };
  }
  const seeds = specSeeds(o.seed);
  const probs = (l: ArrayLike<number>) => Float32Array.from(tokenProbabilities(l, o));
  let n = 0;
  let p = probs(verifyLogits[0]);
  let q: Float32Array | null = null;
  while (n < k) {
    q = probs(draftLogits[n]);
    const x = drafts[n];
    const u = samplerUniform(seeds.accept, step0 + 1 + n);
    if (!(Math.fround(u * q[x]) < p[x])) break;
    n++;
    p = probs(verifyLogits[n]);
    q = null;
  }
  const u = samplerUniform(seeds.residual, step0 + 1 + n);
  let token = -1;
  if (q) token = drawIndex(p.map((pi, i) => Math.max(0, pi - q![i])), u);
  // rounding can leave no positive residual: fall back to p_n itself
  if (token < 0) token = drawIndex(p, u);
  return { accepted: n, token };
}
