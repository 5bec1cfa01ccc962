/**
 * Self-speculative greedy decoding: the same weights run TEAL-sparse to draft K tokens (GPU-resident decode
 * steps), then dense over those K tokens and the one before them in one multi-token pass (the prefill GEMM,
 * which reads each weight once for all K + 1 positions and rewrites their KV entries with dense values). The
 * longest prefix of drafts that the dense pass agrees with is accepted, plus the dense pass's own next token,
 * so the output is the dense model's greedy output. Drafted tokens stay on the GPU: one read-back per round.
 * @module
 */
import { copyOp, writeSamplerParams } from "../gpu/kernels.ts";
import { type Forward, releaseOps } from "../model/forward.ts";
import { argmax } from "./sampler.ts";
import { type DecodeStats, prefillPrompt, tokenLimit } from "./decode.ts";

/** One speculative generation. */
export interface SpeculativeJob {
  promptIds: number[];
  maxTokens: number;
  /** Draft tokens per round. */
  k: number;
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
  /** Drafts accepted over drafts made. */
  acceptanceRate: number;
  /** Tokens produced per dense verify pass. */
  tokensPerRound: number;
}

/**
 * Runs greedy self-speculative decoding. The thresholds for the sparse draft must already be written
 * (Model does it); prefill is dense.
 */
export async function runSpeculative(fwd: Forward, job: SpeculativeJob): Promise<SpeculativeStats> {
  const { ctx } = fwd;
  const M = job.promptIds.length;
  const limit = tokenLimit(fwd, M, job.maxTokens);
  if (!Number.isInteger(job.k) || job.k < 1 || job.k + 1 > fwd.maxPrefill) {
    throw new RangeError(`speculate must be an integer in [1, ${fwd.maxPrefill - 1}], got ${job.k}`);
  }
  const t0 = performance.now();
  const V = fwd.config.vocabSize;
  writeSamplerParams(
    ctx,
    fwd.samplerParams,
    V,
    fwd.maxSeq,
    { temperature: 0, topK: 0, topP: 1, seed: 0 },
    job.eosIds,
  );
  ctx.write(fwd.sparsity.counters, new Uint32Array(fwd.config.numLayers * 7));
  prefillPrompt(fwd, job.promptIds, false);

  const draft = fwd.decodeStep(true);
  const logits = ctx.buffer((job.k + 1) * V * 4, "verify_logits");
  let p = M; // position of the last accepted token, fed next
  let s = 0; // its index in the tokens buffer
  let produced = 0;
  let rounds = 0;
  let drafted = 0;
  let accepted = 0;
  let tFirst = 0;
  let tLast = 0;
  let aborted = false;
  try {
    while (produced < limit) {
      if (job.signal?.aborted) {
        aborted = true;
        break;
      }
      const k = Math.min(job.k, fwd.maxSeq - 1 - p, limit - produced);
      if (k < 0) break; // the context is full
      const enc = ctx.device.createCommandEncoder();
      // draft k tokens sparse, from (position p, token tokens[s])
      if (k > 0) ctx.encode(enc, Array.from({ length: k }, () => draft).flat());
      // verify: rows [tokens[s], d1..dk] at positions p..p+k, dense, every row's logits
      const copy = copyOp(ctx, fwd.tokens, fwd.ids, { n: k + 1, srcOffset: s });
      const verify = fwd.prefill(k + 1, p, { allLogits: logits });
      ctx.encode(enc, [copy, ...verify]);
      const staging = ctx.device.createBuffer({
        size: (k + 1) * 4 + (k + 1) * V * 4,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      enc.copyBufferToBuffer(fwd.tokens, s * 4, staging, 0, (k + 1) * 4);
      enc.copyBufferToBuffer(logits, 0, staging, (k + 1) * 4, (k + 1) * V * 4);
      ctx.device.queue.submit([enc.finish()]);
      releaseOps([copy, ...verify]);
      await staging.mapAsync(GPUMapMode.READ);
      const data = staging.getMappedRange();
      const toks = Array.from(new Uint32Array(data, 0, k + 1));
      const rowLogits = new Float32Array(data, (k + 1) * 4, (k + 1) * V).slice();
      staging.unmap();
      staging.destroy();
      rounds++;
      drafted += k;
      // accept the drafts the dense pass agrees with, then its own next token
      let n = 0;
      while (n < k && toks[n + 1] === argmax(rowLogits.subarray(n * V, (n + 1) * V))) n++;
      const next = argmax(rowLogits.subarray(n * V, (n + 1) * V));
      accepted += n;
      const out = [...(produced === 0 ? [toks[0]] : []), ...toks.slice(1, n + 1), next];
      const now = performance.now();
      if (tFirst === 0) tFirst = now;
      tLast = now;
      const room = limit - produced;
      const emit = out.slice(0, room);
      produced += emit.length;
      if (!job.onTokens(emit)) break;
      // continue from the dense token: its index and position follow the accepted drafts
      p += n + 1;
      s += n + 1;
      ctx.write(fwd.tokens, new Uint32Array([next]), s * 4);
      fwd.writeState(p, next, s + 1);
    }
  } finally {
    logits.destroy();
    ctx.checkAlive();
  }
  return {
    tokensRead: produced,
    ttftMs: tFirst - t0,
    decodeMs: tLast - tFirst,
    aborted,
    batches: [],
    rounds,
    acceptanceRate: drafted > 0 ? accepted / drafted : 0,
    tokensPerRound: rounds > 0 ? (accepted + rounds) / rounds : 0,
  };
}
