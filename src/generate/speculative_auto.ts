/**
 * Automatic choice of the draft length K and the draft sparsity S of self-speculative decoding, from a short
 * measurement on the loaded model: the per-token acceptance a(S) of a few speculative rounds over the prompt
 * (Laplace-smoothed) at each S of a small grid, and the GPU costs of one draft step t_draft(S), one verify
 * pass t_verify(K) and the host round trip t_sync (Deno spends at least 10 ms per read-back), paid once per
 * batch of B rounds (B from the batch-time target of SPEC_BATCH). It picks
 *
 *   argmax over K, S of  E[tokens per round] / (K t_draft(S) + t_verify(K) + t_sync / B),
 *   E[tokens per round] = (1 - a^(K+1)) / (1 - a).
 * @module
 */
import type { GpuContext, Op } from "../gpu/context.ts";
import { type Forward, releaseOps } from "../model/forward.ts";
import type { SamplingOptions } from "./sampler.ts";
import { maxDraft, runSpeculative, SPEC_BATCH } from "./speculative.ts";

/** Tunables of the measurement. */
export const SPEC_AUTO = {
  /** Draft sparsities measured (those inside the TEAL profile's range). */
  sparsities: [0.3, 0.4, 0.5, 0.6, 0.7],
  /** Largest K considered (also capped by the prefill rows). */
  maxK: 8,
  /** Draft length of the measuring rounds: long enough to see rejections, short enough to stay cheap. */
  measureK: 4,
  /** Tokens generated per measured sparsity. */
  measureTokens: 24,
  /** Decode steps per timed pass. */
  timedSteps: 4,
} as const;

/** What the automatic choice measured and chose. */
export interface SpeculativeChoice {
  /** Chosen draft length. */
  k: number;
  /** Chosen draft sparsity. */
  draftSparsity: number;
  /** Measured per-token acceptance at each draft sparsity: (accepted + 1) / (accepted + rejections + 2). */
  acceptance: { sparsity: number; acceptance: number }[];
  /** GPU ms of one sparse draft step at each draft sparsity. */
  draftMs: { sparsity: number; ms: number }[];
  /** GPU ms of the dense verify pass for K = 1, 2, ... (K = 1 and the largest K timed, linear between). */
  verifyMs: number[];
  /** Host round trip per read-back (ms), paid once per batch of rounds. */
  syncMs: number;
  /** GPU ms of one dense decode step (the baseline speculation must beat). */
  denseMs: number;
  /** Expected tokens per round at the choice: (1 - a^(K+1)) / (1 - a). */
  expectedTokensPerRound: number;
  /** Expected tokens/s at the choice, from the cost model. */
  expectedTokensPerSecond: number;
  /**
   * Expected speed-up over dense decoding (1000 / denseMs tokens/s, which pays no per-token round trip). Below
   * 1, dense decoding is faster on this device; "auto" still speculates (it chooses K and S, not whether).
   */
  expectedSpeedup: number;
  /** Wall time the measurement took (ms). */
  measureMs: number;
}

/** Expected tokens per round at per-token acceptance a with K drafts: (1 - a^(K+1)) / (1 - a). */
export function expectedTokensPerRound(a: number, k: number): number {
  return a >= 1 ? k + 1 : (1 - a ** (k + 1)) / (1 - a);
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** GPU time of one pass of `ops` (timestamp queries; wall clock less an empty read-back without them). */
async function gpuMs(ctx: GpuContext, ops: readonly Op[], reps = 3): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    if (ctx.hasTimestamps) times.push((await ctx.timePasses([ops]))[0]);
    else {
      const t0 = performance.now();
      ctx.run(ops);
      await ctx.read(ctx.scratch("read"), 4);
      const t1 = performance.now();
      await ctx.read(ctx.scratch("read"), 4);
      times.push(Math.max(0, 2 * t1 - t0 - performance.now()));
    }
  }
  return median(times);
}

/** Options of {@link chooseSpeculation}. */
export interface ChooseOptions {
  /** Prompt to measure on (cut to leave room for the measuring tokens). */
  promptIds: number[];
  /** The generation's sampling settings: acceptance depends on them. */
  sampling: SamplingOptions;
  /** Draft sparsities to consider (already inside the profile's range). */
  sparsities: number[];
  /** Writes the TEAL thresholds of one target. */
  useSparsity: (s: number) => void;
  /** Stops the measurement between the prompt's prefill passes and after each measuring run. */
  signal?: AbortSignal;
}

