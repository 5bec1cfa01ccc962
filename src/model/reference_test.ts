/**
 * The CPU reference against independent float64 computations written here, and the whole model's KV-cache
 * path against full forwards (stories260k, plus a random Qwen2-style model with q/k/v bias and a sliding
 * window).
 * @module
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import type { ModelConfig } from "./config.ts";
import {
  applyRope,
  argmax,
  attention,
  greedyGenerate,
  logSoftmax,
  matmulT,
  ReferenceModel,
  rmsNorm,
  silu,
  softmax,
  swiglu,
} from "./reference.ts";

const STORIES = new URL("../../../shared/models/stories260k", import.meta.url).pathname;

/** Deterministic pseudo-random numbers (mulberry32) in [-scale, scale). */
function rng(seed: number): (scale?: number) => number {
  let a = seed >>> 0;
  return (scale = 1) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  };
}

function randomArray(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => r(scale));
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assertEquals(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  const d = maxAbsDiff(got, want);
  assert(d <= tol, `${what}: max abs diff ${d} > ${tol}`);
}

Deno.test("reference: rmsNorm matches a float64 computation", () => {
  const rows = 3, dim = 37;
  const x = randomArray(rows * dim, 1, 3);
  const w = randomArray(dim, 2);
  const got = rmsNorm(x, w, 1e-5, rows);
  const want: number[] = [];
  for (let r = 0; r < rows; r++) {
    const row = Array.from(x.subarray(r * dim, (r + 1) * dim));
    const rms = Math.sqrt(row.reduce((s, v) => s + v * v, 0) / dim + 1e-5);
    row.forEach((v, i) => want.push((v / rms) * w[i]));
  }
  assertClose(got, want, 1e-5, "rmsNorm");
  // eps matters for tiny inputs
  const tiny = new Float32Array(4).fill(1e-4);
  assertClose(rmsNorm(tiny, new Float32Array(4).fill(1), 1e-2), [1e-3, 1e-3, 1e-3, 1e-3], 1e-7, "eps");
});

Deno.test("reference: matmulT with bias matches a float64 computation at awkward sizes", () => {
  for (const [rows, inDim, outDim] of [[1, 19, 23], [5, 19, 23], [7, 33, 5], [8, 3, 1]]) {
    const x = randomArray(rows * inDim, 10 + rows, 2);
    const w = randomArray(outDim * inDim, 20 + inDim);
    const b = randomArray(outDim, 30 + outDim);
    const want = new Float64Array(rows * outDim);
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < outDim; o++) {
        let s = b[o];
        for (let i = 0; i < inDim; i++) s += x[r * inDim + i] * w[o * inDim + i];
        want[r * outDim + o] = s;
      }
    }
    assertClose(matmulT(x, w, rows, inDim, outDim, b), want, 1e-5, `matmulT ${rows}x${inDim}x${outDim}`);
    const noBias = want.map((v, i) => v - b[i % outDim]);
    assertClose(matmulT(x, w, rows, inDim, outDim), noBias, 1e-5, "matmulT without bias");
  }
});

Deno.test("reference: applyRope equals multiplying (x[i] + i x[i+half]) by e^(i pos invFreq)", () => {
  const numHeads = 3, headDim = 10, half = 5, rows = 4;
  const invFreq = Float32Array.from({ length: half }, (_, i) => Math.pow(10000, (-2 * i) / headDim));
  const positions = [0, 7, 3, 1000];
  // heads live inside a wider row (as k inside a fused q|k|v row): stride 41, offset 6
  const rowStride = 41, headOffset = 6;
  const x = randomArray(rows * rowStride, 5);
  const before = x.slice();
  applyRope(x, positions, numHeads, headDim, invFreq, rowStride, headOffset);
  for (let r = 0; r < rows; r++) {
    for (let e = 0; e < rowStride; e++) {
      const rel = e - headOffset;
      const idx = r * rowStride + e;
      if (rel < 0 || rel >= numHeads * headDim) {
        assertEquals(x[idx], before[idx], "elements outside the heads are untouched");
        continue;
      }
      const h = Math.floor(rel / headDim), i = rel % headDim;
      const k = i % half;
      const base = r * rowStride + headOffset + h * headDim;
      const re = before[base + k], im = before[base + k + half];
      const angle = positions[r] * invFreq[k];
      const [cr, ci] = [Math.cos(angle), Math.sin(angle)];
      const want = i < half ? re * cr - im * ci : re * ci + im * cr;
      assert(Math.abs(x[idx] - want) < 1e-5, `rope r${r} h${h} i${i}: ${x[idx]} vs ${want}`);
    }
  }
  // default stride: position 0 is the identity
  const y = randomArray(numHeads * headDim, 6);
  const y0 = y.slice();
  applyRope(y, [0], numHeads, headDim, invFreq);
  assertEquals(y, y0);
});

