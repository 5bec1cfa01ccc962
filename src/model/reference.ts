/**
 * Plain-TypeScript CPU reference implementation of a Llama-family decoder.
 *
 * This module is the oracle for every GPU kernel and for whole-model logits, and doubles as
 * documentation (llama2.c style): short plain loops, f32 storage, f64 accumulation in dot
 * products. Semantics follow HF transformers' Llama / Mistral / Qwen2 implementations.
 *
 * @module
 */
import { openCheckpoint } from "./checkpoint.ts";
import { findGgufFile, openGguf } from "./gguf.ts";
import { type ModelConfig, ropeInvFreq } from "./config.ts";

export type { Architecture, ModelConfig, RopeScaling } from "./config.ts";

/**
 * RMS normalization, per row: `x / sqrt(mean(x^2) + eps) * weight`.
 *
 * @param x input, `rows` rows of `weight.length` elements, row-major
 * @param weight per-channel scale
 * @param eps epsilon added to the mean square
 * @param rows number of rows in `x`
 * @returns a new array with the normalized rows
 */
export function rmsNorm(x: Float32Array, weight: Float32Array, eps: number, rows = 1): Float32Array {
  const dim = weight.length;
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const base = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[base + i] * x[base + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[base + i] = x[base + i] * inv * weight[i];
  }
  return out;
}

/**
 * Matrix product with a transposed weight: `y[r][o] = sum_i x[r][i] * w[o][i] (+ bias[o])`.
 * `w` uses the HF `[out, in]` row-major layout, so the inner loop walks contiguous memory.
 *
 * @param x input `[rows][inDim]`
 * @param w weight `[outDim][inDim]`
 * @param rows number of input rows
 * @param inDim input features
 * @param outDim output features
 * @param bias optional `[outDim]` bias
 * @returns `[rows][outDim]`
 */
export function matmulT(
  x: Float32Array,
  w: Float32Array,
  rows: number,
  inDim: number,
  outDim: number,
  bias?: Float32Array,
): Float32Array {
  const y = new Float32Array(rows * outDim);
  let r = 0;
  // Four rows at a time share each weight load; each dot product accumulates in f64.
  for (; r + 3 < rows; r += 4) {
    const x0 = r * inDim, x1 = x0 + inDim, x2 = x1 + inDim, x3 = x2 + inDim;
    for (let o = 0; o < outDim; o++) {
      const wOff = o * inDim;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < inDim; i++) {
        const wv = w[wOff + i];
        s0 += x[x0 + i] * wv;
        s1 += x[x1 + i] * wv;
        s2 += x[x2 + i] * wv;
        s3 += x[x3 + i] * wv;
      }
      const b = bias ? bias[o] : 0;
      y[r * outDim + o] = s0 + b;
      y[(r + 1) * outDim + o] = s1 + b;
      y[(r + 2) * outDim + o] = s2 + b;
      y[(r + 3) * outDim + o] = s3 + b;
    }
  }
  for (; r < rows; r++) {
    const xOff = r * inDim;
    for (let o = 0; o < outDim; o++) {
      const wOff = o * inDim;
      let s = 0;
      for (let i = 0; i < inDim; i++) s += x[xOff + i] * w[wOff + i];
      y[r * outDim + o] = s + (bias ? bias[o] : 0);
    }
  }
  return y;
}

/**
 * Rotary position embedding (HF "rotate half" convention), applied in place.
 *
 * For each row `r` (starting at `r * rowStride`), each head `h` (starting at
 * `headOffset + h * headDim`) and each `i < headDim / 2`, with `angle = positions[r] * invFreq[i]`:
 * `(x[i], x[i + half]) <- (x[i] cos - x[i + half] sin, x[i + half] cos + x[i] sin)`.
 *
 * @param x data to rotate in place
 * @param positions absolute position of each row
 * @param numHeads heads per row
 * @param headDim elements per head
 * @param invFreq `headDim / 2` inverse frequencies
 * @param rowStride elements between rows (default `numHeads * headDim`)
 * @param headOffset element offset of the first head within a row (default 0)
 */
export function applyRope(
  x: Float32Array,
  positions: number[],
  numHeads: number,
  headDim: number,
  invFreq: Float32Array,
  rowStride: number = numHeads * headDim,
  headOffset = 0,
): void {
  const half = headDim >> 1;
  const cos = new Float64Array(half);
  const sin = new Float64Array(half);
  for (let r = 0; r < positions.length; r++) {
    const pos = positions[r];
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i];
      cos[i] = Math.cos(angle);
      sin[i] = Math.sin(angle);
    }
    for (let h = 0; h < numHeads; h++) {
      const base = r * rowStride + headOffset + h * headDim;
      for (let i = 0; i < half; i++) {
        const a = x[base + i];
        const b = x[base + i + half];
        x[base + i] = a * cos[i] - b * sin[i];
        x[base + i + half] = b * cos[i] + a * sin[i];
      }
    }
  }
}

