/**
 * Host side of each WGSL kernel: packs its parameters and builds its dispatch. The names of fields follow the
 * `Params` structs in `shaders/*.wgsl`.
 * @module
 */
import { type GpuContext, GpuError, type Op } from "./context.ts";
import { gemvQColsPerThread, gemvQOp, quantOverrides, type WeightFormat } from "./quant.ts";

/**
 * The base gemv.wgsl variant: threads per column group, input channels per split, threads per workgroup, rows
 * in flight ({@link gemvTune} departs from it by shape).
 */
export const GEMV = { TPR: 16, KCHUNK: 512, WG: 256, UNROLL: 4 } as const;

/**
 * Software pipelining of the GEMVs' row walk (GemvTune.PIPE) by default, for f16 and for quantized weights:
 * off until timed on a GPU (`bench --gemv-pipe` turns both on for a run). Set it before a model's decode steps
 * are built.
 */
export const GEMV_PIPE: { f16: boolean; quant: boolean } = { f16: false, quant: false };

/**
 * The decode GEMVs' row arithmetic in packed f16 (gemv_h.wgsl for f16 weights, gemv_qh.wgsl for int8/int4: two
 * weights an instruction, a trip's sums in f16, then f32) instead of f32 (gemv.wgsl, gemv_q.wgsl). "gpu": on GPUs
 * with the `shader-f16` feature, not on CPU adapters (lavapipe, where f16 arithmetic is slower); true: wherever
 * the device has the feature; false: never. Results differ from the f32 kernels' by f16 rounding (the input and a
 * trip's sums: relative 2^-11 a term); perplexity through the decode step (bench/decode_nll.ts, tiny-llama-16m,
 * 1024 tokens) moved from 167.0638 to 167.0648 (int8) and from 170.1750 to 170.1330 (int4) on lavapipe. On the
 * H200 at the Llama-3-8B shape (2026-12-03, docs/benchmarks.md) an int4 decode step took 3.934 -> 3.600 ms
 * dense and 3.458 -> 3.303 at 50%, int8 4.233 -> 3.939 and 3.671 -> 3.615; f16 weights' steps gained at most
 * 0.6%, so `f16` stays off. Timed on NVIDIA only. `bench --gemv-half on|off` and
 * `--gemv-half-f16 on|off` set them for a run; set them before a model's decode steps are built.
 */
export const GEMV_HALF: { f16: boolean | "gpu"; quant: boolean | "gpu" } = { f16: false, quant: "gpu" };

/**
 * Whether a decode GEMV over f16 or quantized weights runs its rows in packed f16 here: `want` when given (true
 * on a device without shader-f16 throws), else {@link GEMV_HALF}'s choice for the device.
 */
export function gemvHalfOn(ctx: GpuContext, weights: "f16" | "quant", want?: boolean): boolean {
  if (want !== undefined) {
    if (want && !ctx.hasF16) {
      throw new GpuError(
        `${ctx.adapterName} has no shader-f16 feature: the GEMVs cannot add their rows in f16`,
      );
    }
    return want;
  }
  const v = GEMV_HALF[weights];
  return (v === "gpu" ? !ctx.isCpu : v) && ctx.hasF16;
}

/**
 * Counts each round of the sparse GEMVs' compaction prefix scan adds (gemv.wgsl, gemv_q.wgsl `SCAN_RADIX`): 2
 * is the Hillis-Steele scan (2 log2(WG) + 1 barriers: 17 at 256 threads); 4, 8 or 16 take fewer rounds, each
 * with more workgroup-memory loads. 4 (9 barriers at 256 threads) measured fastest on the H200 (f16 step at 50%
 * 4.34 -> 4.30 ms, int4 3.61 -> 3.59; 8 and 16 slower than 2). `bench --gemv-scan-radix` sets it for a run; set
 * it before a model's decode steps are built.
 */
export const GEMV_SCAN: { radix: 2 | 4 | 8 | 16 } = { radix: 4 };

/**
 * Threads per column group of the f16 GEMV over long inputs (K >= 8192: down_proj). 32 since 2026-12-03:
 * `bench/gemv_bench.ts --model-grid` on the H200 timed the Llama-3-8B down GEMV (+ its reduce) at 37.3 / 26.4 /
 * 21.1 us dense / 50% / 70% with 32, against 42.9 / 29.4 / 24.8 with 16. `bench --down-tpr` sets it for a run.
 */
export const GEMV_LONG_K: { f16TPR: number } = { f16TPR: 32 };

/**
 * Multipliers of the shape's input channels per split ({@link gemvChunk}) for dense and for TEAL-sparse GEMVs:
 * a larger chunk means fewer workgroups, each compacting and walking more channels. `bench --gemv-chunk` sets
 * them for a run; set them before a model's decode steps are built.
 */
export const GEMV_CHUNK: { dense: number; sparse: number } = { dense: 1, sparse: 1 };

/**
 * Bins of a TEAL-sparse step's expected sparsity (the model-wide target its thresholds were set for), each with
 * GEMV variants of its own ({@link gemvTune}): "low" below `lowBelow`, "high" from `highFrom`, "mid" between.
 * `on` false runs every sparse step with the mid variants (`bench --sparsity-bins off`); set it before a
 * model's decode steps are built.
 */
export const SPARSITY_BINS: { on: boolean; lowBelow: number; highFrom: number } = {
  on: true,
  lowBelow: 0.35,
  highFrom: 0.6,
};

/** A bin of expected sparsity ({@link SPARSITY_BINS}). */
export type SparsityBin = "low" | "mid" | "high";

/** The bin of a model-wide sparsity target ("mid" when {@link SPARSITY_BINS} is off). */
export function sparsityBin(level: number): SparsityBin {
  if (!SPARSITY_BINS.on) return "mid";
  return level < SPARSITY_BINS.lowBelow ? "low" : level >= SPARSITY_BINS.highFrom ? "high" : "mid";
}

/** A gemv.wgsl / gemv_q.wgsl variant (benchmarks sweep these; fields left out come from gemvTune). */
export interface GemvTune {
  /** Threads per column group (8 columns each). */
  TPR: number;
  /** Input channels per split. */
  KCHUNK: number;
  /** Threads per workgroup (KCHUNK must be a multiple). */
  WG?: number;
  /** Rows each thread has in flight per trip: 4 or 8. */
  UNROLL?: number;
  /** Load the next trip while adding the current one (software pipelining): the same sums. */
  PIPE?: boolean;
  /**
   * Quantized weights: u32 words of codes a thread loads a row, 4 (16 int8 / 32 int4 columns a thread) or 2
   * (8 / 16 columns, half the registers a row). f16 GEMVs ignore it.
   */
  VEC?: number;
}
/** Output tile of matmul.wgsl (rows and columns). */
export const MATMUL_TILE = 64;

/**
 * One output segment of a weight matrix: a [K][stride] block holding the transposed weights (f16; quantized
 * formats count `base` and `stride` in u32 words, see src/gpu/quant.ts).
 */
export interface Segment {
  /** First f16 (quantized: u32 word) of the block in the matrix buffer. */
  base: number;
  /** f16 per block row (columns rounded up to 8); quantized: u32 words per row. */
  stride: number;
  /** Output columns. */
  len: number;
  /** Column of output 0 in the concatenated output (q|k|v, gate|up). */
  out: number;
  /** Index of this segment's threshold in the thresholds buffer. */
  thr: number;
  /** Quantized formats: u32 word within a row where the row's group scales start (after its codes). */
  meta?: number;
}

/**
 * A linear layer on the GPU, transposed ([in][out]) in f16 so a skipped input channel is a contiguous run of
 * weights. Fused projections (q|k|v, gate|up) are several segments in one buffer.
 */
export interface Matrix {
  /** Input features. */
  K: number;
  /** Total output columns (sum of segment lengths). */
  N: number;
  /** Output segments, back to back in `buffer` (one for a plain projection). */
  segments: Segment[];
  /** f16 weights: each segment's [K][stride] block at its base. */
  buffer: GPUBuffer;
  /** Per-channel score scales, [segments][K] (ones for plain magnitude scoring). */
  scales: GPUBuffer;
  /** Storage format of `buffer` (default f16); int8/int4 run the kernels of src/gpu/quant.ts. */
  format?: WeightFormat;
  /** Quantized formats: outputs per group sharing a scale. */
  group?: number;
}

/** Rounds up to a multiple of m. */
export function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

/** Segment layout for output lengths (blocks back to back); thr gives each segment's threshold index. */
export function layoutSegments(
  K: number,
  lens: number[],
  thr: number[],
): { segments: Segment[]; halves: number } {
  const segments: Segment[] = [];
  let base = 0;
  let out = 0;
  lens.forEach((len, i) => {
    const stride = roundUp(len, 8);
    segments.push({ base, stride, len, out, thr: thr[i] ?? 0 });
    base += K * stride;
    out += len;
  });
  return { segments, halves: base };
}

/**
 * Params words of up to 3 segments (the GEMV and GEMM kernels' `Seg` struct): base, stride, len, first tile of
 * `tile` columns, threshold index, output column, quantized formats' metadata word, pad.
 */
export function segWords(segs: Segment[], tile: number): number[] {
  const w: number[] = [];
  let tile0 = 0;
  for (let i = 0; i < 3; i++) {
    const s = segs[i];
    if (s) {
      w.push(s.base, s.stride, s.len, tile0, s.thr, s.out, s.meta ?? 0, 0);
      tile0 += Math.ceil(s.len / tile);
    } else w.push(0, 0, 0, 0xffffffff, 0, 0, 0, 0);
  }
  return w;
}

/** Workgroup tiles of `tile` columns over a matrix's segments (each segment starts a tile of its own). */
export function segmentTiles(segs: Segment[], tile: number): number {
  return segs.reduce((a, s) => a + Math.ceil(s.len / tile), 0);
}

/**
 * Input channels per gemv split. Measured on the H200 (bench/gemv_bench.ts --grid, 2026-12-02): chunks of
 * 1024 are fastest for long inputs (down_proj) and wide outputs (gate|up, lm_head), 512 for the 4096x4096
 * class; the smaller split count of long chunks also shortens the reads of the kernels that sum the splits.
 * {@link GEMV_CHUNK} scales it (dense or sparse), up to 2048 (8 bytes of workgroup memory a channel plus
 * 9 KiB: 25 KiB, inside the 32 KiB that lavapipe grants) and no further than K rounded up to a whole workgroup.
 */
export function gemvChunk(K: number, N: number, sparse = false): number {
  const base = K >= 8192 || N >= 16384 ? 2 * GEMV.KCHUNK : GEMV.KCHUNK;
  const scaled = base * (sparse ? GEMV_CHUNK.sparse : GEMV_CHUNK.dense);
  return Math.max(GEMV.WG, Math.min(scaled, 8 * GEMV.WG, Math.ceil(K / GEMV.WG) * GEMV.WG));
}

/**
 * The gemv.wgsl / gemv_q.wgsl variant for a K x N matrix of a weight format, dense or TEAL-sparse, each timed
 * on the H200 by whole decode steps at 8B shapes (bench/sparse_probe.ts --step-grid; docs/benchmarks.md).
 * f16: wide outputs (N >= 8192: gate|up, lm_head) run best with 32 threads per column group and 8 rows in
 * flight (gate|up-wide outputs, 16384 up to 65536: 64 threads), long inputs (K >= 8192: down) with
 * {@link GEMV_LONG_K}, the 4096-wide projections with the base variant, whose time is mostly the fixed cost of
 * a dispatch. int8/int4 below lm_head's vocabularies: mostly two words of codes a thread (VEC 2) in 512-thread
 * workgroups, so that more warps an SM hide each other's decode arithmetic (shorter K chunks and pipelined
 * walks measured slower), int4's 4096-wide projections at 50% and its o dense on 16-thread column groups
 * (twice the tiles); their lm_head as f16's wide outputs. The chunk is always gemvChunk's: the kernels
 * that sum the splits read that many. `bin`: the sparse step's {@link sparsityBin} (the low and high bins have
 * variants of their own for f16, and int8's high bin).
 */
