/**
 * JSON shapes of generation reports shared by `generate --json` and the server (snake_case fields).
 * @module
 */
import type { SpeculationReport } from "./types.ts";

/** The `speculation` field of `generate --json` and of the server's responses (snake_case). */
export function speculationJson(s: SpeculationReport): Record<string, unknown> {
  const r4 = (x: number) => Number(x.toFixed(4));
  return {
    k: s.k,
    draft_sparsity: s.draftSparsity,
    acceptance_rate: r4(s.acceptanceRate),
    per_token_acceptance: r4(s.perTokenAcceptance),
    tokens_per_verify: r4(s.tokensPerRound),
    rounds: s.rounds,
    auto: s.choice
      ? {
        acceptance: s.choice.acceptance.map((a) => ({
          draft_sparsity: a.sparsity,
          acceptance: r4(a.acceptance),
        })),
        draft_ms: s.choice.draftMs.map((d) => ({ draft_sparsity: d.sparsity, ms: r4(d.ms) })),
        verify_ms: s.choice.verifyMs.map(r4),
        sync_ms: r4(s.choice.syncMs),
        dense_ms: r4(s.choice.denseMs),
        expected_tokens_per_verify: r4(s.choice.expectedTokensPerRound),
        expected_tokens_per_s: Number(s.choice.expectedTokensPerSecond.toFixed(2)),
        expected_speedup: r4(s.choice.expectedSpeedup),
        measure_ms: Number(s.choice.measureMs.toFixed(1)),
      }
      : null,
  };
}
