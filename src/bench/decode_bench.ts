/**
 * Decode benchmark: tokens/s of the real decode loop, GPU time per token from timestamp queries, per-kernel
 * GPU time, bandwidth achieved against the weight bytes each token must read, and host overhead.
 * @module
 */
import type { Op } from "../gpu/context.ts";
import type { Model } from "../model/model.ts";
import { releaseOps } from "../model/forward.ts";
import { SLOTS } from "../model/weights.ts";
import { bytesPerWeight } from "../gpu/quant.ts";
import { fillOp } from "../gpu/kernels.ts";
import { calibrate, projectionParams } from "../teal/calibrate.ts";
import { median } from "./stats.ts";

/** One benchmark row. */
export interface DecodeBenchRow {
  sparsity: number;
  /** Realised sparsity during the timed decode (parameter-weighted), null for dense. */
  realized: number | null;
  /** Generated tokens. */
  tokens: number;
  /** Decode tokens/s through the real decode loop (streaming read-backs included). */
  tokensPerSecond: number;
  /** GPU time of one decode step, from timestamps around a pass of many steps (median of repeats). */
  gpuMsPerToken: number;
  /** Weight bytes one decode step must read (active columns only when sparse). */
  bytesPerToken: number;
  /** bytesPerToken over gpuMsPerToken. */
  gbPerS: number;
  /** Share of wall time per token not covered by GPU work. */
  hostOverhead: number;
  /** Realised sparsity per projection (q, k, v, o, gate, up, down), averaged over layers; null for dense. */
  realizedByProjection: number[] | null;
  /** GPU time per token by kernel label (profile run: one pass per dispatch), ms. */
  kernels: Record<string, number>;
  /** Decode steps at the positions of {@link DecodeBenchOptions.contexts}. */
  atContext: ContextBenchRow[];
}

/** A decode step at one position of a long context. */
export interface ContextBenchRow {
  /** Position of the step: the keys it attends to. */
  position: number;
  /** GPU time of one decode step at that position (timestamps around a pass of many steps, median). */
  gpuMsPerToken: number;
  /** The attention's dispatches (attention and its combine pass) in the profile run, ms a step. */
  attentionMs: number;
}

/** Options of {@link benchDecode}. */
export interface DecodeBenchOptions {
  sparsities: number[];
  tokens: number;
  /** Prompt length (default 16). */
  promptTokens?: number;
  /** Milliseconds of decoding per read-back batch (the generation option streamIntervalMs). */
  streamIntervalMs?: number;
  /** Sampling of the timed generations (default greedy: temperature 0). */
  sampling?: { temperature: number; topK: number; topP: number };
  /**
   * Also time decode steps at these positions (each below the model's context length). The KV cache before a
   * position holds random values (fill.wgsl), not a real context's: the attention's cost does not depend on
   * them, but a sparse step's active channels may differ from a real context's.
   */
  contexts?: number[];
  /** Print progress lines to stderr. */
  log?: (line: string) => void;
}

/** Time to first token at one prompt length. */
export interface TtftRow {
  promptTokens: number;
  /** Wall time from the call to the first token on the host (prefill, sampling, one read-back), ms: median of 3. */
  ms: number;
  /**
   * Where a single prefill pass of this many rows spends its time (whichever path the prompt itself takes:
   * short prompts go through decode steps), when it fits one pass and the adapter has timestamps: host time
   * to build its ops, GPU time of the pass, and GPU time by kernel label (one pass per op, so each op also
   * carries a pass's fixed cost).
   */
  prefillPass?: { hostBuildMs: number; gpuMs: number; kernelsMs: Record<string, number> };
}

/** Time to first token at each prompt length (random ids, greedy, one token), after a warm-up at each. */
export async function benchTtft(model: Model, lengths: number[]): Promise<TtftRow[]> {
  const rows: TtftRow[] = [];
  for (const n of lengths) {
    const ids = randomIds(n, model.config.vocabSize, 11);
    const gen = { temperature: 0, maxTokens: 1, stopAtEos: false };
    await model.complete(ids, gen);
    const ms: number[] = [];
    for (let r = 0; r < 3; r++) ms.push((await model.complete(ids, gen)).timeToFirstTokenMs);
    rows.push({ promptTokens: n, ms: median(ms), prefillPass: await prefillPassTimes(model, n) });
  }
  return rows;
}

