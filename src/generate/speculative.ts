/**
 * Self-speculative decoding: the same weights run TEAL-sparse to draft K tokens (GPU-resident decode steps,
 * sampled with the generation's own settings; each step's logits are kept), then dense over those K tokens and
 * the one before them in one multi-token pass (the prefill GEMM, which reads each weight once for all K + 1
 * positions and rewrites their KV entries with dense values). shaders/spec_accept.wgsl then applies the
 * speculative sampling rule on the GPU: greedy keeps the drafts the dense argmax agrees with, so the output
 * is the dense greedy output; sampling accepts draft x with probability min(1, p(x) / q(x)) and resamples
 * from norm(max(0, p - q)) at the first rejection, so the output follows the dense distribution. It also
 * writes the next round's decode state: one read-back per round (the round's tokens and the state).
 * @module
 */
import { copyOp, specAcceptOps, writeSamplerParams } from "../gpu/kernels.ts";
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
  writeSamplerParams(ctx, fwd.samplerParams, V, fwd.maxSeq, job.sampling, job.eosIds);
  ctx.write(fwd.sparsity.counters, new Uint32Array(fwd.config.numLayers * 7));
  prefillPrompt(fwd, job.promptIds, false);

  const draft = fwd.decodeStep(true);
  const qLogits = ctx.buffer(K * V * 4, "draft_logits"); // f32 [K][vocab]: logits of each draft step
  const pLogits = ctx.buffer((K + 1) * V * 4, "verify_logits"); // f32 [K + 1][vocab]: dense rows
  const stats = ctx.buffer((2 * K + 1) * 16, "spec_stats"); // u32 [2K + 1][4]
  const keep = Array.from(
    { length: K },
    (_, i) => copyOp(ctx, fwd.logits, qLogits, { n: V, dstOffset: i * V }),
  );
  const seeds = specSeeds(job.sampling.seed);
  let p = M; // position of the last decided token, fed next
  let s = 0; // its index in the tokens buffer
  let produced = 0;
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
      const k = Math.min(K, fwd.maxSeq - 1 - p, limit - produced);
      if (k < 0) break; // the context is full
      const enc = ctx.device.createCommandEncoder();
      // draft k tokens sparse, from (position p, token tokens[s]), keeping each step's logits
      if (k > 0) ctx.encode(enc, Array.from({ length: k }, (_, i) => [...draft, keep[i]]).flat());
      // verify: rows [tokens[s], d1..dk] at positions p..p+k, dense, every row's logits; then the decision
      const copy = copyOp(ctx, fwd.tokens, fwd.ids, { n: k + 1, srcOffset: s });
      const verify = fwd.prefill(k + 1, p, { allLogits: pLogits });
      const decide = specAcceptOps(ctx, qLogits, pLogits, stats, fwd.tokens, fwd.state, {
        vocab: V,
        k,
        step0: s,
        pos: p,
        capacity: fwd.maxSeq,
        ...job.sampling,
        seedAccept: seeds.accept,
        seedResidual: seeds.residual,
      });
      ctx.encode(enc, [copy, ...verify, ...decide]);
      const staging = ctx.device.createBuffer({
        size: (k + 2) * 4 + 16,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      enc.copyBufferToBuffer(fwd.tokens, s * 4, staging, 0, (k + 2) * 4);
      enc.copyBufferToBuffer(fwd.state, 0, staging, (k + 2) * 4, 16);
      ctx.device.queue.submit([enc.finish()]);
      releaseOps([copy, ...verify, ...decide]);
      await staging.mapAsync(GPUMapMode.READ);
      const words = new Uint32Array(staging.getMappedRange().slice(0));
      staging.unmap();
      staging.destroy();
      const toks = Array.from(words.subarray(0, k + 2));
      const n = words[k + 2 + 2] - s - 2; // the kernel's next step is s + n + 2
      if (!(n >= 0 && n <= k)) {
        throw new Error(`speculative round: bad decode state ${words.subarray(k + 2)}`);
      }
      rounds++;
      drafted += k;
      accepted += n;
      if (n < k) rejections++;
      // the accepted drafts, then the decided token (the kernel wrote it after them)
      const out = [...(produced === 0 ? [toks[0]] : []), ...toks.slice(1, n + 2)];
      const now = performance.now();
      if (tFirst === 0) tFirst = now;
      tLast = now;
      const emit = out.slice(0, limit - produced);
      produced += emit.length;
      if (!job.onTokens(emit)) break;
      // the kernel left the state at (p + n + 1, decided token, s + n + 2)
      p += n + 1;
      s += n + 1;
    }
  } finally {
    qLogits.destroy();
    pLogits.destroy();
    stats.destroy();
    releaseOps(keep);
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