export function gemvTune(
  K: number,
  N: number,
  format: WeightFormat = "f16",
  sparse = false,
  bin: SparsityBin = "mid",
): Required<GemvTune> {
  const KCHUNK = gemvChunk(K, N, sparse);
  const PIPE = format === "f16" ? GEMV_PIPE.f16 : GEMV_PIPE.quant;
  // A chunk shorter than the workgroup shrinks it to the chunk, and a larger workgroup halves (down to 256
  // threads) until the variant fits 32 KiB of workgroup memory (long chunks: GEMV_CHUNK > 1); every TPR here
  // divides 256.
  const v = (TPR: number, UNROLL: number, WG: number = GEMV.WG, VEC = 4) => {
    WG = Math.min(WG, KCHUNK);
    while (WG > GEMV.WG && gemvWorkgroupBytes(KCHUNK, WG) > 32768) WG /= 2;
    return { TPR, KCHUNK, WG, UNROLL, PIPE, VEC };
  };
  // int4 and int8: mostly two words of codes a thread (VEC 2: half the registers a row in flight, so more warps
  // fit an SM) and 512-thread workgroups, each projection's variant timed by whole decode steps
  // (bench/sparse_probe.ts --step-grid --vecs, H200, 2026-12-03; int4 step 4.43 -> 4.13 ms dense)
  // The gate|up variants of int4 and int8's sparse down were timed again with the rows added in packed f16
  // (gemv_qh.wgsl, the default on GPUs; same probe, H200, 2026-12-03 ninth session): int4 gate|up 32 / 8 / 512
  // with four words dense (-69 us a step) and 64 / 8 / 512 at 50% (-61 us), int8 down at 50% 32 / 4 / 512 with
  // four words (-42 us); the other projections' defaults stayed within the grid's spread of the best.
  // Sparse variants of the low and high bins (bench/sparse_probe.ts --step-grid --sparse-only at 25% and 70%,
  // H200, 2026-12-03 tenth session; the step with all of a bin's together against the mid variants): f16 at 25%
  // takes eight rows in flight as its dense walks do (-126 us a step), at 70% eight too and 64 threads a
  // column group for down (-91 us); int8 at 70% wider column groups for gate|up and down (-76 us). The other
  // bins of int8/int4 keep the mid variants: the grid's best together was within 40 us of them. Through the
  // decode loop (bench --sparsity-bins on|off, one call): f16 4.868 / 5.002 ms at 25%, 3.689 / 3.801 at 70%;
  // int8 3.072 / 3.158 at 70%.
  if (sparse && bin === "high" && format === "int8" && N < 65536) {
    if (K >= 8192) return v(64, 4, 512, 2);
    if (N >= 8192) return v(64, 4, 512, 4);
    return N > K ? v(32, 8, 256, 2) : v(32, 4, 512, 2);
  }
  if (sparse && bin !== "mid" && format === "f16" && N < 65536) {
    const high = bin === "high";
    if (N >= 16384) return v(64, 8);
    if (K >= 8192) return high ? v(64, 8, 512) : v(GEMV_LONG_K.f16TPR, 8);
    if (N >= 8192 || N > K) return v(32, 8);
    return high ? v(32, 4) : v(GEMV.TPR, GEMV.UNROLL);
  }
  if (format === "int4" && N < 65536) {
    // the 4096-wide projections (q|k|v, o: N < 8192) at 50%, and o dense, with 16 threads a column group: twice
    // the tiles (bench/sparse_probe.ts --step-grid --projs qkv,o, H200: int4 step -3.4% at 50%, -1.7% dense)
    if (sparse) return K >= 8192 ? v(32, 4, 512, 2) : N < 8192 ? v(16, 4, 256, 2) : v(64, 8, 512, 2);
    if (N <= 4096 && K < 8192) return v(16, 8, 512, 2);
    return N >= 8192 && K < 8192 ? v(32, 8, 512, 4) : v(32, 8, 512, 2);
  }
  if (format === "int8" && N < 65536) {
    if (K >= 8192) return sparse ? v(32, 4, 512) : v(32, 8, 512);
    if (N >= 8192) return sparse ? v(32, 8) : v(64, 8, 512);
    return sparse ? v(32, 4, 512, 2) : v(32, 8, 512, 2);
  }
  // f16 gate|up (7B-8B MLPs: 22016-28672 outputs): 64 threads, 1 KB of each row a tile (decode step 5.56 ->
  // 5.32 ms dense, 4.57 -> 4.34 at 50%; bench/sparse_probe.ts --step-grid, H200, 2026-12-03)
  if (format === "f16" && N >= 16384 && N < 65536) return sparse ? v(64, 4) : v(64, 8);
  if (N >= 8192) return v(32, 8);
  // f16 down at 50%: 4 rows in flight, 29 us a step faster than 8 (the same probe)
  if (K >= 8192) return v(GEMV_LONG_K.f16TPR, sparse ? 4 : 8);
  return v(GEMV.TPR, GEMV.UNROLL);
}

/**
 * The variant a GEMV of a K x N matrix runs: the fields `tune` gives over the shape's own ({@link gemvTune}).
 * A K chunk given without a workgroup size shrinks the shape's workgroup to the chunk, as gemvTune does, so
 * that a shorter chunk alone stays a variant the kernels can run.
 */
export function resolveGemvTune(
  K: number,
  N: number,
  format: WeightFormat | undefined,
  sparse: boolean,
  tune?: Partial<GemvTune>,
  bin: SparsityBin = "mid",
): Required<GemvTune> {
  const base = gemvTune(K, N, format ?? "f16", sparse, bin);
  const given: Partial<GemvTune> = Object.fromEntries(
    Object.entries(tune ?? {}).filter(([, v]) => v !== undefined),
  );
  const t = { ...base, ...given };
  if (given.KCHUNK !== undefined && given.WG === undefined) t.WG = Math.min(base.WG, given.KCHUNK);
  return t;
}

// Workgroup memory of a gemv.wgsl / gemv_q.wgsl variant: act_idx + act_val, scan, red and gemv_finish's flag.
function gemvWorkgroupBytes(KCHUNK: number, WG: number): number {
  return 8 * KCHUNK + 4 * WG + 32 * WG + 4;
}

/**
 * Throws unless a gemv variant is one the kernels can run (each thread masks at most 32 channels) within the
 * device's workgroup memory (`maxWorkgroupBytes`, when given): 8 bytes a channel of the chunk and 36 a thread.
 */
export function checkGemvTune(t: Required<GemvTune>, maxWorkgroupBytes = Infinity): void {
  const ok = t.WG % 16 === 0 && t.KCHUNK % t.WG === 0 && t.KCHUNK / t.WG <= 32 && t.WG % t.TPR === 0 &&
    (t.UNROLL === 4 || t.UNROLL === 8) && (t.VEC === 2 || t.VEC === 4);
  if (!ok) {
    throw new RangeError(
      `gemv variant ${
        JSON.stringify(t)
      }: need WG % 16 = 0, KCHUNK / WG in 1..32, WG % TPR = 0, UNROLL 4 or 8, VEC 2 or 4`,
    );
  }
  const bytes = gemvWorkgroupBytes(t.KCHUNK, t.WG);
  if (bytes > maxWorkgroupBytes) {
    throw new RangeError(
      `gemv variant ${
        JSON.stringify(t)
      }: needs ${bytes} bytes of workgroup memory, the device has ${maxWorkgroupBytes}`,
    );
  }
}

/** Number of split-K partial rows gemv writes for a K x N matrix (at most ceil(K / GEMV.KCHUNK)). */
export function gemvSplits(K: number, N: number, sparse = false): number {
  return Math.ceil(K / gemvChunk(K, N, sparse));
}

/** Buffers every gemv/matmul reads besides x and the weights. */
export interface SparsityBuffers {
  thresholds: GPUBuffer;
  counters: GPUBuffer;
  /**
   * First u32 of the GEMV epilogues' tickets in `counters` (one per column tile, left at 0 between dispatches):
   * needed by {@link GemvFinish}.
   */
  tickets?: number;
}

/**
 * The split-K epilogue a GEMV applies itself (gemv_finish.wgsl: the last workgroup of each column tile sums the
 * tile's splits), in place of a reduce pass: `store` writes the sums to out[outOffset + column]; `add` adds them
 * to out (a residual) and writes each tile's sum of squares of the new values to ss ({@link gemvTiles} floats:
 * the next fused RMSNorm's `nss`); `swiglu` writes silu(gate) * up of a gate|up matrix (two segments of equal
 * length) to out[outOffset + column].
 */
export type GemvFinish =
  | { kind: "store"; out: GPUBuffer; outOffset?: number }
  | { kind: "add"; out: GPUBuffer; ss: GPUBuffer }
  | { kind: "swiglu"; out: GPUBuffer; outOffset?: number };

/** Columns per workgroup tile of the GEMV a matrix gets (gemv.wgsl: 8 per thread; gemv_q.wgsl: 16 or 32). */
export function gemvTileN(m: Matrix, tune?: GemvTune, sparse = false): number {
  const t = resolveGemvTune(m.K, m.N, m.format, sparse, tune);
  return t.TPR * (m.format && m.format !== "f16" ? gemvQColsPerThread(m, t.VEC) : 8);
}

/** Column tiles of a matrix's GEMV: its workgroups along x, and the sums of squares an `add` epilogue writes. */
export function gemvTiles(m: Matrix, tune?: GemvTune, sparse = false): number {
  return segmentTiles(m.segments, gemvTileN(m, tune, sparse));
}

/**
 * The overrides, parameter words (tickets, outOffset) and buffers of a GEMV's epilogue: `out` (binding 10) and,
 * for `add`, the sums of squares it writes (binding 8, which the GEMV then does not read: its input must not be
 * a fused RMSNorm). Throws a RangeError naming what is wrong when the call cannot take it.
 */
export function gemvFinishParts(
  ctx: GpuContext,
  m: Matrix,
  sp: SparsityBuffers,
  finish: GemvFinish | undefined,
  tileN: number,
  splits: number,
): { overrides: Record<string, number>; tickets: number; outOffset: number; out: GPUBuffer; ss?: GPUBuffer } {
  if (!finish) {
    return { overrides: { EPI: 0, SPLITS: 1 }, tickets: 0, outOffset: 0, out: ctx.scratch("write") };
  }
  if (sp.tickets === undefined) throw new RangeError("gemv epilogue: the sparsity buffers have no tickets");
  const tiles = segmentTiles(m.segments, tileN);
  let tickets = tiles;
  let cols = m.N;
  if (finish.kind === "swiglu") {
    const [gate, up] = m.segments;
    if (m.segments.length !== 2 || gate.len !== up.len) {
      throw new RangeError("gemv swiglu epilogue: the matrix must be gate|up, two segments of equal length");
    }
    tickets = Math.ceil(gate.len / tileN);
    cols = gate.len;
  }
  if ((sp.tickets + tickets) * 4 > sp.counters.size) {
    throw new RangeError(
      `gemv epilogue: ${tickets} tickets from word ${sp.tickets} do not fit the counters (${sp.counters.size} bytes)`,
    );
  }
  const outOffset = finish.kind === "add" ? 0 : finish.outOffset ?? 0;
  if ((outOffset + cols) * 4 > finish.out.size) {
    throw new RangeError(
      `gemv ${finish.kind} epilogue: ${cols} outputs from element ${outOffset} do not fit out (${finish.out.size} bytes)`,
    );
  }
  if (finish.kind === "add" && tiles * 4 > finish.ss.size) {
    throw new RangeError(
      `gemv add epilogue: ${tiles} sums of squares do not fit ss (${finish.ss.size} bytes)`,
    );
  }
  return {
    overrides: { EPI: { store: 1, add: 2, swiglu: 3 }[finish.kind], SPLITS: splits },
    tickets: sp.tickets,
    outOffset,
    out: finish.out,
    ss: finish.kind === "add" ? finish.ss : undefined,
  };
}

