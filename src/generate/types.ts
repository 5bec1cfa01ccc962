/**
 * Types shared by the decode loop, the public API and the server.
 * @module
 */
import type { SpeculativeChoice } from "./speculative_auto.ts";

/** Options for one generation request. */
export interface GenerateOptions {
  /** Most new tokens to generate (default 128). */
  maxTokens?: number;
  /** Sampling temperature; 0 is greedy (default 0.8). */
  temperature?: number;
  /** Keep only the K most likely tokens; 0 disables (default 0). */
  topK?: number;
  /** Nucleus sampling mass in (0, 1]; 1 disables (default 1). */
  topP?: number;
  /** Seed of the sampler's counter-based random numbers (default 0). */
  seed?: number;
  /** Stop generating when the decoded text contains one of these; the stop string is not returned. */
  stop?: string[];
  /** Stop at the model's end-of-sequence tokens (default true). */
  stopAtEos?: boolean;
  /** TEAL model-wide activation sparsity target in [0, 1); 0 runs the dense path (default 0). */
  sparsity?: number;
  /** Apply TEAL sparsity during prefill too (default false: prefill stays dense). */
  sparsePrefill?: boolean;
  /** Add the tokenizer's BOS token in front of a text prompt (default true). Ignored for token-id prompts. */
  addBos?: boolean;
  /**
   * Self-speculative decoding (needs a TEAL profile): draft this many tokens TEAL-sparse, verify them in one
   * dense pass. Greedy output is the dense greedy output token for token; sampled output follows the dense
   * model's distribution (speculative sampling). "auto" measures acceptance and costs on this model once per
   * sampling mode (greedy / sampled) and picks K and the draft sparsity. Omit it to decode without
   * speculation (default); 0 and values above the prefill rows - 1 are errors.
   */
  speculate?: number | "auto";
  /**
   * Sparsity of the speculative draft in [0, 1), inside the profile's range (default 0.5, or the profile's
   * highest level if lower; with `speculate: "auto"` it fixes S and only K is chosen).
   */
  draftSparsity?: number;
  /**
   * About how much decoding, in milliseconds, runs between two read-backs of tokens to the host (default
   * 250). Each read-back leaves the GPU idle for up to Deno's 10 ms poll interval, so longer intervals decode
   * faster and shorter ones stream more smoothly; the first tokens always come back at once.
   */
  streamIntervalMs?: number;
  /**
   * Aborting stops generation within one read-back batch; during a long prompt's prefill, after the prefill
   * pass (of up to `maxPrefill` tokens, 1024 by default) running when it came.
   */
  signal?: AbortSignal;
  /**
   * Progress of a prompt longer than one prefill pass (never called for a prompt of one pass): `done` of
   * `total` prompt tokens. Called as each pass but the last completes on the GPU, then with (total, total)
   * once the last pass is queued; the first token follows when it completes. An exception it throws ends the
   * generation with that error.
   */
  onPrefillProgress?: (done: number, total: number) => void;
}

/** What one speculative generation did. */
export interface SpeculationReport {
  /** Draft tokens per round. */
  k: number;
  /** TEAL sparsity of the draft that ran. */
  draftSparsity: number;
  /** Drafts accepted over drafts made. */
  acceptanceRate: number;
  /** Per-token acceptance: accepted / (accepted + rejections), the `a` of (1 - a^(K+1)) / (1 - a). */
  perTokenAcceptance: number;
  /** Tokens produced per dense verify pass. */
  tokensPerRound: number;
  /** Rounds (dense verify passes). */
  rounds: number;
  /** With `speculate: "auto"`: what was measured and chosen (cached per model and sampling mode). */
  choice: SpeculativeChoice | null;
}

/** One streamed piece of output. */
export interface GenerateChunk {
  /** Token ids generated since the previous chunk. */
  ids: number[];
  /** Text of those tokens (empty when the model has no tokenizer). */
  text: string;
}

/** Why a generation ended. */
export type FinishReason = "stop" | "length" | "abort";

/** The whole result of a generation. */
export interface GenerateResult {
  /** Generated token ids (prompt excluded, stop string and EOS excluded). */
  ids: number[];
  /** Generated text. */
  text: string;
  /** Number of prompt tokens fed to the model. */
  promptTokens: number;
  /** Why generation ended. */
  finishReason: FinishReason;
  /** Decode throughput: generated tokens over the time from first to last decode step, in tokens/s. */
  tokensPerSecond: number;
  /** Time to first token in milliseconds (prefill plus the first read-back). */
  timeToFirstTokenMs: number;
  /**
   * Realised TEAL sparsity over the decode steps (fraction of skipped input channels), or null when dense or
   * aborted before the first token.
   */
  realizedSparsity: number | null;
  /** Speculative decoding's measurements, or null without it. */
  speculation?: SpeculationReport | null;
}

/**
 * A running generation: iterate it for streamed chunks; `result` settles when it ends.
 * Breaking out of the iteration (or aborting `signal`) stops the generation.
 */
export interface Generation extends AsyncIterable<GenerateChunk> {
  /** The final result, available once the stream has ended. */
  readonly result: Promise<GenerateResult>;
}

/** What callers (CLI, server) need from a loaded text model. */
export interface TextModel {
  /** A short model id (the model folder's name). */
  readonly id: string;
  /** Longest sequence (prompt + generated tokens) the model accepts. */
  readonly contextLength: number;
  /** TEAL sparsity targets available from the loaded profile, ascending ([] without a profile). */
  readonly sparsityLevels: number[];
  /** True when the model has a tokenizer (text prompts); false for token-id-only models. */
  readonly hasTokenizer: boolean;
  /** True when the tokenizer has a chat template. */
  readonly hasChatTemplate: boolean;
  /** Tokenizes text (BOS added when `addBos`). Throws without a tokenizer. */
  encode(text: string, addBos?: boolean): number[];
  /** Renders chat messages with the model's chat template. Throws without one. */
  applyChatTemplate(messages: { role: string; content: string }[]): string;
  /**
   * Starts a generation. Calls are queued first-come first-served: one runs on the GPU at a time.
   * Token-id prompts are used as given; text prompts are tokenized (BOS per `options.addBos`).
   */
  generate(prompt: string | number[], options?: GenerateOptions): Generation;
  /** Frees GPU memory. */
  dispose(): void;
}