/** Options for {@linkcode attention}. */
export interface AttentionOptions {
  /** Number of query rows. */
  rows: number;
  /** Absolute position of each query row. */
  positions: number[];
  /** Query heads. */
  numHeads: number;
  /** Key/value heads (GQA: `numHeads` must be a multiple). */
  numKv: number;
  /** Elements per head. */
  headDim: number;
  /** Sliding window: a query at `pos` sees key `j` only when `pos - j < window`. */
  window?: number;
}

/**
 * Causal scaled-dot-product attention with grouped-query heads and an optional sliding window.
 *
 * `q` is `[rows][numHeads * headDim]`; `k` and `v` are `[numKeys][numKv * headDim]` holding
 * positions `0..numKeys-1`. Query row `r` at position `p = positions[r]` attends to keys
 * `j <= p` (and `p - j < window` when given). Query head `h` uses kv head
 * `floor(h / (numHeads / numKv))`. Scores are scaled by `1 / sqrt(headDim)`.
 *
 * @returns `[rows][numHeads * headDim]`, the concatenated head outputs
 */
export function attention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  o: AttentionOptions,
): Float32Array {
  const { rows, positions, numHeads, numKv, headDim } = o;
  const qStride = numHeads * headDim;
  const kvStride = numKv * headDim;
  const group = numHeads / numKv;
  const scale = 1 / Math.sqrt(headDim);
  const out = new Float32Array(rows * qStride);
  const maxKeys = positions.length ? Math.max(...positions) + 1 : 0;
  const scores = new Float64Array(maxKeys);
  const acc = new Float64Array(headDim);
  for (let r = 0; r < rows; r++) {
    const pos = positions[r];
    const first = o.window !== undefined ? Math.max(0, pos - o.window + 1) : 0;
    for (let h = 0; h < numHeads; h++) {
      const qOff = r * qStride + h * headDim;
      const kvHead = Math.floor(h / group) * headDim;
      let max = -Infinity;
      for (let j = first; j <= pos; j++) {
        const kOff = j * kvStride + kvHead;
        let s = 0;
        for (let d = 0; d < headDim; d++) s += q[qOff + d] * k[kOff + d];
        s *= scale;
        scores[j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = first; j <= pos; j++) {
        const e = Math.exp(scores[j] - max);
        scores[j] = e;
        sum += e;
      }
      acc.fill(0);
      for (let j = first; j <= pos; j++) {
        const p = scores[j] / sum;
        const vOff = j * kvStride + kvHead;
        for (let d = 0; d < headDim; d++) acc[d] += p * v[vOff + d];
      }
      for (let d = 0; d < headDim; d++) out[qOff + d] = acc[d];
    }
  }
  return out;
}

/**
 * SiLU activation: `x * sigmoid(x)`.
 *
 * @returns `x / (1 + exp(-x))`
 */
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/**
 * SwiGLU: elementwise `silu(gate) * up`.
 *
 * @returns a new array of the same length as `gate`
 */
export function swiglu(gate: Float32Array, up: Float32Array): Float32Array {
  const out = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = silu(gate[i]) * up[i];
  return out;
}

/**
 * Numerically stable softmax over the whole array.
 *
 * @returns a new array of probabilities summing to 1
 */
export function softmax(x: Float32Array): Float32Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i] - max);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = Math.exp(x[i] - max) / sum;
  return out;
}

/**
 * Numerically stable log-softmax over the whole array, computed in f64.
 *
 * @returns `x[i] - logsumexp(x)` for every element, as a Float64Array
 */
export function logSoftmax(x: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] - lse;
  return out;
}

/** A linear-projection input site of a transformer block (the input of the named projections). */
export type Site = "qkv" | "o" | "gateup" | "down";
/** A single linear projection of a transformer block. */
export type Proj = "q" | "k" | "v" | "o" | "gate" | "up" | "down";

/** Hooks that observe or alter the inputs of the linear projections during {@linkcode ReferenceModel.forward}. */
export interface ForwardHooks {
  /**
   * Called with the input of the projections at `site` (`rows` rows, row-major); may modify `x` in place
   * before the projection(s) run. `qkv`: post-input-norm hidden; `o`: attention output (concatenated
   * heads); `gateup`: post-attention-norm hidden; `down`: `silu(gate) * up`.
   */
  transform?: (layer: number, site: Site, x: Float32Array, rows: number) => void;
  /**
   * Called (after `transform`) once per projection with that projection's input; returning an array
   * replaces the input for just that projection (e.g. q, k and v with different masks).
   */
  project?: (layer: number, proj: Proj, x: Float32Array, rows: number) => Float32Array | void;
}