/** How gemv.wgsl reads its input. */
export type GemvInput =
  | { kind: "plain" }
  /** RMSNorm fused in: x * rsqrt(sum(ss[0..nss)) / K + eps) * weight. */
  | { kind: "rmsnorm"; weight: GPUBuffer; ss: GPUBuffer; nss: number; eps: number }
  /** SwiGLU fused in: silu(gate) * up summed from the gate|up GEMV's split partials. */
  | { kind: "swiglu"; partials: GPUBuffer; splits: number; cols: number };

/**
 * What gemv.wgsl and gemv_q.wgsl share for one call: the input-mode overrides (loop bounds as constants, so
 * the loads they guard are issued together) and the bindings after the parameters, in binding order.
 */
export function gemvInputBindings(
  ctx: GpuContext,
  m: Matrix,
  x: GPUBuffer,
  partials: GPUBuffer,
  sp: SparsityBuffers,
  inp: GemvInput,
  state: GPUBuffer | undefined,
  finish: { out: GPUBuffer; ss?: GPUBuffer },
): { overrides: Record<string, number>; bindings: GPUBuffer[] } {
  const aux = inp.kind === "rmsnorm"
    ? inp.weight
    : inp.kind === "swiglu"
    ? inp.partials
    : ctx.scratch("read");
  if (inp.kind === "rmsnorm" && finish.ss) {
    // other workgroups would still be reading the sums of squares the epilogue overwrites
    throw new RangeError("gemv: a residual-add epilogue cannot follow a fused RMSNorm input in one GEMV");
  }
  const ss = inp.kind === "rmsnorm" ? inp.ss : finish.ss ?? ctx.scratch("write");
  return {
    overrides: {
      INPUT: { plain: 0, rmsnorm: 1, swiglu: 2 }[inp.kind],
      NSS: inp.kind === "rmsnorm" ? inp.nss : 1,
      AUX_SPLITS: inp.kind === "swiglu" ? inp.splits : 1,
    },
    bindings: [
      x,
      m.buffer,
      partials,
      sp.thresholds,
      m.scales,
      sp.counters,
      aux,
      ss,
      state ?? ctx.scratch("read"),
      finish.out,
    ],
  };
}

/** gemv.wgsl: partials[split][N] = in(x)[K-chunk] . wt for every segment (sparse: masked, compacted). */
export function gemvOp(
  ctx: GpuContext,
  m: Matrix,
  x: GPUBuffer,
  partials: GPUBuffer,
  sp: SparsityBuffers,
  opts: {
    sparse: boolean;
    counter?: number;
    label?: string;
    input?: GemvInput;
    /** Decode state: the GEMV does nothing once state[3] (EOS seen) is set. */
    state?: GPUBuffer;
    /** Override the tunables (benchmarks). */
    tune?: GemvTune;
    /** Sum the splits and apply this epilogue in the GEMV (no reduce pass; `partials` still holds the splits). */
    finish?: GemvFinish;
    /**
     * Dense only: issue the first trip's weight loads before the input is staged (their round trip overlaps
     * the staging's). The same sums either way; one trip of weights is read even in steps queued past EOS.
     */
    early?: boolean;
    /**
     * Add the rows in packed f16 (gemv_h.wgsl for f16 weights, gemv_qh.wgsl for int8/int4; needs the
     * shader-f16 feature); default {@link gemvHalfOn}, which follows {@link GEMV_HALF}.
     */
    half?: boolean;
  },
): Op {
  if (m.format && m.format !== "f16") return gemvQOp(ctx, m, x, partials, sp, opts);
  const tune = resolveGemvTune(m.K, m.N, "f16", opts.sparse ?? false, opts.tune);
  checkGemvTune(tune, ctx.device.limits.maxComputeWorkgroupStorageSize);
  const inp = opts.input ?? { kind: "plain" };
  const splits = Math.ceil(m.K / tune.KCHUNK);
  const fin = gemvFinishParts(ctx, m, sp, opts.finish, tune.TPR * 8, splits);
  const params = ctx.uniform(
    [
      m.K,
      m.N,
      m.segments.length,
      opts.counter ?? 0,
      fin.tickets,
      inp.kind === "rmsnorm" ? inp.eps : 0,
      fin.outOffset,
      inp.kind === "swiglu" ? inp.cols : 0,
      ...segWords(m.segments, tune.TPR * 8),
    ],
    "gemv",
    [false, false, false, false, false, true],
  );
  const shared = gemvInputBindings(ctx, m, x, partials, sp, inp, opts.state, fin);
  return ctx.op({
    variant: {
      shader: gemvHalfOn(ctx, "f16", opts.half) ? "gemv_h" : "gemv",
      overrides: {
        TPR: tune.TPR,
        KCHUNK: tune.KCHUNK,
        WG: tune.WG,
        UNROLL: tune.UNROLL,
        SPARSE: opts.sparse ? 1 : 0,
        EARLY: opts.early && !opts.sparse ? 1 : 0,
        PIPE: tune.PIPE ? 1 : 0,
        SCAN_RADIX: GEMV_SCAN.radix,
        ...shared.overrides,
        ...fin.overrides,
      },
    },
    bindings: [params, ...shared.bindings],
    owned: [params],
    workgroups: [segmentTiles(m.segments, tune.TPR * 8), splits],
    label: opts.label ?? "gemv",
  });
}

/** Side of the square tiles pack.wgsl moves (its workgroup grid is in these). */
export const PACK_TILE = 32;

/**
 * pack.wgsl: rows [0, rows) of W [out][in] (f32 in `src`) into columns [0, cols) of an f16 [K][stride] block
 * whose element [0][0] is f16 `base` of `dst` (columns past `rows` are padding: zeros). `base` and `cols` even.
 */
export function packOp(
  ctx: GpuContext,
  src: GPUBuffer,
  dst: GPUBuffer,
  o: { K: number; rows: number; cols: number; stride: number; base: number },
): Op {
  if (o.base % 2 !== 0 || o.cols % 2 !== 0 || o.stride % 2 !== 0) {
    throw new RangeError(`pack: base ${o.base}, cols ${o.cols} and stride ${o.stride} must be even`);
  }
  const params = ctx.uniform([o.K, o.rows, o.cols, o.stride, o.base, 0, 0, 0], "pack");
  return ctx.op({
    variant: { shader: "pack" },
    bindings: [params, src, dst],
    owned: [params],
    workgroups: [Math.ceil(o.cols / PACK_TILE), Math.ceil(o.K / PACK_TILE)],
    label: "pack",
  });
}

/** reduce.wgsl modes. */
export const REDUCE = { store: 0, add: 1, swiglu: 2, storeArgmax: 3 } as const;

/**
 * reduce.wgsl: adds gemv partials and applies the epilogue (bias, residual add or SwiGLU). `prefetch`: extra
 * workgroups of the same dispatch read that range of a buffer (the next GEMV's weights, {@link prefetchRange})
 * into L2 while the pass runs; its checksums (`check`) go to `out` past the floats the pass writes. The pass's
 * results are the same.
 */
export function reduceOp(
  ctx: GpuContext,
  partials: GPUBuffer,
  out: GPUBuffer,
  o: {
    n: number;
    splits: number;
    ncols: number;
    mode: number;
    srcOffset?: number;
    offB?: number;
    outOffset?: number;
    bias?: GPUBuffer | null;
    /**
     * MODE add: per-workgroup sums of squares of the new values (ceil(n / 256) floats). MODE storeArgmax: per
     * workgroup the largest value and its lowest output index + outOffset (-1: none above -3.4e38), two floats
     * from element 2 * blockOffset ({@link sampleOp}'s blocks).
     */
    ss?: GPUBuffer;
    /** MODE storeArgmax: the first workgroup's pair in ss. */
    blockOffset?: number;
    prefetch?: L2Prefetch;
    label?: string;
  },
): Op {
  const outOffset = o.outOffset ?? 0;
  const pre = o.prefetch;
  const preWg = pre ? checkPrefetch(pre, out, [outOffset, outOffset + o.n]) : 0;
  const params = ctx.uniform(
    [
      o.n,
      o.splits,
      o.ncols,
      o.srcOffset ?? 0,
      o.offB ?? 0,
      outOffset,
      o.bias ? 1 : 0,
      pre?.startVec4 ?? 0,
      pre?.countVec4 ?? 0,
      pre?.check ?? 0,
      o.blockOffset ?? 0,
      pre?.ranges ?? 1,
      pre?.strideVec4 ?? 0,
      0,
      0,
    ],
    "reduce",
  );
  return ctx.op({
    variant: { shader: "reduce", overrides: { MODE: o.mode, SPLITS: o.splits, PREFETCH_WG: preWg } },
    bindings: [
      params,
      partials,
      o.bias ?? ctx.scratch("read"),
      out,
      o.ss ?? ctx.scratch("write"),
      pre?.buffer ?? ctx.scratch("read"),
    ],
    owned: [params],
    workgroups: [Math.ceil(o.n / 256) + preWg],
    label: o.label ?? "reduce",
  });
}

/**
 * Options of a prefill GEMM (matmul.wgsl, matmul_q.wgsl, matmul_wide.wgsl, matmul_wide_q.wgsl,
 * matmul_wide_h.wgsl).
 */
export interface MatmulOptions {
  /** Rows of x and y. */
  M: number;
  /** Row stride of y. */
  ldy: number;
  /** Added to every output column of y. */
  yOffset?: number;
  /** y += result (residual add). */
  accumulate?: boolean;
  bias?: GPUBuffer | null;
  sparse?: boolean;
  /** counters[counter + segment] counts kept inputs when sparse. */
  counter?: number;
  label?: string;
}

/**
 * Split-K of a prefill GEMM over few rows: workgroup z covers K inputs [z * klen, (z + 1) * klen) and writes
 * its partial tile to `partials` ([splits][M][N] f32); splitk_sum.wgsl then adds the splits into y.
 */
export interface SplitK {
  partials: GPUBuffer;
  /** Splits asked for (the ops may use fewer: each covers a whole number of 32-input steps). */
  splits: number;
}

/**
 * Rows of a prefill GEMM tile for a pass of M rows: 16 for few rows (a 64-row tile would compute mostly
 * padding), else MATMUL_TILE.
 */
export function matmulRows(M: number): number {
  return M <= 16 ? 16 : MATMUL_TILE;
}

/** Inputs per split and the splits that result, for a split-K GEMM over K inputs. */
export function splitKLayout(K: number, splits: number): { klen: number; splits: number } {
  const klen = Math.max(32, Math.ceil(K / Math.max(1, splits) / 32) * 32);
  return { klen, splits: Math.ceil(K / klen) };
}

