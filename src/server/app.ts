/**
 * The OpenAI-compatible HTTP API as a plain `fetch(Request): Promise<Response>` handler, testable without a
 * socket: `POST /v1/completions`, `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`.
 *
 * The handler itself only parses, validates, queues and streams; `model.generate()` does the GPU work. Deno's
 * WebGPU blocks the calling thread during read-backs, so a GPU model on the HTTP thread would stall every other
 * request (see src/server/worker.ts for the measurement): `serve()` and server.ts therefore pass a model hosted in
 * a worker thread (`loadModelInWorker`).
 * @module
 */
import type { GenerateChunk, GenerateOptions, GenerateResult, TextModel } from "../generate/types.ts";
import { speculationJson } from "../generate/report.ts";

/** Default limits; every limit of {@link ServerOptions} falls back to these. */
export const DEFAULT_LIMITS: Readonly<
  { maxBodyBytes: number; maxTokensLimit: number; maxQueue: number; maxSpeculate: number }
> = {
  /** Largest request body: 1 MiB. */
  maxBodyBytes: 1 << 20,
  /** Largest `max_tokens` a request may ask for (never above the context length - 1). */
  maxTokensLimit: 1024,
  /** Most requests waiting behind the running generation before new ones get 429. */
  maxQueue: 64,
  /** Largest `speculate` (draft tokens per round) a request may ask for. */
  maxSpeculate: 16,
};

/** `max_tokens` of a `/v1/completions` request that names none (OpenAI's default). */
export const COMPLETIONS_DEFAULT_MAX_TOKENS: number = 16;

/** Options of {@link createApp}. */
export interface ServerOptions {
  /** The model, or a promise of it: while pending, `/health` and the generation endpoints answer 503. */
  model: TextModel | Promise<TextModel>;
  /** When set, every endpoint but `/health` requires `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Largest request body in bytes (default 1 MiB); larger ones get 413. */
  maxBodyBytes?: number;
  /** Largest `max_tokens` (default 1024; clamped to the context length - 1). */
  maxTokensLimit?: number;
  /** Longest prompt in tokens (default and upper bound: the context length - 1). */
  maxPromptTokens?: number;
  /** Most generation requests waiting behind the running one (default 64); beyond it 429. */
  maxQueue?: number;
  /** Largest `speculate` a request may ask for (default 16). */
  maxSpeculate?: number;
  /** Where internal errors and a failed model load are reported (default console.error). */
  onError?: (error: unknown) => void;
}

/** The limits in force once the model is known. */
export interface ServerLimits {
  /** Largest request body in bytes. */
  maxBodyBytes: number;
  /** Largest `max_tokens`. */
  maxTokensLimit: number;
  /** Longest prompt in tokens. */
  maxPromptTokens: number;
  /** Most waiting generation requests. */
  maxQueue: number;
  /** Largest `speculate`. */
  maxSpeculate: number;
}

/** A request handler in the style of Hono / `deno serve`. */
export interface App {
  /** Answers one HTTP request; never rejects. */
  fetch(req: Request): Promise<Response>;
}

/** An OpenAI error body. */
export interface OpenAIError {
  /** The error. */
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** Computes the limits for a model of `contextLength` tokens from the options and the defaults. */
export function resolveLimits(
  options: Omit<ServerOptions, "model" | "apiKey" | "onError">,
  contextLength: number,
): ServerLimits {
  const ctxMax = Math.max(1, contextLength - 1);
  return {
    maxBodyBytes: options.maxBodyBytes ?? DEFAULT_LIMITS.maxBodyBytes,
    maxTokensLimit: Math.min(options.maxTokensLimit ?? DEFAULT_LIMITS.maxTokensLimit, ctxMax),
    maxPromptTokens: Math.min(options.maxPromptTokens ?? ctxMax, ctxMax),
    maxQueue: options.maxQueue ?? DEFAULT_LIMITS.maxQueue,
    maxSpeculate: options.maxSpeculate ?? DEFAULT_LIMITS.maxSpeculate,
  };
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: string = "invalid_request_error",
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const JSON_HEADERS = { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" };

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { ...JSON_HEADERS, ...headers } });
}

