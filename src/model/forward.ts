/**
 * The forward pass on the GPU, readable top to bottom: one decode step (single token, GEMV, positions and the
 * token itself read from a GPU state buffer so the same step can be queued many times with no host round
 * trip), and prefill (many tokens, GEMM). TEAL sparsity enters through the thresholds buffer: in a sparse
 * decode step every projection drops the input channels below its threshold.
 * @module
 */
import type { GpuContext, Op } from "../gpu/context.ts";
import {
  attentionOp,
  type AttentionShape,
  ATTN,
  attnDecodeOps,
  attnHeadsAt,
  attnHeadsRunnable,
  attnPartFloats,
  attnSpan,
  attnWorkgroupBytes,
  embedOp,
  GEMV,
  GEMV_ROWS,
  gemvChunk,
  type GemvFinish,
  type GemvInput,
  gemvOp,
  gemvRowsOps,
  gemvRowsPartialBytes,
  gemvSplits,
  gemvTiles,
  type GemvTune,
  type L2Prefetch,
  MATMUL_TILE,
  matmulOp,
  matmulOps,
  type MatmulOptions,
  type Matrix,
  PASS_PREFETCH_CAP_BYTES,
  prefetchChunkHeads,
  prefetchRange,
  REDUCE,
  reduceOp,
  resolveGemvTune,
  rmsNormOp,
  ropeOp,
  sampleOp,
  SAMPLER_PARAMS_BYTES,
  sparsityBin,
  type SparsityBuffers,
  type SplitK,
  swigluOp,
} from "../gpu/kernels.ts";
import type { ModelConfig } from "./config.ts";
import { SLOTS, type Weights } from "./weights.ts";

/** Sizes of the run state. */
export interface ForwardOptions {
  /** Longest sequence (KV cache positions). */
  maxSeq: number;
  /** Most prompt rows one prefill pass handles (longer prompts go in chunks). */
  maxPrefill: number;
}

/** Where calibration can read activations inside a layer: the block input and each projection's input. */
export type CaptureSite = "in" | "qkv" | "o" | "gateup" | "down";

/** Returns ops to run right after `buffer` ([rows][width] f32) holds the site's activations of layer i. */
export type CaptureHook = (layer: number, site: CaptureSite, buffer: GPUBuffer, width: number) => Op[];

/** Decode state words (state buffer, u32). */
export const STATE = { pos: 0, token: 1, step: 2 } as const;

/** Activations, KV cache and the decode state of one model. */
export class Forward {
  readonly ctx: GpuContext;
  readonly config: ModelConfig;
  readonly weights: Weights;
  readonly maxSeq: number;
  readonly maxPrefill: number;
  readonly shape: AttentionShape;
  // decode activations
  readonly x: GPUBuffer; // f32 [hidden] residual stream (+ 2 * ATTN.PREFETCH_WG: l2PrefetchPasses' checksums)
  readonly xn: GPUBuffer; // f32 [hidden] normed
  readonly attn: GPUBuffer; // f32 [heads*headDim]
  readonly attnPart: GPUBuffer; // f32 [kv splits][heads][headDim + 2] split-KV attention partials (long contexts)
  readonly act: GPUBuffer; // f32 [intermediate] silu(gate)*up (+ 2 * ATTN.PREFETCH_WG, as x)
  readonly partials: GPUBuffer; // f32 [splits][cols] split-K sums
  readonly partials2: GPUBuffer; // f32 [splits][cols] second set (down GEMV reads gate|up partials)
  readonly ss: GPUBuffer; // f32 [ceil(hidden/256)] sums of squares of the residual stream, by workgroup
  readonly logits: GPUBuffer; // f32 [vocab] (prefill "all": [maxPrefill][vocab])
  // prefill activations, [maxPrefill][...]
  readonly X: GPUBuffer;
  readonly XN: GPUBuffer;
  readonly QKV: GPUBuffer;
  readonly ATT: GPUBuffer;
  readonly GU: GPUBuffer;
  readonly ACT: GPUBuffer;
  readonly ids: GPUBuffer; // u32 [maxPrefill] prompt ids of one prefill pass
  readonly kcache: GPUBuffer[]; // per layer: f16 [numKv][maxSeq][headDim]
  readonly vcache: GPUBuffer[];
  /** u32 [4]: position of the next token to feed, that token, tokens sampled. */
  readonly state: GPUBuffer;
  /** u32 [maxSeq]: every sampled token, by step. */
  readonly tokens: GPUBuffer;
  /** sample.wgsl parameters (written per generation). */
  readonly samplerParams: GPUBuffer;
  /** Thresholds f32 [layers*7] and active-channel counters u32 [layers*7]. */
  readonly sparsity: SparsityBuffers;

  /**
   * Split the prefill GEMMs over K when a pass has few rows (at most one row tile), where the K loop's latency
   * sets their time. On by default on a GPU; off on a CPU adapter, where the extra pass costs more than the
   * parallelism gains (tests turn it on there).
   */
  splitK: boolean;

  /**
   * Dense prefill passes of at most {@link GEMV_ROWS}.maxRows rows over f16 weights (and lm_head when every
   * row's logits are wanted: the speculative verify pass) go through the few-row GEMV (gemv_rows.wgsl: each
   * weight row read once for all rows) instead of the tiled GEMM. On by default: at Llama-3-8B shapes on the
   * H200 the first token after 11 and 16 prompt tokens took 58.7 and 70.0 ms against 95.9 and 96.6 with the
   * GEMM, and the speculative verify pass (5 rows) 12.3 ms against 50.2 (docs/benchmarks.md). Prompts of up to
   * `prefillStepsUpTo` tokens go through decode steps either way; off, every pass takes the tiled GEMM.
   */
  prefillGemv = true;