/**
 * matmul.wgsl (matmul_wide.wgsl for many rows, matmul_wide_h.wgsl with MATMUL_WIDE.half): y[M][..] (=|+=)
 * x[M][K] . wt (+ bias), optional TEAL mask on x; quantized matrices go to matmul_q.wgsl / matmul_wide_q.wgsl.
 */
export function matmulOp(
  ctx: GpuContext,
  m: Matrix,
  x: GPUBuffer,
  y: GPUBuffer,
  sp: SparsityBuffers,
  o: MatmulOptions,
): Op {
  return gemmOp(ctx, m, x, y, sp, o, null);
}

/**
 * The prefill GEMM as ops: one matmulOp, or with `split` (few rows) the split-K GEMM into the partials and
 * the pass that adds them into y with the bias and the accumulate of `o`.
 */
export function matmulOps(
  ctx: GpuContext,
  m: Matrix,
  x: GPUBuffer,
  y: GPUBuffer,
  sp: SparsityBuffers,
  o: MatmulOptions & { split?: SplitK | null },
): Op[] {
  const layout = o.split ? splitKLayout(m.K, o.split.splits) : null;
  if (!o.split || !layout || layout.splits < 2) return [gemmOp(ctx, m, x, y, sp, o, null)];
  const need = layout.splits * o.M * m.N * 4;
  if (o.split.partials.size < need) {
    throw new RangeError(`split-K partials hold ${o.split.partials.size} bytes; ${need} needed`);
  }
  return [
    gemmOp(ctx, m, x, o.split.partials, sp, o, layout),
    splitKSumOp(ctx, o.split.partials, y, m.N, layout.splits, o),
  ];
}

/** splitk_sum.wgsl: y[r][yOffset + c] (+)= sum over `splits` partial rows [splits][M][N] (+ bias). */
function splitKSumOp(
  ctx: GpuContext,
  partials: GPUBuffer,
  y: GPUBuffer,
  N: number,
  splits: number,
  o: MatmulOptions,
): Op {
  const params = ctx.uniform([o.M, N, o.ldy, o.yOffset ?? 0], "splitk_sum");
  return ctx.op({
    variant: {
      shader: "splitk_sum",
      overrides: { ACCUM: o.accumulate ? 1 : 0, BIAS: o.bias ? 1 : 0, SPLITS: splits },
    },
    bindings: [params, partials, o.bias ?? ctx.scratch("read"), y],
    owned: [params],
    workgroups: [Math.ceil(N / 256), o.M],
    label: o.label ? `${o.label}.sum` : "splitk_sum",
  });
}

/** gemv_rows.wgsl's variant: threads per column group (4 columns each) and the rows it takes at most. */
export const GEMV_ROWS = { maxRows: 16, TPR: 64, WG: 256 } as const;

/**
 * Input channels per gemv_rows split for M rows: the staged rows take at most 16 KiB of workgroup memory (20
 * KiB with the reduction's; the context asks for the adapter's limit, above WebGPU's default 16 KiB).
 */
export function gemvRowsChunk(M: number): number {
  return M <= 8 ? 512 : 256;
}

/** A gemv_rows.wgsl variant (benchmarks sweep these; fields left out come from GEMV_ROWS / gemvRowsChunk). */
export interface GemvRowsTune {
  /** Threads per column group (4 columns each; a divisor of GEMV_ROWS.WG). */
  TPR?: number;
  /** Input channels per split (rows * KCHUNK at most 4096: the staged rows). */
  KCHUNK?: number;
  /** Channels each thread has in flight: 4 (default) or 8 (not yet timed on a GPU). */
  UNROLL?: number;
}

/** Bytes of split partials gemvRowsOps needs for M rows of a matrix. */
export function gemvRowsPartialBytes(m: Matrix, M: number, tune: GemvRowsTune = {}): number {
  return Math.ceil(m.K / (tune.KCHUNK ?? gemvRowsChunk(M))) * M * m.N * 4;
}

/**
 * gemv_rows.wgsl + splitk_sum.wgsl: y[r][yOffset + n] (+)= x[r] . wt[:, n] (+ bias[n]) for a prefill pass of
 * M <= {@link GEMV_ROWS}.maxRows rows over f16 weights, dense; x is [M][K]. Each weight row is read once for
 * all rows, as a GEMV reads it. Throws a RangeError for what it cannot take (other formats, sparse, more rows,
 * partials too small).
 */
export function gemvRowsOps(
  ctx: GpuContext,
  m: Matrix,
  x: GPUBuffer,
  y: GPUBuffer,
  partials: GPUBuffer,
  o: MatmulOptions & { tune?: GemvRowsTune },
): Op[] {
  if (m.format && m.format !== "f16") throw new RangeError(`gemv_rows: f16 weights only, not ${m.format}`);
  if (o.sparse) throw new RangeError("gemv_rows: dense only");
  if (!Number.isInteger(o.M) || o.M < 1 || o.M > GEMV_ROWS.maxRows) {
    throw new RangeError(`gemv_rows: ${o.M} rows; 1..${GEMV_ROWS.maxRows}`);
  }
  const KCHUNK = o.tune?.KCHUNK ?? gemvRowsChunk(o.M);
  const TPR = o.tune?.TPR ?? GEMV_ROWS.TPR;
  const UNROLL = o.tune?.UNROLL ?? 4;
  if (
    !Number.isInteger(TPR) || !Number.isInteger(KCHUNK) || TPR < 1 || GEMV_ROWS.WG % TPR !== 0 ||
    KCHUNK < 1 ||
    o.M * KCHUNK > 4096 || (UNROLL !== 4 && UNROLL !== 8)
  ) {
    throw new RangeError(
      `gemv_rows: TPR ${TPR} must divide ${GEMV_ROWS.WG}; rows x KCHUNK (${o.M} x ${KCHUNK}) <= 4096; ` +
        `UNROLL ${UNROLL} is 4 or 8`,
    );
  }
  const splits = Math.ceil(m.K / KCHUNK);
  const need = gemvRowsPartialBytes(m, o.M, { KCHUNK });
  if (partials.size < need) {
    throw new RangeError(`gemv_rows: partials hold ${partials.size} bytes; ${need} needed`);
  }
  const tileN = TPR * 4;
  const params = ctx.uniform([m.K, m.N, m.segments.length, 0, ...segWords(m.segments, tileN)], "gemv_rows");
  return [
    ctx.op({
      variant: {
        shader: "gemv_rows",
        overrides: { ROWS: o.M, TPR, KCHUNK, WG: GEMV_ROWS.WG, UNROLL },
      },
      bindings: [params, x, m.buffer, partials],
      owned: [params],
      workgroups: [segmentTiles(m.segments, tileN), splits],
      label: o.label ?? "gemv_rows",
    }),
    splitKSumOp(ctx, partials, y, m.N, splits, o),
  ];
}

/** Settings of the wide prefill GEMMs: see {@link MATMUL_WIDE}. */
export interface MatmulWideSettings {
  /** Passes of at least this many rows take the wide kernels (0: none). */
  fromRows: number;
  /** From this many rows in tiles of 128 rows (8 a thread), below in tiles of 64 (4 a thread). */
  tile128From: number;
  /**
   * f16 weights go through matmul_wide_h.wgsl, f16 arithmetic (vec4<f16> FMAs, each step's sums added into
   * f32), on devices with shader-f16 (never on others: the f32 kernel runs there).
   */
  half: boolean;
  /** Inputs a K step of matmul_wide_h.wgsl: 16 or 32. */
  halfBK: 16 | 32;
}

/**
 * Which passes take the wide kernels, matmul_wide.wgsl (f16) and matmul_wide_q.wgsl (int8 / int4), when K is a
 * multiple of 4 and the pass is not split over K: those of at least `fromRows` rows (0: none), in tiles of 128
 * rows from `tile128From` rows and of 64 below. On the H200 (bench/matmul_bench.ts, 2026-12-03) the 64-row
 * tiles took a 256-row pass's GEMMs at Llama-3-8B shapes in 160 ms (32 layers) against matmul.wgsl's 266, and
 * 128-row tiles win only from 1024 rows (522 against 549 ms). Measured in f16; the quantized kernel shares the
 * settings (`bench/matmul_bench.ts --quant int8|int4` times it).
 *
 * `half` (off by default: on the H200 it was slower at every pass size, 558 against 522 ms for a 1024-row pass's
 * GEMMs, docs/benchmarks.md ninth session) swaps matmul_wide.wgsl for matmul_wide_h.wgsl, the same
 * tiles in f16 arithmetic, with K steps of `halfBK` inputs (32 by default: half the barriers and f16 -> f32
 * adds of 16, for more registers), where the device has shader-f16. Its error per output is at most about
 * (halfBK + 2) * 2^-11 * sum_k |x_k * w_k| (f16 inputs, sums of halfBK products in f16), against ~K * 2^-24.
 * The settings are read as ops are built: a pass built before a change keeps its kernel.
 */
export const MATMUL_WIDE: MatmulWideSettings = { fromRows: 65, tile128From: 1024, half: false, halfBK: 32 };

/** Columns of a matmul_wide.wgsl / matmul_wide_q.wgsl tile. */
export const MATMUL_WIDE_COLS = 128;

/**
 * Rows of a matmul_wide.wgsl (f16) or matmul_wide_q.wgsl (int8 / int4) tile for a pass of M rows, or 0 where
 * the pass takes matmul.wgsl / matmul_q.wgsl.
 */
export function matmulWideRows(m: Matrix, M: number): number {
  if (m.K % 4 !== 0 || MATMUL_WIDE.fromRows <= 0 || M < MATMUL_WIDE.fromRows) return 0;
  return M >= MATMUL_WIDE.tile128From ? 128 : 64;
}

function gemmOp(
  ctx: GpuContext,
  m: Matrix,
  x: GPUBuffer,
  y: GPUBuffer,
  sp: SparsityBuffers,
  o: MatmulOptions,
  split: { klen: number; splits: number } | null,
): Op {
  // int8 / int4: the same kernels with dequantizing weight loads (the _q shaders)
  const q = m.format && m.format !== "f16" ? quantOverrides(m) : null;
  const wide = split ? 0 : matmulWideRows(m, o.M);
  if (wide && !q && MATMUL_WIDE.half && ctx.hasF16) {
    return gemmKernelOp(ctx, m, x, y, sp, o, {
      shader: "matmul_wide_h",
      rows: wide,
      cols: MATMUL_WIDE_COLS,
      overrides: matmulHalfOverrides(wide / 16, MATMUL_WIDE.halfBK),
      split: null,
      label: "matmul_wide_h",
    });
  }
  if (wide) {
    return gemmKernelOp(ctx, m, x, y, sp, o, {
      shader: q ? "matmul_wide_q" : "matmul_wide",
      rows: wide,
      cols: MATMUL_WIDE_COLS,
      overrides: { ...q, RM: wide / 16 },
      split: null,
      label: q ? "matmul_wide_q" : "matmul_wide",
    });
  }
  return gemmKernelOp(ctx, m, x, y, sp, o, {
    shader: q ? "matmul_q" : "matmul",
    rows: matmulRows(o.M),
    cols: MATMUL_TILE,
    overrides: { ...q, SPLITK: split ? 1 : 0, TM: matmulRows(o.M) },
    split,
    label: "matmul",
  });
}

