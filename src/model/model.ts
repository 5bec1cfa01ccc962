/**
 * A loaded model: weights on the GPU, tokenizer, TEAL profile, and the generation API on top of the decode
 * loop. Generations run one at a time in arrival order.
 * @module
 */
import { createGpuContext, type GpuContext } from "../gpu/context.ts";
import { parseQuant, type QuantFormat, type WeightFormat } from "../gpu/quant.ts";
import { type BatchTrace, DECODE, type DecodeStats, runDecode } from "../generate/decode.ts";
import { maxDraft, runSpeculative, type SpeculativeStats } from "../generate/speculative.ts";
import { chooseSpeculation, SPEC_AUTO, type SpeculativeChoice } from "../generate/speculative_auto.ts";
import { ChunkQueue } from "../generate/stream.ts";
import type {
  FinishReason,
  GenerateChunk,
  GenerateOptions,
  GenerateResult,
  Generation,
  TextModel,
} from "../generate/types.ts";
import { openCheckpoint } from "./checkpoint.ts";
import { findGgufFile, GgufMetadata, ggufModelId, openGguf } from "./gguf.ts";
import { ggufTokenizer } from "./gguf_tokenizer.ts";
import type { ModelConfig } from "./config.ts";
import { Forward, releaseOps } from "./forward.ts";
import { progressBar } from "./progress.ts";
import { StreamDecoder, TextTokenizer } from "./tokenizer.ts";
import {
  findProfile,
  loadProfile,
  type ScoreMode,
  type TealProfile,
  thresholdsFor,
} from "../teal/profile.ts";
import {
  allocateWeights,
  finishUpload,
  type NamedTensor,
  SLOTS,
  uploadTensor,
  weightBuffers,
  type Weights,
} from "./weights.ts";

/** Options of {@link loadModel}. */
export interface LoadOptions {
  /** Longest sequence to support (KV cache size); default min(config's max positions, 4096). */
  contextLength?: number;
  /**
   * Most prompt tokens per prefill pass: default {@link defaultMaxPrefill} (1024, or fewer where a pass's widest
   * activation row would pass the GPU's largest storage binding).
   */
  maxPrefill?: number;
  /** Progress of the weight upload; by default a bar on stderr when it is a terminal. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Share an existing GPU context. */
  gpu?: GpuContext;
  /** TEAL profile file; default `teal-profile.json` in the model folder when present; false: none. */
  profile?: string | false;
  /**
   * Weight format of the linear layers and lm_head: "none" keeps f16; "int8" (symmetric, groups of 128) and
   * "int4" (with a zero point, groups of 128) quantize at load (docs/quantization.md). Embeddings stay f16.
   */
  quant?: QuantFormat;
  /**
   * int8/int4 weights: whether the decode GEMVs add their rows in packed f16 arithmetic (two codes an
   * instruction; docs/quantization.md). Default: on GPUs with the shader-f16 feature, off on CPU adapters,
   * where it is slower. It was timed on NVIDIA only: false keeps the f32 kernel on GPUs where that is faster.
   * true on a device without shader-f16 is refused.
   */
  gemvHalf?: boolean;
}

/** Realised TEAL sparsity measured on the GPU during the last generation. */
export interface SparsityReport {
  /** Fraction of input channels skipped, per layer and projection (q, k, v, o, gate, up, down). */
  perTensor: number[][];
  /** Parameter-weighted model-wide fraction of skipped weights in the sparsified projections. */
  overall: number;
}

/** Defaults of {@link GenerateOptions}. */
export const GENERATE_DEFAULTS = {
  maxTokens: 128,
  temperature: 0.8,
  topK: 0,
  topP: 1,
  seed: 0,
} as const;