  /**
   * Let the decode GEMVs sum their own splits (gemv_finish.wgsl: the last workgroup of each column tile applies
   * the residual add, SwiGLU or store), removing the three reduce passes of a layer and lm_head's. Off by
   * default: the last workgroup reads the other workgroups' partial sums after a storage barrier and an atomic
   * ticket, which WGSL's memory model does not promise across workgroups; it is checked on lavapipe (tests) and
   * is to be checked and timed on each GPU first (`bench/finish_check.ts`, `bench --gemv-epilogue`). On the H200
   * at Llama-3-8B shapes it was exact and saved 0.7-1.8% of a decode step (2026-12-04, docs/benchmarks.md).
   * Change it between generations, not during one.
   */
  get gemvEpilogue(): boolean {
    return this.#gemvEpilogue;
  }
  set gemvEpilogue(on: boolean) {
    if (on === this.#gemvEpilogue) return;
    this.#gemvEpilogue = on;
    this.#dropSteps();
  }

  /**
   * Dense decode GEMVs issue their first trip of weight loads before staging their input (gemv.wgsl `EARLY`):
   * the same sums, one DRAM round trip less on each GEMV's critical path. On by default for f16 weights, off
   * for int8/int4: at Llama-3-8B shapes on the H200 (2026-12-03, docs/benchmarks.md) a dense f16 step took
   * 5.84 ms instead of 5.87–5.88 (5.81 with {@link l2Prefetch}), while int8 and int4 dense steps were 4% and 23%
   * slower (their first trip holds codes and metadata in registers through the staging). Sparse steps have no
   * early loads (their rows are known only after compaction). Change it between generations, not during one.
   */
  get gemvEarly(): boolean {
    return this.#gemvEarly;
  }
  set gemvEarly(on: boolean) {
    if (on === this.#gemvEarly) return;
    this.#gemvEarly = on;
    this.#dropSteps();
  }
  #gemvEpilogue = false;
  #gemvEarly: boolean;

  /**
   * The down GEMV computes SwiGLU itself while it stages its input (gemv.wgsl INPUT 2: each channel's gate and
   * up summed from the gate|up GEMV's split partials), so no SwiGLU pass runs: seven dispatches a layer instead
   * of eight. Every column tile of the down GEMV recomputes its chunk's SwiGLU from L2. The same sums in the
   * same order as the pass's. On by default on GPUs: at Llama-3-8B shapes on the H200 (2026-12-04,
   * docs/benchmarks.md) a decode step took 1.5-1.9% less time with f16 weights, 1.6-1.9% with int8 and 2.7-3.0%
   * with int4, dense and at 50% sparsity. Off on a CPU adapter (lavapipe), where the recomputation is
   * arithmetic the CPU pays for: at the tiny shape a dense step took 30.3 ms either way, a 50% one 28.1 ms
   * against 26.7-27.2 (2026-12-04, noisy). No effect with {@link gemvEpilogue}, whose gate|up GEMV
   * applies SwiGLU itself. Change it between generations, not during one.
   */
  get swigluInDown(): boolean {
    return this.#swigluInDown;
  }
  set swigluInDown(on: boolean) {
    if (on === this.#swigluInDown) return;
    this.#swigluInDown = on;
    this.#dropSteps();
  }
  #swigluInDown: boolean;

  /** Drops the decode steps built so far (a layout option changed). */
  #dropSteps(): void {
    // prompt steps are slices of decode steps: their parameter buffers go with them
    for (const ops of this.#decode.values()) releaseOps(ops);
    this.#decode.clear();
    this.#prompt.clear();
    this.#promptEnd.clear();
    for (const ops of this.#prefillCache.values()) releaseOps(ops);
    this.#prefillCache.clear();
  }

  /**
   * Decode attention prefetches the o projection's weights (up to ATTN.PREFETCH_CAP_BYTES) into L2 with extra
   * workgroups of its own dispatch (attn_decode.wgsl), so that the o GEMV after it reads them from L2: the
   * attention is latency-bound and leaves DRAM idle. The same results either way. On by default for f16
   * weights: at Llama-3-8B shapes on the H200 (2026-12-03, docs/benchmarks.md) the o GEMV went from 0.53 to
   * 0.39 ms a token and attention from 0.66 to 0.77, with {@link gemvEarly} a dense step from 5.88 to 5.81 ms;
   * at 50% sparsity it is even (4.83 ms either way). Off for int8/int4, where it was not timed alone, and on a
   * CPU adapter (lavapipe), where the extra workgroups cost time and there is no L2 to fill. Short contexts
   * only (the one-workgroup-a-head attention, below ATTN.SINGLE_BELOW): the split attention of long contexts
   * reads more of the cache from DRAM, and with the prefetch a 50% step at position 2048 took 4.92 ms against
   * 4.61 (2026-12-03, seventh session). Change it between generations, not during one.
   */
  get l2Prefetch(): boolean {
    return this.#l2Prefetch;
  }
  set l2Prefetch(on: boolean) {
    if (on === this.#l2Prefetch) return;
    this.#l2Prefetch = on;
    this.#dropSteps();
  }
  #l2Prefetch: boolean;

  /**
   * The short-context decode attention (one workgroup a head, below ATTN.SINGLE_BELOW) loads each thread's
   * first cached key and first trips of values (ATTN_PRELOAD) before it stages q|k|v: they do not depend on the
   * new token, so their DRAM round trips overlap the staging's (attn_decode.wgsl PRELOAD; head sizes up to
   * 128). The same results either way. On the H200 at Llama-3-8B shapes a 50% step took 4.180 ms against 4.285
   * (2026-12-04, docs/benchmarks.md). Change it between generations, not during one.
   */
  get attnPreload(): boolean {
    return this.#attnPreload;
  }
  set attnPreload(on: boolean) {
    if (on === this.#attnPreload) return;
    this.#attnPreload = on;
    this.#dropSteps();
  }
  #attnPreload = true;

  /**
   * A decode step's reduce passes prefetch the start of the next GEMV's weights (up to
   * PASS_PREFETCH_CAP_BYTES) into L2 with extra workgroups of their own dispatch (reduce.wgsl, prefetch.wgsl):
   * the residual add after the o GEMV reads gate|up's, SwiGLU down's, the residual add after the down GEMV the
   * next layer's q|k|v (after the last layer, lm_head's first part). The passes are short and latency-bound
   * and leave DRAM idle, as attention does ({@link l2Prefetch}). The same results either way. No effect with
   * {@link gemvEpilogue}, which has no reduce passes. Off by default until timed on a GPU
   * (`bench --l2-prefetch-passes`). Change it between generations, not during one.
   */
  get l2PrefetchPasses(): boolean {
    return this.#l2PrefetchPasses;
  }
  set l2PrefetchPasses(on: boolean) {
    if (on === this.#l2PrefetchPasses) return;
    this.#l2PrefetchPasses = on;
    this.#dropSteps();
  }
  #l2PrefetchPasses = false;

  /**
   * Bytes (0: off) the decode step's reduce passes prefetch into L2 as the first rows of every K chunk of the
   * next GEMV (prefetchChunkHeads), where {@link l2PrefetchPasses} reads the start of its weights: with chunk
   * heads every workgroup of the GEMV starts on rows in L2, not only those of its first chunk. Where the next
   * matrix's rows differ in length (q|k|v) the pass prefetches nothing. Takes the place of l2PrefetchPasses.
   * Off by default until timed on a GPU (`bench --l2-prefetch-heads MIB`).
   */
  get l2PrefetchHeadsBytes(): number {
    return this.#l2PrefetchHeadsBytes;
  }
  set l2PrefetchHeadsBytes(bytes: number) {
    if (!(Number.isFinite(bytes) && bytes >= 0)) {
      throw new RangeError(`l2PrefetchHeadsBytes must be a finite number >= 0, got ${bytes}`);
    }
    if (bytes === this.#l2PrefetchHeadsBytes) return;
    this.#l2PrefetchHeadsBytes = bytes;
    this.#dropSteps();
  }
  #l2PrefetchHeadsBytes = 0;

  /**
   * Threads per column group, rows in flight, input channels per split, threads per workgroup and (int8/int4)
   * words of codes a thread loads of a decode step's GEMVs, by projection, over what gemvTune picks for the
   * shape ({@link resolveGemvTune}: the passes after a GEMV read as many splits as its chunk gives; a chunk
   * given alone shrinks the shape's workgroup to it; a variant the kernels cannot run throws when the step is
   * built). For tuning (`bench/sparse_probe.ts --grid`, `--step-grid`); setting it drops the decode steps built
   * so far.
   */
  get gemvTunes(): GemvTunes {
    return this.#gemvTunes;
  }
  set gemvTunes(t: GemvTunes) {
    for (const [proj, v] of Object.entries(t)) {
      if (v.TPR !== undefined && ![8, 16, 32, 64].includes(v.TPR)) {
        throw new RangeError(`gemvTunes.${proj}.TPR: ${v.TPR} is not 8, 16, 32 or 64`);
      }
      if (v.UNROLL !== undefined && v.UNROLL !== 4 && v.UNROLL !== 8) {
        throw new RangeError(`gemvTunes.${proj}.UNROLL: ${v.UNROLL} is not 4 or 8`);
      }
      if (v.KCHUNK !== undefined && ![256, 512, 1024, 2048].includes(v.KCHUNK)) {
        throw new RangeError(`gemvTunes.${proj}.KCHUNK: ${v.KCHUNK} is not 256, 512, 1024 or 2048`);
      }
      if (v.VEC !== undefined && v.VEC !== 2 && v.VEC !== 4) {
        throw new RangeError(`gemvTunes.${proj}.VEC: ${v.VEC} is not 2 or 4`);
      }
      if (v.WG !== undefined && ![128, 256, 512, 1024].includes(v.WG)) {
        throw new RangeError(`gemvTunes.${proj}.WG: ${v.WG} is not 128, 256, 512 or 1024`);
      }
    }
    this.#gemvTunes = { ...t }; // fields left undefined keep the shape's own (resolveGemvTune)
    this.#dropSteps();
  }
  #gemvTunes: GemvTunes = {};

  /**
   * The model-wide sparsity the thresholds buffer was set for (Model sets it with a TEAL target): its
   * {@link sparsityBin} picks the sparse steps' GEMV variants ({@link gemvTune}). 0.5 until set (the mid bin).
   * Steps of each bin are built once and kept.
   */
  get sparsityLevel(): number {
    return this.#sparsityLevel;
  }
  set sparsityLevel(level: number) {
    if (!(level >= 0 && level <= 1)) throw new RangeError(`sparsityLevel must be in [0, 1], got ${level}`);
    this.#sparsityLevel = level;
  }
  #sparsityLevel = 0.5;

  /**
   * Whether the int8/int4 decode GEMVs add their rows in packed f16 (gemv_qh.wgsl); undefined (the default):
   * GEMV_HALF's choice for the device (on GPUs with shader-f16, off on CPU adapters). f16 weights keep their
   * default kernel either way. true on a device without shader-f16 throws when a step is built. Setting it
   * drops the decode steps built so far.
   */
  get gemvHalf(): boolean | undefined {
    return this.#gemvHalf;
  }
  set gemvHalf(on: boolean | undefined) {
    if (on === this.#gemvHalf) return;
    this.#gemvHalf = on;
    this.#dropSteps();
  }
  #gemvHalf: boolean | undefined = undefined;
  // the packed-f16 choice for a matrix's GEMV: quantized weights only
  #halfFor(m: Matrix): boolean | undefined {
    return m.format && m.format !== "f16" ? this.#gemvHalf : undefined;
  }

  /**
   * q heads a workgroup of the split decode attention (long contexts, {@link attnSpan}) takes, all of one kv
   * head, which then read its keys and values once between them: 1 to 4, dividing the q heads a kv head, at
   * every position the split variant runs; null (the default): by position, {@link attnHeadsAt}. Change it
   * between generations, not during one.
   */
  get attentionHeads(): number | null {
    return this.#attentionHeads;
  }
  set attentionHeads(heads: number | null) {
    if (heads !== null && !attnHeadsRunnable(heads, this.shape)) {
      throw new RangeError(
        `attentionHeads must be null or 1 to 4 dividing the ${
          this.shape.numHeads / this.shape.numKv
        } q heads a kv head, got ${heads}`,
      );
    }
    if (heads === this.#attentionHeads) return;
    this.#attentionHeads = heads;
    this.#dropSteps();
  }
  #attentionHeads: number | null = null;

  /**
   * q heads a workgroup of the split decode attention at `pos` (by position: fewer where they do not fit the
   * GPU's workgroup memory). The decode loop asks once a token, so the limit is read once, at construction.
   */
  #headsAt(pos: number): number {
    if (this.#attentionHeads !== null) return this.#attentionHeads;
    let heads = attnHeadsAt(pos, this.shape);
    while (heads > 1 && attnWorkgroupBytes(this.shape.headDim, heads) > this.#workgroupBytes) {
      heads = heads % 2 === 0 ? heads / 2 : 1;
    }
    return heads;
  }
  #workgroupBytes: number;
  #lmBlocks: GPUBuffer; // lm_head's argmax blocks, 2 floats per 256 logits (reduce.wgsl MODE 3)

  #decode = new Map<string, Op[]>();
  #prefillCache = new Map<string, Op[]>();
  #prompt = new Map<string, Op[]>();
  #promptEnd = new Map<string, number>(); // ops of a decode step up to the last layer's attention
  #all: GPUBuffer[] = [];
  #splitPartials: GPUBuffer | null = null;

  constructor(ctx: GpuContext, config: ModelConfig, weights: Weights, o: ForwardOptions) {
    this.ctx = ctx;
    this.config = config;
    this.weights = weights;
    // measured faster for f16 weights only (see the properties); a CPU adapter has no L2 to fill, and its
    // 128 extra workgroups an attention dispatch cost it real time
    this.#gemvEarly = weights.format === "f16";
    this.#l2Prefetch = weights.format === "f16" && !ctx.isCpu;
    this.#swigluInDown = !ctx.isCpu;
    this.maxSeq = o.maxSeq;
    this.maxPrefill = o.maxPrefill;
    this.#workgroupBytes = ctx.device.limits.maxComputeWorkgroupStorageSize;
    const c = config;
    const qkvDim = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
    const qDim = c.numHeads * c.headDim;
    this.shape = {
      numHeads: c.numHeads,
      numKv: c.numKvHeads,
      headDim: c.headDim,
      maxSeq: o.maxSeq,
      ldq: qkvDim,
    };
    const f32 = (n: number, label: string) => this.#track(ctx.buffer(n * 4, label));
    const P = o.maxPrefill;
    const maxK = Math.max(c.hiddenSize, qDim, c.intermediateSize);
    const maxCols = Math.max(
      qkvDim,
      2 * c.intermediateSize,
      c.hiddenSize,
      ...weights.lmHead.map((p) => p.matrix.N),
    );
    // past the residual stream and SwiGLU's output, the reduce passes' prefetch checksums (l2PrefetchPasses):
    // reduce.o and reduce.down both write them to x's, which nothing reads (the GEMVs read K inputs)
    this.x = f32(c.hiddenSize + 2 * ATTN.PREFETCH_WG, "x");
    this.xn = f32(c.hiddenSize, "xn");
    // past the attention's output, the L2 prefetch's per-workgroup checksums: always written, so that no
    // compiler may drop the loads that feed them (l2Prefetch)
    this.attn = f32(qDim + 2 * ATTN.PREFETCH_WG, "attn");
    this.attnPart = f32(attnPartFloats(this.shape) + 2 * ATTN.PREFETCH_WG, "attn_part");
    this.act = f32(c.intermediateSize + 2 * ATTN.PREFETCH_WG, "act");
    // no matrix has more: a K chunk is one workgroup's channels at least (gemvChunk, gemvTunes)
    const maxSplits = Math.ceil(maxK / GEMV.WG);
    this.partials = f32(maxSplits * maxCols, "partials");
    this.partials2 = f32(maxSplits * maxCols, "partials2");
    // one sum of squares per embedding workgroup (256 values) or per column tile of the o / down GEMV
    // (sized for the narrowest column groups gemvTunes allows)
    const tiles = weights.layers.flatMap((L) => [gemvTiles(L.o, NARROWEST), gemvTiles(L.down, NARROWEST)]);
    this.ss = f32(Math.max(Math.ceil(c.hiddenSize / 256), ...tiles), "ss");
    this.logits = f32(c.vocabSize, "logits");
    this.#lmBlocks = f32(2 * this.#lmBlockCount(), "lm_blocks");
    this.X = f32(P * c.hiddenSize, "X");
    this.XN = f32(P * c.hiddenSize, "XN");
    this.QKV = f32(P * qkvDim, "QKV");
    this.ATT = f32(P * qDim, "ATT");
    this.GU = f32(P * 2 * c.intermediateSize, "GU");
    this.ACT = f32(P * c.intermediateSize, "ACT");
    this.ids = this.#track(ctx.buffer(P * 4, "ids"));
    const cacheBytes = c.numKvHeads * o.maxSeq * c.headDim * 2;
    this.kcache = [];
    this.vcache = [];
    for (let i = 0; i < c.numLayers; i++) {
      this.kcache.push(this.#track(ctx.buffer(cacheBytes, `k${i}`)));
      this.vcache.push(this.#track(ctx.buffer(cacheBytes, `v${i}`)));
    }
    this.state = this.#track(ctx.buffer(16, "state"));
    this.tokens = this.#track(ctx.buffer(o.maxSeq * 4, "tokens"));
    this.samplerParams = this.#track(
      ctx.device.createBuffer({
        size: SAMPLER_PARAMS_BYTES,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      }),
    );
    this.sparsity = {
      thresholds: this.#track(ctx.buffer(c.numLayers * SLOTS * 4, "thresholds")),
      // the GEMV epilogues' tickets follow the kept-channel counters: one per column tile of the widest GEMV
      counters: this.#track(ctx.buffer((c.numLayers * SLOTS + maxTickets(weights)) * 4, "counters")),
      tickets: c.numLayers * SLOTS,
    };
    this.splitK = !ctx.isCpu;
  }

  /** Split-K for a layer's prefill GEMM over `rows` rows: K in pieces of about 512 while the partials fit. */
  #split(m: Matrix, rows: number): SplitK | null {
    if (!this.splitK || rows > MATMUL_TILE || m.K <= 512) return null;
    const partials = this.#splitBuffer();
    const fit = Math.floor(partials.size / (4 * rows * m.N));
    const splits = Math.min(Math.ceil(m.K / 512), fit);
    return splits >= 2 ? { partials, splits } : null;
  }

  /** The split partials of the few-row prefill passes (split-K GEMM and few-row GEMV), made on first use. */
  #splitBuffer(): GPUBuffer {
    if (!this.#splitPartials) {
      // room for 8 splits of one row tile of the widest layer matrix (gate|up): 59 MB at Llama-3-8B shapes,
      // and for the few-row GEMV's splits of as many rows as a pass has, up to 16
      const c = this.config;
      const cols = Math.max(
        (c.numHeads + 2 * c.numKvHeads) * c.headDim,
        2 * c.intermediateSize,
        c.hiddenSize,
      );
      const rows = Math.min(GEMV_ROWS.maxRows, this.maxPrefill);
      const gemv = Math.max(
        ...this.weights.layers.flatMap((L) => [L.qkv, L.o, L.gateUp, L.down]).map((m) =>
          gemvRowsPartialBytes(m, rows)
        ),
      );
      const gemm = Math.min(MATMUL_TILE, this.maxPrefill) * cols * 8 * 4;
      const bytes = Math.min(this.ctx.maxBinding, Math.max(gemm, gemv));
      this.#splitPartials = this.#track(this.ctx.buffer(bytes, "splitk_partials"));
    }
    return this.#splitPartials;
  }

  /** The few-row GEMV for a dense f16 prefill pass when {@link prefillGemv} allows it and its partials fit. */
  #gemvRows(m: Matrix, x: GPUBuffer, y: GPUBuffer, o: MatmulOptions): Op[] | null {
    if (!this.prefillGemv || o.sparse || o.M > GEMV_ROWS.maxRows || (m.format ?? "f16") !== "f16") {
      return null;
    }
    if (gemvRowsPartialBytes(m, o.M) > this.#splitBuffer().size) return null;
    return gemvRowsOps(this.ctx, m, x, y, this.#splitBuffer(), o);
  }

  /**
   * A layer's prefill GEMM: the few-row GEMV when {@link prefillGemv} allows it, else the tiled GEMM, split
   * over K when the pass has few rows ({@link splitK}).
   */
  #gemm(m: Matrix, x: GPUBuffer, y: GPUBuffer, o: MatmulOptions): Op[] {
    return this.#gemvRows(m, x, y, o) ??
      matmulOps(this.ctx, m, x, y, this.sparsity, { ...o, split: this.#split(m, o.M) });
  }

  #track(b: GPUBuffer): GPUBuffer {
    this.#all.push(b);
    return b;
  }

  /** Bytes of the KV cache. */
  get kvCacheBytes(): number {
    return this.kcache.reduce((a, b) => a + b.size, 0) * 2;
  }

  /**
   * One decode step for the token in the state buffer: embedding, every layer, lm_head, sampling.
   * Built once per variant and reused: all per-step data lives on the GPU. Per layer, eight dispatches: q|k|v
   * GEMV, attention (which sums the q|k|v splits, applies RoPE and stores k and v in the cache), o GEMV,
   * residual add, gate|up GEMV, SwiGLU, down GEMV, residual add; with {@link swigluInDown} (the default on
   * GPUs), seven (the down GEMV computes SwiGLU as it stages its input); with {@link gemvEpilogue}, five (the
   * GEMVs apply the residual adds and SwiGLU themselves). RMSNorm is fused into the GEMV that reads it (from the sums
   * of squares the residual add leaves). `pos`, where the step is expected to run, picks the attention variant
   * ({@link attnSpan}): one workgroup per head at short contexts, else split over the context plus a combine
   * pass (one more dispatch), with {@link attentionHeads} q heads a workgroup. Every variant is right at any
   * position; they differ in speed. With {@link l2Prefetch}, the short-context attention dispatch also reads
   * the o projection's weights into L2; with {@link l2PrefetchPasses}, each reduce pass the next GEMV's.
   */
  decodeStep(sparse: boolean, pos = 0): Op[] {
    const key = this.#stepKey(sparse, pos);
    const heads = this.#headsAt(pos);
    const span = attnSpan(pos, heads);
    let ops = this.#decode.get(key);
    if (ops) return ops;
    const { ctx, config: c, weights: w } = this;
    const sp = this.sparsity;
    const h = c.hiddenSize;
    const fused = this.gemvEpilogue;
    const swigluInDown = this.swigluInDown && !fused;
    const early = this.gemvEarly;
    const bin = sparsityBin(this.#sparsityLevel);
    // the fused RMSNorm adds up the sums of squares its input's producer left: one per embedding workgroup,
    // per column tile of a GEMV epilogue, or per reduce-pass workgroup
    const normed = (weight: GPUBuffer, nss: number): GemvInput => ({
      kind: "rmsnorm",
      weight,
      ss: this.ss,
      nss,
      eps: c.rmsNormEps,
    });
    const ssOf = (m: Matrix, proj: string) => fused ? gemvTiles(m, tuneOf(m, proj)) : Math.ceil(h / 256);
    // a reduce pass reads the start of the next GEMV's weights into L2, its checksums at `check` of its output
    // buffer, past what it writes (l2PrefetchPasses)
    const passPrefetch = (next: Matrix, check: number): L2Prefetch | undefined => {
      if (this.#l2PrefetchHeadsBytes > 0) {
        const heads = prefetchChunkHeads(
          next,
          this.#l2PrefetchHeadsBytes,
          gemvChunk(next.K, next.N, sparse),
        );
        return heads ? { buffer: next.buffer, ...heads, check } : undefined;
      }
      return this.l2PrefetchPasses
        ? { buffer: next.buffer, ...prefetchRange(next, PASS_PREFETCH_CAP_BYTES), check }
        : undefined;
    };
    // the GEMV's whole variant: a GemvTunes override over the shape's own for the step's sparsity bin
    const tuneOf = (m: Matrix, proj: string): Required<GemvTune> =>
      resolveGemvTune(m.K, m.N, m.format, sparse, this.#gemvTunes[proj as keyof GemvTunes], bin);
    // the split-K partials a projection's GEMV leaves for the pass after it
    const splitsOf = (m: Matrix, proj: string): number => Math.ceil(m.K / tuneOf(m, proj).KCHUNK);
    // x += m . in, its splits summed in the GEMV's epilogue or in a reduce pass (which prefetches `next`)
    const residual = (
      m: Matrix,
      input: GPUBuffer,
      partials: GPUBuffer,
      counter: number,
      label: string,
      next: Matrix,
      how?: GemvInput,
    ): Op[] => {
      const o = {
        sparse,
        counter,
        label: `gemv.${label}`,
        state: this.state,
        early,
        tune: tuneOf(m, label),
        half: this.#halfFor(m),
        input: how,
      };
      if (fused) {
        return [
          gemvOp(ctx, m, input, partials, sp, { ...o, finish: { kind: "add", out: this.x, ss: this.ss } }),
        ];
      }
      return [
        gemvOp(ctx, m, input, partials, sp, o),
        reduceOp(ctx, partials, this.x, {
          n: m.N,
          splits: splitsOf(m, label),
          ncols: m.N,
          mode: REDUCE.add,
          ss: this.ss,
          prefetch: passPrefetch(next, h),
          label: `reduce.${label}`,
        }),
      ];
    };
    // act = silu(gate) * up of the gate|up GEMV
    const gateUp = (L: Weights["layers"][number], counter: number, nss: number): Op[] => {
      const o = {
        sparse,
        counter,
        label: "gemv.gateup",
        state: this.state,
        input: normed(L.mlpNorm, nss),
        early,
        tune: tuneOf(L.gateUp, "gateup"),
        half: this.#halfFor(L.gateUp),
      };
      if (fused) {
        return [
          gemvOp(ctx, L.gateUp, this.x, this.partials, sp, {
            ...o,
            finish: { kind: "swiglu", out: this.act },
          }),
        ];
      }
      if (swigluInDown) return [gemvOp(ctx, L.gateUp, this.x, this.partials, sp, o)];
      return [
        gemvOp(ctx, L.gateUp, this.x, this.partials, sp, o),
        // SwiGLU in a pass of its own (swigluInDown off: CPU adapters). In the down GEMV's staging it once cost
        // ~11 us a layer at 8B shapes against ~4 us for this pass, while its split sums were loaded one split
        // a trip; with their loads together it is the faster layout on the H200 (docs/benchmarks.md)
        reduceOp(ctx, this.partials, this.act, {
          n: L.gateUp.N / 2,
          splits: splitsOf(L.gateUp, "gateup"),
          ncols: L.gateUp.N,
          mode: REDUCE.swiglu,
          offB: L.gateUp.N / 2,
          prefetch: passPrefetch(L.down, c.intermediateSize),
          label: "swiglu",
        }),
      ];
    };
    ops = [];
    for (const e of w.embed) {
      ops.push(
        embedOp(ctx, e.buffer, this.state, this.x, {
          hidden: h,
          rows: 1,
          idOffset: STATE.token,
          ...e,
          ss: this.ss,
        }),
      );
    }
    let nss = Math.ceil(h / 256); // the embedding's
    w.layers.forEach((L, i) => {
      const slot = i * SLOTS;
      ops!.push(
        gemvOp(ctx, L.qkv, this.x, this.partials, sp, {
          sparse,
          early,
          counter: slot,
          label: "gemv.qkv",
          state: this.state,
          input: normed(L.attnNorm, nss),
          tune: tuneOf(L.qkv, "qkv"),
          half: this.#halfFor(L.qkv),
        }),
        ...attnDecodeOps(
          ctx,
          { partials: this.partials, splits: splitsOf(L.qkv, "qkv"), bias: L.qkvBias },
          w.turns,
          this.kcache[i],
          this.vcache[i],
          this.attnPart,
          this.attn,
          this.state,
          this.shape,
          {
            window: c.slidingWindow ?? 0,
            single: span === 0,
            preload: this.#attnPreload,
            span: span || undefined,
            heads: span === 0 ? 1 : heads,
            // the o GEMV's weights into L2 while the one-workgroup-a-head attention runs (the split
            // variant walks more of the cache from DRAM: with the prefetch, long-context steps were slower)
            prefetch: this.l2Prefetch && span === 0
              ? {
                buffer: L.o.buffer,
                ...prefetchRange(L.o, ATTN.PREFETCH_CAP_BYTES),
                check: c.numHeads * c.headDim,
              }
              : undefined,
          },
        ),
      );
      // a prompt step (all but the last prompt token) needs no more than this: the rest feeds only lm_head
      if (i === w.layers.length - 1) this.#promptEnd.set(key, ops!.length);
      // after the last layer's down projection, lm_head's first part
      const next = w.layers[i + 1]?.qkv ?? w.lmHead[0].matrix;
      ops!.push(
        ...residual(L.o, this.attn, this.partials, slot + 3, "o", L.gateUp),
        ...gateUp(L, slot + 4, ssOf(L.o, "o")),
        ...residual(
          L.down,
          this.act,
          this.partials2,
          slot + 6,
          "down",
          next,
          swigluInDown
            ? {
              kind: "swiglu",
              partials: this.partials,
              splits: splitsOf(L.gateUp, "gateup"),
              cols: L.gateUp.N,
            }
            : undefined,
        ),
      );
      nss = ssOf(L.down, "down");
    });
    ops.push(...this.#lmHead(this.x, { input: normed(w.finalNorm, nss), state: this.state }));
    ops.push(this.#sample());
    this.#decode.set(key, ops);
    return ops;
  }

  /**
   * A decode step that stops after the last layer's attention: it fills the KV cache at the state's position
   * and leaves logits, sampling and the state alone (prompt tokens fed one a step, all but the last). What
   * the last layer computes after its attention feeds only lm_head.
   */
  promptStep(sparse: boolean, pos = 0): Op[] {
    const key = this.#stepKey(sparse, pos);
    let ops = this.#prompt.get(key);
    if (!ops) {
      ops = this.decodeStep(sparse, pos).slice(0, this.#promptEnd.get(key));
      this.#prompt.set(key, ops);
    }
    return ops;
  }

  #stepKey(sparse: boolean, pos: number): string {
    const walk = sparse ? `sparse-${sparsityBin(this.#sparsityLevel)}` : "dense";
    return `${walk}/${this.attentionVariant(pos)}`;
  }

  /**
   * Which decode attention a step at `pos` runs: one workgroup per head ("single"), or split over the context
   * ("split" with its span, and "x" with its heads a workgroup when more than one).
   */
  attentionVariant(pos: number): string {
    const heads = this.#headsAt(pos);
    const span = attnSpan(pos, heads);
    return span === 0 ? "single" : `split${span}` + (heads > 1 ? `x${heads}` : "");
  }

  /** Final norm of row `row` of `x`, then lm_head (dense GEMV) into `logits` (prefill). */
  #lmHeadLast(x: GPUBuffer, row: number): Op[] {
    const { ctx, config: c, weights: w } = this;
    return [
      rmsNormOp(ctx, x, w.finalNorm, this.xn, { n: c.hiddenSize, rows: 1, eps: c.rmsNormEps, inRow: row }),
      ...this.#lmHead(this.xn, {}),
    ];
  }

  /** Argmax blocks of 256 logits the lm_head reduce passes leave (reduce.wgsl MODE 3): all parts together. */
  #lmBlockCount(): number {
    return this.weights.lmHead.reduce((a, p) => a + Math.ceil(p.matrix.N / 256), 0);
  }

  /**
   * Sampling from `logits`: from the argmax blocks of lm_head's reduce passes, which every path that writes the
   * logits and samples runs ({@link #lmHead}), unless the GEMVs sum their own splits (no reduce pass).
   */
  #sample(): Op {
    const blocks = this.gemvEpilogue ? undefined : { buffer: this.#lmBlocks, count: this.#lmBlockCount() };
    return sampleOp(this.ctx, this.samplerParams, this.logits, this.state, this.tokens, blocks);
  }

  /**
   * lm_head (dense GEMV over each column part, its split sums in its epilogue or a pass) from `x` into `logits`;
   * the reduce passes also leave each block of 256 logits' argmax for {@link #sample}.
   */
  #lmHead(x: GPUBuffer, o: { input?: GemvInput; state?: GPUBuffer }): Op[] {
    let block0 = 0;
    return this.weights.lmHead.flatMap((p) => {
      const blockOffset = block0;
      block0 += Math.ceil(p.matrix.N / 256);
      const gemv = (finish?: GemvFinish) =>
        gemvOp(this.ctx, p.matrix, x, this.partials, this.sparsity, {
          sparse: false,
          early: this.gemvEarly,
          half: this.#halfFor(p.matrix),
          label: "gemv.lm_head",
          finish,
          ...o,
        });
      if (this.gemvEpilogue) return [gemv({ kind: "store", out: this.logits, outOffset: p.col0 })];
      return [
        gemv(),
        reduceOp(this.ctx, this.partials, this.logits, {
          n: p.matrix.N,
          splits: gemvSplits(p.matrix.K, p.matrix.N),
          ncols: p.matrix.N,
          mode: REDUCE.storeArgmax,
          outOffset: p.col0,
          ss: this.#lmBlocks,
          blockOffset,
          label: "reduce.lm_head",
        }),
      ];
    });
  }

  /**
   * Prefill of `rows` prompt tokens (already in `ids`) at positions posBase.. : fills the KV cache, then either
   * the last row's logits (+ sampling when `sample`) or every row's logits into `allLogits` ([rows][vocab]).
   * Ops own their parameter buffers: release them with {@link releaseOps} after submitting.
   */
  prefill(rows: number, posBase: number, o: PrefillOptions): Op[] {
    return [...this.prefillGroups(rows, posBase, o)].flat();
  }

  /**
   * A prompt chunk's prefill pass of `rows` rows (ids in `ids`), built once per row count, sparsity, sampling
   * and prefill path, then kept: its positions come from the decode state (state[0] must hold the chunk's last
   * position, `c0 + rows - 1`, when it runs), so one pass serves a chunk anywhere in the context. For the short
   * passes whose building takes longer than the GPU does (the first token after 8 to 16 prompt tokens,
   * {@link PREFILL_CACHE_ROWS}). Kept, the pass comes as one group; the first time, a layer at a time as it is
   * built (as {@link prefillGroups}), and it is kept once the caller has taken every group. The ops stay the
   * Forward's: do not release them.
   */
  *cachedPrefill(rows: number, o: { sparse: boolean; sample: boolean }): Generator<Op[], void, undefined> {
    const key = `${rows}/${o.sparse}/${o.sample}/${this.prefillGemv}/${this.splitK}`;
    const kept = this.#prefillCache.get(key);
    if (kept) {
      yield kept;
      return;
    }
    const built: Op[] = [];
    let done = false;
    try {
      for (const ops of this.prefillGroups(rows, rows - 1, { ...o, fromState: true })) {
        built.push(...ops);
        yield ops;
      }
      done = true;
      this.#prefillCache.set(key, built);
    } finally {
      if (!done) releaseOps(built);
    }
  }

  /**
   * {@link prefill}'s ops a group at a time, in the order they run (the embedding, each layer, then the final
   * norm, lm_head and sampling), built as they are asked for: a caller that submits each group before asking
   * for the next keeps the GPU busy while the host builds the rest (about 420 ops at 8B shapes, each with a
   * parameter buffer and a bind group: 16-22 ms of host time on the H200's machine, more than the GPU pass
   * takes at 8 rows).
   */
  *prefillGroups(rows: number, posBase: number, o: PrefillOptions): Generator<Op[], void, undefined> {
    const { ctx, config: c, weights: w } = this;
    const h = c.hiddenSize;
    yield w.embed.map((e) =>
      embedOp(ctx, e.buffer, this.ids, this.X, { hidden: h, rows, idOffset: 0, ...e })
    );
    for (let i = 0; i < c.numLayers; i++) {
      yield this.layerPrefill(i, rows, posBase, o.sparse ?? false, o.capture, o.fromState);
    }
    const ops: Op[] = [];
    if (o.allLogits) {
      ops.push(rmsNormOp(ctx, this.X, w.finalNorm, this.XN, { n: h, rows, eps: c.rmsNormEps }));
      for (const p of w.lmHead) {
        const at = { M: rows, ldy: c.vocabSize, yOffset: p.col0 };
        // every row's logits (the speculative verify pass): the few-row GEMV when on and its partials fit
        ops.push(
          ...this.#gemvRows(p.matrix, this.XN, o.allLogits, at) ??
            [matmulOp(ctx, p.matrix, this.XN, o.allLogits, this.sparsity, at)],
        );
      }
    } else {
      ops.push(...this.#lmHeadLast(this.X, rows - 1));
      if (o.sample) ops.push(this.#sample());
    }
    yield ops;
  }

  /**
   * One transformer block over `rows` rows of X (in place): X += attn(norm(X)); X += mlp(norm(X)).
   * `capture` may add ops right after each projection input is ready (calibration reads them).
   */
  layerPrefill(
    i: number,
    rows: number,
    posBase: number,
    sparse: boolean,
    capture?: CaptureHook,
    fromState = false,
  ): Op[] {
    const { ctx, config: c, weights: w } = this;
    const L = w.layers[i];
    const at = { rows, posBase, fromState };
    const h = c.hiddenSize;
    const I = c.intermediateSize;
    const slot = i * SLOTS;
    const cap = (site: CaptureSite, buf: GPUBuffer, width: number) => capture?.(i, site, buf, width) ?? [];
    return [
      ...cap("in", this.X, h),
      rmsNormOp(ctx, this.X, L.attnNorm, this.XN, { n: h, rows, eps: c.rmsNormEps }),
      ...cap("qkv", this.XN, h),
      ...this.#gemm(L.qkv, this.XN, this.QKV, {
        M: rows,
        ldy: this.shape.ldq,
        bias: L.qkvBias,
        sparse,
        counter: slot,
      }),
      ropeOp(ctx, this.QKV, w.turns, this.kcache[i], this.vcache[i], this.state, this.shape, at),
      attentionOp(
        ctx,
        this.QKV,
        this.kcache[i],
        this.vcache[i],
        this.ATT,
        this.state,
        this.shape,
        at,
        c.slidingWindow ?? 0,
      ),
      ...cap("o", this.ATT, c.numHeads * c.headDim),
      ...this.#gemm(L.o, this.ATT, this.X, {
        M: rows,
        ldy: h,
        accumulate: true,
        sparse,
        counter: slot + 3,
      }),
      rmsNormOp(ctx, this.X, L.mlpNorm, this.XN, { n: h, rows, eps: c.rmsNormEps }),
      ...cap("gateup", this.XN, h),
      ...this.#gemm(L.gateUp, this.XN, this.GU, {
        M: rows,
        ldy: 2 * I,
        sparse,
        counter: slot + 4,
      }),
      swigluOp(ctx, this.GU, this.ACT, { rows, n: I, ld: 2 * I, offB: I }),
      ...cap("down", this.ACT, I),
      ...this.#gemm(L.down, this.ACT, this.X, {
        M: rows,
        ldy: h,
        accumulate: true,
        sparse,
        counter: slot + 6,
      }),
    ];
  }

  /** Writes the decode state: position of the next token to feed, the token, and the sampled count. */
  writeState(pos: number, token: number, step: number): void {
    this.ctx.write(this.state, new Uint32Array([pos, token, step, 0]));
  }

  /** Frees every buffer (weights included). */
  destroy(extra: GPUBuffer[] = []): void {
    for (const b of [...this.#all, ...extra]) b.destroy();
  }
}

/**
 * Prompt chunks of up to this many rows reuse their prefill pass ({@link Forward.cachedPrefill}): the few-row
 * GEMV's range, where building a pass's ~420 ops on the host (16-27 ms on the H200's machine) takes longer
 * than the pass itself (13 ms at 8 rows); longer passes keep the GPU busy for longer than they take to build.
 */
export const PREFILL_CACHE_ROWS: number = GEMV_ROWS.maxRows;

/** Tickets the GEMV epilogues of a decode step need at most: the column tiles of its widest GEMV. */
function maxTickets(w: Weights): number {
  const mats = [...w.layers.flatMap((L) => [L.o, L.gateUp, L.down]), ...w.lmHead.map((p) => p.matrix)];
  return Math.max(...mats.map((m) => gemvTiles(m, NARROWEST)));
}

/** The narrowest column groups {@link Forward.gemvTunes} allows: buffers counted in column tiles fit any. */
const NARROWEST: GemvTune = { TPR: 8, KCHUNK: GEMV.KCHUNK, VEC: 2 };

/** Options of {@link Forward.prefill} and {@link Forward.prefillGroups}. */
export interface PrefillOptions {
  /** TEAL-sparse prefill GEMMs (the thresholds in the sparsity buffers). */
  sparse?: boolean;
  /** Sample the next token from the last row's logits into the decode state. */
  sample?: boolean;
  /** Every row's logits into this buffer ([rows][vocab]) instead of the last row's into `logits`. */
  allLogits?: GPUBuffer;
  /** Adds ops right after each projection's input is ready (calibration reads them). */
  capture?: CaptureHook;
  /** Positions state[0] - posBase + row (the speculative verify pass, queued without the host). */
  fromState?: boolean;
}

/** Per-projection overrides of a decode step's GEMV variants ({@link Forward.gemvTunes}). */
export type GemvTunes = Partial<
  Record<"qkv" | "o" | "gateup" | "down", Partial<Omit<GemvTune, "PIPE">>>
>;

/** Destroys the per-call parameter buffers of ops built for one submission. */
export function releaseOps(ops: Op[]): void {
  for (const op of ops) for (const b of op.owned ?? []) b.destroy();
}