/** {@link TtftRow.prefillPass} for a pass of n rows (medians of 3 builds and passes); undefined if none. */
async function prefillPassTimes(model: Model, n: number): Promise<TtftRow["prefillPass"]> {
  const f = model.forward;
  const gpu = model.gpu;
  if (!gpu.hasTimestamps || n > f.maxPrefill) return undefined;
  const host: number[] = [];
  const total: number[] = [];
  let ops: Op[] = [];
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    ops = f.prefill(n, 0, { sparse: false, sample: true });
    host.push(performance.now() - t0);
    total.push((await gpu.timePasses([ops]))[0]);
    if (r < 2) releaseOps(ops);
  }
  const each = await gpu.timePasses(ops.map((op) => [op]));
  releaseOps(ops);
  const kernelsMs: Record<string, number> = {};
  ops.forEach((op, i) => {
    const k = op.label ?? "?";
    kernelsMs[k] = Number(((kernelsMs[k] ?? 0) + each[i]).toFixed(4));
  });
  return { hostBuildMs: Number(median(host).toFixed(2)), gpuMs: Number(median(total).toFixed(3)), kernelsMs };
}

function randomIds(n: number, vocab: number, seed: number): number[] {
  let a = seed >>> 0;
  return Array.from({ length: n }, () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return a % vocab;
  });
}

/** Fills every layer's KV cache with random f16 values in [-1, 1) (the keys a long-context step attends to). */
function fillCaches(model: Model): void {
  const f = model.forward;
  const ops: Op[] = [];
  for (const b of [...f.kcache, ...f.vcache]) {
    ops.push(fillOp(model.gpu, b, { words: b.size / 4, mode: "random", seed: ops.length + 1, scale: 1 }));
  }
  model.gpu.run(ops);
  releaseOps(ops);
}

/**
 * Bytes of weights one decode step reads: every matrix in full when dense; with sparsity, each projection's
 * kept fraction of its rows (perTensor from the GPU counters); lm_head in full; one embedding row (f16).
 * Quantized formats count codes and group scales.
 */
export function weightBytesPerToken(model: Model, perTensor: number[][] | null): number {
  const c = model.config;
  const params = projectionParams(model);
  const group = model.forward.weights.layers[0]?.qkv.group ?? 0;
  const b = bytesPerWeight(model.weightFormat, group);
  let bytes = 0;
  for (let l = 0; l < c.numLayers; l++) {
    for (let s = 0; s < SLOTS; s++) bytes += b * params[s] * (perTensor ? 1 - perTensor[l][s] : 1);
  }
  return bytes + b * c.vocabSize * c.hiddenSize + 2 * c.hiddenSize;
}