/** A model loaded onto the GPU. */
export class Model implements TextModel {
  /** Model id: the folder name. */
  readonly id: string;
  /** Parsed config. */
  readonly config: ModelConfig;
  /** The tokenizer, or null for token-id-only models. */
  readonly tokenizer: TextTokenizer | null;
  /** GPU context. */
  readonly gpu: GpuContext;
  /** Longest sequence (prompt + generated). */
  readonly contextLength: number;
  /** Bytes of weights on the GPU. */
  readonly weightBytes: number;
  /** Format of the linear layers and lm_head on the GPU. */
  readonly weightFormat: WeightFormat;
  /** @internal GPU forward pass. */
  readonly forward: Forward;
  #weights: Weights;
  #queue: Promise<unknown> = Promise.resolve();
  #thresholds: Float32Array | null = null;
  #sparsityLevels: number[] = [];
  #thresholdsFor: ((sparsity: number) => Float32Array) | null = null;
  #lastSparsity: SparsityReport | null = null;
  #lastBatches: BatchTrace[] = [];
  #profile: TealProfile | null = null;
  #score: ScoreMode = "magnitude";
  #specChoices = new Map<string, SpeculativeChoice>();
  #disposed = false;

  /**
   * Wraps weights already on the GPU; use {@link loadModel} or {@link modelFromTensors} to make one.
   * @param id Model id.
   * @param config Parsed config.
   * @param gpu GPU context holding the weights.
   * @param weights The model's weights on the GPU.
   * @param tokenizer The tokenizer, or null for token-id-only models.
   * @param o Longest sequence (`contextLength`), most tokens per prefill pass (`maxPrefill`) and the int8/int4
   * decode GEMVs' arithmetic (`gemvHalf`, {@link LoadOptions}).
   */
  constructor(
    id: string,
    config: ModelConfig,
    gpu: GpuContext,
    weights: Weights,
    tokenizer: TextTokenizer | null,
    o: { contextLength: number; maxPrefill: number; gemvHalf?: boolean },
  ) {
    this.id = id;
    this.config = config;
    this.gpu = gpu;
    this.tokenizer = tokenizer;
    this.contextLength = o.contextLength;
    this.#weights = weights;
    this.weightBytes = weights.bytes;
    this.weightFormat = weights.format;
    this.forward = new Forward(gpu, config, weights, { maxSeq: o.contextLength, maxPrefill: o.maxPrefill });
    this.forward.gemvHalf = o.gemvHalf;
  }

  /** Sparsity targets the attached TEAL profile offers. */
  get sparsityLevels(): number[] {
    return this.#sparsityLevels;
  }

  /** True when a tokenizer was found. */
  get hasTokenizer(): boolean {
    return this.tokenizer !== null;
  }

  /** True when the tokenizer has a chat template. */
  get hasChatTemplate(): boolean {
    return this.tokenizer?.hasChatTemplate ?? false;
  }

  /** Read-back batches of the last generation (token range, submit and resolve ms): decode-loop profiling. */
  get lastBatches(): BatchTrace[] {
    return this.#lastBatches;
  }

  /** Realised sparsity of the last sparse generation, or null. */
  get lastSparsity(): SparsityReport | null {
    return this.#lastSparsity;
  }

  /**
   * Attaches TEAL thresholds: `levels` are the offered targets and `thresholdsFor(s)` returns f32
   * [layers * 7] thresholds (q, k, v, o, gate, up, down per layer) for target s.
   */
  setSparsityProfile(levels: number[], thresholdsFor: (sparsity: number) => Float32Array): void {
    this.#sparsityLevels = [...levels].sort((a, b) => a - b);
    this.#thresholdsFor = thresholdsFor;
    this.#thresholds = null;
    this.#specChoices.clear(); // measured with the previous thresholds
  }

  /** The attached TEAL profile, or null. */
  get profile(): TealProfile | null {
    return this.#profile;
  }

  /** Attaches a validated TEAL profile: its score mode and its thresholds for every target. */
  attachProfile(p: TealProfile): void {
    this.setScoreMode(p.score);
    this.#profile = p;
    this.setSparsityProfile(p.levels.map((l) => l.target), (s) => thresholdsFor(p, s));
  }

