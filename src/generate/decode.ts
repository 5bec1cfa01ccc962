/**
 * The decode loop. Deno's WebGPU spends at least 10 ms on every read-back (its poll loop sleeps), so reading
 * each token before the next step would cap decoding near 90 tokens/s on any GPU. Instead the sampled token
 * stays on the GPU (sample.wgsl writes it into the state buffer that the next step's embedding reads), steps
 * are queued in batches, and tokens come back batch by batch while later batches already run. Stopping
 * (EOS, stop strings, max tokens, abort) is decided on read-back; tokens computed past it are discarded. An
 * abort also stops a long prompt's prefill between its passes.
 * @module
 */
import type { Op } from "../gpu/context.ts";
import { writeSamplerParams } from "../gpu/kernels.ts";
import { type Forward, PREFILL_CACHE_ROWS, releaseOps } from "../model/forward.ts";
import type { SamplingOptions } from "./sampler.ts";

/** One generation as the decode loop sees it. */
export interface DecodeJob {
  promptIds: number[];
  /** Most tokens to generate. */
  maxTokens: number;
  sampling: SamplingOptions;
  /** End-of-sequence ids (at most 4): once one is sampled, queued steps skip their GEMVs on the GPU. */
  eosIds: number[];
  /** Run decode steps TEAL-sparse (thresholds already written). */
  sparse: boolean;
  /** Apply the thresholds during prefill too. */
  sparsePrefill: boolean;
  /** Milliseconds of decoding per read-back batch once the loop is up to speed (default DECODE's). */
  batchMs?: number;
  /** Called with each read-back batch of new tokens; return false to stop. */
  onTokens: (ids: number[]) => boolean;
  /** Progress of a prompt longer than one prefill pass ({@link PrefillOptions.onProgress}). */
  onPrefillProgress?: (done: number, total: number) => void;
  /** Stops the generation: between prefill passes, or at the next read-back. */
  signal?: AbortSignal;
}

/** What the decode loop measured. */
export interface DecodeStats {
  /** Tokens read back and accepted by onTokens (the last batch may be cut by the caller). */
  tokensRead: number;
  /** Milliseconds from start to the first token on the host. */
  ttftMs: number;
  /** Milliseconds from the first token on the host to the last. */
  decodeMs: number;
  /** True when the loop ended because of `signal`. */
  aborted: boolean;
  /** Per read-back batch: tokens [a, b), submit and resolve times (ms since start); for profiling. */
  batches: BatchTrace[];
}

/** One read-back batch as the decode loop saw it (ms since the generation started). */
export interface BatchTrace {
  /** First token of the batch. */
  a: number;
  /** One past its last token. */
  b: number;
  /** When its first command buffer was submitted. */
  submitMs: number;
  /** Host time the submit calls of the batch took. */
  submitCostMs: number;
  /** When its tokens were mapped on the host. */
  resolveMs: number;
}

/** Tunables of the read-back pipeline (benchmarks may change them). */
export const DECODE = {
  /** Largest batch of steps between read-backs. */
  maxBatch: 256,
  /** Aim for batches of about this much time: longer batches hide the read-back gap better, shorter ones
   * stream tokens more smoothly. At 250 ms the gap (up to 10 ms) costs at most 4%. */
  targetBatchMs: 250,
  /**
   * Batch growth per read-back until the target: fast, so that short generations are not all ramp, but no
   * faster than the host encodes. A batch is encoded while the one before it runs, and encoding a step costs
   * about a quarter of its GPU time at 8B shapes on the H200 (~5 µs a dispatch), so a batch four times the
   * last one was not ready when the GPU finished it: ~10 ms idle once a generation (2026-12-03, TEALGPU_TRACE).
   */
  growth: 2,
  /**
   * Dispatches in a batch's first command buffer. A batch goes to the queue as several command buffers, each
   * submitted on its own, so the GPU starts on the first while the host still submits the rest (0: one
   * command buffer per batch).
   */
  dispatchesPerSubmit: 512,
  /**
   * Dispatches in each later command buffer of a batch (0: as many as the first). Fewer, longer command
   * buffers after the first: 512 each cost about 1% of decode speed at 8B shapes on the H200 (175.8 against
   * 177.6 tokens/s with 4096, and 178.0 with one per batch; 2026-12-03, docs/benchmarks.md).
   */
  dispatchesPerLaterSubmit: 4096,
};