/** Naive attention: one query and one head at a time, explicit allowed-key list, float64 softmax. */
function naiveAttention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  positions: number[],
  numHeads: number,
  numKv: number,
  headDim: number,
  window?: number,
): Float64Array {
  const out = new Float64Array(positions.length * numHeads * headDim);
  positions.forEach((pos, r) => {
    for (let h = 0; h < numHeads; h++) {
      const kvh = Math.floor((h * numKv) / numHeads);
      const keys: number[] = [];
      for (let j = 0; j <= pos; j++) if (window === undefined || pos - j < window) keys.push(j);
      const logits = keys.map((j) => {
        let s = 0;
        for (let d = 0; d < headDim; d++) {
          s += q[(r * numHeads + h) * headDim + d] * k[(j * numKv + kvh) * headDim + d];
        }
        return s / Math.sqrt(headDim);
      });
      const m = Math.max(...logits);
      const e = logits.map((l) => Math.exp(l - m));
      const z = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < headDim; d++) {
        let s = 0;
        keys.forEach((j, n) => (s += (e[n] / z) * v[(j * numKv + kvh) * headDim + d]));
        out[(r * numHeads + h) * headDim + d] = s;
      }
    }
  });
  return out;
}

Deno.test("reference: attention with GQA ratio 2 and a sliding window matches naive per-query softmax", () => {
  const numHeads = 6, numKv = 3, headDim = 12, numKeys = 11;
  const positions = [0, 4, 5, 10];
  const q = randomArray(positions.length * numHeads * headDim, 7, 2);
  const k = randomArray(numKeys * numKv * headDim, 8, 2);
  const v = randomArray(numKeys * numKv * headDim, 9);
  for (const window of [undefined, 3, 1, 100]) {
    const got = attention(q, k, v, { rows: positions.length, positions, numHeads, numKv, headDim, window });
    const want = naiveAttention(q, k, v, positions, numHeads, numKv, headDim, window);
    assertClose(got, want, 1e-5, `attention window ${window}`);
  }
  // window 1: every query sees only its own key, so the output is that key's value row
  const got = attention(q, k, v, { rows: positions.length, positions, numHeads, numKv, headDim, window: 1 });
  const h = 5, r = 3; // head 5 uses kv head 2; row 3 is position 10
  for (let d = 0; d < headDim; d++) {
    assert(Math.abs(got[(r * numHeads + h) * headDim + d] - v[(10 * numKv + 2) * headDim + d]) < 1e-6);
  }
  // and a window really changes the result
  const full = attention(q, k, v, { rows: positions.length, positions, numHeads, numKv, headDim });
  const win = attention(q, k, v, { rows: positions.length, positions, numHeads, numKv, headDim, window: 3 });
  assert(maxAbsDiff(full, win) > 1e-3);
});

Deno.test("reference: silu, swiglu, softmax, logSoftmax", () => {
  assert(Math.abs(silu(0)) < 1e-12);
  assert(Math.abs(silu(2) - 2 / (1 + Math.exp(-2))) < 1e-12);
  assert(Math.abs(silu(-50)) < 1e-18);
  assertClose(
    swiglu(Float32Array.of(1, -2), Float32Array.of(3, 0.5)),
    [3 * silu(1), 0.5 * silu(-2)],
    1e-6,
    "swiglu",
  );
  const x = Float32Array.of(1000, 1001, 999, -5);
  const p = softmax(x);
  const z = 1 + Math.E + 1 / Math.E + Math.exp(-1005);
  assertClose(p, [1 / z, Math.E / z, 1 / Math.E / z, Math.exp(-1005) / z], 1e-7, "softmax");
  assertClose(logSoftmax(x), Array.from(x, (v) => v - 1000 - Math.log(z)), 1e-9, "logSoftmax");
});

const stories = await ReferenceModel.load(STORIES);
const SEQ = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401];

function checkIncremental(model: ReferenceModel, ids: number[], chunks: number[]): void {
  const V = model.config.vocabSize;
  model.reset();
  const full = model.forward(ids, 0);
  model.reset();
  let pos = 0;
  let i = 0;
  while (pos < ids.length) {
    const n = Math.min(chunks[i++ % chunks.length], ids.length - pos);
    const logits = model.forward(ids.slice(pos, pos + n), pos);
    assertEquals(logits.length, n * V);
    assertClose(logits, full.subarray(pos * V, (pos + n) * V), 1e-4, `logits at ${pos}..${pos + n}`);
    pos += n;
  }
  assertEquals(model.cacheLength, ids.length);
}

Deno.test("reference: stories260k decode with the KV cache equals a full forward", () => {
  checkIncremental(stories, SEQ, [1]); // one token at a time
  checkIncremental(stories, SEQ, [5, 1, 3]); // prefill chunks then decode
});

Deno.test("reference: stories260k greedy generation is non-degenerate and matches full-forward argmax", () => {
  const out = greedyGenerate(stories, [1], 40);
  assertEquals(out.length, 40);
  assert(out.every((id) => id >= 0 && id < 512));
  assert(new Set(out).size >= 15, `too few distinct tokens: ${out}`);
  assert(out.some((id, i) => i > 0 && id !== out[i - 1]));
  // no KV cache: recompute the whole sequence and check each greedy choice
  const seq = [1, ...out.slice(0, 12)];
  stories.reset();
  const logits = stories.forward(seq, 0);
  for (let t = 0; t < 12; t++) assertEquals(argmax(logits, t * 512, 512), out[t], `token ${t}`);
  // prefill of a longer prompt continues it the same way
  stories.reset();
  assertEquals(greedyGenerate(stories, [1, ...out.slice(0, 5)], 5), out.slice(5, 10));
});

