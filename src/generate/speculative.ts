/**
 * Self-speculative decoding: the same weights run TEAL-sparse to draft K tokens (GPU-resident decode steps,
 * sampled with the generation's own settings; each step's logits are kept), then dense over those K tokens and
 * the one before them in one multi-token pass (the prefill GEMM, which reads each weight once for all K + 1
 * positions and rewrites their KV entries with dense values). shaders/spec_accept.wgsl then applies the
 * speculative sampling rule on the GPU: greedy keeps the drafts the dense argmax agrees with, so the output
 * is the dense greedy output; sampling accepts draft x with probability min(1, p(x) / q(x)) and resamples
 * from norm(max(0, p - q)) at the first rejection, so the output follows the dense distribution. It also
 * writes the next round's decode state and the round's accepted count, and every op of a round reads its place
 * (token index, positions) from that state: rounds are queued back to back, a batch of them per read-back.
 * @module
 */
import type { Op } from "../gpu/context.ts";
import { copyOp, specAcceptOps, specGatherOp, writeSamplerParams } from "../gpu/kernels.ts";
import { type Forward, releaseOps } from "../model/forward.ts";
import { type SamplingOptions, specSeeds } from "./sampler.ts";
import { type DecodeStats, prefillPrompt, tokenLimit } from "./decode.ts";

/** One speculative generation. */
export interface SpeculativeJob {
  promptIds: number[];
  maxTokens: number;
  /** Draft tokens per round. */
  k: number;
  /** Sampling settings, applied identically to the draft (q) and the dense verify (p) distributions. */
  sampling: SamplingOptions;
  /** End-of-sequence ids (at most 4), flagged on the GPU during drafting. */
  eosIds: number[];
  /** Called with each round's accepted tokens; return false to stop. */
  onTokens: (ids: number[]) => boolean;
  /** Progress of a prompt longer than one prefill pass (as {@link prefillPrompt} reports it). */
  onPrefillProgress?: (done: number, total: number) => void;
  /** Stops the generation: between prefill passes, or before the next batch of rounds. */
  signal?: AbortSignal;
}

/** What a speculative run measured besides the decode statistics. */
export interface SpeculativeStats extends DecodeStats {
  /** Rounds (one dense verify pass each). */
  rounds: number;
  /** Drafts made. */
  drafted: number;
  /** Drafts accepted. */
  accepted: number;
  /** Rounds that ended in a rejected draft. */
  rejections: number;
  /** Drafts accepted over drafts made. */
  acceptanceRate: number;
  /**
   * Estimated probability that a draft is accepted once its predecessors were: accepted / (accepted +
   * rejections), the per-token acceptance `a` of the expected tokens per round (1 - a^(K+1)) / (1 - a).
   */
  perTokenAcceptance: number;
  /** Tokens produced per dense verify pass. */
  tokensPerRound: number;
}

/** Tunables of the round batches: rounds are queued back to back and read back together. */
export const SPEC_BATCH = {
  /** Most rounds per read-back. */
  maxRounds: 32,
  /** Aim for batches of about this much time (as the decode loop): the read-back gap is paid per batch. */
  targetMs: 120,
} as const;

/** Largest draft length a forward pass can verify (K + 1 rows in one prefill pass). */
export function maxDraft(fwd: Forward): number {
  return fwd.maxPrefill - 1;
}

/**
 * Runs self-speculative decoding. The thresholds for the sparse draft must already be written (Model does
 * it); prefill is dense.
 */