/** Runs the decode benchmark on a model (random or real) at each sparsity. */
export async function benchDecode(model: Model, o: DecodeBenchOptions): Promise<DecodeBenchRow[]> {
  const log = o.log ?? (() => {});
  const c = model.config;
  const f = model.forward;
  const gpu = model.gpu;
  const prompt = randomIds(o.promptTokens ?? 16, c.vocabSize, 7);
  if (o.sparsities.some((s) => s > 0) && model.sparsityLevels.length === 0) {
    // thresholds from the model's own activations: uniform quantiles over a few random-token windows
    const ctx = Math.min(64, f.maxPrefill - 1);
    const wins = Array.from({ length: 8 }, (_, i) => randomIds(ctx + 1, c.vocabSize, 100 + i));
    log(`calibrating thresholds on ${wins.length * ctx} tokens of the model's own activations`);
    model.attachProfile(
      await calibrate(model, wins, { tokens: wins.length * ctx, ctx, allocation: "uniform" }),
    );
  }
  const rows: DecodeBenchRow[] = [];
  let filled = false; // the KV cache past the generations holds random values (contexts)
  for (const s of o.sparsities) {
    const gen = {
      maxTokens: o.tokens,
      temperature: 0,
      ...o.sampling,
      stopAtEos: false,
      sparsity: s,
      streamIntervalMs: o.streamIntervalMs,
    };
    await model.complete(prompt, { ...gen, maxTokens: Math.min(16, o.tokens) }); // warm-up: pipelines, caches
    const timed = [];
    for (let r = 0; r < 3; r++) timed.push(await model.complete(prompt, gen));
    const best = timed.reduce((a, b) => (b.tokensPerSecond > a.tokensPerSecond ? b : a));
    const realized = best.realizedSparsity;
    if (Deno.env.get("TEALGPU_TRACE")) {
      for (const b of model.lastBatches) {
        log(
          `  batch [${b.a}, ${b.b}) submitted ${b.submitMs.toFixed(1)} ms (took ${
            b.submitCostMs.toFixed(2)
          } ms), read ${b.resolveMs.toFixed(1)} ms`,
        );
      }
    }
    const perTensor = s > 0 ? model.lastSparsity?.perTensor ?? null : null;

    // GPU time per step: many steps in one pass over the middle of the generation's positions (attention
    // grows with the position), on the KV cache the last generation left
    const steps = 32;
    const pos0 = prompt.length + Math.max(0, Math.floor(o.tokens / 2) - steps / 2);
    const step = f.decodeStep(s > 0, pos0);
    f.writeState(pos0, prompt[0], 1);
    const passes: Op[][] = [];
    for (let r = 0; r < 5; r++) passes.push(Array.from({ length: steps }, () => step).flat());
    const times: number[] = [];
    for (const p of passes) {
      f.writeState(pos0, prompt[0], 1);
      times.push((await gpu.timePasses([p]))[0]);
    }
    const gpuMs = median(times) / steps;

    // per-kernel profile: one pass per dispatch, three repeats, median per dispatch, summed by label
    f.writeState(pos0, prompt[0], 1);
    const perOp: number[][] = step.map(() => []);
    for (let r = 0; r < 3; r++) {
      const t = await gpu.timePasses(step.map((op) => [op]));
      t.forEach((v, i) => perOp[i].push(v));
    }
    const kernels: Record<string, number> = {};
    step.forEach((op, i) => (kernels[op.label] = (kernels[op.label] ?? 0) + median(perOp[i])));
    for (const k in kernels) kernels[k] = Number(kernels[k].toFixed(4));

    const atContext: ContextBenchRow[] = [];
    for (const position of o.contexts ?? []) {
      if (!(Number.isInteger(position) && position >= 1 && position < f.maxSeq)) {
        throw new RangeError(
          `context position ${position} is not in 1..${f.maxSeq - 1} (the context length)`,
        );
      }
      if (!filled) fillCaches(model);
      filled = true;
      const at = f.decodeStep(s > 0, position);
      const ts: number[] = [];
      for (let r = 0; r < 5; r++) {
        f.writeState(position, prompt[0], 1);
        ts.push((await gpu.timePasses([Array.from({ length: steps }, () => at).flat()]))[0]);
      }
      const attn = at.flatMap((op, i) => (op.label.startsWith("attention") ? [i] : []));
      const perAttn: number[][] = attn.map(() => []);
      for (let r = 0; r < 3; r++) {
        f.writeState(position, prompt[0], 1);
        const t = await gpu.timePasses(attn.map((i) => [at[i]]));
        t.forEach((v, j) => perAttn[j].push(v));
      }
      const row = {
        position,
        gpuMsPerToken: Number((median(ts) / steps).toFixed(4)),
        attentionMs: Number(perAttn.reduce((a, t) => a + median(t), 0).toFixed(4)),
      };
      atContext.push(row);
      log(
        `  at position ${position}: GPU ${row.gpuMsPerToken.toFixed(3)} ms/token ` +
          `(${(1000 / row.gpuMsPerToken).toFixed(1)} tokens/s of GPU time), attention ${
            row.attentionMs.toFixed(3)
          } ms`,
      );
    }

    const bytes = weightBytesPerToken(model, perTensor);
    const byProj = perTensor
      ? Array.from({ length: SLOTS }, (_, j) => perTensor.reduce((a, l) => a + l[j], 0) / perTensor.length)
      : null;
    const wallMs = 1000 / best.tokensPerSecond;
    rows.push({
      sparsity: s,
      realized,
      realizedByProjection: byProj,
      tokens: best.ids.length,
      tokensPerSecond: best.tokensPerSecond,
      gpuMsPerToken: gpuMs,
      bytesPerToken: bytes,
      gbPerS: bytes / (gpuMs / 1000) / 1e9,
      hostOverhead: Math.max(0, 1 - gpuMs / wallMs),
      kernels,
      atContext,
    });
    log(
      `sparsity ${s}: ${best.tokensPerSecond.toFixed(1)} tokens/s, GPU ${gpuMs.toFixed(3)} ms/token, ` +
        `${(bytes / (gpuMs / 1000) / 1e9).toFixed(0)} GB/s` +
        (realized !== null ? `, realised ${realized.toFixed(3)}` : ""),
    );
  }
  return rows;
}