function errorBody(e: HttpError): OpenAIError {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

function errorResponse(e: HttpError): Response {
  return json(errorBody(e), e.status, e.headers);
}

function checkLimitOption(name: string, v: number | undefined, min: number): void {
  if (v !== undefined && !(Number.isInteger(v) && v >= min)) {
    throw new RangeError(`${name} must be an integer >= ${min}, got ${v}`);
  }
}

async function sha256(s: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
}

/** Reads the body as JSON, enforcing `max` bytes while streaming (Content-Length is only a fast path). */
async function readJson(req: Request, max: number): Promise<unknown> {
  const tooLarge = () =>
    new HttpError(413, `request body is larger than ${max} bytes`, null, "request_too_large");
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > max) {
    await req.body?.cancel().catch(() => {});
    throw tooLarge();
  }
  const parts: Uint8Array[] = [];
  let total = 0;
  if (req.body) {
    const reader = req.body.getReader();
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > max) {
        await reader.cancel().catch(() => {});
        throw tooLarge();
      }
      parts.push(value);
    }
  }
  if (total === 0) throw new HttpError(400, "the request body is empty; send a JSON object");
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.byteLength;
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new HttpError(400, "the request body is not valid UTF-8");
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `the request body is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new HttpError(400, "the request body must be a JSON object");
  }
  return body;
}

type Body = Record<string, unknown>;

function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

/** A number field: absent or null gives undefined; otherwise type and range are checked. */
function optNumber(
  b: Body,
  name: string,
  r: { min?: number; max?: number; minExclusive?: boolean; integer?: boolean } = {},
): number | undefined {
  const v = b[name];
  if (v === undefined || v === null) return undefined;
  const kind = r.integer ? "an integer" : "a number";
  if (typeof v !== "number" || !Number.isFinite(v) || (r.integer && !Number.isInteger(v))) {
    throw new HttpError(
      400,
      `'${name}' must be ${kind}, got ${typeName(v)} ${JSON.stringify(v)}`,
      name,
      "invalid_type",
    );
  }
  const low = r.min !== undefined && (r.minExclusive ? v <= r.min : v < r.min);
  const high = r.max !== undefined && v > r.max;
  if (low || high) {
    const range = r.min !== undefined && r.max !== undefined
      ? `in ${r.minExclusive ? "(" : "["}${r.min}, ${r.max}]`
      : r.min !== undefined
      ? `${r.minExclusive ? ">" : ">="} ${r.min}`
      : `<= ${r.max}`;
    throw new HttpError(400, `'${name}' must be ${kind} ${range}, got ${v}`, name, "invalid_value");
  }
  return v;
}

function optBoolean(b: Body, name: string): boolean | undefined {
  const v = b[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") {
    throw new HttpError(400, `'${name}' must be a boolean, got ${typeName(v)}`, name, "invalid_type");
  }
  return v;
}

/** Fields whose non-default values this server cannot honour: rejected rather than silently ignored. */
function rejectUnsupported(b: Body, chat: boolean): void {
  const bad = (name: string, why: string) =>
    new HttpError(400, `'${name}' ${why}`, name, "unsupported_value");
  const n = b.n;
  if (n !== undefined && n !== null && n !== 1) {
    throw bad("n", "must be 1: one choice per request is supported");
  }
  if (b.best_of !== undefined && b.best_of !== null && b.best_of !== 1) throw bad("best_of", "must be 1");
  if (b.echo !== undefined && b.echo !== null && b.echo !== false) throw bad("echo", "is not supported");
  if (b.suffix !== undefined && b.suffix !== null) throw bad("suffix", "is not supported");
  const lp = b.logprobs;
  if (lp !== undefined && lp !== null && lp !== false && !(chat === false && lp === 0)) {
    throw bad("logprobs", "is not supported");
  }
  for (const name of ["frequency_penalty", "presence_penalty"]) {
    const v = b[name];
    if (v !== undefined && v !== null && v !== 0) throw bad(name, "is not supported (only 0)");
  }
  const bias = b.logit_bias;
  if (bias !== undefined && bias !== null && !(typeof bias === "object" && Object.keys(bias).length === 0)) {
    throw bad("logit_bias", "is not supported");
  }
  for (const name of ["tools", "functions"]) {
    const v = b[name];
    if (v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0)) {
      throw bad(name, "are not supported");
    }
  }
}

/** Sampling and limits shared by both generation endpoints. */
function parseOptions(
  b: Body,
  model: TextModel,
  limits: ServerLimits,
  promptTokens: number,
  defaultMaxTokens: number,
  maxTokensField: string,
): GenerateOptions {
  const remaining = model.contextLength - promptTokens;
  const requested = optNumber(b, maxTokensField, { min: 1, integer: true });
  if (requested !== undefined && requested > limits.maxTokensLimit) {
    throw new HttpError(
      400,
      `'${maxTokensField}' must be at most ${limits.maxTokensLimit}, got ${requested}`,
      maxTokensField,
      "invalid_value",
    );
  }
  if (requested !== undefined && requested > remaining) {
    throw new HttpError(
      400,
      `this model's maximum context length is ${model.contextLength} tokens; you requested ${
        promptTokens + requested
      } tokens (${promptTokens} in the prompt, ${requested} for the completion)`,
      maxTokensField,
      "context_length_exceeded",
    );
  }
  const maxTokens = requested ?? Math.min(defaultMaxTokens, limits.maxTokensLimit, remaining);
  const temperature = optNumber(b, "temperature", { min: 0, max: 2 }) ?? 1;
  const topP = optNumber(b, "top_p", { min: 0, max: 1, minExclusive: true }) ?? 1;
  const topK = optNumber(b, "top_k", { min: 0, integer: true }) ?? 0;
  const seedRaw = optNumber(b, "seed", { integer: true });
  if (seedRaw !== undefined && !Number.isSafeInteger(seedRaw)) {
    throw new HttpError(400, "'seed' must be a safe integer", "seed", "invalid_value");
  }
  // OpenAI seeds are 64-bit; the sampler takes 32 bits
  const seed = seedRaw === undefined
    ? crypto.getRandomValues(new Uint32Array(1))[0]
    : ((seedRaw % 2 ** 32) + 2 ** 32) % 2 ** 32;
  const stop = parseStop(b.stop);
  const levels = model.sparsityLevels;
  const sparsity = optNumber(b, "sparsity", { min: 0 }) ?? 0;
  if (sparsity !== 0) {
    if (levels.length === 0) {
      throw new HttpError(
        400,
        `'sparsity' must be 0: model ${model.id} has no TEAL profile`,
        "sparsity",
        "invalid_value",
      );
    }
    const lo = levels[0];
    const hi = levels[levels.length - 1];
    if (sparsity > hi || sparsity < lo) {
      throw new HttpError(
        400,
        `'sparsity' must be 0 (dense) or in [${lo}, ${hi}] (the TEAL profile's range), got ${sparsity}`,
        "sparsity",
        "invalid_value",
      );
    }
  }
  return { maxTokens, temperature, topP, topK, seed, stop, sparsity, ...parseSpeculation(b, model, limits) };
}

