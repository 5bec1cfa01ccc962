/**
 * Perplexity evaluation, dense and TEAL-sparse. Protocol: non-overlapping windows of `ctx` tokens of the text,
 * each prefixed with BOS; every text token of the window is scored (predicted from BOS and its prefix).
 * Sparse rows apply the thresholds at every position, as decoding would, and realised sparsity is counted on
 * the GPU.
 * @module
 */
import type { Model } from "../model/model.ts";
import { windows } from "./calibrate.ts";

/** One row of an evaluation. */
export interface EvalResult {
  /** Target sparsity (0 = dense). */
  sparsity: number;
  /** Perplexity over every scored token. */
  ppl: number;
  /** Tokens scored. */
  tokens: number;
  /** Realised (parameter-weighted) sparsity counted on the GPU; 0 for dense. */
  realized: number;
}

/** Options of {@link evaluatePerplexity}. */
export interface EvalOptions {
  /** Text tokens per window, each window prefixed with BOS (default 512). */
  ctx?: number;
  /** Windows to score (default 8). */
  windows?: number;
  /** Sparsity targets (default [0]). */
  sparsities?: number[];
  /** Progress: rows done of total. */
  onProgress?: (done: number, total: number) => void;
}

/** Negative log-likelihood (natural log) of ids[1..] given the logits of rows [0, n-1). */
export function windowNll(logits: Float32Array, ids: number[], vocab: number): number {
  let nll = 0;
  for (let r = 0; r + 1 < ids.length; r++) {
    const row = logits.subarray(r * vocab, (r + 1) * vocab);
    let max = -Infinity;
    for (let i = 0; i < vocab; i++) if (row[i] > max) max = row[i];
    let sum = 0;
    for (let i = 0; i < vocab; i++) sum += Math.exp(row[i] - max);
    nll += Math.log(sum) + max - row[ids[r + 1]];
  }
  return nll;
}

/** Scores the text at each sparsity. */
export async function evaluatePerplexity(
  model: Model,
  text: string,
  o: EvalOptions = {},
): Promise<EvalResult[]> {
  const ctx = o.ctx ?? 512;
  const n = o.windows ?? 8;
  const bos = model.tokenizer?.bosTokenId ?? model.config.bosTokenId;
  if (bos === null || bos === undefined) {
    throw new Error("the model has no BOS token id (config bos_token_id)");
  }
  const ids = model.encode(text, false);
  const wins = windows(ids, ctx, bos, n);
  if (wins.length < n) {
    throw new RangeError(
      `the text has ${ids.length} tokens: only ${wins.length} windows of ${ctx} (asked for ${n})`,
    );
  }
  const levels = o.sparsities ?? [0];
  const results: EvalResult[] = [];
  let done = 0;
  for (const s of levels) {
    let nll = 0;
    let scored = 0;
    let realized = 0;
    for (const w of wins) {
      const logits = await model.logits(w, { sparsity: s });
      nll += windowNll(logits, w, model.config.vocabSize);
      scored += w.length - 1;
      if (s > 0) realized += (model.lastSparsity?.overall ?? 0) / wins.length;
      o.onProgress?.(++done, levels.length * wins.length);
    }
    results.push({ sparsity: s, ppl: Math.exp(nll / scored), tokens: scored, realized });
  }
  return results;
}
