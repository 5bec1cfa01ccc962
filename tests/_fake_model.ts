/**
 * A deterministic fake {@link TextModel} for server tests: byte-level "tokenizer", output derived from the
 * prompt ids and the sampling options by a hash, chunks streamed with async delays (and optional synchronous
 * busy work, standing in for command encoding), FIFO queue like the real model, honours signal, maxTokens,
 * stop strings and EOS.
 * @module
 */
import type {
  FinishReason,
  GenerateChunk,
  GenerateOptions,
  GenerateResult,
  Generation,
  TextModel,
} from "../src/generate/types.ts";

/** Options of {@link FakeModel}. */
export interface FakeModelOptions {
  /** Model id (default "fake-model"). */
  id?: string;
  /** Context length (default 256). */
  contextLength?: number;
  /** Offered TEAL levels (default [0.25, 0.5]). */
  sparsityLevels?: number[];
  /** Has a tokenizer (default true). */
  hasTokenizer?: boolean;
  /** Has a chat template (default true). */
  hasChatTemplate?: boolean;
  /** Tokens per streamed chunk (default 4). */
  chunkTokens?: number;
  /** Async delay before each chunk, ms (default 2). */
  chunkDelayMs?: number;
  /** Synchronous busy work per chunk, ms (default 0). */
  busyMs?: number;
  /** Emit EOS when the step hash is divisible by this (default 0: never). */
  eosEvery?: number;
}

/** What the fake saw of one generation. */
export interface FakeRun {
  prompt: number[];
  options: GenerateOptions;
  /** performance.now() when it left the queue, or -1 while queued. */
  startedAt: number;
  /** performance.now() when it ended, or -1. */
  endedAt: number;
  finishReason: FinishReason | null;
}

/** BOS id; "<s>" in text encodes to it. */
export const FAKE_BOS = 1;
/** EOS id. */
export const FAKE_EOS = 2;
/** Vocabulary: 3 specials + 256 bytes. */
export const FAKE_VOCAB = 259;

function hash(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
  }
  return h >>> 0;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The fake model. Public counters let tests check what the server did. */
export class FakeModel implements TextModel {
  readonly id: string;
  readonly contextLength: number;
  readonly sparsityLevels: number[];
  readonly hasTokenizer: boolean;
  readonly hasChatTemplate: boolean;
  /** Vocabulary size (the server reads it when present). */
  readonly vocabSize = FAKE_VOCAB;
  /** Every generation in arrival order. */
  readonly runs: FakeRun[] = [];
  /** Generations running right now (must never exceed 1). */
  running = 0;
  /** Most generations ever running at once. */
  maxRunning = 0;
  /** Generations ended by their signal. */
  aborts = 0;
  /** `addBos` of every encode call. */
  readonly encodeCalls: boolean[] = [];
  /** Set to make the next generate() throw this error when its turn comes. */
  failNext: Error | null = null;
  #o: Required<Pick<FakeModelOptions, "chunkTokens" | "chunkDelayMs" | "busyMs" | "eosEvery">>;
  #queue: Promise<unknown> = Promise.resolve();
  disposed = false;