interface Batch {
  a: number;
  b: number;
  staging: GPUBuffer;
  commands: GPUCommandBuffer[];
  submitMs: number;
  submitCostMs: number;
}

/** Tunables of prompt prefill (benchmarks may change them). */
export const PREFILL: { stepsUpTo: number | null; submitPerLayer: boolean; cacheRowsUpTo: number } = {
  /**
   * Prompts of at most this many tokens are fed through decode steps, one token a step, instead of the
   * prefill GEMM (null: by the device, {@link prefillStepsUpTo}).
   */
  stepsUpTo: null,
  /**
   * Submit a prefill pass a layer at a time as its ops are built ({@link Forward.prefillGroups}), so the GPU
   * runs while the host builds the rest; false: build the whole pass, then submit it.
   */
  submitPerLayer: true,
  /**
   * Prompt chunks of at most this many rows run a prefill pass built once per row count and kept
   * ({@link Forward.cachedPrefill}; default PREFILL_CACHE_ROWS, 0: every pass is built anew).
   */
  cacheRowsUpTo: PREFILL_CACHE_ROWS,
};

/**
 * Longest prompt fed through decode steps on this device. At Llama-3-8B shapes on the H200 (2026-12-03,
 * docs/benchmarks.md) the first token took 19, 36 and 58 ms after 1, 4 and 8 prompt tokens by steps, and 48, 51
 * and 54 ms by the few-row prefill GEMV ({@link Forward.prefillGemv}): steps win up to about 7 tokens. On
 * lavapipe (tiny shape) the few-row GEMV matches a single step at 1 token and wins from 2 on.
 */
export function prefillStepsUpTo(fwd: Forward): number {
  return PREFILL.stepsUpTo ?? (fwd.ctx.isCpu ? 1 : 7);
}