export async function runSpeculative(fwd: Forward, job: SpeculativeJob): Promise<SpeculativeStats> {
  const { ctx } = fwd;
  const M = job.promptIds.length;
  const limit = tokenLimit(fwd, M, job.maxTokens);
  if (!Number.isInteger(job.k) || job.k < 1 || job.k > maxDraft(fwd)) {
    throw new RangeError(`speculate must be an integer in [1, ${maxDraft(fwd)}], got ${job.k}`);
  }
  const t0 = performance.now();
  const V = fwd.config.vocabSize;
  const K = job.k;
  const abortedStats: SpeculativeStats = {
    tokensRead: 0,
    ttftMs: 0,
    decodeMs: 0,
    aborted: true,
    batches: [],
    rounds: 0,
    drafted: 0,
    accepted: 0,
    rejections: 0,
    acceptanceRate: 0,
    perTokenAcceptance: 0,
    tokensPerRound: 0,
  };
  // aborted while queued: nothing runs
  if (job.signal?.aborted) return abortedStats;
  writeSamplerParams(ctx, fwd.samplerParams, V, fwd.maxSeq, job.sampling, job.eosIds);
  ctx.write(fwd.sparsity.counters, new Uint32Array(fwd.config.numLayers * 7));
  // token 0 (dense), state (M, token 0, 1)
  const prefilled = await prefillPrompt(fwd, job.promptIds, false, {
    signal: job.signal,
    onProgress: job.onPrefillProgress,
  });
  if (!prefilled) return abortedStats;

  const qLogits = ctx.buffer(K * V * 4, "draft_logits"); // f32 [K][vocab]: logits of each draft step
  const pLogits = ctx.buffer((K + 1) * V * 4, "verify_logits"); // f32 [K + 1][vocab]: dense rows
  const stats = ctx.buffer((2 * K + 1) * 16, "spec_stats"); // u32 [2K + 1][4]
  const log = ctx.buffer((1 + fwd.maxSeq) * 4, "spec_log"); // u32: rounds, then accepted drafts per round
  const keep = Array.from(
    { length: K },
    (_, i) => copyOp(ctx, fwd.logits, qLogits, { n: V, dstOffset: i * V }),
  );
  const seeds = specSeeds(job.sampling.seed);
  // one round's ops for k drafts, reading their place from the decode state: built once per k and draft
  // variant (the attention variant goes by position), queued many times
  const built = new Map<string, Op[]>();
  const verifyOps = new Map<number, Op[]>(); // the verify pass does not depend on the draft's variant
  const owned: Op[] = []; // ops made here (the draft steps are the forward pass's own, reused)
  const buildVerify = (k: number): Op[] => {
    let verify = verifyOps.get(k);
    if (verify) return verify;
    verify = [
      specGatherOp(ctx, fwd.tokens, fwd.state, fwd.ids, { k, capacity: fwd.maxSeq }),
      ...fwd.prefill(k + 1, k, { allLogits: pLogits, fromState: true }),
      ...specAcceptOps(ctx, qLogits, pLogits, stats, fwd.tokens, fwd.state, log, {
        vocab: V,
        k,
        capacity: fwd.maxSeq,
        logCapacity: 1 + fwd.maxSeq,
        ...job.sampling,
        seedAccept: seeds.accept,
        seedResidual: seeds.residual,
      }),
    ];
    owned.push(...verify);
    verifyOps.set(k, verify);
    return verify;
  };
  const roundOps = (k: number, pos: number): Op[] => {
    const key = `${k}/${fwd.attentionVariant(pos)}`;
    let ops = built.get(key);
    if (ops) return ops;
    const verify = buildVerify(k);
    const draft = fwd.decodeStep(true, pos);
    ops = [...Array.from({ length: k }, (_, i) => [...draft, keep[i]]).flat(), ...verify];
    built.set(key, ops);
    return ops;
  };
  let p = M; // position of the token fed to the next round
  let s = 0; // its index in the tokens buffer
  let produced = 0;
  let run = 0; // rounds run so far (= entries in the log)
  let batchRounds = 1;
  let rounds = 0;
  let drafted = 0;
  let accepted = 0;
  let rejections = 0;
  let tFirst = 0;
  let tLast = 0;
  let aborted = false;
  try {
    while (produced < limit) {
      if (job.signal?.aborted) {
        aborted = true;
        break;
      }
      // rounds of K drafts that surely fit in the context (each advances at most K + 1 positions), queued
      // back to back with one read-back; near the context's end, one round of what is left
      const fit = Math.floor((fwd.maxSeq - 1 - K - p) / (K + 1)) + 1;
      let k = K;
      let R = Math.min(batchRounds, fit, limit - produced);
      if (fit < 1) {
        k = Math.min(K, fwd.maxSeq - 1 - p);
        R = 1;
        if (k < 0) break; // the context is full
      }
      const ops = roundOps(k, p);
      const enc = ctx.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      for (let r = 0; r < R; r++) {
        for (const op of ops) {
          pass.setPipeline(op.pipeline);
          pass.setBindGroup(0, op.bindGroup);
          pass.dispatchWorkgroups(op.workgroups[0], op.workgroups[1], op.workgroups[2]);
        }
      }
      pass.end();
      const span = Math.min(fwd.maxSeq - s, R * (k + 1) + 1); // tokens [s, s + span) hold the batch's
      const staging = ctx.device.createBuffer({
        size: (span + 4 + R) * 4,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      enc.copyBufferToBuffer(fwd.tokens, s * 4, staging, 0, span * 4);
      enc.copyBufferToBuffer(fwd.state, 0, staging, span * 4, 16);
      enc.copyBufferToBuffer(log, (1 + run) * 4, staging, (span + 4) * 4, R * 4);
      const tSubmit = performance.now();
      ctx.device.queue.submit([enc.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const words = new Uint32Array(staging.getMappedRange().slice(0));
      staging.unmap();
      staging.destroy();
      const now = performance.now();
      run += R;
      const roundMs = (now - tSubmit) / R;
      batchRounds = Math.min(
        SPEC_BATCH.maxRounds,
        2 * batchRounds,
        Math.max(1, Math.floor(SPEC_BATCH.targetMs / roundMs)),
      );
      const next = words[span + 2] - 1; // index of the token the next round feeds (the last decided one)
      const ns = Array.from(words.subarray(span + 4, span + 4 + R));
      if (!(next > s && next - s <= R * (k + 1) && ns.every((n) => n <= k))) {
        throw new Error(`speculative rounds left a bad decode state (${words.subarray(span, span + 4)})`);
      }
      // the accepted drafts and decided tokens of the batch's rounds, in order
      const out = [...(produced === 0 ? [words[0]] : []), ...words.subarray(1, next - s + 1)];
      if (tFirst === 0) tFirst = now;
      tLast = now;
      const emit = out.slice(0, limit - produced);
      // statistics over the rounds whose tokens are handed on
      let given = produced === 0 ? 1 : 0;
      for (const n of ns) {
        if (given >= emit.length) break;
        rounds++;
        drafted += k;
        accepted += n;
        if (n < k) rejections++;
        given += n + 1;
      }
      produced += emit.length;
      p += next - s;
      s = next;
      if (!job.onTokens(emit)) break;
    }
  } finally {
    releaseOps(owned);
    releaseOps(keep);
    qLogits.destroy();
    pLogits.destroy();
    stats.destroy();
    log.destroy();
    ctx.checkAlive();
  }
  return {
    tokensRead: produced,
    ttftMs: tFirst - t0,
    decodeMs: tLast - tFirst,
    aborted,
    batches: [],
    rounds,
    drafted,
    accepted,
    rejections,
    acceptanceRate: drafted > 0 ? accepted / drafted : 0,
    perTokenAcceptance: accepted + rejections > 0 ? accepted / (accepted + rejections) : 0,
    tokensPerRound: rounds > 0 ? (accepted + rounds) / rounds : 0,
  };
}