/** `speculate` (an integer in [1, maxSpeculate] or "auto") and `draft_sparsity` (in the profile's range). */
function parseSpeculation(b: Body, model: TextModel, limits: ServerLimits): GenerateOptions {
  const raw = b.speculate;
  const draftSparsity = optNumber(b, "draft_sparsity", { min: 0 });
  if (raw === undefined || raw === null) {
    if (draftSparsity !== undefined) {
      throw new HttpError(400, "'draft_sparsity' needs 'speculate'", "draft_sparsity", "invalid_value");
    }
    return {};
  }
  let speculate: number | "auto";
  if (typeof raw !== "number" && raw !== "auto") {
    throw new HttpError(
      400,
      `'speculate' must be an integer in [1, ${limits.maxSpeculate}] or "auto", got ${JSON.stringify(raw)}`,
      "speculate",
      "invalid_type",
    );
  }
  if (raw === "auto") speculate = "auto";
  else {
    const k = optNumber(b, "speculate", { min: 1, max: limits.maxSpeculate, integer: true });
    speculate = k!;
  }
  const levels = model.sparsityLevels;
  if (levels.length === 0) {
    throw new HttpError(
      400,
      `'speculate' needs a TEAL profile for the sparse draft: model ${model.id} has none`,
      "speculate",
      "invalid_value",
    );
  }
  const lo = levels[0];
  const hi = levels[levels.length - 1];
  if (draftSparsity !== undefined && (draftSparsity >= 1 || draftSparsity < lo || draftSparsity > hi)) {
    throw new HttpError(
      400,
      `'draft_sparsity' must be in [${lo}, ${hi}] (the TEAL profile's range) and below 1, got ${draftSparsity}`,
      "draft_sparsity",
      "invalid_value",
    );
  }
  return draftSparsity === undefined ? { speculate } : { speculate, draftSparsity };
}

