/**
 * Hosts a model in a Web Worker, so GPU work never blocks the HTTP event loop.
 *
 * Why: Deno's WebGPU blocks the calling thread inside `mapAsync` and `queue.submit` while the device works
 * (measured with the embedded tiny-llama-16m on lavapipe, 200 decode steps: the `mapAsync` calls alone held the
 * main thread for 10.8 s of a 13.2 s generation, with event-loop stalls up to 2.7 s; `/health` took 421 ms median
 * and 689 ms at worst during a generation). On an H100 (NVIDIA Vulkan), a 1000-token generation on the main
 * thread let a 5 ms interval timer fire 86 times in 2.0 s, with stalls up to 97 ms. With the model in a worker,
 * the main thread's event loop stalled at most 12.7 ms (lavapipe) and 8.8 ms (H100) during those generations,
 * and `/health` answered in about 1 ms during a long generation (tests/server_real_test.ts).
 *
 * {@link loadModelInWorker} returns a {@link WorkerModel}: a {@link TextModel} whose `generate()` runs in the
 * worker (chunks, prefill progress and results come back over postMessage; aborts go the other way: the
 * worker's event loop takes them between prefill passes and read-backs), while `encode()` and
 * `applyChatTemplate()` run on the calling thread with its own copy of the tokenizer (they are synchronous).
 * The same module is the worker's entry point.
 * @module
 */
import type {
  GenerateChunk,
  GenerateOptions,
  GenerateResult,
  Generation,
  TextModel,
} from "../generate/types.ts";
import type { Model } from "../model/model.ts";
import type { TextTokenizer } from "../model/tokenizer.ts";
import { loadTokenizer } from "../model/gguf_tokenizer.ts";
import type { QuantFormat } from "../gpu/quant.ts";
import { ChunkQueue } from "../generate/stream.ts";

/** Load options that can cross into the worker (see `LoadOptions` of `loadModel`). */
export interface WorkerLoadOptions {
  /** Longest sequence to support (KV cache size); default min(config's max positions, 4096). */
  contextLength?: number;
  /** Most prompt tokens per prefill pass (default 1024, or fewer: see `defaultMaxPrefill`). */
  maxPrefill?: number;
  /** TEAL profile file; default `teal-profile.json` in the model folder when present; false: none. */
  profile?: string | false;
  /** Weight format: "none" (f16), "int8" or "int4" (quantized at load). */
  quant?: QuantFormat;
  /** int8/int4: the decode GEMVs' rows in packed f16 (default: the device's; see `LoadOptions.gemvHalf`). */
  gemvHalf?: boolean;
}

/** What the worker reports once the model is loaded. */
interface ModelInfo {
  id: string;
  contextLength: number;
  sparsityLevels: number[];
  vocabSize: number;
}

interface WireError {
  name: string;
  message: string;
}

type ToWorker =
  | { type: "load"; dir: string; options: WorkerLoadOptions }
  | {
    type: "generate";
    gid: number;
    prompt: string | number[];
    // functions cannot cross postMessage: `progress` asks the worker to send prefill progress messages
    options: Omit<GenerateOptions, "signal" | "onPrefillProgress">;
    progress: boolean;
  }
  | { type: "abort"; gid: number }
  | { type: "dispose"; end: boolean };

type FromWorker =
  | { type: "loaded"; info: ModelInfo }
  | { type: "load-error"; error: WireError }
  | { type: "chunk"; gid: number; chunk: GenerateChunk }
  | { type: "progress"; gid: number; done: number; total: number }
  | { type: "result"; gid: number; result: GenerateResult }
  | { type: "error"; gid: number; error: WireError }
  | { type: "disposed" };

const WORKER_NAME = "tealgpu-model";
/** Wait after the worker's last message before its thread counts as ended (measured need on NVIDIA: < 100 ms). */
const CLOSE_GRACE_MS = 500;

function toWire(e: unknown): WireError {
  return e instanceof Error ? { name: e.name, message: e.message } : { name: "Error", message: String(e) };
}

function fromWire(w: WireError): Error {
  const e = w.name === "RangeError"
    ? new RangeError(w.message)
    : w.name === "TypeError"
    ? new TypeError(w.message)
    : new Error(w.message);
  if (e.name !== w.name) e.name = w.name;
  return e;
}

interface Pending {
  push(c: GenerateChunk): void;
  progress?: (done: number, total: number) => void;
  resolve(r: GenerateResult): void;
  reject(e: Error): void;
}

/** A model running in a worker thread; see the module documentation. */
export class WorkerModel implements TextModel {
  /** Model id (the model folder's name). */
  readonly id: string;
  /** Longest sequence (prompt + generated). */
  readonly contextLength: number;
  /** TEAL targets of the attached profile ([] without one). */
  readonly sparsityLevels: number[];
  /** Vocabulary size (prompt ids must be below it). */
  readonly vocabSize: number;
  #worker: Worker;
  #tokenizer: TextTokenizer | null;
  #pending = new Map<number, Pending>();
  #next = 0;
  #failure: Error | null = null;
  #disposed = false;
  #closed: Promise<void>;
  #onClosed!: () => void;