/** Costs of self-speculative decoding at one draft length, and the speed-up they imply. */
export interface SpeculativeBenchRow {
  /** Draft tokens per round. */
  k: number;
  /** Draft sparsity. */
  draftSparsity: number;
  /** GPU ms of one dense multi-token verify pass over k + 1 positions (timestamp queries, median of 5). */
  verifyMs: number;
  /** GPU ms of one sparse draft step, and of one dense decode step (from the decode rows). */
  draftMs: number;
  denseMs: number;
  /** Acceptance rate the estimate assumes (per draft token, independent). */
  acceptance: number;
  /** Expected tokens per round: (1 - a^(k+1)) / (1 - a). */
  tokensPerRound: number;
  /** Estimated speed-up over dense decoding: tokensPerRound * denseMs / (k * draftMs + verifyMs). */
  speedup: number;
}

/**
 * Times the dense verify pass for draft length k (prefill of k + 1 rows at a mid-context position) and turns
 * it, with the measured dense and draft step times and an acceptance rate measured elsewhere (a real model:
 * random weights accept almost nothing), into the expected speed-up of self-speculative decoding. Rounds are
 * queued in batches, one read-back each (as decode steps are), so GPU time is what the estimate compares;
 * the acceptance kernels (small) are not included.
 */
export async function benchSpeculative(
  model: Model,
  o: { k: number; draftSparsity: number; acceptance: number; denseMs: number; draftMs: number },
): Promise<SpeculativeBenchRow> {
  const f = model.forward;
  const rows = o.k + 1;
  const ids = randomIds(rows, model.config.vocabSize, 11);
  model.gpu.write(f.ids, new Uint32Array(ids));
  const logits = model.gpu.buffer(rows * model.config.vocabSize * 4, "verify_logits");
  const ops = f.prefill(rows, Math.min(64, f.maxSeq - rows), { allLogits: logits });
  const times: number[] = [];
  for (let r = 0; r < 5; r++) times.push((await model.gpu.timePasses([ops]))[0]);
  releaseOps(ops);
  logits.destroy();
  const verifyMs = median(times);
  const a = o.acceptance;
  const tokensPerRound = a >= 1 ? o.k + 1 : (1 - a ** (o.k + 1)) / (1 - a);
  return {
    k: o.k,
    draftSparsity: o.draftSparsity,
    verifyMs,
    draftMs: o.draftMs,
    denseMs: o.denseMs,
    acceptance: a,
    tokensPerRound,
    speedup: (tokensPerRound * o.denseMs) / (o.k * o.draftMs + verifyMs),
  };
}

/** Acceptance measured by running self-speculative decoding on a real model. */
export interface MeasuredAcceptance {
  /** Model the acceptance was measured on (folder name). */
  model: string;
  /** Draft tokens per round. */
  k: number;
  /** Draft sparsity. */
  draftSparsity: number;
  /** Sampling temperature (0: greedy). */
  temperature: number;
  /** Tokens generated. */
  tokens: number;
  /** Per-token acceptance: accepted / (accepted + rejections), the `a` of the estimate. */
  perTokenAcceptance: number;
  /** Drafts accepted over drafts made. */
  acceptanceRate: number;
  /** Tokens per dense verify pass. */
  tokensPerRound: number;
  /** Speculative decode tokens/s on that model, on this device. */
  tokensPerSecond: number;
  /** Dense decode tokens/s on that model (same prompt and length). */
  denseTokensPerSecond: number;
}

/**
 * Runs speculative generation (K drafts at `draftSparsity`, seeded) on a model with a TEAL profile and
 * reports its acceptance. The prompt is a fixed sentence (BOS alone for a model without a tokenizer).
 */
export async function measureAcceptance(
  model: Model,
  o: { k: number; draftSparsity: number; temperature: number; tokens: number },
): Promise<MeasuredAcceptance> {
  const prompt = model.hasTokenizer
    ? model.encode("The jury said that the city")
    : [model.config.bosTokenId ?? 1];
  const gen = { maxTokens: o.tokens, temperature: o.temperature, seed: 1, stopAtEos: false };
  await model.complete(prompt, { ...gen, maxTokens: 4, speculate: o.k, draftSparsity: o.draftSparsity }); // warm-up
  const r = await model.complete(prompt, { ...gen, speculate: o.k, draftSparsity: o.draftSparsity });
  const dense = await model.complete(prompt, gen);
  const sp = r.speculation!;
  return {
    model: model.id,
    k: o.k,
    draftSparsity: o.draftSparsity,
    temperature: o.temperature,
    tokens: r.ids.length,
    perTokenAcceptance: sp.perTokenAcceptance,
    acceptanceRate: sp.acceptanceRate,
    tokensPerRound: sp.tokensPerRound,
    tokensPerSecond: r.tokensPerSecond,
    denseTokensPerSecond: dense.tokensPerSecond,
  };
}