/**
 * matmul_wide_h.wgsl's overrides for RM rows a thread (4 or 8) and K steps of BK inputs (16 or 32), with the
 * sizes of its two double-buffered tiles (plain values: naga panics on an override expression as an array
 * size). They take 2 * BK * TM + 2 * BK * 128 f16: 32 KiB at RM 8, BK 32.
 */
export function matmulHalfOverrides(RM: number, BK: number): Record<string, number> {
  if ((RM !== 4 && RM !== 8) || (BK !== 16 && BK !== 32)) {
    throw new RangeError(`matmul_wide_h: RM ${RM} must be 4 or 8, BK ${BK} 16 or 32`);
  }
  return { RM, BK, XS: 2 * BK * 4 * RM, WS: 2 * BK * 32 };
}

/** A prefill GEMM kernel and its tiling, for {@link gemmKernelOp}. */
interface GemmKernel {
  shader: "matmul" | "matmul_q" | "matmul_wide" | "matmul_wide_q" | "matmul_wide_h";
  /** Rows and columns of an output tile. */
  rows: number;
  cols: number;
  /** The kernel's own overrides, beside SPARSE, ACCUM and BIAS. */
  overrides: Record<string, number>;
  /** K split (matmul.wgsl, matmul_q.wgsl): workgroup z takes inputs [z * klen, (z + 1) * klen). */
  split: { klen: number; splits: number } | null;
  /** The op's label unless the options name one. */
  label: string;
}

/**
 * The op of a prefill GEMM kernel: matmul.wgsl, matmul_q.wgsl and the matmul_wide*.wgsl kernels share
 * their Params layout (rows, K, y's stride and offset, segments, counter, split length, columns, segments'
 * words) and bindings; workgroup x indexes the column tiles of the segments, y the row tiles, z the K splits.
 */
function gemmKernelOp(
  ctx: GpuContext,
  m: Matrix,
  x: GPUBuffer,
  y: GPUBuffer,
  sp: SparsityBuffers,
  o: MatmulOptions,
  k: GemmKernel,
): Op {
  const params = ctx.uniform(
    [
      o.M,
      m.K,
      o.ldy,
      o.yOffset ?? 0,
      m.segments.length,
      o.counter ?? 0,
      k.split?.klen ?? m.K,
      m.N,
      ...segWords(m.segments, k.cols),
    ],
    k.shader,
  );
  return ctx.op({
    variant: {
      shader: k.shader,
      overrides: {
        SPARSE: o.sparse ? 1 : 0,
        ACCUM: o.accumulate ? 1 : 0,
        BIAS: o.bias ? 1 : 0,
        ...k.overrides,
      },
    },
    bindings: [params, x, m.buffer, y, o.bias ?? ctx.scratch("read"), sp.thresholds, m.scales, sp.counters],
    owned: [params],
    workgroups: [segmentTiles(m.segments, k.cols), Math.ceil(o.M / k.rows), k.split?.splits ?? 1],
    label: o.label ?? k.label,
  });
}

/** rmsnorm.wgsl over `rows` rows of n, reading from row `inRow` on. */
export function rmsNormOp(
  ctx: GpuContext,
  x: GPUBuffer,
  weight: GPUBuffer,
  out: GPUBuffer,
  o: { n: number; rows: number; eps: number; inRow?: number },
): Op {
  const params = ctx.uniform([o.rows, o.eps, o.inRow ?? 0, 0], "rmsnorm", [false, true, false, false]);
  return ctx.op({
    variant: { shader: "rmsnorm", overrides: { N: o.n } },
    bindings: [params, x, weight, out],
    owned: [params],
    workgroups: [o.rows],
    label: "rmsnorm",
  });
}

/** embed.wgsl: out[row] = table[token]; tokens from ids[idOffset + row]. */
export function embedOp(
  ctx: GpuContext,
  table: GPUBuffer,
  ids: GPUBuffer,
  out: GPUBuffer,
  o: {
    hidden: number;
    rows: number;
    idOffset: number;
    tok0: number;
    tok1: number;
    tokStride: number;
    elemStride: number;
    /** Decode: write per-workgroup sums of squares for the first fused RMSNorm. */
    ss?: GPUBuffer;
  },
): Op {
  const params = ctx.uniform(
    [o.hidden, o.rows, o.idOffset, o.tok0, o.tok1, o.tokStride, o.elemStride, o.ss ? 1 : 0],
    "embed",
  );
  return ctx.op({
    variant: { shader: "embed" },
    bindings: [params, table, ids, out, o.ss ?? ctx.scratch("write")],
    owned: [params],
    workgroups: [Math.ceil(o.hidden / 256), o.rows],
    label: "embed",
  });
}

/** Attention geometry shared by rope.wgsl and attention.wgsl. */
export interface AttentionShape {
  numHeads: number;
  numKv: number;
  headDim: number;
  maxSeq: number;
  /** Row stride of the q|k|v buffer. */
  ldq: number;
}

/** Where the rows' positions come from: posBase + row (prefill), or state[0] - posBase + row (decode: 0). */
export interface Positions {
  rows: number;
  posBase: number;
  fromState: boolean;
}

/** rope.wgsl: rotates q and k of `rows` q|k|v rows in place; stores k and v in the cache (prefill, verify). */
export function ropeOp(
  ctx: GpuContext,
  qkv: GPUBuffer,
  turns: GPUBuffer,
  kcache: GPUBuffer,
  vcache: GPUBuffer,
  state: GPUBuffer,
  a: AttentionShape,
  at: Positions,
): Op {
  const params = ctx.uniform(
    [at.rows, a.numHeads, a.numKv, a.headDim, a.maxSeq, at.posBase, at.fromState ? 1 : 0, a.ldq],
    "rope",
  );
  return ctx.op({
    variant: { shader: "rope" },
    bindings: [params, qkv, turns, kcache, vcache, state],
    owned: [params],
    workgroups: [Math.ceil(((a.numHeads + 2 * a.numKv) * a.headDim / 4) / 64), at.rows],
    label: "rope",
  });
}

/**
 * The prefill attention's tiling (attention.wgsl) by default: threads a workgroup, query slots a thread of the
 * value step, the most query slots a workgroup holds, the workgroup memory a tile may take (and at most the
 * GPU's limit), and the keys a tile, largest first. Timed on the H200 (`bench/attn_prefill_bench.ts --sweep`,
 * Llama-3-8B, 256 rows at contexts 256 / 1024 / 4096): 256 threads with 4 queries each, 32 slots (8 rows x 4
 * heads), 8 keys a tile and 2 x 4 score blocks took 115 / 460 / 1835 us in 23 KB; 128 threads with 8 queries
 * each, 16 keys: 134 / 617 / 2655; the one-workgroup-per-row kernel before: 577 / 3448 / 14785. 64 slots (33 KB
 * of q alone at 128 dims) ran 93 / 351 / 1417 in 47 KB, past MAX_BYTES.
 */
export const ATTN_PREFILL = {
  WG: 256,
  OUT_QUERIES: 4,
  MAX_QUERIES: 64,
  MAX_BYTES: 32768,
  KEYS: [32, 16, 8, 4],
  /**
   * Tiles tried first, each at its most query slots, where the GPU's workgroup memory holds them (past
   * MAX_BYTES): on the H200 at Llama-3-8B shapes, 64 slots (16 rows x 4 heads, 8 a thread) with 16 keys a tile
   * took 93 / 351 / 1417 us in 47 KB, and 32 slots with 32 keys 85 / 385 / 1613 in 38 KB (the sweep above).
   */
  LARGE: [{ outQueries: 8, keys: 16 }, { outQueries: 4, keys: 32 }],
} as const;

/** A tile of the prefill attention (attention.wgsl), as {@link attnPrefillTile} picks it. */
export interface PrefillTile {
  /** Query rows a workgroup. */
  rows: number;
  /** q heads a workgroup, all of one kv head. */
  heads: number;
  /** Query slots a workgroup: rows * heads rounded up to a multiple of 8. */
  queries: number;
  /** Keys a tile, staged in workgroup memory once for every query of the workgroup. */
  keys: number;
  /** Queries of a thread's block of scores: 2 or 4. */
  blockQueries: number;
  /** Keys of a thread's block of scores: 2 or 4. */
  blockKeys: number;
  /** Threads a workgroup. */
  threads: number;
  /** Query slots a thread of the value step holds (with 4 dims each): 4 or 8. */
  outQueries: number;
  /** Workgroup memory the kernel declares, in bytes ({@link attnPrefillBytes}). */
  bytes: number;
}

/** Parts of a prefill attention tile to fix rather than have {@link attnPrefillTile} pick (tests, benchmarks). */
export interface PrefillTileWant {
  /** Query rows a workgroup. */
  rows?: number;
  /** q heads a workgroup: 1 up to the q heads a kv head (and the query slots). */
  heads?: number;
  /** Keys a tile: a multiple of 4. */
  keys?: number;
  /** Queries of a score block: 2 or 4. */
  blockQueries?: number;
  /** Keys of a score block: 2 or 4. */
  blockKeys?: number;
  /** Threads a workgroup: 64, 128 or 256. */
  threads?: number;
  /** Query slots a thread of the value step: 4 or 8. */
  outQueries?: number;
}

/** Workgroup memory of attention.wgsl in bytes: qs, kv (rows padded by a vec4), sc, mx, cr and lred. */
export function attnPrefillBytes(
  headDim: number,
  queries: number,
  keys: number,
  threads: number = ATTN_PREFILL.WG,
): number {
  const kstr = Math.ceil(headDim / 4) + 1;
  return 16 * (queries * kstr + keys * kstr + (queries * keys) / 4) + 4 * (2 * queries + threads);
}

/**
 * Picks the prefill attention's tile for a shape and a chunk of `rows` rows: all the q heads of a kv head (as
 * many as fit) and as many rows as make up to ATTN_PREFILL.MAX_QUERIES query slots (fewer for a short chunk,
 * and fewer for a large head, as a thread of the value step holds OUT_QUERIES queries x 4 dims), then the most
 * keys a tile (ATTN_PREFILL.KEYS) that the threads stage at one vec4 each, within `maxBytes` of workgroup memory
 * (the GPU's limit) and ATTN_PREFILL.MAX_BYTES; fewer rows, then fewer heads, where none fits. `want` fixes
 * parts of the tile (tests, benchmarks), within `maxBytes` alone. Throws a RangeError for a head size it cannot
 * run, or when nothing fits.
 */