  /** Input-channel norms ||W[:, k]|| of every projection, [layer][slot] (q, k, v, o, gate, up, down). */
  columnNorms(): Float32Array[][] {
    return this.#weights.norms;
  }

  /**
   * Sets how channels are scored against thresholds: magnitude |x_k|, or weighted |x_k| * ||W[:, k]||
   * (the norms are folded into per-channel scales, so the kernels cost the same).
   */
  setScoreMode(mode: ScoreMode): void {
    if (mode === this.#score) return;
    const K = (m: { K: number }) => m.K;
    this.#weights.layers.forEach((L, l) => {
      const n = this.#weights.norms[l];
      const groups: [typeof L.qkv, number[]][] = [[L.qkv, [0, 1, 2]], [L.o, [3]], [L.gateUp, [4, 5]], [
        L.down,
        [6],
      ]];
      for (const [m, slots] of groups) {
        const scales = new Float32Array(K(m) * slots.length).fill(1);
        if (mode === "weighted") slots.forEach((s, i) => scales.set(n[s], i * m.K));
        this.gpu.write(m.scales, scales);
      }
    });
    this.#score = mode;
  }

  /** Writes thresholds for one target (or explicit values) into the GPU buffer. */
  #useSparsity(sparsity: number): void {
    if (!this.#thresholdsFor) {
      throw new Error(
        `sparsity ${sparsity} requested but model ${this.id} has no TEAL profile (run: cli.ts calibrate)`,
      );
    }
    const t = this.#thresholdsFor(sparsity);
    if (t.length !== this.config.numLayers * SLOTS) {
      throw new Error("profile thresholds have the wrong length");
    }
    this.forward.sparsityLevel = sparsity; // picks the sparse steps' GEMV variants (sparsityBin)
    if (this.#thresholds && this.#thresholds.every((v, i) => v === t[i])) return;
    this.gpu.write(this.forward.sparsity.thresholds, t);
    this.#thresholds = t;
  }

  /** Writes raw thresholds ([layers * 7]) for the next sparse run (calibration and tests). */
  setThresholds(t: Float32Array): void {
    if (t.length !== this.config.numLayers * SLOTS) {
      throw new RangeError(`thresholds need ${this.config.numLayers * SLOTS} values, got ${t.length}`);
    }
    this.gpu.write(this.forward.sparsity.thresholds, t);
    this.#thresholds = Float32Array.from(t);
  }

  /** Tokenizes text. */
  encode(text: string, addBos = true): number[] {
    if (!this.tokenizer) {
      throw new Error(`model ${this.id} has no tokenizer: pass token ids instead of text`);
    }
    return this.tokenizer.encode(text, { addBos });
  }

  /** Decodes token ids to text ("" without a tokenizer). */
  decode(ids: number[]): string {
    return this.tokenizer ? this.tokenizer.decode(ids) : "";
  }

  /** Renders chat messages with the chat template. */
  applyChatTemplate(messages: { role: string; content: string }[]): string {
    if (!this.tokenizer) throw new Error(`model ${this.id} has no tokenizer`);
    return this.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
  }

  /** Runs `fn` after every earlier queued call. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(() => {
      if (this.#disposed) throw new Error("model is disposed");
      return fn();
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Validates options and resolves the prompt to ids. */
  #prepare(prompt: string | number[], o: GenerateOptions): number[] {
    const ids = typeof prompt === "string" ? this.encode(prompt, o.addBos ?? true) : prompt;
    if (ids.length === 0) throw new RangeError("the prompt is empty");
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize) {
        throw new RangeError(`prompt token id ${id} is outside the vocabulary [0, ${this.config.vocabSize})`);
      }
    }
    if (ids.length >= this.contextLength) {
      throw new RangeError(`prompt has ${ids.length} tokens; the context holds ${this.contextLength}`);
    }
    const maxTokens = o.maxTokens ?? GENERATE_DEFAULTS.maxTokens;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) {
      throw new RangeError(`maxTokens must be >= 1, got ${maxTokens}`);
    }
    const t = o.temperature ?? GENERATE_DEFAULTS.temperature;
    if (!(t >= 0)) throw new RangeError(`temperature must be >= 0, got ${t}`);
    const p = o.topP ?? GENERATE_DEFAULTS.topP;
    if (!(p > 0 && p <= 1)) throw new RangeError(`topP must be in (0, 1], got ${p}`);
    const k = o.topK ?? GENERATE_DEFAULTS.topK;
    if (!Number.isInteger(k) || k < 0) throw new RangeError(`topK must be an integer >= 0, got ${k}`);
    const s = o.sparsity ?? 0;
    if (!(s >= 0 && s < 1)) throw new RangeError(`sparsity must be in [0, 1), got ${s}`);
    const interval = o.streamIntervalMs ?? DECODE.targetBatchMs;
    if (!(interval >= 1 && interval <= 60_000)) {
      throw new RangeError(`streamIntervalMs must be in [1, 60000], got ${interval}`);
    }
    const spec = o.speculate;
    const maxK = maxDraft(this.forward);
    if (spec !== undefined && spec !== "auto" && !(Number.isInteger(spec) && spec >= 1 && spec <= maxK)) {
      throw new RangeError(`speculate must be "auto" or an integer in [1, ${maxK}], got ${spec}`);
    }
    if (o.draftSparsity !== undefined && !(o.draftSparsity >= 0 && o.draftSparsity < 1)) {
      throw new RangeError(`draftSparsity must be in [0, 1), got ${o.draftSparsity}`);
    }
    if (spec !== undefined) {
      const levels = this.#sparsityLevels;
      if (levels.length === 0) {
        throw new RangeError(
          `speculate needs a TEAL profile for the sparse draft; model ${this.id} has no TEAL profile ` +
            "(run: cli.ts calibrate)",
        );
      }
      const d = o.draftSparsity;
      if (d !== undefined && (d < levels[0] || d > levels[levels.length - 1])) {
        throw new RangeError(
          `draftSparsity ${d} is outside the TEAL profile's range [${levels[0]}, ${levels.at(-1)}]`,
        );
      }
    }
    return ids;
  }

  /**
   * Starts a generation; iterate it for streamed chunks, await `result` for the whole output. Queued behind
   * earlier generations.
   */
  generate(prompt: string | number[], options: GenerateOptions = {}): Generation {
    const queue = new ChunkQueue();
    const internal = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, internal.signal]) : internal.signal;
    let result: Promise<GenerateResult>;
    try {
      const ids = this.#prepare(prompt, options);
      result = this.#exclusive(() => this.#generate(ids, { ...options, signal }, (c) => queue.push(c)));
    } catch (e) {
      result = Promise.reject(e);
    }
    result.catch(() => {}).finally(() => queue.end());
    return queue.generation(result, () => internal.abort());
  }

  /** Generates and returns the whole result. */
  async complete(prompt: string | number[], options: GenerateOptions = {}): Promise<GenerateResult> {
    const g = this.generate(prompt, options);
    for await (const _ of g) { /* drain */ }
    return await g.result;
  }

  async #generate(
    promptIds: number[],
    o: GenerateOptions,
    push: (c: GenerateChunk) => void,
  ): Promise<GenerateResult> {
    const sparsity = o.sparsity ?? 0;
    const sparse = sparsity > 0;
    if (sparse) this.#useSparsity(sparsity);
    const maxTokens = o.maxTokens ?? GENERATE_DEFAULTS.maxTokens;
    const eos = new Set(o.stopAtEos === false ? [] : this.config.eosTokenIds);
    const stops = (o.stop ?? []).filter((s) => s.length > 0);
    const holdBack = stops.reduce((a, s) => Math.max(a, s.length - 1), 0);
    const decoder = this.tokenizer ? new StreamDecoder(this.tokenizer) : null;
    const out: number[] = [];
    const ends: number[] = []; // text length after each token
    let text = "";
    let emitted = 0; // characters of text already streamed
    let emittedIds = 0;
    let finish: FinishReason = "length";
    let cut = -1; // text length where a stop string begins

    const onTokens = (ids: number[]): boolean => {
      let more = true;
      for (const id of ids) {
        if (eos.has(id)) {
          finish = "stop";
          more = false;
          break;
        }
        out.push(id);
        if (decoder) text += decoder.push([id]);
        ends.push(text.length);
        if (stops.length > 0) {
          const from = Math.max(0, emitted - holdBack);
          let at = -1;
          for (const s of stops) {
            const i = text.indexOf(s, from);
            if (i >= 0 && (at < 0 || i < at)) at = i;
          }
          if (at >= 0) {
            cut = at;
            finish = "stop";
            more = false;
            break;
          }
        }
        if (out.length >= maxTokens) {
          more = false;
          break;
        }
      }
      if (!more && decoder && cut < 0) text += decoder.flush();
      // stream what can no longer become part of a stop string
      const safe = cut >= 0 ? cut : more ? Math.max(emitted, text.length - holdBack) : text.length;
      let idsEnd = out.length;
      if (cut >= 0) idsEnd = ends.findIndex((_e, i) => (i === 0 ? 0 : ends[i - 1]) >= cut);
      if (idsEnd < 0) idsEnd = out.length;
      const chunk = {
        ids: out.slice(emittedIds, Math.max(emittedIds, idsEnd)),
        text: text.slice(emitted, safe),
      };
      if (chunk.ids.length > 0 || chunk.text.length > 0) push(chunk);
      emittedIds = Math.max(emittedIds, idsEnd);
      emitted = Math.max(emitted, safe);
      return more;
    };

    const sampling = {
      temperature: o.temperature ?? GENERATE_DEFAULTS.temperature,
      topK: o.topK ?? GENERATE_DEFAULTS.topK,
      topP: o.topP ?? GENERATE_DEFAULTS.topP,
      seed: o.seed ?? GENERATE_DEFAULTS.seed,
    };
    let k = 0;
    let draftSparsity = 0;
    let choice: SpeculativeChoice | null = null;
    if (o.speculate === "auto") {
      try {
        choice = await this.#chooseSpeculation(promptIds, sampling, o.draftSparsity, o.signal);
        k = choice.k;
        draftSparsity = choice.draftSparsity;
      } catch (e) {
        // aborted while measuring: nothing is cached, and the decode below, seeing the signal, runs nothing
        if (!o.signal?.aborted) throw e;
      }
    } else if (o.speculate !== undefined) {
      k = o.speculate;
      draftSparsity = o.draftSparsity ?? Math.min(0.5, this.#sparsityLevels.at(-1) ?? 0.5);
    }
    if (k > 0 && draftSparsity > 0) this.#useSparsity(draftSparsity);
    if (k > 0 && draftSparsity === 0) this.setThresholds(new Float32Array(this.config.numLayers * SLOTS));
    let spec: SpeculativeStats | null = null;
    const stats: DecodeStats = k > 0
      ? spec = await runSpeculative(this.forward, {
        promptIds,
        maxTokens,
        k,
        sampling,
        eosIds: [...eos].slice(0, 4),
        onTokens,
        onPrefillProgress: o.onPrefillProgress,
        signal: o.signal,
      })
      : await runDecode(this.forward, {
        promptIds,
        maxTokens,
        sampling,
        eosIds: [...eos].slice(0, 4),
        sparse,
        sparsePrefill: sparse && (o.sparsePrefill ?? false),
        batchMs: o.streamIntervalMs,
        onTokens,
        onPrefillProgress: o.onPrefillProgress,
        signal: o.signal,
      });
    if (stats.aborted) finish = "abort";
    this.#lastBatches = stats.batches;
    let realized: number | null = null;
    // an abort before the first token (while queued or during prefill) ran no decode step to measure
    if (sparse && k === 0 && !(stats.aborted && stats.tokensRead === 0)) {
      // counters include steps queued past the stop: the state's step count says how many ran
      const state = await this.gpu.readU32(this.forward.state, 4);
      this.#lastSparsity = await this.#readSparsity(Math.max(1, state[2] - 1));
      realized = this.#lastSparsity.overall;
    }
    const n = cut >= 0 ? emittedIds : out.length;
    return {
      ids: out.slice(0, n),
      text: cut >= 0 ? text.slice(0, cut) : text,
      promptTokens: promptIds.length,
      finishReason: finish,
      tokensPerSecond: stats.decodeMs > 0 ? (stats.tokensRead - 1) / (stats.decodeMs / 1000) : 0,
      timeToFirstTokenMs: stats.ttftMs,
      realizedSparsity: realized,
      speculation: spec
        ? {
          k,
          draftSparsity,
          acceptanceRate: spec.acceptanceRate,
          perTokenAcceptance: spec.perTokenAcceptance,
          tokensPerRound: spec.tokensPerRound,
          rounds: spec.rounds,
          choice,
        }
        : null,
    };
  }

  /**
   * K and draft sparsity for `speculate: "auto"`: measured once per sampling mode (greedy or sampled) and
   * fixed draft sparsity, then cached on the model.
   */
  async #chooseSpeculation(
    promptIds: number[],
    sampling: { temperature: number; topK: number; topP: number; seed: number },
    fixed: number | undefined,
    signal: AbortSignal | undefined,
  ): Promise<SpeculativeChoice> {
    const key = `${sampling.temperature > 0 ? "sampled" : "greedy"}:${fixed ?? "auto"}`;
    const cached = this.#specChoices.get(key);
    if (cached) return cached;
    const levels = this.#sparsityLevels;
    const lo = Math.max(levels[0], 1e-9);
    const hi = levels[levels.length - 1];
    let grid = fixed !== undefined ? [fixed] : SPEC_AUTO.sparsities.filter((s) => s >= lo && s <= hi);
    if (grid.length === 0) grid = [hi];
    const choice = await chooseSpeculation(this.forward, {
      promptIds,
      sampling,
      sparsities: grid,
      useSparsity: (s) => this.#useSparsity(s),
      signal,
    });
    this.#specChoices.set(key, choice);
    return choice;
  }

  /** The automatic speculative choices made so far, by sampling mode ("greedy:auto", "sampled:0.5", ...). */
  get speculationChoices(): ReadonlyMap<string, SpeculativeChoice> {
    return this.#specChoices;
  }

  /** Reads the GPU's kept-channel counters after `ran` sparse token evaluations (decode steps or rows). */
  async #readSparsity(ran: number): Promise<SparsityReport> {
    const c = this.config;
    const counts = await this.gpu.readU32(this.forward.sparsity.counters, c.numLayers * SLOTS);
    const qDim = c.numHeads * c.headDim;
    const kvDim = c.numKvHeads * c.headDim;
    const dims: [number, number][] = [
      [c.hiddenSize, qDim],
      [c.hiddenSize, kvDim],
      [c.hiddenSize, kvDim],
      [qDim, c.hiddenSize],
      [c.hiddenSize, c.intermediateSize],
      [c.hiddenSize, c.intermediateSize],
      [c.intermediateSize, c.hiddenSize],
    ];
    const perTensor: number[][] = [];
    let skipped = 0;
    let total = 0;
    for (let l = 0; l < c.numLayers; l++) {
      const row: number[] = [];
      for (let s = 0; s < SLOTS; s++) {
        const [K, N] = dims[s];
        const frac = 1 - counts[l * SLOTS + s] / (ran * K);
        row.push(frac);
        skipped += frac * K * N;
        total += K * N;
      }
      perTensor.push(row);
    }
    return { perTensor, overall: skipped / total };
  }

  /**
   * Logits of every position of `ids` ([ids.length][vocab], row-major), from a fresh context. With `sparsity`
   * (or explicit `thresholds`, [layers * 7]), the TEAL thresholds apply at every position, as decoding would.
   */
  async logits(
    ids: number[],
    o: { sparsity?: number; thresholds?: Float32Array } = {},
  ): Promise<Float32Array> {
    const ids2 = this.#prepare(ids, { maxTokens: 1 });
    return await this.#exclusive(async () => {
      const sparse = (o.sparsity ?? 0) > 0 || o.thresholds !== undefined;
      if (sparse) {
        if (o.thresholds) this.setThresholds(o.thresholds);
        else this.#useSparsity(o.sparsity!);
        this.gpu.write(this.forward.sparsity.counters, new Uint32Array(this.config.numLayers * SLOTS));
      }
      const V = this.config.vocabSize;
      const f = this.forward;
      const out = new Float32Array(ids2.length * V);
      // passes of at most as many rows as one binding holds logits of (Llama-3's vocabulary: 513 KB a row)
      const chunk = Math.max(1, Math.min(f.maxPrefill, Math.floor(this.gpu.maxBinding / (V * 4))));
      const buf = this.gpu.buffer(chunk * V * 4, "all_logits");
      try {
        for (let c0 = 0; c0 < ids2.length; c0 += chunk) {
          const rows = Math.min(chunk, ids2.length - c0);
          this.gpu.write(f.ids, new Uint32Array(ids2.slice(c0, c0 + rows)));
          const ops = f.prefill(rows, c0, { sparse, allLogits: buf });
          this.gpu.run(ops);
          releaseOps(ops);
          out.set(await this.gpu.readF32(buf, rows * V), c0 * V);
        }
      } finally {
        buf.destroy();
      }
      if (sparse) this.#lastSparsity = await this.#readSparsity(ids2.length);
      return out;
    });
  }

  /** Frees the GPU buffers of this model. The GPU context (`model.gpu`) stays usable; it may be shared. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.forward.destroy(weightBuffers(this.#weights));
  }
}

/** Bytes of checkpoint rows the loader queues for the GPU before it waits for them to be laid out. */
const UPLOAD_QUEUE_BYTES = 1 << 30;