function parseStop(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || !list.every((s) => typeof s === "string")) {
    throw new HttpError(400, "'stop' must be a string or an array of strings", "stop", "invalid_type");
  }
  if (list.length > 4) throw new HttpError(400, "'stop' takes at most 4 sequences", "stop", "invalid_value");
  return list.filter((s) => s.length > 0);
}

const CHAT_ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);

function parseMessages(v: unknown): { role: string; content: string }[] {
  if (v === undefined || v === null) {
    throw new HttpError(400, "'messages' is required", "messages", "missing_required");
  }
  if (!Array.isArray(v)) throw new HttpError(400, "'messages' must be an array", "messages", "invalid_type");
  if (v.length === 0) throw new HttpError(400, "'messages' must not be empty", "messages", "invalid_value");
  return v.map((m, i) => {
    const param = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m)) {
      throw new HttpError(400, `'${param}' must be an object`, param, "invalid_type");
    }
    const { role, content } = m as Body;
    if (typeof role !== "string" || !CHAT_ROLES.has(role)) {
      throw new HttpError(
        400,
        `'${param}.role' must be one of ${[...CHAT_ROLES].join(", ")}`,
        `${param}.role`,
        "invalid_value",
      );
    }
    let text: string;
    if (typeof content === "string") text = content;
    else if (content === null && role === "assistant") text = "";
    else if (Array.isArray(content)) {
      text = content.map((part, j) => {
        const p = part as Body;
        if (typeof p !== "object" || p === null || p.type !== "text" || typeof p.text !== "string") {
          throw new HttpError(
            400,
            `'${param}.content[${j}]' must be a text part {"type": "text", "text": "..."}`,
            `${param}.content`,
            "invalid_value",
          );
        }
        return p.text;
      }).join("");
    } else {
      throw new HttpError(
        400,
        `'${param}.content' must be a string or an array of text parts`,
        `${param}.content`,
        "invalid_type",
      );
    }
    return { role, content: text };
  });
}