/** Options of {@link prefillPrompt}. */
export interface PrefillOptions {
  /**
   * Checked between passes of a prompt longer than one pass: once aborted, no further pass is submitted (the
   * pass already queued behind the one that completed still runs on the GPU).
   */
  signal?: AbortSignal;
  /**
   * Progress of a prompt longer than one pass (never called for one pass or for decode steps): `done` prompt
   * tokens of `total`. Called as each pass but the last completes on the GPU, then with (total, total) once
   * the last pass is submitted, not completed: its completion shows as the first token.
   */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Prefill of the prompt, in passes of `maxPrefill` rows or (short prompts, {@link prefillStepsUpTo}) one
 * decode step a token; the last pass or step samples token 0 and leaves the decode state at (position M,
 * token 0, step 1). A prompt of one pass is only submitted, never waited for. A longer one keeps one pass
 * queued behind the one the GPU runs: after submitting pass i + 1 it waits for pass i, then reports progress
 * and checks `signal`, so an abort takes effect once the pass running when it came completes. Resolves to
 * false when `signal` stopped it (the decode state then holds no token 0), true otherwise.
 */
export async function prefillPrompt(
  fwd: Forward,
  promptIds: number[],
  sparse: boolean,
  options: PrefillOptions = {},
): Promise<boolean> {
  const M = promptIds.length;
  if (M <= prefillStepsUpTo(fwd)) {
    for (let i = 0; i < M; i++) {
      // every step but the last only fills the KV cache (no lm_head, no sampling); the last samples token 0
      fwd.writeState(i, promptIds[i], 0);
      fwd.ctx.run(i + 1 < M ? fwd.promptStep(sparse, i) : fwd.decodeStep(sparse, i));
    }
    return true;
  }
  if (M <= fwd.maxPrefill) {
    submitPass(fwd, promptIds, 0, M, sparse);
    return true;
  }
  // the previous pass's completion and the prompt tokens done with it. Deno resolves onSubmittedWorkDone()
  // at least 10 ms after the work is done (its poll loop sleeps), so the wait is per pass, never per layer,
  // and the next pass is queued before it, so that the GPU runs through the wait.
  let previous: { done: Promise<void>; end: number } | null = null;
  for (let c0 = 0; c0 < M; c0 += fwd.maxPrefill) {
    const rows = Math.min(fwd.maxPrefill, M - c0);
    submitPass(fwd, promptIds, c0, rows, sparse);
    // called before the next pass is submitted, it resolves with this one
    const done = fwd.ctx.device.queue.onSubmittedWorkDone();
    if (previous) {
      await previous.done;
      fwd.ctx.checkAlive();
      options.onProgress?.(previous.end, M);
      if (options.signal?.aborted) return false;
    }
    previous = { done, end: c0 + rows };
  }
  options.onProgress?.(M, M);
  return true;
}

/** Submits the prefill pass of prompt rows [c0, c0 + rows); the prompt's last pass samples token 0. */
function submitPass(fwd: Forward, promptIds: number[], c0: number, rows: number, sparse: boolean): void {
  const last = c0 + rows === promptIds.length;
  fwd.ctx.write(fwd.ids, new Uint32Array(promptIds.slice(c0, c0 + rows)));
  if (rows <= PREFILL.cacheRowsUpTo) {
    // a pass built once per row count (the first time submitted a layer at a time as it is built), placed by
    // the state: the chunk's last position
    fwd.writeState(c0 + rows - 1, 0, 0);
    for (const ops of fwd.cachedPrefill(rows, { sparse, sample: last })) fwd.ctx.run(ops);
    return;
  }
  if (last) fwd.writeState(promptIds.length - 1, 0, 0);
  const groups = fwd.prefillGroups(rows, c0, { sparse, sample: last });
  // a submission a layer: the GPU runs each while the host builds the next
  for (const ops of PREFILL.submitPerLayer ? groups : [[...groups].flat()]) {
    fwd.ctx.run(ops);
    releaseOps(ops);
  }
}

/** Tokens a generation may produce after a prompt of M tokens: maxTokens, or what the context leaves. */
export function tokenLimit(fwd: Forward, M: number, maxTokens: number): number {
  if (M === 0) throw new RangeError("the prompt is empty");
  const limit = Math.min(maxTokens, fwd.maxSeq - M);
  if (limit <= 0) {
    throw new RangeError(`prompt of ${M} tokens leaves no room in the context of ${fwd.maxSeq} tokens`);
  }
  return limit;
}

/** Runs prefill and decode for one job on the GPU. */
export async function runDecode(fwd: Forward, job: DecodeJob): Promise<DecodeStats> {
  const { ctx } = fwd;
  const M = job.promptIds.length;
  const limit = tokenLimit(fwd, M, job.maxTokens);
  const t0 = performance.now();
  ctx.checkAlive();
  const abortedStats: DecodeStats = { tokensRead: 0, ttftMs: 0, decodeMs: 0, aborted: true, batches: [] };
  // aborted while queued: nothing runs
  if (job.signal?.aborted) return abortedStats;
  writeSamplerParams(ctx, fwd.samplerParams, fwd.config.vocabSize, fwd.maxSeq, job.sampling, job.eosIds);
  ctx.write(fwd.sparsity.counters, new Uint32Array(fwd.config.numLayers * 7));

  const prefilled = await prefillPrompt(fwd, job.promptIds, job.sparsePrefill, {
    signal: job.signal,
    onProgress: job.onPrefillProgress,
  });
  if (!prefilled) return abortedStats;

  // the step producing token i (i >= 1) runs at position M + i - 1, which picks its attention variant; the
  // variant changes a few times in a long generation, so the op list is looked up only when it does
  let variant = "";
  let step: Op[] = [];
  const stepFor = (i: number): Op[] => {
    const v = fwd.attentionVariant(M + i - 1);
    if (v !== variant) {
      variant = v;
      step = fwd.decodeStep(job.sparse, M + i - 1);
    }
    return step;
  };
  let queued = 0; // tokens [0, queued) are encoded
  let batchSize = 1;
  let tokenMs = 0; // steady-state wall time per token
  let tFirst = 0;
  let tLast = 0;
  let read = 0;
  let stopped = false;
  let aborted = false;
  const trace: DecodeStats["batches"] = [];

  // Encodes the steps producing tokens [a, b) and their copy to a staging buffer; token 0 came from prefill.
  const encode = (): Batch => {
    const a = queued;
    const b = Math.min(limit, a + batchSize);
    const first = Math.max(a, 1);
    const steps = b - first;
    // steps per command buffer: the first, then the later ones
    const stepsIn = (dispatches: number) =>
      dispatches > 0 ? Math.max(1, Math.floor(dispatches / stepFor(first).length)) : Math.max(1, steps);
    const firstBuffer = stepsIn(DECODE.dispatchesPerSubmit);
    const laterBuffer = DECODE.dispatchesPerLaterSubmit > 0
      ? stepsIn(DECODE.dispatchesPerLaterSubmit)
      : firstBuffer;
    const commands: GPUCommandBuffer[] = [];
    let enc = ctx.device.createCommandEncoder();
    for (let s0 = 0; s0 < steps; s0 += s0 === 0 ? firstBuffer : laterBuffer) {
      if (s0 > 0) {
        commands.push(enc.finish());
        enc = ctx.device.createCommandEncoder();
      }
      const pass = enc.beginComputePass();
      for (let i = s0; i < Math.min(steps, s0 + (s0 === 0 ? firstBuffer : laterBuffer)); i++) {
        for (const op of stepFor(first + i)) {
          pass.setPipeline(op.pipeline);
          pass.setBindGroup(0, op.bindGroup);
          pass.dispatchWorkgroups(op.workgroups[0], op.workgroups[1], op.workgroups[2]);
        }
      }
      pass.end();
    }
    const staging = ctx.device.createBuffer({
      size: (b - a) * 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    enc.copyBufferToBuffer(fwd.tokens, a * 4, staging, 0, (b - a) * 4);
    commands.push(enc.finish());
    queued = b;
    const target = job.batchMs ?? DECODE.targetBatchMs;
    const cap = tokenMs > 0 ? Math.max(2, Math.floor(target / tokenMs)) : DECODE.maxBatch;
    batchSize = Math.min(DECODE.maxBatch, cap, Math.ceil(batchSize * DECODE.growth));
    return { a, b, staging, commands, submitMs: 0, submitCostMs: 0 };
  };
  const submit = (batch: Batch) => {
    batch.submitMs = performance.now() - t0;
    for (const cb of batch.commands) ctx.device.queue.submit([cb]);
    batch.submitCostMs = performance.now() - t0 - batch.submitMs;
  };

  // Deno's mapAsync() call itself blocks until all submitted work is done (a blocking device poll), and its
  // promise then resolves about 10 ms later (the poll loop sleeps). So at most one batch is on the GPU: the
  // next one is encoded while the current one runs, and submitted as soon as the mapAsync() call returns,
  // before the await, so the GPU works through the sleep instead of idling through it.
  let cur: Batch | null = encode();
  submit(cur);
  let next: Batch | null = null;
  try {
    while (cur) {
      next = queued < limit ? encode() : null;
      const mapped = cur.staging.mapAsync(GPUMapMode.READ);
      mapped.catch(() => {}); // awaited below; not unhandled should submit throw first
      if (next && !stopped) submit(next);
      await mapped;
      const ids = Array.from(new Uint32Array(cur.staging.getMappedRange()));
      cur.staging.unmap();
      cur.staging.destroy();
      const now = performance.now();
      trace.push({
        a: cur.a,
        b: cur.b,
        submitMs: cur.submitMs,
        submitCostMs: cur.submitCostMs,
        resolveMs: now - t0,
      });
      cur = null;
      if (job.signal?.aborted) {
        stopped = aborted = true;
      } else {
        if (read === 0) tFirst = now;
        tLast = now;
        read += ids.length;
        if (read > 1 && now > tFirst) tokenMs = (now - tFirst) / (read - 1);
        if (!job.onTokens(ids) || read >= limit) stopped = true;
      }
      if (stopped) break;
      cur = next;
      next = null;
    }
  } finally {
    // a batch submitted past the stop runs on (EOS-flagged steps skip their weights); its buffer is released
    // once the queued work is done
    next?.staging.destroy();
    cur?.staging.destroy();
    ctx.checkAlive();
  }
  return { tokensRead: read, ttftMs: tFirst - t0, decodeMs: tLast - tFirst, aborted, batches: trace };
}