export function attnPrefillTile(
  a: { numHeads: number; numKv: number; headDim: number },
  rows: number,
  maxBytes: number,
  want: PrefillTileWant = {},
): PrefillTile {
  const { MAX_QUERIES, KEYS } = ATTN_PREFILL;
  const WG = want.threads ?? ATTN_PREFILL.WG;
  const OQ = want.outQueries ?? ATTN_PREFILL.OUT_QUERIES;
  if (!((WG === 64 || WG === 128 || WG === 256) && (OQ === 4 || OQ === 8))) {
    throw new RangeError(`prefill attention: threads must be 64, 128 or 256 and outQueries 4 or 8`);
  }
  const d = a.headDim;
  if (!(Number.isInteger(d) && d >= 2 && d <= 256 && d % 2 === 0)) {
    throw new RangeError(`prefill attention needs an even head size of at most 256, got ${d}`);
  }
  const group = a.numHeads / a.numKv;
  if (!(Number.isInteger(group) && group >= 1)) {
    throw new RangeError(
      `prefill attention: ${a.numHeads} q heads are not a multiple of ${a.numKv} kv heads`,
    );
  }
  const d4 = Math.ceil(d / 4);
  // step 4: a thread per (OQ query slots, vec4 of dims); the softmax: at least one thread a slot
  const most = Math.floor(Math.min(MAX_QUERIES, WG, Math.floor(WG / d4) * OQ) / 8) * 8;
  if (most < 8) {
    throw new RangeError(`prefill attention: ${WG} threads take fewer than 8 queries at head size ${d}`);
  }
  const headsMax = Math.min(group, most);
  const heads0 = want.heads ?? headsMax;
  if (!(Number.isInteger(heads0) && heads0 >= 1 && heads0 <= headsMax)) {
    throw new RangeError(
      `prefill attention: q heads a workgroup must be an integer in 1..${headsMax}, got ${heads0}`,
    );
  }
  if (want.rows !== undefined && !(Number.isInteger(want.rows) && want.rows >= 1)) {
    throw new RangeError(`prefill attention: rows a workgroup must be an integer >= 1, got ${want.rows}`);
  }
  if (want.keys !== undefined && !(Number.isInteger(want.keys) && want.keys >= 4 && want.keys % 4 === 0)) {
    throw new RangeError(`prefill attention: keys a tile must be a multiple of 4, got ${want.keys}`);
  }
  for (const b of [want.blockQueries, want.blockKeys]) {
    if (b !== undefined && b !== 2 && b !== 4) {
      throw new RangeError(`prefill attention: a score block is 2 or 4 queries by 2 or 4 keys, got ${b}`);
    }
  }
  // the default tile stays within MAX_BYTES; one asked for, within the GPU's limit
  const asked = Object.values(want).some((v) => v !== undefined);
  if (!asked) {
    for (const l of ATTN_PREFILL.LARGE) {
      const slots = Math.floor(Math.min(MAX_QUERIES, WG, Math.floor(WG / d4) * l.outQueries) / 8) * 8;
      const heads = Math.min(group, slots);
      if (slots < 8 || slots % heads !== 0 || l.keys * d4 > 8 * WG) continue;
      const r = Math.min(slots / heads, 2 ** Math.ceil(Math.log2(Math.max(rows, 1))));
      const queries = roundUp(r * heads, 8);
      const bytes = attnPrefillBytes(d, queries, l.keys, WG);
      // only past MAX_BYTES: within it the picking below measured as fast or faster
      if (bytes > maxBytes || attnPrefillBytes(d, slots, l.keys, WG) <= ATTN_PREFILL.MAX_BYTES) continue;
      const blockKeys = (queries / 2) * (l.keys / 4) >= 32 ? 4 : 2;
      return {
        rows: r,
        heads,
        queries,
        keys: l.keys,
        blockQueries: 2,
        blockKeys,
        threads: WG,
        outQueries: l.outQueries,
        bytes,
      };
    }
  }
  const limit = asked ? maxBytes : Math.min(maxBytes, ATTN_PREFILL.MAX_BYTES);
  // fewer rows, then fewer heads, until a tile fits
  for (let heads = heads0; heads >= 1; heads = want.heads === undefined ? Math.floor(heads / 2) : 0) {
    // a short chunk (a verify pass) takes a power of two of rows at least its own, not the slots' worth
    const rows0 = want.rows ??
      Math.min(Math.floor(most / heads), 2 ** Math.ceil(Math.log2(Math.max(rows, 1))));
    if (roundUp(rows0 * heads, 8) > most) {
      throw new RangeError(
        `prefill attention: ${rows0} rows x ${heads} heads a workgroup is more than its ${most} query slots`,
      );
    }
    for (let r = rows0; r >= 1; r = want.rows === undefined ? Math.floor(r / 2) : 0) {
      const queries = roundUp(r * heads, 8);
      if (queries > most) continue;
      for (const keys of want.keys !== undefined ? [want.keys] : KEYS) {
        // the tile's vec4s a thread loads ahead into registers: at most 8 (pf in attention.wgsl); by default
        // one (fewer keys measured faster than more in the same bytes on the H200)
        if (keys * d4 > 8 * WG || (want.keys === undefined && keys > 4 && keys * d4 > WG)) continue;
        const bytes = attnPrefillBytes(d, queries, keys, WG);
        if (bytes > limit) continue;
        // 2 x 4 blocks where they fill a warp, else 2 x 2 (4 x 4 measured slower on the H200: fewer threads)
        const blockQueries = want.blockQueries ?? 2;
        const blockKeys = want.blockKeys ?? ((queries / blockQueries) * (keys / 4) >= 32 ? 4 : 2);
        return { rows: r, heads, queries, keys, blockQueries, blockKeys, threads: WG, outQueries: OQ, bytes };
      }
    }
  }
  if (asked) {
    throw new RangeError(
      `prefill attention: no tile with ${JSON.stringify(want)} fits at head size ${d}: at most ` +
        `${Math.floor((8 * WG) / d4)} keys a tile, and ${maxBytes} bytes of workgroup memory ` +
        `(maxComputeWorkgroupStorageSize)`,
    );
  }
  const least = attnPrefillBytes(d, 8, 4, WG);
  throw new RangeError(
    `prefill attention at head size ${d} needs ${least} bytes of workgroup memory at its smallest tile ` +
      `(8 queries, 4 keys); this GPU has ${maxBytes} (maxComputeWorkgroupStorageSize)`,
  );
}

/**
 * attention.wgsl: out[row][head] = softmax(q k^T / sqrt(d)) v over the visible cache positions, tiled (a
 * workgroup: a tile of rows of one kv head with its q heads; {@link attnPrefillTile}). `tile` fixes parts of
 * the tile (tests, benchmarks).
 */
export function attentionOp(
  ctx: GpuContext,
  qkv: GPUBuffer,
  kcache: GPUBuffer,
  vcache: GPUBuffer,
  out: GPUBuffer,
  state: GPUBuffer,
  a: AttentionShape,
  at: Positions,
  window: number,
  tile?: PrefillTileWant,
): Op {
  const t = attnPrefillTile(a, at.rows, ctx.device.limits.maxComputeWorkgroupStorageSize, tile);
  const kstr = Math.ceil(a.headDim / 4) + 1;
  const params = ctx.uniform(
    [
      at.rows,
      a.numHeads,
      a.numKv,
      a.headDim,
      a.maxSeq,
      at.posBase,
      at.fromState ? 1 : 0,
      a.ldq,
      window,
      1 / Math.sqrt(a.headDim),
      0,
      0,
    ],
    "attention",
    [false, false, false, false, false, false, false, false, false, true],
  );
  return ctx.op({
    variant: {
      shader: "attention",
      overrides: {
        HEAD_DIM: a.headDim,
        WG: t.threads,
        OQ: t.outQueries,
        QT: t.queries,
        HG: t.heads,
        R: t.rows,
        KT: t.keys,
        BQ: t.blockQueries,
        BK: t.blockKeys,
        QS: t.queries * kstr,
        KVS: t.keys * kstr,
        SS: (t.queries * t.keys) / 4,
      },
    },
    bindings: [params, qkv, kcache, vcache, out, state],
    owned: [params],
    workgroups: [a.numKv * Math.ceil(a.numHeads / a.numKv / t.heads), Math.ceil(at.rows / t.rows)],
    label: "attention",
  });
}

/** swiglu.wgsl: out[m][i] = silu(gu[m][i]) * gu[m][offB + i]. */
export function swigluOp(
  ctx: GpuContext,
  gu: GPUBuffer,
  out: GPUBuffer,
  o: { rows: number; n: number; ld: number; offB: number },
): Op {
  const params = ctx.uniform([o.rows, o.n, o.ld, o.offB], "swiglu");
  return ctx.op({
    variant: { shader: "swiglu" },
    bindings: [params, gu, out],
    owned: [params],
    workgroups: [Math.ceil(o.n / 256), o.rows],
    label: "swiglu",
  });
}

/** Sampler settings as sample.wgsl reads them. */
export interface SamplerParams {
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
}

/** Bytes of sample.wgsl's parameter block. */
export const SAMPLER_PARAMS_BYTES = 48;

/** Writes sampler settings into an existing sample params buffer. */
export function writeSamplerParams(
  ctx: GpuContext,
  buffer: GPUBuffer,
  vocab: number,
  capacity: number,
  s: SamplerParams,
  eos: number[] = [],
): void {
  if (eos.length > 4) throw new RangeError("at most 4 end-of-sequence ids are checked on the GPU");
  const data = new ArrayBuffer(SAMPLER_PARAMS_BYTES);
  const u = new Uint32Array(data);
  const f = new Float32Array(data);
  u[0] = vocab;
  u[1] = s.topK >>> 0;
  u[2] = s.seed >>> 0;
  u[3] = capacity;
  f[4] = s.temperature;
  f[5] = s.topP;
  u[6] = eos.length;
  eos.forEach((id, i) => (u[8 + i] = id));
  ctx.device.queue.writeBuffer(buffer, 0, data);
}

/**
 * sample.wgsl: picks a token from logits, writes it to tokens[state.step] and advances the state. `blocks`:
 * the argmax partials a reduce pass in MODE storeArgmax left for these logits (`count` pairs), read instead of
 * every logit for the argmax.
 */
export function sampleOp(
  ctx: GpuContext,
  params: GPUBuffer,
  logits: GPUBuffer,
  state: GPUBuffer,
  tokens: GPUBuffer,
  blocks?: { buffer: GPUBuffer; count: number },
): Op {
  if (blocks && (!(blocks.count > 0) || blocks.count * 8 > blocks.buffer.size)) {
    throw new RangeError(`sample: ${blocks.count} argmax blocks do not fit ${blocks.buffer.size} bytes`);
  }
  return ctx.op({
    variant: { shader: "sample", overrides: { BLOCKS: blocks?.count ?? 0 } },
    bindings: [params, logits, state, tokens, blocks?.buffer ?? ctx.scratch("read")],
    workgroups: [1],
    label: "sample",
  });
}

/** Settings of the speculative acceptance rounds of one generation (spec_accept.wgsl). */
export interface SpecAcceptParams {
  /** Vocabulary size (row length of the draft and verify logits). */
  vocab: number;
  /** Drafts per round (draft rows; the verify logits have k + 1 rows). */
  k: number;
  /** Length of `tokens`. */
  capacity: number;
  /** Length of the round log (1 + most rounds logged). */
  logCapacity: number;
  /** Temperature as the draft sampler used it (0: greedy). */
  temperature: number;
  /** Top-k as the draft sampler used it (0: off). */
  topK: number;
  /** Top-p as the draft sampler used it (1: off). */
  topP: number;
  /** Seed of the acceptance stream (see `specSeeds` in src/generate/sampler.ts). */
  seedAccept: number;
  /** Seed of the residual / bonus draw stream. */
  seedResidual: number;
}

/**
 * spec_accept.wgsl: `dist` over the 2k + 1 rows (draft logits, then verify logits) and `accept`, which keeps
 * the accepted drafts, writes the decided token after them, the next round's decode state and the round's
 * accepted count to `log`. The round's place (token index and position) comes from `state`, as the k draft
 * steps left it. `stats` holds (2k + 1) * 4 words. The two ops share one parameter buffer, owned by the first.
 */