interface RefLayer {
  attnNorm: Float32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  qBias?: Float32Array;
  kBias?: Float32Array;
  vBias?: Float32Array;
  o: Float32Array;
  mlpNorm: Float32Array;
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
}

/**
 * The whole decoder on the CPU, with a KV cache. Built from a config and HF-named f32 weights
 * (`model.embed_tokens.weight`, `model.layers.N.self_attn.q_proj.weight`, ..., `model.norm.weight`,
 * `lm_head.weight` unless embeddings are tied; q/k/v biases when `config.qkvBias`).
 */
export class ReferenceModel {
  /** The model configuration. */
  readonly config: ModelConfig;
  /** Number of positions currently held in the KV cache. */
  cacheLength = 0;
  readonly #embed: Float32Array;
  readonly #layers: RefLayer[];
  readonly #finalNorm: Float32Array;
  readonly #lmHead: Float32Array;
  readonly #invFreq: Float32Array;
  #kCache: Float32Array[] = [];
  #vCache: Float32Array[] = [];
  #capacity = 0;

  /**
   * Build the model from f32 weights (shapes are checked; tensors are used in place, not copied).
   *
   * @param config model configuration
   * @param weights HF tensor name -> f32 data (row-major `[out, in]` for projections)
   */
  constructor(config: ModelConfig, weights: Map<string, Float32Array>) {
    this.config = config;
    const c = config;
    const get = (name: string, size: number): Float32Array => {
      const t = weights.get(name);
      if (!t) throw new Error(`ReferenceModel: missing tensor ${name}`);
      if (t.length !== size) {
        throw new Error(`ReferenceModel: ${name} has ${t.length} elements, expected ${size}`);
      }
      return t;
    };
    const qDim = c.numHeads * c.headDim;
    const kvDim = c.numKvHeads * c.headDim;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    this.#embed = get("model.embed_tokens.weight", c.vocabSize * H);
    this.#finalNorm = get("model.norm.weight", H);
    this.#lmHead = c.tieWordEmbeddings ? this.#embed : get("lm_head.weight", c.vocabSize * H);
    this.#layers = [];
    for (let l = 0; l < c.numLayers; l++) {
      const p = `model.layers.${l}.`;
      const layer: RefLayer = {
        attnNorm: get(p + "input_layernorm.weight", H),
        q: get(p + "self_attn.q_proj.weight", qDim * H),
        k: get(p + "self_attn.k_proj.weight", kvDim * H),
        v: get(p + "self_attn.v_proj.weight", kvDim * H),
        o: get(p + "self_attn.o_proj.weight", H * qDim),
        mlpNorm: get(p + "post_attention_layernorm.weight", H),
        gate: get(p + "mlp.gate_proj.weight", I * H),
        up: get(p + "mlp.up_proj.weight", I * H),
        down: get(p + "mlp.down_proj.weight", H * I),
      };
      if (c.qkvBias) {
        layer.qBias = get(p + "self_attn.q_proj.bias", qDim);
        layer.kBias = get(p + "self_attn.k_proj.bias", kvDim);
        layer.vBias = get(p + "self_attn.v_proj.bias", kvDim);
      }
      this.#layers.push(layer);
    }
    this.#invFreq = ropeInvFreq(c);
  }

  /**
   * Load a checkpoint folder (config.json + safetensors) or a GGUF file (or a folder holding one) into f32 CPU
   * memory.
   *
   * @param dir model folder or GGUF file
   * @returns the reference model
   */
  static async load(dir: string): Promise<ReferenceModel> {
    const gguf = await findGgufFile(dir);
    const ckpt = gguf ? await openGguf(gguf) : await openCheckpoint(dir);
    const weights = new Map<string, Float32Array>();
    for await (const t of ckpt.readTensors()) weights.set(t.name, t.data);
    return new ReferenceModel(ckpt.config, weights);
  }

  /** Empty the KV cache (the next forward must start at position 0). */
  reset(): void {
    this.cacheLength = 0;
  }