/**
 * Measures acceptance and costs on the model and returns the K and S of the highest expected tokens/s. Rejects
 * with the signal's reason (an "AbortError" DOMException by default) when `signal` stops it.
 */
export async function chooseSpeculation(fwd: Forward, o: ChooseOptions): Promise<SpeculativeChoice> {
  if (o.sparsities.length === 0) throw new RangeError("no draft sparsity to choose from");
  const t0 = performance.now();
  const { ctx } = fwd;
  const maxK = Math.max(1, Math.min(SPEC_AUTO.maxK, maxDraft(fwd)));
  const T = SPEC_AUTO.measureTokens;
  const prompt = o.promptIds.slice(0, Math.max(1, Math.min(o.promptIds.length, fwd.maxSeq - 1 - T)));

  const acceptance: SpeculativeChoice["acceptance"] = [];
  const draftMs: SpeculativeChoice["draftMs"] = [];
  const steps = SPEC_AUTO.timedSteps;
  for (const s of o.sparsities) {
    o.useSparsity(s);
    const stats = await runSpeculative(fwd, {
      promptIds: prompt,
      maxTokens: T,
      k: Math.min(SPEC_AUTO.measureK, maxK),
      sampling: o.sampling,
      eosIds: [],
      onTokens: () => true,
      signal: o.signal,
    });
    if (stats.aborted) {
      throw o.signal?.reason ?? new DOMException("the measurement was aborted", "AbortError");
    }
    // Laplace's rule: a few dozen tokens can be all accepted, and a = 1 would always pick the largest K
    acceptance.push({
      sparsity: s,
      acceptance: (stats.accepted + 1) / (stats.accepted + stats.rejections + 2),
    });
    fwd.writeState(prompt.length, prompt[0], 1);
    const pass = Array.from({ length: steps }, () => fwd.decodeStep(true, prompt.length)).flat();
    draftMs.push({ sparsity: s, ms: (await gpuMs(ctx, pass)) / steps });
  }
  fwd.writeState(prompt.length, prompt[0], 1);
  const denseMs =
    (await gpuMs(ctx, Array.from({ length: steps }, () => fwd.decodeStep(false, prompt.length)).flat())) /
    steps;
  // the verify pass reads every weight once whatever K is: time the ends of the range, interpolate between
  const logits = ctx.buffer((maxK + 1) * fwd.config.vocabSize * 4, "verify_logits");
  const ends: number[] = [];
  try {
    for (const k of maxK > 1 ? [1, maxK] : [1]) {
      const ops = fwd.prefill(k + 1, Math.min(prompt.length, fwd.maxSeq - k - 1), { allLogits: logits });
      ends.push(await gpuMs(ctx, ops));
      releaseOps(ops);
    }
  } finally {
    logits.destroy();
  }
  const verifyMs = Array.from(
    { length: maxK },
    (_, i) => maxK > 1 ? ends[0] + (ends[1] - ends[0]) * i / (maxK - 1) : ends[0],
  );
  const syncs: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t = performance.now();
    await ctx.read(ctx.scratch("read"), 4);
    syncs.push(performance.now() - t);
  }
  const syncMs = median(syncs);

  let best = { k: 1, s: o.sparsities[0], tps: -1, tpr: 1 };
  acceptance.forEach(({ sparsity: s, acceptance: a }, i) => {
    for (let k = 1; k <= maxK; k++) {
      const tpr = expectedTokensPerRound(a, k);
      const gpu = k * draftMs[i].ms + verifyMs[k - 1];
      const perBatch = Math.max(1, Math.min(SPEC_BATCH.maxRounds, Math.floor(SPEC_BATCH.targetMs / gpu)));
      const tps = tpr / ((gpu + syncMs / perBatch) / 1000);
      if (tps > best.tps) best = { k, s, tps, tpr };
    }
  });
  return {
    k: best.k,
    draftSparsity: best.s,
    acceptance,
    draftMs,
    verifyMs,
    syncMs,
    denseMs,
    expectedTokensPerRound: best.tpr,
    expectedTokensPerSecond: best.tps,
    expectedSpeedup: best.tps * denseMs / 1000,
    measureMs: performance.now() - t0,
  };
}