export function specAcceptOps(
  ctx: GpuContext,
  draft: GPUBuffer,
  verify: GPUBuffer,
  stats: GPUBuffer,
  tokens: GPUBuffer,
  state: GPUBuffer,
  log: GPUBuffer,
  o: SpecAcceptParams,
): Op[] {
  const params = ctx.uniform(
    [
      o.vocab,
      o.k,
      o.logCapacity,
      0,
      o.temperature,
      o.topP,
      o.topK >>> 0,
      o.seedAccept >>> 0,
      o.seedResidual >>> 0,
      o.capacity,
      0,
      0,
    ],
    "spec_accept",
    [false, false, false, false, true, true],
  );
  return [
    ctx.op({
      variant: { shader: "spec_accept", entry: "dist" },
      bindings: [params, draft, verify, stats],
      owned: [params],
      workgroups: [2 * o.k + 1],
      label: "spec.dist",
    }),
    ctx.op({
      variant: { shader: "spec_accept", entry: "accept" },
      bindings: [params, draft, verify, stats, tokens, state, log],
      workgroups: [1],
      label: "spec.accept",
    }),
  ];
}

/** spec_gather.wgsl: ids[i] = tokens[state[2] - 1 - k + i] for i in 0..k (the verify pass's rows). */
export function specGatherOp(
  ctx: GpuContext,
  tokens: GPUBuffer,
  state: GPUBuffer,
  ids: GPUBuffer,
  o: { k: number; capacity: number },
): Op {
  const params = ctx.uniform([o.k, o.capacity, 0, 0], "spec_gather");
  return ctx.op({
    variant: { shader: "spec_gather" },
    bindings: [params, tokens, state, ids],
    owned: [params],
    workgroups: [Math.ceil((o.k + 1) / 64)],
    label: "spec.gather",
  });
}

/** copy.wgsl: dst[dstOffset + i] = src[srcOffset + i] for n 32-bit words. */
export function copyOp(
  ctx: GpuContext,
  src: GPUBuffer,
  dst: GPUBuffer,
  o: { n: number; srcOffset?: number; dstOffset?: number },
): Op {
  const params = ctx.uniform([o.n, o.srcOffset ?? 0, o.dstOffset ?? 0, 0], "copy");
  const groups = Math.ceil(o.n / 256);
  const x = Math.min(groups, 65535);
  return ctx.op({
    variant: { shader: "copy" },
    bindings: [params, src, dst],
    owned: [params],
    workgroups: [x, Math.ceil(groups / x)],
    label: "copy",
  });
}

/** sqdiff.wgsl: out[slot] = sum((a[i] - b[bOffset + i])^2) over n elements. */
export function sqdiffOp(
  ctx: GpuContext,
  a: GPUBuffer,
  b: GPUBuffer,
  out: GPUBuffer,
  o: { n: number; slot: number; bOffset?: number },
): Op {
  const params = ctx.uniform([o.n, o.slot, o.bOffset ?? 0, 0], "sqdiff");
  return ctx.op({
    variant: { shader: "sqdiff" },
    bindings: [params, a, b, out],
    owned: [params],
    workgroups: [1],
    label: "sqdiff",
  });
}

/** fill.wgsl: random f16 pairs in [-scale, scale) (mode "random") or a constant f32 (mode "const"). */
export function fillOp(
  ctx: GpuContext,
  dst: GPUBuffer,
  o: { words: number; mode: "random" | "const"; seed?: number; scale?: number; value?: number },
): Op {
  const params = ctx.uniform([o.words, o.seed ?? 0, o.scale ?? 1, o.value ?? 0], "fill", [
    false,
    false,
    true,
    true,
  ]);
  const groups = Math.ceil(o.words / 256);
  const x = Math.min(groups, 65535);
  return ctx.op({
    variant: { shader: "fill", overrides: { MODE: o.mode === "random" ? 0 : 1 } },
    bindings: [params, dst],
    owned: [params],
    workgroups: [x, Math.ceil(groups / x)],
    label: "fill",
  });
}

/** Decode attention's geometry (attn_decode.wgsl). */
export const ATTN = {
  /** Fewest positions per workgroup of the split variant (sizes the partials buffer). */
  SPAN: 64,
  /** Most positions per workgroup of the split variant. */
  MAX_SPAN: 1024,
  /**
   * Most splits a q head of a workgroup that attnSpan gives a context below MAX_SPAN positions a split (a
   * workgroup of h heads: MAX_SPLITS * h): it doubles the span past that.
   */
  MAX_SPLITS: 8,
  /** Scores a workgroup holds at once (its online softmax walks longer ranges in pieces of this many). */
  SUB: 512,
  /**
   * A decode step at a position below this runs one workgroup per head over the whole context and writes the
   * output itself (no combine pass); at or past it, the split variant and attn_combine.
   */
  SINGLE_BELOW: 512,
  /**
   * q heads a workgroup of the split decode attention takes, by position (attnHeadsAt): [heads, from position],
   * each count taken where it divides the q heads a kv head. The heads of a workgroup share a kv head and read
   * its keys and values once between them (the kernel takes up to 4). Measured on the H200 (docs/benchmarks.md,
   * 2026-12-03 seventh session): one head a workgroup was fastest up to 4096, two at 6144 and 8191 (Llama-3-8B
   * shape: a step 6.27 ms dense at 8191 against 6.44 with four and 6.57 with one), four at 16384 and 32767
   * (Mistral-7B shape: 6.14 ms at 16384 against 6.88 with two and 7.56 with one). 6144 and 12288 sit between
   * the positions timed.
   */
  HEADS_FROM: [[2, 6144], [4, 12288]],
  /**
   * L2 prefetch workgroups of a decode attention dispatch or a reduce pass (`prefetch` of {@link attnDecodeOps}
   * and {@link reduceOp}): about one an SM on an H100/H200 (132), each with 32 KiB of loads in flight, ~4 MiB
   * in all: what DRAM's bandwidth times its latency (~4 TB/s x ~1 us) needs to stream, while the pass's few
   * workgroups leave the SMs room.
   */
  PREFETCH_WG: 128,
  /**
   * Most bytes of a matrix prefetched into L2 during decode attention: the o projection at Llama-3-8B shapes
   * (4096 x 4096 f16), well within an H100/H200's 50 MB L2, so the prefetch does not evict itself.
   */
  PREFETCH_CAP_BYTES: 32 * 2 ** 20,
} as const;

/**
 * Most bytes of a matrix prefetched into L2 during a decode step's reduce pass (Forward.l2PrefetchPasses):
 * about what an H200's DRAM (~4.8 TB/s) delivers in the 3-5 us such a pass takes. Half ATTN.PREFETCH_CAP_BYTES
 * (attention takes 13-20 us a layer at the 8B shape): a dispatch ends only when its prefetch workgroups do, so
 * a prefetch longer than the pass would delay the next GEMV's start by about what it saves that GEMV.
 */
export const PASS_PREFETCH_CAP_BYTES: number = 16 * 2 ** 20;

/** A vec4 (16-byte) range of a buffer for an L2 prefetch ({@link L2Prefetch}). */
export interface PrefetchRange {
  /** First vec4 of the range. */
  startVec4: number;
  /** vec4s in the range. */
  countVec4: number;
  /** Ranges of countVec4 vec4s, strideVec4 apart (default 1; at most the prefetch workgroups). */
  ranges?: number;
  /** vec4s from one range's start to the next's (ranges > 1). */
  strideVec4?: number;
}

/**
 * The bytes of a matrix's weights (all its segments, blocks back to back), as vec4s, capped at `capBytes`
 * from their start: what decode attention or a reduce pass prefetches into L2 for the GEMV after it. f16
 * segments count `base` and `stride` in f16, int8/int4 ones in u32 words; both layouts keep blocks 16-byte
 * aligned.
 */
export function prefetchRange(m: Matrix, capBytes: number): PrefetchRange {
  if (!(Number.isFinite(capBytes) && capBytes >= 0)) {
    throw new RangeError(`prefetchRange: capBytes must be a finite number >= 0, got ${capBytes}`);
  }
  if (m.segments.length === 0) throw new RangeError("prefetchRange: the matrix has no segments");
  const unit = (m.format ?? "f16") === "f16" ? 2 : 4; // bytes per base/stride unit
  let start = Infinity;
  let end = 0;
  for (const s of m.segments) {
    start = Math.min(start, s.base * unit);
    end = Math.max(end, (s.base + m.K * s.stride) * unit);
  }
  const startVec4 = Math.floor(start / 16);
  const countVec4 = Math.min(Math.ceil(end / 16) - startVec4, Math.floor(capBytes / 16));
  return { startVec4, countVec4 };
}

/**
 * The first rows of each of a matrix's K chunks of `kchunk` rows (every segment's), as strided ranges of vec4s,
 * capped at `capBytes` in all: what a pass prefetches into L2 so that every workgroup of the GEMV after it
 * (one per column tile and K chunk) starts on rows already in L2, not only those of the first chunk. Null when
 * the segments' rows differ in length (one stride cannot step through them) or not one row fits the cap.
 */
export function prefetchChunkHeads(m: Matrix, capBytes: number, kchunk: number): PrefetchRange | null {
  if (!(Number.isFinite(capBytes) && capBytes >= 0)) {
    throw new RangeError(`prefetchChunkHeads: capBytes must be a finite number >= 0, got ${capBytes}`);
  }
  if (!(Number.isInteger(kchunk) && kchunk >= 1)) {
    throw new RangeError(`prefetchChunkHeads: kchunk must be an integer >= 1, got ${kchunk}`);
  }
  const segs = m.segments;
  if (segs.length === 0) throw new RangeError("prefetchChunkHeads: the matrix has no segments");
  const unit = (m.format ?? "f16") === "f16" ? 2 : 4; // bytes per base/stride unit
  const rowBytes = segs[0].stride * unit;
  // one stride through every segment: equal rows, blocks back to back, chunks that tile K
  const uniform = segs.every((s, i) =>
    s.stride === segs[0].stride && s.base === segs[0].base + i * m.K * s.stride
  );
  if (!uniform || m.K % kchunk !== 0 || rowBytes % 16 !== 0) return null;
  const ranges = segs.length * (m.K / kchunk);
  const rows = Math.min(kchunk, Math.floor(capBytes / (ranges * rowBytes)));
  if (rows < 1) return null;
  return {
    startVec4: (segs[0].base * unit) / 16,
    countVec4: (rows * rowBytes) / 16,
    ranges,
    strideVec4: (kchunk * rowBytes) / 16,
  };
}

/**
 * An L2 prefetch in a latency-bound pass (shaders/prefetch.wgsl): `prefetch` of {@link attnDecodeOps} and
 * {@link reduceOp}.
 */
export interface L2Prefetch extends PrefetchRange {
  /** The buffer whose range to read (the next GEMV's weights). */
  buffer: GPUBuffer;
  /** Prefetch workgroups (default ATTN.PREFETCH_WG). */
  workgroups?: number;
  /**
   * The float index of the pass's output buffer (the attention's partials in its split variant), past what
   * the pass writes, where prefetch workgroup i writes its slice's XOR (low, high 16 bits) at 2i and 2i + 1.
   * Forward always sets it: a result the loads feed keeps a compiler from dropping them. Left out: no write.
   */
  check?: number;
}

/**
 * Positions per workgroup for a decode step at `pos`: 0 for one workgroup per head (below ATTN.SINGLE_BELOW),
 * else the power of two that splits the context into 4 to 8 pieces a workgroup's heads (`heads` q heads a
 * workgroup, {@link attnHeadsAt}: 4 * heads to 8 * heads pieces), within ATTN.SPAN .. MAX_SPAN, so that a long
 * context keeps about two workgroups an SM on a big GPU and the combine pass stays short.
 */