/** Default context length when the caller names none. */
export const DEFAULT_CONTEXT = 4096;

function checkShapes(c: ModelConfig): void {
  if (c.headDim % 8 !== 0 || c.headDim > 256) {
    throw new Error(`head_dim ${c.headDim} is not supported (needs a multiple of 8, at most 256)`);
  }
  if (c.hiddenSize % 2 !== 0) throw new Error(`hidden_size ${c.hiddenSize} must be even`);
}

/** Builds a model from a config and tensors (checkpoint streams, or tensors made by a test). */
export async function modelFromTensors(
  id: string,
  config: ModelConfig,
  tensors: AsyncIterable<NamedTensor> | Iterable<NamedTensor>,
  options: LoadOptions & { tokenizer?: TextTokenizer | null } = {},
): Promise<Model> {
  checkShapes(config);
  const quant = parseQuant(options.quant, "quant");
  if (options.gemvHalf !== undefined && typeof options.gemvHalf !== "boolean") {
    throw new RangeError(`gemvHalf must be true or false, got ${JSON.stringify(options.gemvHalf)}`);
  }
  const gpu = options.gpu ?? await createGpuContext();
  if (options.gemvHalf && !gpu.hasF16) {
    if (!options.gpu) gpu.destroy();
    throw new RangeError(`gemvHalf: ${gpu.adapterName} has no shader-f16 feature`);
  }
  const weights = allocateWeights(gpu, config, quant);
  try {
    let pending = 0;
    for await (const t of tensors) {
      uploadTensor(gpu, config, weights, t);
      // the rows wait in host staging memory until the GPU has laid them out: bound what is queued
      pending += t.data.byteLength;
      if (pending >= UPLOAD_QUEUE_BYTES) {
        await gpu.device.queue.onSubmittedWorkDone();
        pending = 0;
      }
    }
  } catch (e) {
    // a read that fails mid-way (the files were checked first) must not leave gigabytes on the GPU
    for (const b of weightBuffers(weights)) b.destroy();
    throw e;
  } finally {
    finishUpload(weights);
  }
  const contextLength = Math.min(options.contextLength ?? DEFAULT_CONTEXT, config.maxPositionEmbeddings);
  return new Model(id, config, gpu, weights, options.tokenizer ?? null, {
    gemvHalf: options.gemvHalf,
    contextLength,
    maxPrefill: options.maxPrefill === undefined
      ? defaultMaxPrefill(config, gpu.maxBinding, contextLength)
      : Math.min(options.maxPrefill, contextLength),
  });
}