Deno.test("reference: hooks see each site once per layer and can replace one projection's input", () => {
  const ids = SEQ.slice(0, 6);
  stories.reset();
  const base = stories.forward(ids, 0);
  const seen: string[] = [];
  stories.reset();
  const same = stories.forward(ids, 0, {
    transform: (l, site, x, rows) => {
      seen.push(`${l}:${site}`);
      assertEquals(rows, ids.length);
      const c = stories.config;
      const width = {
        qkv: c.hiddenSize,
        o: c.numHeads * c.headDim,
        gateup: c.hiddenSize,
        down: c.intermediateSize,
      };
      assertEquals(x.length, rows * width[site]);
    },
    project: () => undefined,
  });
  assertEquals(same, base);
  assertEquals(seen.length, 4 * stories.config.numLayers);
  assertEquals(seen.slice(0, 4), ["0:qkv", "0:o", "0:gateup", "0:down"]);
  // zeroing the down input in place == replacing the down projection's input with zeros
  stories.reset();
  const a = stories.forward(ids, 0, {
    transform: (l, s, x) => l === 2 && s === "down" && x.fill(0) && undefined,
  });
  stories.reset();
  const b = stories.forward(ids, 0, {
    project: (l, p, x) => (l === 2 && p === "down" ? new Float32Array(x.length) : undefined),
  });
  assertEquals(a, b);
  assert(maxAbsDiff(a, base) > 1e-3);
  // replacing only q's input (uniform attention) differs from replacing q, k and v (zero attention output)
  const zeroAt = (which: string[]) => (l: number, p: string, x: Float32Array) =>
    l === 0 && which.includes(p) ? new Float32Array(x.length) : undefined;
  stories.reset();
  const onlyQ = stories.forward(ids, 0, { project: zeroAt(["q"]) });
  stories.reset();
  const qkv = stories.forward(ids, 0, { project: zeroAt(["q", "k", "v"]) });
  assert(maxAbsDiff(onlyQ, base) > 1e-3 && maxAbsDiff(onlyQ, qkv) > 1e-3 && maxAbsDiff(qkv, base) > 1e-3);
});

/** A random Qwen2-style model: q/k/v bias, untied lm_head, sliding window, GQA 2. */
function randomModel(window: number | null): ReferenceModel {
  const config: ModelConfig = {
    architecture: "qwen2",
    hiddenSize: 24,
    intermediateSize: 40,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 8,
    vocabSize: 50,
    maxPositionEmbeddings: 64,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    ropeScaling: null,
    tieWordEmbeddings: false,
    qkvBias: true,
    slidingWindow: window,
    bosTokenId: null,
    eosTokenIds: [0],
  };
  const H = 24, I = 40, q = 32, kv = 16;
  const shapes: Record<string, number> = {
    "model.embed_tokens.weight": 50 * H,
    "model.norm.weight": H,
    "lm_head.weight": 50 * H,
  };
  for (let l = 0; l < 2; l++) {
    const p = `model.layers.${l}.`;
    Object.assign(shapes, {
      [p + "input_layernorm.weight"]: H,
      [p + "post_attention_layernorm.weight"]: H,
      [p + "self_attn.q_proj.weight"]: q * H,
      [p + "self_attn.k_proj.weight"]: kv * H,
      [p + "self_attn.v_proj.weight"]: kv * H,
      [p + "self_attn.q_proj.bias"]: q,
      [p + "self_attn.k_proj.bias"]: kv,
      [p + "self_attn.v_proj.bias"]: kv,
      [p + "self_attn.o_proj.weight"]: H * q,
      [p + "mlp.gate_proj.weight"]: I * H,
      [p + "mlp.up_proj.weight"]: I * H,
      [p + "mlp.down_proj.weight"]: H * I,
    });
  }
  const weights = new Map<string, Float32Array>();
  let seed = 100;
  for (const [name, n] of Object.entries(shapes)) {
    weights.set(name, randomArray(n, seed++, name.includes("norm") ? 1.5 : 0.5));
  }
  return new ReferenceModel(config, weights);
}

Deno.test("reference: q/k/v bias and sliding window: incremental equals full, window changes late logits", () => {
  const ids = Array.from({ length: 14 }, (_, i) => (i * 17 + 3) % 50);
  const windowed = randomModel(4);
  checkIncremental(windowed, ids, [1]);
  checkIncremental(windowed, ids, [6, 2]);
  const dense = randomModel(null);
  windowed.reset();
  dense.reset();
  const a = windowed.forward(ids, 0), b = dense.forward(ids, 0);
  // positions < window see the same keys with or without the window; later ones do not
  assertClose(a.subarray(0, 4 * 50), b.subarray(0, 4 * 50), 1e-6, "first 4 positions");
  assert(maxAbsDiff(a.subarray(10 * 50), b.subarray(10 * 50)) > 1e-4);
});