/** A completions prompt: a string or token ids; a batch of exactly one of those is unwrapped. */
function parsePrompt(v: unknown): string | number[] {
  if (v === undefined || v === null) {
    throw new HttpError(400, "'prompt' is required", "prompt", "missing_required");
  }
  if (Array.isArray(v) && v.length === 1 && (typeof v[0] === "string" || Array.isArray(v[0]))) v = v[0];
  if (typeof v === "string") {
    if (v.length === 0) throw new HttpError(400, "'prompt' must not be empty", "prompt", "invalid_value");
    return v;
  }
  if (Array.isArray(v)) {
    if (v.length === 0) throw new HttpError(400, "'prompt' must not be empty", "prompt", "invalid_value");
    if (v.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 0 && x <= 0xffffffff)) {
      return v as number[];
    }
    if (v.every((x) => typeof x === "string" || Array.isArray(x))) {
      throw new HttpError(400, "batched prompts are not supported: send one prompt per request", "prompt");
    }
    throw new HttpError(
      400,
      "'prompt' must be a string or an array of token ids (integers >= 0)",
      "prompt",
      "invalid_type",
    );
  }
  throw new HttpError(400, "'prompt' must be a string or an array of token ids", "prompt", "invalid_type");
}

/** The vocabulary size when the model tells it (`vocabSize`, or `config.vocabSize` of the GPU `Model`). */
function vocabSizeOf(model: TextModel): number | undefined {
  const m = model as { vocabSize?: unknown; config?: { vocabSize?: unknown } };
  const v = m.vocabSize ?? m.config?.vocabSize;
  return typeof v === "number" && v > 0 ? v : undefined;
}

/** A model that can fail for good (a worker-hosted model whose worker died) tells it as `failure`. */
function failureOf(model: TextModel): Error | null {
  const f = (model as { failure?: unknown }).failure;
  return f instanceof Error ? f : null;
}

/** Errors a TextModel raises for bad input (RangeError) become 400; the rest 500. */
function modelError(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof RangeError) return new HttpError(400, e.message, null, "invalid_value");
  return new HttpError(500, "internal server error", null, "internal_error", "server_error");
}

function newId(prefix: string): string {
  return prefix + crypto.randomUUID().replaceAll("-", "");
}

type ModelState =
  | { kind: "loading" }
  | { kind: "ready"; model: TextModel; limits: ServerLimits }
  | { kind: "failed"; error: unknown };

interface Job {
  chat: boolean;
  model: TextModel;
  ids: number[];
  options: GenerateOptions;
  stream: boolean;
  includeUsage: boolean;
}

const ROUTES: Record<string, string[]> = {
  "/v1/completions": ["POST"],
  "/v1/chat/completions": ["POST"],
  "/v1/models": ["GET", "HEAD"],
  "/health": ["GET", "HEAD"],
};

/**
 * Creates the OpenAI-compatible request handler. Generation requests go to `model.generate()`, which runs them
 * one at a time in arrival order; at most `maxQueue` may wait behind the running one. A client that
 * disconnects (request signal aborted, or the event stream cancelled) aborts its generation.
 */