  /** @internal Use {@link loadModelInWorker}. */
  constructor(worker: Worker, info: ModelInfo, tokenizer: TextTokenizer | null) {
    this.#worker = worker;
    this.#tokenizer = tokenizer;
    this.id = info.id;
    this.contextLength = info.contextLength;
    this.sparsityLevels = info.sparsityLevels;
    this.vocabSize = info.vocabSize;
    this.#closed = new Promise((r) => (this.#onClosed = r));
    worker.onmessage = (e: MessageEvent<FromWorker>) => this.#receive(e.data);
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(new Error(`the model worker failed: ${e.message}`));
    };
  }

  /** Why the worker stopped working (it crashed), or null while it works. */
  get failure(): Error | null {
    return this.#failure;
  }

  /** True when the model folder has a tokenizer. */
  get hasTokenizer(): boolean {
    return this.#tokenizer !== null;
  }

  /** True when the tokenizer has a chat template. */
  get hasChatTemplate(): boolean {
    return this.#tokenizer?.hasChatTemplate ?? false;
  }

  /** Tokenizes text on the calling thread. */
  encode(text: string, addBos = true): number[] {
    if (!this.#tokenizer) {
      throw new Error(`model ${this.id} has no tokenizer: pass token ids instead of text`);
    }
    return this.#tokenizer.encode(text, { addBos });
  }

  /** Renders chat messages with the chat template (generation prompt added), on the calling thread. */
  applyChatTemplate(messages: { role: string; content: string }[]): string {
    if (!this.#tokenizer) throw new Error(`model ${this.id} has no tokenizer`);
    return this.#tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
  }

  #receive(m: FromWorker): void {
    if (m.type === "disposed") {
      // The worker ends itself: terminating it, or exiting the process, while its thread tears down the GPU
      // device crashed or hung Deno with NVIDIA's Vulkan driver; 100 ms after this message was enough there.
      setTimeout(() => this.#onClosed(), CLOSE_GRACE_MS);
      return;
    }
    if (m.type !== "chunk" && m.type !== "progress" && m.type !== "result" && m.type !== "error") return;
    const p = this.#pending.get(m.gid);
    if (!p) return;
    if (m.type === "progress") {
      try {
        p.progress?.(m.done, m.total);
      } catch (e) {
        // as on the model itself, a throwing callback fails its generation (not this thread's event loop)
        this.#worker.postMessage({ type: "abort", gid: m.gid } satisfies ToWorker);
        p.reject(e as Error);
      }
    } else if (m.type === "chunk") p.push(m.chunk);
    else if (m.type === "result") p.resolve(m.result);
    else p.reject(fromWire(m.error));
  }

  #fail(e: Error): void {
    this.#failure ??= e;
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
    this.#worker.terminate();
    this.#onClosed();
  }

  /** The checks the model itself makes up front, so bad input fails without a round trip. */
  #prepare(prompt: string | number[], o: GenerateOptions): string | number[] {
    if (this.#disposed) throw new Error("model is disposed");
    if (this.#failure) throw this.#failure;
    const ids = typeof prompt === "string" ? this.encode(prompt, o.addBos ?? true) : prompt;
    if (ids.length === 0) throw new RangeError("the prompt is empty");
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new RangeError(`prompt token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      }
    }
    if (ids.length >= this.contextLength) {
      throw new RangeError(`prompt has ${ids.length} tokens; the context holds ${this.contextLength}`);
    }
    return ids;
  }

  /**
   * Starts a generation in the worker (queued there behind earlier ones, first come first served). Aborting
   * `options.signal` or leaving the iteration early stops it, during a long prompt's prefill too;
   * `options.onPrefillProgress` is called on this thread as the worker's progress messages arrive.
   */
  generate(prompt: string | number[], options: GenerateOptions = {}): Generation {
    const { signal, onPrefillProgress, ...rest } = options;
    const queue = new ChunkQueue();
    let resolve!: (r: GenerateResult) => void;
    let reject!: (e: Error) => void;
    const result = new Promise<GenerateResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const gid = this.#next++;
    const abort = () => {
      if (!queue.ended && !this.#failure) this.#worker.postMessage({ type: "abort", gid } satisfies ToWorker);
    };
    result.catch(() => {}).finally(() => {
      this.#pending.delete(gid);
      signal?.removeEventListener("abort", abort);
      queue.end();
    });
    try {
      const ids = this.#prepare(prompt, options);
      this.#pending.set(gid, {
        push: (c) => queue.push(c),
        progress: onPrefillProgress,
        resolve,
        reject,
      });
      this.#worker.postMessage(
        {
          type: "generate",
          gid,
          prompt: ids,
          options: rest,
          progress: onPrefillProgress !== undefined,
        } satisfies ToWorker,
      );
      if (signal?.aborted) abort();
      else signal?.addEventListener("abort", abort, { once: true });
    } catch (e) {
      reject(e as Error);
    }
    return queue.generation(result, abort);
  }

  /**
   * Stops the worker: running and queued generations are aborted, then the model's GPU memory is freed and the
   * thread ends.
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#failure) return;
    this.#worker.postMessage({ type: "dispose", end: true } satisfies ToWorker);
    // a worker that does not answer within 10 s is ended, so it cannot keep the process alive
    const t = setTimeout(() => this.#fail(new Error("the model worker did not stop")), 10_000);
    Deno.unrefTimer(t);
    this.#closed.then(() => clearTimeout(t));
  }

  /**
   * Like {@link WorkerModel.dispose}, and resolves once the worker has freed the GPU and its thread has had time
   * to end. Await it before `Deno.exit()` (or the end of a test): exiting while the worker thread tears down its
   * GPU device crashed or hung the process with NVIDIA's Vulkan driver.
   */
  close(): Promise<void> {
    this.dispose();
    return this.#closed;
  }
}

/**
 * Loads the model in `dir` in a new worker thread (and its tokenizer on this one). Rejects with the load error
 * (the worker is then ended).
 */
export async function loadModelInWorker(dir: string, options: WorkerLoadOptions = {}): Promise<WorkerModel> {
  const worker = new Worker(import.meta.url, { type: "module", name: WORKER_NAME });
  let crashed = false;
  const loaded = new Promise<ModelInfo>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<FromWorker>) => {
      if (e.data.type === "loaded") resolve(e.data.info);
      else if (e.data.type === "load-error") reject(fromWire(e.data.error));
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      crashed = true;
      reject(new Error(`the model worker failed: ${e.message}`));
    };
  });
  worker.postMessage({ type: "load", dir, options } satisfies ToWorker);
  try {
    // the worker's loadModel reports why a GGUF has no tokenizer; this copy stays quiet
    const [info, { tokenizer }] = await Promise.all([loaded, loadTokenizer(dir)]);
    return new WorkerModel(worker, info, tokenizer);
  } catch (e) {
    if (crashed) worker.terminate();
    else {
      // let the worker free what it loaded and end itself before the caller may exit (see WorkerModel.close)
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          worker.terminate();
          resolve();
        }, 10_000);
        worker.onmessage = (m: MessageEvent<FromWorker>) => {
          if (m.data.type !== "disposed") return;
          clearTimeout(t);
          setTimeout(resolve, CLOSE_GRACE_MS);
        };
        worker.postMessage({ type: "dispose", end: true } satisfies ToWorker);
      });
    }
    throw e;
  }
}

/** The worker side: loads the model and runs generations as the messages ask. */
function host(): void {
  const scope = self as unknown as {
    postMessage(m: FromWorker): void;
    onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
    close(): void;
  };
  let model: Model | null = null;
  const running = new Map<number, { abort: AbortController; done: Promise<unknown> }>();
  scope.onmessage = (e: MessageEvent<ToWorker>) => {
    const m = e.data;
    if (m.type === "load") {
      (async () => {
        try {
          const { loadModel } = await import("../model/model.ts");
          const loaded = await loadModel(m.dir, { ...m.options, onProgress: () => {} });
          model = loaded;
          scope.postMessage({
            type: "loaded",
            info: {
              id: loaded.id,
              contextLength: loaded.contextLength,
              sparsityLevels: loaded.sparsityLevels,
              vocabSize: loaded.config.vocabSize,
            },
          });
        } catch (err) {
          scope.postMessage({ type: "load-error", error: toWire(err) });
        }
      })();
    } else if (m.type === "generate") {
      const abort = new AbortController();
      const { gid } = m;
      // generate() is called in message order, so the model's first-come first-served queue holds
      const gen = model!.generate(m.prompt, {
        ...m.options,
        signal: abort.signal,
        onPrefillProgress: m.progress
          ? (done, total) => scope.postMessage({ type: "progress", gid, done, total })
          : undefined,
      });
      const done = (async () => {
        try {
          for await (const chunk of gen) scope.postMessage({ type: "chunk", gid, chunk });
          scope.postMessage({ type: "result", gid, result: await gen.result });
        } catch (err) {
          scope.postMessage({ type: "error", gid, error: toWire(err) });
        } finally {
          running.delete(gid);
        }
      })();
      running.set(gid, { abort, done });
    } else if (m.type === "abort") {
      running.get(m.gid)?.abort.abort();
    } else if (m.type === "dispose") {
      (async () => {
        for (const r of running.values()) r.abort.abort();
        await Promise.allSettled([...running.values()].map((r) => r.done));
        if (!m.end) {
          scope.postMessage({ type: "disposed" });
          return;
        }
        if (model) {
          model.dispose();
          // free the device here, while nothing else runs, rather than in the thread's teardown
          model.gpu.destroy();
          await Promise.race([model.gpu.device.lost, new Promise((r) => setTimeout(r, 2000))]);
        }
        scope.postMessage({ type: "disposed" });
        scope.close();
      })();
    }
  };
}

if (
  (globalThis as { name?: unknown }).name === WORKER_NAME &&
  typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined"
) {
  host();
}