/**
 * Prompt rows a prefill pass takes by default: 1024, at most the context, and no more than the GPU's largest
 * storage binding holds of the widest activation row (gate|up, f32). Longer passes run the prefill GEMMs in
 * larger tiles: on the H200 at Llama-3-8B shapes (2026-12-03, docs/benchmarks.md) a 4096-token prompt's first
 * token took 2485 ms in passes of 1024 rows against 3046 in passes of 256, for 271 MB of activations instead
 * of 68.
 */
export function defaultMaxPrefill(config: ModelConfig, maxBinding: number, contextLength: number): number {
  const widestRow = 4 * Math.max(
    2 * config.intermediateSize,
    (config.numHeads + 2 * config.numKvHeads) * config.headDim,
    config.hiddenSize,
  );
  return Math.max(1, Math.min(1024, contextLength, Math.floor(maxBinding / widestRow)));
}

/**
 * Loads a model onto the GPU: a Hugging Face folder, a llama.cpp GGUF file, or a folder holding exactly one
 * `.gguf` and no safetensors. Checks every file first (clear errors naming the file or tensor), then streams
 * the weights tensor by tensor (GGUF block formats dequantized on the CPU).
 */
export async function loadModel(dir: string, options: LoadOptions = {}): Promise<Model> {
  parseQuant(options.quant, "quant"); // before reading any file
  const gguf = await findGgufFile(dir);
  if (gguf) return await loadGguf(gguf, dir, options);
  const ckpt = await openCheckpoint(dir);
  const tokenizer = await TextTokenizer.load(dir);
  const onProgress = options.onProgress ??
    (Deno.stderr.isTerminal() ? progressBar(`loading ${dir}`) : undefined);
  const id = dir.replace(/\/+$/, "").split("/").pop() || dir;
  // a bad profile is reported before the weights are uploaded
  const profilePath = options.profile === false ? null : options.profile ?? await findProfile(dir);
  const profile = profilePath ? await loadProfile(profilePath, ckpt.config) : null;
  const model = await modelFromTensors(id, ckpt.config, ckpt.readTensors(onProgress), {
    ...options,
    tokenizer,
  });
  if (profile) model.attachProfile(profile);
  return model;
}

/** {@link loadModel} for a GGUF file; `given` is the path the caller named (its folder is searched for a profile). */
async function loadGguf(file: string, given: string, options: LoadOptions): Promise<Model> {
  const ck = await openGguf(file);
  const meta = new GgufMetadata(ck.header.metadata, file);
  const { tokenizer, reason } = ggufTokenizer(meta, ck.config.eosTokenIds);
  if (reason) console.warn(`${file}: ${reason}; the model takes token ids only`);
  const onProgress = options.onProgress ??
    (Deno.stderr.isTerminal() ? progressBar(`loading ${file}`) : undefined);
  // A profile beside a folder's one GGUF is found as for HF folders; for a file path only --profile names one.
  const isDir = file !== given;
  const profilePath = options.profile === false
    ? null
    : options.profile ?? (isDir ? await findProfile(given) : null);
  const profile = profilePath ? await loadProfile(profilePath, ck.config) : null;
  const model = await modelFromTensors(ggufModelId(file), ck.config, ck.readTensors(onProgress), {
    ...options,
    tokenizer,
  });
  if (profile) model.attachProfile(profile);
  return model;
}
