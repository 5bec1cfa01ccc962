/**
 * Starts the OpenAI-compatible HTTP server ({@link createApp}) on a socket with `Deno.serve`.
 * @module
 */
import type { TextModel } from "../generate/types.ts";
import { defaultModelDir } from "../model/default_model.ts";
import { createApp } from "./app.ts";
import { loadModelInWorker } from "./worker.ts";

/** Options of {@link serve}. */
export interface ServeOptions {
  /** Model folder to load in a worker thread (default: the embedded model); ignored when `model` is given. */
  modelDir?: string;
  /**
   * An already loaded model (or a promise of one); the caller keeps ownership and disposes it. Pass a model
   * from `loadModelInWorker` (src/server/worker.ts): a GPU model on this thread blocks the HTTP event loop.
   */
  model?: TextModel | Promise<TextModel>;
  /** Interface to bind (default "127.0.0.1": loopback only). */
  host?: string;
  /** TCP port (default 8000; 0 picks a free one). */
  port?: number;
  /** Require `Authorization: Bearer <apiKey>` on every endpoint but /health. */
  apiKey?: string;
  /** Aborting it shuts the server down gracefully (running requests finish). */
  signal?: AbortSignal;
  /** Largest `max_tokens` a request may ask for (default 1024). */
  maxTokensLimit?: number;
  /** Largest request body in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  /** Longest prompt in tokens (default: the context length - 1). */
  maxPromptTokens?: number;
  /** Most requests waiting behind the running generation (default 64). */
  maxQueue?: number;
  /** Called once the socket listens (default: logs the address to stderr). */
  onListen?: (addr: Deno.NetAddr) => void;
}

/**
 * Serves the model over HTTP. Without `model`, the model in `modelDir` loads in the background, in a worker
 * thread: `/health` answers 503 until it is ready (and reports the error if loading fails); that model is
 * disposed when the server finishes.
 */
export function serve(options: ServeOptions = {}): Deno.HttpServer {
  const loading = options.model === undefined
    ? loadModelInWorker(options.modelDir ?? defaultModelDir())
    : null;
  const model: TextModel | Promise<TextModel> = options.model ?? loading!;
  const app = createApp({
    model,
    apiKey: options.apiKey,
    maxTokensLimit: options.maxTokensLimit,
    maxBodyBytes: options.maxBodyBytes,
    maxPromptTokens: options.maxPromptTokens,
    maxQueue: options.maxQueue,
  });
  const server = Deno.serve({
    hostname: options.host ?? "127.0.0.1",
    port: options.port ?? 8000,
    onListen: options.onListen ??
      ((addr: Deno.NetAddr) => console.error(`tealgpu: listening on http://${addr.hostname}:${addr.port}`)),
  }, (req: Request) => app.fetch(req));
  // Deno.serve's own `signal` option drops open connections; shutdown() lets running requests finish
  const signal = options.signal;
  if (signal) {
    const stop = () => server.shutdown().catch(() => {});
    if (signal.aborted) stop();
    else signal.addEventListener("abort", stop, { once: true });
    server.finished.finally(() => signal.removeEventListener("abort", stop));
  }
  if (loading) server.finished.then(() => loading).then((m) => m.close()).catch(() => {});
  return server;
}