  constructor(o: FakeModelOptions = {}) {
    this.id = o.id ?? "fake-model";
    this.contextLength = o.contextLength ?? 256;
    this.sparsityLevels = o.sparsityLevels ?? [0.25, 0.5];
    this.hasTokenizer = o.hasTokenizer ?? true;
    this.hasChatTemplate = o.hasChatTemplate ?? true;
    this.#o = {
      chunkTokens: o.chunkTokens ?? 4,
      chunkDelayMs: o.chunkDelayMs ?? 2,
      busyMs: o.busyMs ?? 0,
      eosEvery: o.eosEvery ?? 0,
    };
  }

  /** Changes the pacing (tests that need a slow generation). */
  setPacing(p: { chunkDelayMs?: number; busyMs?: number; chunkTokens?: number }): void {
    Object.assign(this.#o, Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)));
  }

  /** UTF-8 bytes as ids 3..258; "<s>" is BOS. */
  encode(text: string, addBos = true): number[] {
    if (!this.hasTokenizer) throw new Error("fake model has no tokenizer");
    this.encodeCalls.push(addBos);
    const ids = addBos ? [FAKE_BOS] : [];
    text.split("<s>").forEach((part, i) => {
      if (i > 0) ids.push(FAKE_BOS);
      for (const b of new TextEncoder().encode(part)) ids.push(b + 3);
    });
    return ids;
  }

  /** "<s>" + "<|role|>content\n"... + "<|assistant|>"; throws on an "invalid" role like jinja templates do. */
  applyChatTemplate(messages: { role: string; content: string }[]): string {
    if (!this.hasChatTemplate) throw new Error("fake model has no chat template");
    for (const m of messages) {
      if (m.role === "tool") throw new Error("Conversation roles must be system, user or assistant");
    }
    return "<s>" + messages.map((m) => `<|${m.role}|>${m.content}\n`).join("") + "<|assistant|>";
  }

  /** The character of generated token `step` (printable ASCII), or EOS. */
  #token(prompt: number[], o: GenerateOptions, step: number): number {
    const p = hash(prompt.length, ...prompt);
    const t = Math.round((o.temperature ?? 0.8) * 1000);
    const h = hash(
      p,
      o.seed ?? 0,
      t,
      o.topK ?? 0,
      Math.round((o.topP ?? 1) * 1000),
      (o.sparsity ?? 0) * 1000,
      step,
    );
    if (this.#o.eosEvery > 0 && step > 0 && h % this.#o.eosEvery === 0) return FAKE_EOS;
    return 3 + 32 + (h >>> 8) % 95; // ' '..'~'
  }

  generate(prompt: string | number[], options: GenerateOptions = {}): Generation {
    const chunks: GenerateChunk[] = [];
    let wake: (() => void) | null = null;
    let ended = false;
    const internal = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, internal.signal]) : internal.signal;
    const run: FakeRun = { prompt: [], options, startedAt: -1, endedAt: -1, finishReason: null };
    this.runs.push(run);
    let result: Promise<GenerateResult>;
    try {
      const ids = typeof prompt === "string" ? this.encode(prompt, options.addBos ?? true) : prompt;
      if (ids.length === 0) throw new RangeError("the prompt is empty");
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= FAKE_VOCAB) {
          throw new RangeError(`token id ${id} out of range`);
        }
      }
      if (ids.length >= this.contextLength) throw new RangeError("prompt too long");
      run.prompt = ids;
      const run2 = this.#queue.then(() =>
        this.#run(ids, { ...options, signal }, run, (c) => {
          chunks.push(c);
          wake?.();
        })
      );
      this.#queue = run2.catch(() => {});
      result = run2;
    } catch (e) {
      result = Promise.reject(e);
    }
    result.catch(() => {}).finally(() => {
      ended = true;
      wake?.();
    });
    const iterate = async function* (): AsyncGenerator<GenerateChunk> {
      try {
        while (true) {
          if (chunks.length > 0) {
            yield chunks.shift()!;
            continue;
          }
          if (ended) break;
          await new Promise<void>((r) => (wake = r));
          wake = null;
        }
        await result;
      } finally {
        if (!ended) internal.abort();
      }
    };
    return { result, [Symbol.asyncIterator]: iterate };
  }

  async #run(
    prompt: number[],
    o: GenerateOptions,
    run: FakeRun,
    push: (c: GenerateChunk) => void,
  ): Promise<GenerateResult> {
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    run.startedAt = performance.now();
    try {
      if (this.failNext) {
        const e = this.failNext;
        this.failNext = null;
        throw e;
      }
      const maxTokens = Math.min(o.maxTokens ?? 128, this.contextLength - prompt.length);
      const stops = (o.stop ?? []).filter((s) => s.length > 0);
      const hold = stops.reduce((a, s) => Math.max(a, s.length - 1), 0);
      let text = "";
      let emitted = 0;
      let finish: FinishReason = "length";
      let cut = -1;
      let step = 0;
      let more = true;
      while (more) {
        await delay(this.#o.chunkDelayMs);
        if (this.#o.busyMs > 0) {
          const until = performance.now() + this.#o.busyMs;
          while (performance.now() < until) { /* synchronous "command encoding" */ }
        }
        if (o.signal?.aborted) {
          finish = "abort";
          break;
        }
        for (let i = 0; i < this.#o.chunkTokens && more; i++, step++) {
          const id = this.#token(prompt, o, step);
          if (id === FAKE_EOS) {
            finish = "stop";
            more = false;
            break;
          }
          text += String.fromCharCode(id - 3);
          const at = stops.length
            ? Math.min(...stops.map((s) => text.indexOf(s)).map((x) => x < 0 ? Infinity : x))
            : -1;
          if (at >= 0 && at !== Infinity) {
            cut = at;
            finish = "stop";
            more = false;
          } else if (text.length >= maxTokens) more = false;
        }
        const safe = cut >= 0 ? cut : more ? Math.max(emitted, text.length - hold) : text.length;
        if (safe > emitted) {
          const piece = text.slice(emitted, safe);
          push({ ids: [...piece].map((c) => c.charCodeAt(0) + 3), text: piece });
          emitted = safe;
        }
      }
      if (finish === "abort") this.aborts++;
      run.finishReason = finish;
      const out = text.slice(0, emitted);
      return {
        ids: [...out].map((c) => c.charCodeAt(0) + 3),
        text: out,
        promptTokens: prompt.length,
        finishReason: finish,
        tokensPerSecond: 0,
        timeToFirstTokenMs: 0,
        realizedSparsity: (o.sparsity ?? 0) > 0 ? o.sparsity! : null,
        // a fixed report, so the server's extension field can be checked
        speculation: o.speculate === undefined ? null : {
          k: o.speculate === "auto" ? 3 : o.speculate,
          draftSparsity: o.draftSparsity ?? 0.5,
          acceptanceRate: 0.5,
          perTokenAcceptance: 0.6,
          tokensPerRound: 2,
          rounds: 4,
          choice: null,
        },
      };
    } finally {
      this.running--;
      run.endedAt = performance.now();
    }
  }

  dispose(): void {
    this.disposed = true;
  }
}