  #ensureCapacity(positions: number): void {
    if (positions <= this.#capacity) return;
    const kvDim = this.config.numKvHeads * this.config.headDim;
    const cap = Math.max(positions, this.#capacity * 2, 64);
    for (let l = 0; l < this.config.numLayers; l++) {
      const k = new Float32Array(cap * kvDim);
      const v = new Float32Array(cap * kvDim);
      if (this.#kCache[l]) {
        k.set(this.#kCache[l]);
        v.set(this.#vCache[l]);
      }
      this.#kCache[l] = k;
      this.#vCache[l] = v;
    }
    this.#capacity = cap;
  }

  /**
   * Run the decoder over `ids` at positions `startPos..startPos + ids.length - 1`, appending their keys
   * and values to the KV cache (which must hold exactly `startPos` positions; earlier entries are
   * overwritten when `startPos` is smaller).
   *
   * @param ids token ids
   * @param startPos position of `ids[0]`
   * @param hooks optional projection-input hooks (TEAL masks, calibration capture)
   * @returns logits `[ids.length][vocabSize]`
   */
  forward(ids: number[], startPos: number, hooks: ForwardHooks = {}): Float32Array {
    const c = this.config;
    if (startPos > this.cacheLength) {
      throw new Error(`ReferenceModel.forward: startPos ${startPos} beyond cache length ${this.cacheLength}`);
    }
    const rows = ids.length;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    const qDim = c.numHeads * c.headDim;
    const kvDim = c.numKvHeads * c.headDim;
    this.#ensureCapacity(startPos + rows);
    const positions = ids.map((_, r) => startPos + r);

    const x = new Float32Array(rows * H);
    for (let r = 0; r < rows; r++) {
      const id = ids[r];
      if (!(id >= 0 && id < c.vocabSize)) {
        throw new Error(`ReferenceModel.forward: token id ${id} out of range`);
      }
      x.set(this.#embed.subarray(id * H, (id + 1) * H), r * H);
    }

    const input = (l: number, proj: Proj, xs: Float32Array): Float32Array =>
      (hooks.project && hooks.project(l, proj, xs, rows)) || xs;

    for (let l = 0; l < c.numLayers; l++) {
      const L = this.#layers[l];
      // Attention block.
      const h = rmsNorm(x, L.attnNorm, c.rmsNormEps, rows);
      hooks.transform?.(l, "qkv", h, rows);
      const q = matmulT(input(l, "q", h), L.q, rows, H, qDim, L.qBias);
      const k = matmulT(input(l, "k", h), L.k, rows, H, kvDim, L.kBias);
      const v = matmulT(input(l, "v", h), L.v, rows, H, kvDim, L.vBias);
      applyRope(q, positions, c.numHeads, c.headDim, this.#invFreq);
      applyRope(k, positions, c.numKvHeads, c.headDim, this.#invFreq);
      this.#kCache[l].set(k, startPos * kvDim);
      this.#vCache[l].set(v, startPos * kvDim);
      const att = attention(q, this.#kCache[l], this.#vCache[l], {
        rows,
        positions,
        numHeads: c.numHeads,
        numKv: c.numKvHeads,
        headDim: c.headDim,
        window: c.slidingWindow ?? undefined,
      });
      hooks.transform?.(l, "o", att, rows);
      const o = matmulT(input(l, "o", att), L.o, rows, qDim, H);
      for (let i = 0; i < x.length; i++) x[i] += o[i];

      // MLP block.
      const m = rmsNorm(x, L.mlpNorm, c.rmsNormEps, rows);
      hooks.transform?.(l, "gateup", m, rows);
      const gate = matmulT(input(l, "gate", m), L.gate, rows, H, I);
      const up = matmulT(input(l, "up", m), L.up, rows, H, I);
      const act = swiglu(gate, up);
      hooks.transform?.(l, "down", act, rows);
      const down = matmulT(input(l, "down", act), L.down, rows, I, H);
      for (let i = 0; i < x.length; i++) x[i] += down[i];
    }
    this.cacheLength = startPos + rows;
    const final = rmsNorm(x, this.#finalNorm, c.rmsNormEps, rows);
    return matmulT(final, this.#lmHead, rows, H, c.vocabSize);
  }
}

/**
 * Index of the largest element (first one on ties).
 *
 * @returns the argmax index
 */
export function argmax(x: ArrayLike<number>, offset = 0, length: number = x.length - offset): number {
  let best = 0;
  let bestVal = -Infinity;
  for (let i = 0; i < length; i++) {
    if (x[offset + i] > bestVal) {
      bestVal = x[offset + i];
      best = i;
    }
  }
  return best;
}

/**
 * Greedy decoding: reset the cache, prefill the prompt, then decode one token at a time with the KV cache.
 *
 * @param model the reference model
 * @param promptIds prompt token ids (non-empty)
 * @param n number of tokens to generate
 * @returns the `n` generated token ids (without the prompt)
 */
export function greedyGenerate(model: ReferenceModel, promptIds: number[], n: number): number[] {
  const V = model.config.vocabSize;
  model.reset();
  if (n <= 0) return [];
  let logits = model.forward(promptIds, 0);
  let next = argmax(logits, (promptIds.length - 1) * V, V);
  const out = [next];
  let pos = promptIds.length;
  while (out.length < n) {
    logits = model.forward([next], pos++);
    next = argmax(logits, 0, V);
    out.push(next);
  }
  return out;
}