export function createApp(options: ServerOptions): App {
  checkLimitOption("maxBodyBytes", options.maxBodyBytes, 1);
  checkLimitOption("maxTokensLimit", options.maxTokensLimit, 1);
  checkLimitOption("maxPromptTokens", options.maxPromptTokens, 1);
  checkLimitOption("maxQueue", options.maxQueue, 0);
  checkLimitOption("maxSpeculate", options.maxSpeculate, 1);
  const onError = options.onError ?? ((e: unknown) => console.error("tealgpu server:", e));
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_LIMITS.maxBodyBytes;
  const keyHash = options.apiKey !== undefined ? sha256(options.apiKey) : null;

  let state: ModelState = { kind: "loading" };
  let loadedAt = 0;
  const ready = (model: TextModel) => {
    loadedAt = Math.floor(Date.now() / 1000);
    state = { kind: "ready", model, limits: resolveLimits(options, model.contextLength) };
  };
  const m = options.model;
  if (typeof (m as Promise<TextModel>).then === "function") {
    (m as Promise<TextModel>).then(ready, (error) => {
      state = { kind: "failed", error };
      onError(error);
    });
  } else ready(m as TextModel);

  let inFlight = 0; // admitted generations not yet settled: one running, the rest waiting

  async function authorized(req: Request): Promise<boolean> {
    if (!keyHash) return true;
    const h = req.headers.get("authorization") ?? "";
    const match = /^Bearer\s+(.+)$/i.exec(h.trim());
    const [a, b] = await Promise.all([sha256(match ? match[1] : ""), keyHash]);
    let diff = match ? 0 : 1;
    for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
    return diff === 0;
  }

  function requireModel(): { model: TextModel; limits: ServerLimits } {
    if (state.kind === "ready") {
      if (failureOf(state.model)) {
        throw new HttpError(
          503,
          "the model has failed; the server needs a restart",
          null,
          "model_failed",
          "server_error",
        );
      }
      return state;
    }
    if (state.kind === "loading") {
      throw new HttpError(
        503,
        "the model is still loading; retry shortly",
        null,
        "model_loading",
        "server_error",
        {
          "retry-after": "5",
        },
      );
    }
    throw new HttpError(503, "the model failed to load", null, "model_load_failed", "server_error");
  }

  function health(): Response {
    if (state.kind === "ready" && failureOf(state.model)) {
      return json({ status: "error", error: failureOf(state.model)!.message }, 503);
    }
    if (state.kind === "ready") {
      return json({
        status: "ok",
        model: state.model.id,
        running: Math.min(inFlight, 1),
        waiting: Math.max(0, inFlight - 1),
      });
    }
    if (state.kind === "loading") return json({ status: "loading" }, 503, { "retry-after": "5" });
    const err = state.error;
    return json({ status: "error", error: err instanceof Error ? err.message : String(err) }, 503);
  }

  function models(): Response {
    const { model } = requireModel();
    return json({
      object: "list",
      data: [{ id: model.id, object: "model", created: loadedAt, owned_by: "tealgpu" }],
    });
  }

  function checkModelField(b: Body, model: TextModel): void {
    const v = b.model;
    if (v === undefined || v === null) return;
    if (typeof v !== "string") throw new HttpError(400, "'model' must be a string", "model", "invalid_type");
    if (v !== model.id) {
      throw new HttpError(
        404,
        `the model '${v}' does not exist; this server serves '${model.id}'`,
        "model",
        "model_not_found",
      );
    }
  }

  function checkPromptLength(n: number, limits: ServerLimits, param: string): void {
    if (n === 0) throw new HttpError(400, `'${param}' must not be empty`, param, "invalid_value");
    if (n > limits.maxPromptTokens) {
      throw new HttpError(
        400,
        `the prompt has ${n} tokens; at most ${limits.maxPromptTokens} are accepted`,
        param,
        "context_length_exceeded",
      );
    }
  }

  function parseCommon(b: Body): { stream: boolean; includeUsage: boolean } {
    const stream = optBoolean(b, "stream") ?? false;
    const so = b.stream_options;
    let includeUsage = false;
    if (so !== undefined && so !== null) {
      if (typeof so !== "object" || Array.isArray(so)) {
        throw new HttpError(400, "'stream_options' must be an object", "stream_options", "invalid_type");
      }
      includeUsage = optBoolean(so as Body, "include_usage") ?? false;
    }
    return { stream, includeUsage };
  }

  async function completions(req: Request, chat: boolean): Promise<Response> {
    const { model, limits } = requireModel();
    const b = await readJson(req, maxBodyBytes) as Body;
    checkModelField(b, model);
    rejectUnsupported(b, chat);
    const { stream, includeUsage } = parseCommon(b);
    let ids: number[];
    if (chat) {
      const messages = parseMessages(b.messages);
      if (!model.hasChatTemplate) {
        throw new HttpError(400, `model ${model.id} has no chat template: use /v1/completions`, "messages");
      }
      let text: string;
      try {
        text = model.applyChatTemplate(messages);
      } catch (e) {
        throw new HttpError(
          400,
          `the chat template rejected the messages: ${(e as Error).message}`,
          "messages",
        );
      }
      ids = model.encode(text, false); // the template's text already holds BOS
      checkPromptLength(ids.length, limits, "messages");
    } else {
      const prompt = parsePrompt(b.prompt);
      if (typeof prompt === "string" && !model.hasTokenizer) {
        throw new HttpError(400, `model ${model.id} has no tokenizer: send 'prompt' as token ids`, "prompt");
      }
      ids = typeof prompt === "string" ? model.encode(prompt, true) : prompt;
      checkPromptLength(ids.length, limits, "prompt");
      const vocab = vocabSizeOf(model);
      const bad = vocab === undefined ? undefined : ids.find((id) => id >= vocab);
      if (bad !== undefined) {
        throw new HttpError(
          400,
          `'prompt' token id ${bad} is outside the vocabulary [0, ${vocab})`,
          "prompt",
          "invalid_value",
        );
      }
    }
    const maxField = chat && b.max_completion_tokens !== undefined && b.max_completion_tokens !== null
      ? "max_completion_tokens"
      : "max_tokens";
    const defaultMax = chat ? limits.maxTokensLimit : COMPLETIONS_DEFAULT_MAX_TOKENS;
    const opts = parseOptions(b, model, limits, ids.length, defaultMax, maxField);
    if (inFlight > limits.maxQueue) {
      throw new HttpError(
        429,
        `the server is busy: ${inFlight - 1} requests are waiting; retry later`,
        null,
        "rate_limit_exceeded",
        "requests",
        { "retry-after": "1" },
      );
    }
    return run({ chat, model, ids, options: opts, stream, includeUsage }, req);
  }

  async function run(job: Job, req: Request): Promise<Response> {
    const cancel = new AbortController();
    const signal = AbortSignal.any([req.signal, cancel.signal]);
    inFlight++;
    let gen;
    try {
      gen = job.model.generate(job.ids, { ...job.options, signal });
    } catch (e) {
      inFlight--;
      throw e;
    }
    gen.result.catch(() => {}).finally(() => inFlight--);
    const id = newId(job.chat ? "chatcmpl-" : "cmpl-");
    const created = Math.floor(Date.now() / 1000);
    const modelId = job.model.id;
    const usage = (r: GenerateResult) => ({
      prompt_tokens: r.promptTokens,
      completion_tokens: r.ids.length,
      total_tokens: r.promptTokens + r.ids.length,
    });
    const finishReason = (r: GenerateResult) => (r.finishReason === "length" ? "length" : "stop");
    // extension field: what self-speculative decoding did (acceptance, tokens per verify pass, tokens/s)
    const extension = (r: GenerateResult) =>
      r.speculation
        ? {
          speculation: {
            ...speculationJson(r.speculation),
            tokens_per_s: Number(r.tokensPerSecond.toFixed(2)),
          },
        }
        : {};

    if (!job.stream) {
      let r: GenerateResult;
      try {
        for await (const _ of gen) { /* the result holds the whole text */ }
        r = await gen.result;
      } catch (e) {
        const err = modelError(e);
        if (err.status >= 500) onError(e);
        throw err;
      }
      if (r.finishReason === "abort") {
        return json(
          errorBody(new HttpError(499, "the client closed the request", null, "client_closed")),
          499,
        );
      }
      const choice = job.chat
        ? {
          index: 0,
          message: { role: "assistant", content: r.text },
          logprobs: null,
          finish_reason: finishReason(r),
        }
        : { index: 0, text: r.text, logprobs: null, finish_reason: finishReason(r) };
      return json({
        id,
        object: job.chat ? "chat.completion" : "text_completion",
        created,
        model: modelId,
        choices: [choice],
        usage: usage(r),
        ...extension(r),
      });
    }

    // A prompt the model rejects up front (e.g. a token id outside the vocabulary) still gets a 4xx status:
    // such errors settle the result before any timer fires.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const early = await Promise.race([
      gen.result.then(() => null, (e) => ({ e })),
      new Promise<null>((r) => (timer = setTimeout(() => r(null), 0))),
    ]);
    clearTimeout(timer);
    if (early) {
      const err = modelError(early.e);
      if (err.status >= 500) onError(early.e);
      throw err;
    }

    const enc = new TextEncoder();
    const sse = (obj: unknown) => enc.encode(`data: ${JSON.stringify(obj)}\n\n`);
    const object = job.chat ? "chat.completion.chunk" : "text_completion";
    const chunk = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
      id,
      object,
      created,
      model: modelId,
      choices: [choice],
      ...extra,
    });
    const piece = (text: string, finish: string | null) =>
      job.chat
        ? chunk({ index: 0, delta: finish ? {} : { content: text }, logprobs: null, finish_reason: finish })
        : chunk({ index: 0, text, logprobs: null, finish_reason: finish });
    const it: AsyncIterator<GenerateChunk> = gen[Symbol.asyncIterator]();
    let closed = false;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        if (job.chat) {
          controller.enqueue(
            sse(
              chunk({
                index: 0,
                delta: { role: "assistant", content: "" },
                logprobs: null,
                finish_reason: null,
              }),
            ),
          );
        }
      },
      async pull(controller) {
        try {
          while (true) {
            const { done, value } = await it.next();
            if (closed) return;
            if (!done) {
              if (value.text.length === 0) continue;
              controller.enqueue(sse(piece(value.text, null)));
              return;
            }
            const r = await gen.result;
            if (closed) return;
            if (r.finishReason === "abort") {
              closed = true;
              controller.close();
              return;
            }
            controller.enqueue(sse({ ...piece("", finishReason(r)), ...extension(r) }));
            if (job.includeUsage) {
              controller.enqueue(sse({ id, object, created, model: modelId, choices: [], usage: usage(r) }));
            }
            controller.enqueue(enc.encode("data: [DONE]\n\n"));
            closed = true;
            controller.close();
            return;
          }
        } catch (e) {
          if (closed) return;
          const err = modelError(e);
          if (err.status >= 500) onError(e);
          closed = true;
          controller.enqueue(sse(errorBody(err)));
          controller.close();
        }
      },
      cancel() {
        closed = true;
        cancel.abort();
        it.return?.().catch(() => {});
      },
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
      },
    });
  }

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, "") : url.pathname;
    const methods = ROUTES[path];
    if (path === "/health") {
      if (!methods.includes(req.method)) {
        throw new HttpError(
          405,
          `method ${req.method} is not allowed on ${path}`,
          null,
          "method_not_allowed",
          undefined,
          {
            allow: methods.join(", "),
          },
        );
      }
      return health();
    }
    if (!(await authorized(req))) {
      throw new HttpError(
        401,
        "missing or incorrect API key: send 'Authorization: Bearer <key>'",
        null,
        "invalid_api_key",
        "invalid_request_error",
        { "www-authenticate": "Bearer" },
      );
    }
    if (!methods) throw new HttpError(404, `invalid URL (${req.method} ${path})`, null, "not_found");
    if (!methods.includes(req.method)) {
      throw new HttpError(
        405,
        `method ${req.method} is not allowed on ${path}`,
        null,
        "method_not_allowed",
        undefined,
        {
          allow: methods.join(", "),
        },
      );
    }
    switch (path) {
      case "/v1/models":
        return models();
      case "/v1/completions":
        return await completions(req, false);
      default:
        return await completions(req, true);
    }
  }

  return {
    async fetch(req: Request): Promise<Response> {
      let res: Response;
      try {
        res = await handle(req);
      } catch (e) {
        const err = modelError(e);
        if (err.status >= 500 && !(e instanceof HttpError)) onError(e);
        res = errorResponse(err);
      }
      if (req.method === "HEAD") {
        await res.body?.cancel();
        return new Response(null, { status: res.status, headers: res.headers });
      }
      return res;
    },
  };
}