export function attnSpan(pos: number, heads = 1): number {
  if (pos < ATTN.SINGLE_BELOW) return 0;
  let span = ATTN.SPAN;
  while (span < ATTN.MAX_SPAN && span * groupSplits(heads) < pos) span *= 2;
  return span;
}

/**
 * The most q heads a workgroup of the split decode attention takes at any position (ATTN.HEADS_FROM's largest
 * count that divides the q heads a kv head; 1 when none does).
 */
export function attnHeads(a: { numHeads: number; numKv: number }): number {
  return attnHeadsAt(Infinity, a);
}

/** q heads a workgroup of a decode step's split attention at `pos` (ATTN.HEADS_FROM; else 1). */
export function attnHeadsAt(pos: number, a: { numHeads: number; numKv: number }): number {
  const group = a.numHeads / a.numKv;
  let heads = 1;
  for (const [h, from] of ATTN.HEADS_FROM) if (pos >= from && group % h === 0 && h > heads) heads = h;
  return heads;
}

/** Whether attn_decode can take `heads` q heads a workgroup: 1 to 4, dividing the q heads a kv head. */
export function attnHeadsRunnable(heads: number, a: { numHeads: number; numKv: number }): boolean {
  return Number.isInteger(heads) && heads >= 1 && heads <= 4 && (a.numHeads / a.numKv) % heads === 0;
}

/**
 * Most splits attnSpan gives the context of a workgroup of `heads` q heads below ATTN.MAX_SPAN positions a split
 * (read when a decode step is built; for tuning, `bench --attn-splits`): 0, ATTN.MAX_SPLITS a head.
 */
export const ATTN_SPLITS: { perGroup: number } = { perGroup: 0 };

/**
 * Value trips (eight keys of each key lane) the short-context decode attention loads before its staging when
 * it preloads (attnDecodeOps `preload`): 1 or 2. Read when a step is built (`bench --attn-preload-trips`).
 * Two: on the H200 at Llama-3-8B shapes (2026-12-04, docs/benchmarks.md) a 50% step took 4.180 ms against
 * 4.198 with one and 4.285 with no preload; at position 500, 4.452 against 4.493 and 4.589.
 */
export const ATTN_PRELOAD: { trips: number } = { trips: 2 };

function groupSplits(heads: number): number {
  return ATTN_SPLITS.perGroup || ATTN.MAX_SPLITS * heads;
}

/**
 * Workgroups a head group of the split decode attention at `span` positions a split: as many as the splits of
 * the longest context attnSpan gives that span (the whole context at ATTN.MAX_SPAN). Each takes every rows-th
 * split, so any position is covered; past those contexts a workgroup takes more than one.
 */
export function attnRows(maxSeq: number, span: number, heads = 1): number {
  const all = Math.ceil(maxSeq / span);
  return span >= ATTN.MAX_SPAN ? all : Math.min(all, groupSplits(heads) + 1);
}

/** Workgroup memory of attn_decode: qs, kc, vc, sc, red, red2, red3 and the prefetch checksum, in bytes. */
export function attnWorkgroupBytes(headDim: number, heads: number, sub: number = ATTN.SUB): number {
  return 4 * (headDim * heads + 2 * headDim + sub * heads + 2 * 256 * 4 + 2 * 16 * 4 + 1);
}

/** Floats of attn_decode's split partials for a shape. */
export function attnPartFloats(a: AttentionShape, span: number = ATTN.SPAN): number {
  return Math.ceil(a.maxSeq / span) * a.numHeads * (a.headDim + 2);
}

/** Where a decode step's q|k|v row comes from: the q|k|v GEMV's split-K partials, plus the bias. */
export interface QkvPartials {
  partials: GPUBuffer;
  splits: number;
  bias: GPUBuffer | null;
}

/**
 * Checks an L2 prefetch against its buffers; returns its workgroup count. `written`: the float range [lo, hi)
 * of `out` the pass itself writes, which the checksums must not overlap.
 */
function checkPrefetch(pre: L2Prefetch, out: GPUBuffer, written?: [number, number]): number {
  const wg = pre.workgroups ?? ATTN.PREFETCH_WG;
  if (!(Number.isInteger(wg) && wg >= 1 && wg <= 65535)) {
    throw new RangeError(`L2 prefetch: workgroups must be an integer in 1..65535, got ${wg}`);
  }
  const { startVec4: start, countVec4: count } = pre;
  if (!(Number.isInteger(start) && start >= 0 && Number.isInteger(count) && count >= 0)) {
    throw new RangeError(
      `L2 prefetch: startVec4 ${start} and countVec4 ${count} must be integers >= 0`,
    );
  }
  const ranges = pre.ranges ?? 1;
  const stride = pre.strideVec4 ?? 0;
  if (!(Number.isInteger(ranges) && ranges >= 1 && ranges <= wg)) {
    throw new RangeError(
      `L2 prefetch: ranges must be an integer in 1..${wg} (the workgroups), got ${ranges}`,
    );
  }
  if (ranges > 1 && !(Number.isInteger(stride) && stride >= count)) {
    throw new RangeError(`L2 prefetch: strideVec4 ${stride} must be an integer >= countVec4 ${count}`);
  }
  const end = start + (ranges - 1) * stride + count;
  const have = Math.floor(pre.buffer.size / 16);
  if (end > have) {
    throw new RangeError(
      `L2 prefetch: vec4s [${start}, ${end}) run past the buffer's ${have} (${pre.buffer.size} bytes)`,
    );
  }
  if (end >= 2 ** 32) throw new RangeError(`L2 prefetch: vec4 ${end} is past u32`);
  if (pre.check !== undefined) {
    const [lo, hi] = [pre.check, pre.check + 2 * wg];
    if (!(Number.isInteger(lo) && lo >= 1)) {
      throw new RangeError(`L2 prefetch: check must be an integer >= 1, got ${lo}`);
    }
    if (hi * 4 > out.size) {
      throw new RangeError(
        `L2 prefetch: checksums at floats [${lo}, ${hi}) run past the output's ${out.size / 4}`,
      );
    }
    if (written && lo < written[1] && written[0] < hi) {
      throw new RangeError(
        `L2 prefetch: checksums at floats [${lo}, ${hi}) overlap the output [${written[0]}, ${written[1]})`,
      );
    }
  }
  return wg;
}

/**
 * Decode attention for the token at the state's position (attn_decode.wgsl), with the q|k|v sums, RoPE and the
 * KV cache store folded in. `single`: one workgroup per head, writing `out` itself (short contexts). Otherwise
 * split over the context into `part`, then merged into `out` (attn_combine.wgsl). Either is right at any
 * position; they differ in speed. `heads`: q heads a workgroup (1 to 4, dividing the q heads a kv head; default 1),
 * which then load their kv head's keys and values once between them ({@link attnHeads}). `rows`: workgroups a
 * head group of the split variant, each taking every rows-th split (default {@link attnRows}). `span`, `sub` and
 * `rows` are for tests and benches (defaults: ATTN). `prefetch`: extra workgroups
 * of the same dispatch, after the attention's, read that range of a buffer (the o projection's weights,
 * {@link prefetchRange}) into L2 while the attention runs; the attention's results are the same.
 */
export function attnDecodeOps(
  ctx: GpuContext,
  qkv: QkvPartials,
  turns: GPUBuffer,
  kcache: GPUBuffer,
  vcache: GPUBuffer,
  part: GPUBuffer,
  out: GPUBuffer,
  state: GPUBuffer,
  a: AttentionShape,
  o: {
    window: number;
    single: boolean;
    span?: number;
    sub?: number;
    heads?: number;
    rows?: number;
    prefetch?: L2Prefetch;
    /**
     * The one-workgroup-a-head variant (single) loads each thread's first key and value trips (ATTN_PRELOAD)
     * before the q|k|v staging (attn_decode.wgsl PRELOAD; head sizes up to 128): the same results, fewer round
     * trips in a row. No effect on the split variant, where the registers cost more than the round trips save
     * (H200, 2026-12-04: a 50% step at position 1024 took 4.97 ms with it against 4.32).
     */
    preload?: boolean;
  },
): Op[] {
  if (a.headDim % 8 !== 0 || a.headDim > 256) {
    throw new RangeError(
      `decode attention needs a head size that is a multiple of 8, at most 256: ${a.headDim}`,
    );
  }
  const heads = o.heads ?? 1;
  if (!attnHeadsRunnable(heads, a)) {
    throw new RangeError(
      `decode attention: heads a workgroup must be 1 to 4 and divide the ${
        a.numHeads / a.numKv
      } q heads a kv head, got ${heads}`,
    );
  }
  const sub = o.sub ?? ATTN.SUB;
  const wgBytes = attnWorkgroupBytes(a.headDim, heads, sub);
  const wgLimit = ctx.device.limits.maxComputeWorkgroupStorageSize;
  if (wgBytes > wgLimit) {
    throw new RangeError(
      `decode attention with ${heads} heads a workgroup and ${sub} scores a piece needs ${wgBytes} bytes of ` +
        `workgroup memory; this GPU has ${wgLimit} (maxComputeWorkgroupStorageSize): take fewer heads or scores`,
    );
  }
  const span = o.span ?? ATTN.SPAN;
  const splits = o.single ? 1 : Math.ceil(a.maxSeq / span);
  // workgroups a head group: each takes every rows-th split, so only what attnSpan's positions need runs
  const rows = o.single ? 1 : o.rows ?? attnRows(a.maxSeq, span, heads);
  if (!(Number.isInteger(rows) && rows >= 1)) {
    throw new RangeError(`decode attention: rows must be an integer >= 1, got ${rows}`);
  }
  const pre = o.prefetch;
  const preWg = pre ? checkPrefetch(pre, o.single ? out : part) : 0;
  const params = ctx.uniform(
    [
      a.numHeads,
      a.numKv,
      a.maxSeq,
      o.window,
      1 / Math.sqrt(a.headDim),
      a.ldq,
      qkv.bias ? 1 : 0,
      pre?.startVec4 ?? 0,
      pre?.countVec4 ?? 0,
      pre?.check ?? 0,
      pre?.ranges ?? 1,
      pre?.strideVec4 ?? 0,
      0,
      0,
      0,
      0,
    ],
    "attn_decode",
    [false, false, false, false, true],
  );
  const attention = ctx.op({
    variant: {
      shader: "attn_decode",
      overrides: {
        SPAN: span,
        FINAL: o.single ? 1 : 0,
        HEAD_DIM: a.headDim,
        SPLITS: qkv.splits,
        SUB: sub,
        HG: heads,
        QS: (a.headDim * heads) / 4,
        SCORES: sub * heads,
        ROWS: rows,
        PREFETCH_WG: preWg,
        PRELOAD: o.single && o.preload && a.headDim <= 128 ? 1 : 0,
        PRELOAD_TRIPS: ATTN_PRELOAD.trips,
      },
    },
    bindings: [
      params,
      qkv.partials,
      qkv.bias ?? ctx.scratch("read"),
      turns,
      kcache,
      vcache,
      o.single ? out : part,
      state,
      pre?.buffer ?? ctx.scratch("read"),
    ],
    owned: [params],
    workgroups: [(a.numHeads / heads) * rows + preWg],
    label: "attention",
  });
  if (o.single) return [attention];
  const p2 = ctx.uniform([a.numHeads, a.headDim, splits, 0], "attn_combine");
  return [
    attention,
    ctx.op({
      variant: { shader: "attn_combine", overrides: { CHUNK: span } },
      bindings: [p2, part, out, state],
      owned: [p2],
      workgroups: [a.numHeads],
      label: "attention.combine",
    }),
  ];
}
