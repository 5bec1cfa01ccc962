/**
 * The OpenAI-compatible server over real HTTP on loopback, against the deterministic fake model.
 * @module
 */
import assert from "node:assert/strict";
import { createApp, DEFAULT_LIMITS, resolveLimits, type ServerOptions } from "../src/server/app.ts";
import { serve } from "../src/server/serve.ts";
import { serveCommand } from "../src/cli/serve.ts";
import type { CliDeps } from "../src/cli/commands.ts";
import { FakeModel, type FakeModelOptions } from "./_fake_model.ts";
import type { GenerateOptions, GenerateResult, TextModel } from "../src/generate/types.ts";

// ---------------------------------------------------------------------------------------------------------
// helpers

interface TestServer {
  url: string;
  model: FakeModel;
  errors: unknown[];
  close(): Promise<void>;
}

function startServer(
  fake: FakeModelOptions = {},
  opts: Partial<ServerOptions> = {},
  serveAs?: (fake: FakeModel) => TextModel | Promise<TextModel>,
): TestServer {
  const model = new FakeModel(fake);
  const modelOverride = serveAs?.(model);
  const errors: unknown[] = [];
  const app = createApp({ model: modelOverride ?? model, onError: (e) => errors.push(e), ...opts });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => app.fetch(req));
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    model,
    errors,
    async close() {
      await server.shutdown();
      // every generation must have settled (timers of the fake model)
      await waitFor(() =>
        model.running === 0 && model.runs.every((r) => r.endedAt >= 0 || r.prompt.length === 0)
      );
    },
  };
}

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > timeoutMs) throw new Error("timed out waiting for a condition");
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface JsonResponse {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

async function call(
  url: string,
  path: string,
  body?: unknown,
  init: RequestInit & { raw?: string } = {},
): Promise<JsonResponse> {
  const res = await fetch(url + path, {
    method: init.method ?? (body === undefined && init.raw === undefined ? "GET" : "POST"),
    headers: { "content-type": "application/json", ...(init.headers ?? {}) },
    body: init.raw ?? (body === undefined ? undefined : JSON.stringify(body)),
    signal: init.signal,
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch { /* not JSON: keep the text */ }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** Parses a whole server-sent-events body into its `data:` payloads. */
function parseSse(text: string): string[] {
  assert.ok(text.endsWith("\n\n"), "an SSE body ends with a blank line");
  const events: string[] = [];
  for (const block of text.split("\n\n")) {
    if (block === "") continue;
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // comment
      const m = /^([^:]+):? ?(.*)$/.exec(line);
      assert.ok(m, `bad SSE line ${JSON.stringify(line)}`);
      if (m[1] === "data") data.push(m[2]);
    }
    events.push(data.join("\n"));
  }
  return events;
}

interface Streamed {
  status: number;
  contentType: string | null;
  // deno-lint-ignore no-explicit-any
  chunks: any[];
  done: boolean;
  text: string;
  finishReason: string | null;
}

async function stream(
  url: string,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Streamed> {
  const res = await fetch(url + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ ...(body as object), stream: true }),
  });
  const raw = await res.text();
  const contentType = res.headers.get("content-type");
  if (res.status !== 200) {
    return {
      status: res.status,
      contentType,
      chunks: [JSON.parse(raw)],
      done: false,
      text: "",
      finishReason: null,
    };
  }
  const events = parseSse(raw);
  const done = events.at(-1) === "[DONE]";
  const chunks = events.filter((e) => e !== "[DONE]").map((e) => JSON.parse(e));
  let text = "";
  let finishReason: string | null = null;
  for (const c of chunks) {
    for (const ch of c.choices) {
      text += ch.text ?? ch.delta?.content ?? "";
      if (ch.finish_reason) finishReason = ch.finish_reason;
    }
  }
  return { status: res.status, contentType, chunks, done, text, finishReason };
}

function assertOpenAIError(r: JsonResponse, status: number, param?: string | null, code?: string): void {
  assert.equal(r.status, status, `status of ${JSON.stringify(r.body)}`);
  assert.equal(typeof r.body, "object");
  const e = r.body.error;
  assert.ok(e, `an error object in ${JSON.stringify(r.body)}`);
  assert.equal(typeof e.message, "string");
  assert.ok(e.message.length > 0);
  assert.equal(typeof e.type, "string");
  if (status >= 400 && status < 500 && status !== 429) assert.equal(e.type, "invalid_request_error");
  assert.ok("param" in e && "code" in e);
  if (param !== undefined) assert.equal(e.param, param);
  if (code !== undefined) assert.equal(e.code, code);
}

/** What the model itself produces for these ids and options, called directly (no HTTP). */
async function direct(model: TextModel, ids: number[], o: GenerateOptions): Promise<GenerateResult> {
  const g = model.generate(ids, { topK: 0, topP: 1, sparsity: 0, stop: [], ...o });
  for await (const _ of g) { /* drain */ }
  return await g.result;
}

// ---------------------------------------------------------------------------------------------------------
// endpoints

Deno.test("limits: defaults in one place, clamped to the context", () => {
  assert.deepEqual(resolveLimits({}, 4096), {
    maxBodyBytes: 1 << 20,
    maxTokensLimit: 1024,
    maxPromptTokens: 4095,
    maxQueue: 64,
    maxSpeculate: 16,
  });
  assert.equal(DEFAULT_LIMITS.maxTokensLimit, 1024);
  assert.equal(resolveLimits({ maxTokensLimit: 5000, maxPromptTokens: 9000 }, 512).maxTokensLimit, 511);
  assert.equal(resolveLimits({ maxTokensLimit: 5000, maxPromptTokens: 9000 }, 512).maxPromptTokens, 511);
  assert.throws(() => createApp({ model: new FakeModel(), maxQueue: -1 }), RangeError);
});

Deno.test("health and models", async () => {
  const s = startServer();
  try {
    const h = await call(s.url, "/health");
    assert.equal(h.status, 200);
    assert.equal(h.body.status, "ok");
    assert.equal(h.body.model, "fake-model");
    const head = await fetch(s.url + "/health", { method: "HEAD" });
    assert.equal(head.status, 200);
    await head.body?.cancel();
    const m = await call(s.url, "/v1/models");
    assert.equal(m.status, 200);
    assert.equal(m.body.object, "list");
    assert.equal(m.body.data.length, 1);
    assert.equal(m.body.data[0].id, "fake-model");
    assert.equal(m.body.data[0].object, "model");
    assert.equal(typeof m.body.data[0].created, "number");
    assert.equal(typeof m.body.data[0].owned_by, "string");
  } finally {
    await s.close();
  }
});

Deno.test("while the model loads: /health and generation answer 503; then 200", async () => {
  let resolve!: (m: TextModel) => void;
  const pending = new Promise<TextModel>((r) => (resolve = r));
  const s = startServer({}, {}, () => pending);
  try {
    const h = await call(s.url, "/health");
    assert.equal(h.status, 503);
    assert.equal(h.body.status, "loading");
    const c = await call(s.url, "/v1/completions", { prompt: "hi" });
    assert.equal(c.status, 503);
    assert.equal(c.body.error.code, "model_loading");
    const m = await call(s.url, "/v1/models");
    assert.equal(m.status, 503);
    resolve(s.model);
    await new Promise((r) => setTimeout(r, 0));
    assert.equal((await call(s.url, "/health")).status, 200);
    const ok = await call(s.url, "/v1/completions", { prompt: "hi", max_tokens: 2 });
    assert.equal(ok.status, 200);
  } finally {
    await s.close();
  }
});

Deno.test("a failed load: /health reports the error with 503", async () => {
  const failing = Promise.reject(new Error("cannot read config.json"));
  const s = startServer({}, {}, () => failing);
  try {
    await new Promise((r) => setTimeout(r, 0));
    const h = await call(s.url, "/health");
    assert.equal(h.status, 503);
    assert.equal(h.body.status, "error");
    assert.match(h.body.error, /config\.json/);
    const c = await call(s.url, "/v1/chat/completions", { messages: [{ role: "user", content: "x" }] });
    assertOpenAIError(c, 503);
    assert.equal(s.errors.length, 1);
  } finally {
    await s.close();
  }
});

Deno.test("completions: string prompt, token-id prompt, usage and wire format", async () => {
  const s = startServer();
  try {
    const r = await call(s.url, "/v1/completions", {
      model: "fake-model",
      prompt: "hello world",
      max_tokens: 9,
      temperature: 0,
      seed: 7,
    });
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type")!, /application\/json/);
    const ids = s.model.encode("hello world", true);
    assert.match(r.body.id, /^cmpl-[0-9a-f]+$/);
    assert.equal(r.body.object, "text_completion");
    assert.equal(typeof r.body.created, "number");
    assert.equal(r.body.model, "fake-model");
    assert.equal(r.body.choices.length, 1);
    assert.equal(r.body.choices[0].index, 0);
    const want = await direct(s.model, ids, { seed: 7, temperature: 0, maxTokens: 9 });
    assert.equal(want.ids.length, 9);
    assert.equal(r.body.choices[0].text, want.text);
    assert.equal(r.body.choices[0].finish_reason, "length");
    assert.deepEqual(r.body.usage, {
      prompt_tokens: ids.length,
      completion_tokens: 9,
      total_tokens: ids.length + 9,
    });
    // the options reached the model
    const o = s.model.runs.at(-2)!.options;
    assert.equal(o.maxTokens, 9);
    assert.equal(o.temperature, 0);
    assert.equal(o.seed, 7);

    const t = await call(s.url, "/v1/completions", { prompt: [1, 5, 6, 7], max_tokens: 3, seed: 1 });
    assert.equal(t.status, 200);
    assert.equal(t.body.usage.prompt_tokens, 4);
    assert.equal(
      t.body.choices[0].text,
      (await direct(s.model, [1, 5, 6, 7], { seed: 1, temperature: 1, maxTokens: 3 })).text,
    );
    // a batch of exactly one prompt is unwrapped
    const one = await call(s.url, "/v1/completions", { prompt: [[1, 5, 6, 7]], max_tokens: 3, seed: 1 });
    assert.equal(one.body.choices[0].text, t.body.choices[0].text);
    // OpenAI's default max_tokens for completions is 16
    const d = await call(s.url, "/v1/completions", { prompt: "x" });
    assert.equal(d.body.usage.completion_tokens, 16);
    // extras
    const k = await call(s.url, "/v1/completions", { prompt: "x", max_tokens: 2, top_k: 5, top_p: 0.5 });
    assert.equal(k.status, 200);
    assert.equal(s.model.runs.at(-1)!.options.topK, 5);
    assert.equal(s.model.runs.at(-1)!.options.topP, 0.5);
  } finally {
    await s.close();
  }
});

Deno.test("completions: stop strings and EOS finish with 'stop'", async () => {
  const s = startServer({ eosEvery: 7 });
  try {
    const ids = s.model.encode("abc", true);
    const full = (await direct(s.model, ids, { seed: 3, temperature: 0, maxTokens: 50 })).text;
    assert.ok(full.length >= 5 && full.length < 50, `EOS within 50 tokens (${full.length})`);
    const e = await call(s.url, "/v1/completions", {
      prompt: "abc",
      max_tokens: 50,
      seed: 3,
      temperature: 0,
    });
    assert.equal(e.body.choices[0].text, full);
    assert.equal(e.body.choices[0].finish_reason, "stop");
    const stopAt = full.slice(2, 4);
    const cut = full.slice(0, full.indexOf(stopAt));
    for (const stop of [stopAt, [stopAt, "QQQ"]]) {
      const r = await call(s.url, "/v1/completions", {
        prompt: "abc",
        max_tokens: 50,
        seed: 3,
        temperature: 0,
        stop,
      });
      assert.equal(r.status, 200);
      assert.equal(r.body.choices[0].text, cut);
      assert.equal(r.body.choices[0].finish_reason, "stop");
    }
  } finally {
    await s.close();
  }
});

Deno.test("chat completions: template, message, usage", async () => {
  const s = startServer();
  try {
    const messages = [{ role: "system", content: "be brief" }, { role: "user", content: "hi there" }];
    const r = await call(s.url, "/v1/chat/completions", {
      messages,
      max_tokens: 6,
      seed: 11,
      temperature: 0.5,
    });
    assert.equal(r.status, 200);
    const ids = s.model.encode(s.model.applyChatTemplate(messages), false);
    assert.equal(ids[0], 1, "BOS comes from the template's text, once");
    assert.equal(ids.filter((i) => i === 1).length, 1);
    assert.match(r.body.id, /^chatcmpl-[0-9a-f]+$/);
    assert.equal(r.body.object, "chat.completion");
    assert.equal(r.body.model, "fake-model");
    assert.deepEqual(r.body.choices[0].message, {
      role: "assistant",
      content: (await direct(s.model, ids, { seed: 11, temperature: 0.5, maxTokens: 6 })).text,
    });
    assert.equal(r.body.choices[0].finish_reason, "length");
    assert.deepEqual(r.body.usage, {
      prompt_tokens: ids.length,
      completion_tokens: 6,
      total_tokens: ids.length + 6,
    });
    // content as text parts; max_completion_tokens
    const parts = await call(s.url, "/v1/chat/completions", {
      messages: [{ role: "user", content: [{ type: "text", text: "hi " }, { type: "text", text: "there" }] }],
      max_completion_tokens: 4,
      seed: 2,
    });
    assert.equal(parts.status, 200);
    assert.equal(parts.body.usage.completion_tokens, 4);
  } finally {
    await s.close();
  }
});

Deno.test("streaming: completions and chat as server-sent events", async () => {
  const s = startServer();
  try {
    const req = { prompt: "stream me", max_tokens: 10, seed: 5, temperature: 0.7 };
    const solo = await call(s.url, "/v1/completions", req);
    const st = await stream(s.url, "/v1/completions", req);
    assert.equal(st.status, 200);
    assert.match(st.contentType!, /^text\/event-stream/);
    assert.ok(st.done, "ends with data: [DONE]");
    assert.ok(st.chunks.length >= 3, "several chunks");
    for (const c of st.chunks) {
      assert.match(c.id, /^cmpl-/);
      assert.equal(c.object, "text_completion");
      assert.equal(c.model, "fake-model");
      assert.equal(c.choices[0].index, 0);
    }
    assert.equal(new Set(st.chunks.map((c) => c.id)).size, 1, "one id per stream");
    assert.equal(st.text, solo.body.choices[0].text);
    assert.equal(st.chunks.at(-1).choices[0].finish_reason, "length");
    assert.ok(st.chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null));

    const messages = [{ role: "user", content: "hello" }];
    const chatSolo = await call(s.url, "/v1/chat/completions", { messages, max_tokens: 7, seed: 9 });
    const chat = await stream(s.url, "/v1/chat/completions", {
      messages,
      max_tokens: 7,
      seed: 9,
      stream_options: { include_usage: true },
    });
    assert.equal(chat.status, 200);
    assert.ok(chat.done);
    assert.equal(chat.chunks[0].object, "chat.completion.chunk");
    assert.equal(chat.chunks[0].choices[0].delta.role, "assistant");
    assert.match(chat.chunks[0].id, /^chatcmpl-/);
    assert.equal(chat.text, chatSolo.body.choices[0].message.content);
    const usage = chat.chunks.at(-1);
    assert.deepEqual(usage.choices, []);
    assert.deepEqual(usage.usage, chatSolo.body.usage);
    const last = chat.chunks.at(-2);
    assert.equal(last.choices[0].finish_reason, "length");
    assert.deepEqual(last.choices[0].delta, {});
  } finally {
    await s.close();
  }
});

Deno.test("sparsity: within the profile's range, 0 is dense, others 400 naming the field", async () => {
  const s = startServer({ sparsityLevels: [0.25, 0.4, 0.5] });
  const dense = startServer({ sparsityLevels: [] });
  try {
    const ok = await call(s.url, "/v1/completions", { prompt: "x", max_tokens: 2, sparsity: 0.45 });
    assert.equal(ok.status, 200);
    assert.equal(s.model.runs.at(-1)!.options.sparsity, 0.45);
    assert.equal(
      (await call(s.url, "/v1/completions", { prompt: "x", max_tokens: 2, sparsity: 0 })).status,
      200,
    );
    assert.equal(s.model.runs.at(-1)!.options.sparsity, 0);
    assertOpenAIError(await call(s.url, "/v1/completions", { prompt: "x", sparsity: 0.6 }), 400, "sparsity");
    assertOpenAIError(await call(s.url, "/v1/completions", { prompt: "x", sparsity: -0.1 }), 400, "sparsity");
    assertOpenAIError(
      await call(s.url, "/v1/completions", { prompt: "x", sparsity: "0.5" }),
      400,
      "sparsity",
    );
    const none = await call(dense.url, "/v1/completions", { prompt: "x", sparsity: 0.3 });
    assertOpenAIError(none, 400, "sparsity");
    assert.match(none.body.error.message, /sparsity/);
    assert.equal(
      (await call(dense.url, "/v1/completions", { prompt: "x", max_tokens: 1, sparsity: 0 })).status,
      200,
    );
  } finally {
    await s.close();
    await dense.close();
  }
});

// ---------------------------------------------------------------------------------------------------------
// bad input

Deno.test("bad input: 4xx with an OpenAI error object, and the server keeps serving", async () => {
  const s = startServer({ contextLength: 64 }, { maxTokensLimit: 32, maxBodyBytes: 4096 });
  const noChat = startServer({ hasChatTemplate: false });
  try {
    const C = "/v1/completions";
    const CH = "/v1/chat/completions";
    const user = [{ role: "user", content: "hi" }];
    const cases: [string, string, unknown, number, string | null][] = [
      ["empty body", C, undefined, 400, null],
      ["JSON array", C, [1, 2], 400, null],
      ["prompt of the wrong type", C, { prompt: 5 }, 400, "prompt"],
      ["prompt of mixed ids", C, { prompt: [1, "a"] }, 400, "prompt"],
      ["negative token id", C, { prompt: [1, -2] }, 400, "prompt"],
      ["missing prompt", C, {}, 400, "prompt"],
      ["empty prompt", C, { prompt: "" }, 400, "prompt"],
      ["empty id prompt", C, { prompt: [] }, 400, "prompt"],
      ["batched prompts", C, { prompt: ["a", "b"] }, 400, "prompt"],
      ["prompt longer than the context", C, { prompt: "a".repeat(100) }, 400, "prompt"],
      [
        "prompt + max_tokens over the context",
        C,
        { prompt: "a".repeat(50), max_tokens: 20 },
        400,
        "max_tokens",
      ],
      ["max_tokens 0", C, { prompt: "a", max_tokens: 0 }, 400, "max_tokens"],
      ["max_tokens negative", C, { prompt: "a", max_tokens: -3 }, 400, "max_tokens"],
      ["max_tokens fractional", C, { prompt: "a", max_tokens: 1.5 }, 400, "max_tokens"],
      ["max_tokens as a string", C, { prompt: "a", max_tokens: "8" }, 400, "max_tokens"],
      ["max_tokens above the limit", C, { prompt: "a", max_tokens: 33 }, 400, "max_tokens"],
      ["negative temperature", C, { prompt: "a", temperature: -0.1 }, 400, "temperature"],
      ["temperature above 2", C, { prompt: "a", temperature: 2.5 }, 400, "temperature"],
      ["temperature as a string", C, { prompt: "a", temperature: "hot" }, 400, "temperature"],
      ["top_p 0", C, { prompt: "a", top_p: 0 }, 400, "top_p"],
      ["top_p above 1", C, { prompt: "a", top_p: 1.5 }, 400, "top_p"],
      ["negative top_k", C, { prompt: "a", top_k: -1 }, 400, "top_k"],
      ["fractional top_k", C, { prompt: "a", top_k: 1.5 }, 400, "top_k"],
      ["five stop strings", C, { prompt: "a", stop: ["a", "b", "c", "d", "e"] }, 400, "stop"],
      ["stop as a number", C, { prompt: "a", stop: 3 }, 400, "stop"],
      ["seed as a string", C, { prompt: "a", seed: "x" }, 400, "seed"],
      ["fractional seed", C, { prompt: "a", seed: 1.5 }, 400, "seed"],
      ["stream as a string", C, { prompt: "a", stream: "yes" }, 400, "stream"],
      ["n = 2", C, { prompt: "a", n: 2 }, 400, "n"],
      ["token id outside the vocabulary", C, { prompt: [1, 9999] }, 400, "prompt"],
      ["token id outside the vocabulary, streamed", C, { prompt: [1, 9999], stream: true }, 400, "prompt"],
      ["model of the wrong type", C, { prompt: "a", model: 3 }, 400, "model"],
      ["missing messages", CH, {}, 400, "messages"],
      ["empty messages", CH, { messages: [] }, 400, "messages"],
      ["messages not an array", CH, { messages: "hi" }, 400, "messages"],
      ["unknown role", CH, { messages: [{ role: "wizard", content: "x" }] }, 400, "messages[0].role"],
      [
        "content of the wrong type",
        CH,
        { messages: [{ role: "user", content: 5 }] },
        400,
        "messages[0].content",
      ],
      ["chat n = 3", CH, { messages: user, n: 3 }, 400, "n"],
      ["chat negative temperature", CH, { messages: user, temperature: -1 }, 400, "temperature"],
      ["chat max_tokens 0", CH, { messages: user, max_tokens: 0 }, 400, "max_tokens"],
      ["messages the template rejects", CH, { messages: [{ role: "tool", content: "x" }] }, 400, "messages"],
    ];
    for (const [name, path, body, status, param] of cases) {
      const r = await call(s.url, path, body, body === undefined ? { method: "POST" } : {});
      try {
        assertOpenAIError(r, status, param);
      } catch (e) {
        throw new Error(`${name}: ${(e as Error).message}`);
      }
    }
    assertOpenAIError(await call(s.url, C, undefined, { raw: "{not json" }), 400, null);
    assertOpenAIError(await call(s.url, C, undefined, { raw: '{"prompt": "a",}' }), 400, null);
    // unknown model id: 404 model_not_found
    assertOpenAIError(await call(s.url, C, { prompt: "a", model: "gpt-4" }), 404, "model", "model_not_found");
    assertOpenAIError(
      await call(s.url, CH, { messages: user, model: "gpt-4" }),
      404,
      "model",
      "model_not_found",
    );
    // no chat template
    assertOpenAIError(await call(noChat.url, CH, { messages: user }), 400, "messages");
    // body above the limit, declared and streamed without Content-Length
    const big = JSON.stringify({ prompt: "a".repeat(10_000) });
    assertOpenAIError(await call(s.url, C, undefined, { raw: big }), 413, null, "request_too_large");
    const chunked = await fetch(s.url + C, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: ReadableStream.from([new TextEncoder().encode(big)]),
    });
    assertOpenAIError({ status: chunked.status, headers: chunked.headers, body: await chunked.json() }, 413);
    // unknown path, wrong method
    assertOpenAIError(await call(s.url, "/v1/embeddings", { input: "a" }), 404, null);
    assertOpenAIError(await call(s.url, "/nope"), 404, null);
    const get = await call(s.url, C);
    assertOpenAIError(get, 405, null);
    assert.equal(get.headers.get("allow"), "POST");
    assertOpenAIError(await call(s.url, "/health", {}), 405, null);
    assertOpenAIError(await call(s.url, "/v1/models", {}), 405, null);
    // the server still serves
    const ok = await call(s.url, C, { prompt: "still here", max_tokens: 3 });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.usage.completion_tokens, 3);
    assert.equal(s.errors.length, 0, "bad input is not an internal error");
  } finally {
    await s.close();
    await noChat.close();
  }
});

Deno.test("a model's own RangeError becomes 400, streamed or not", async () => {
  // a TextModel that does not tell its vocabulary size: the model itself rejects the ids
  const s = startServer({}, {}, (fake) => ({
    id: fake.id,
    contextLength: fake.contextLength,
    sparsityLevels: fake.sparsityLevels,
    hasTokenizer: fake.hasTokenizer,
    hasChatTemplate: fake.hasChatTemplate,
    encode: (text: string, addBos?: boolean) => fake.encode(text, addBos),
    applyChatTemplate: (m: { role: string; content: string }[]) => fake.applyChatTemplate(m),
    generate: (p: string | number[], o?: GenerateOptions) => fake.generate(p, o),
    dispose: () => fake.dispose(),
  }));
  try {
    for (const stream of [false, true]) {
      const r = await call(s.url, "/v1/completions", { prompt: [1, 9999], stream });
      assertOpenAIError(r, 400, null);
      assert.match(r.body.error.message, /9999/);
    }
    assert.equal((await call(s.url, "/v1/completions", { prompt: [1, 99], max_tokens: 2 })).status, 200);
    assert.equal(s.errors.length, 0);
  } finally {
    await s.close();
  }
});

Deno.test("internal errors: 500 OpenAI error, the server keeps serving", async () => {
  const s = startServer();
  try {
    s.model.failNext = new Error("GPU fell over");
    const r = await call(s.url, "/v1/completions", { prompt: "a", max_tokens: 2 });
    assertOpenAIError(r, 500, null);
    assert.equal(r.body.error.type, "server_error");
    assert.doesNotMatch(r.body.error.message, /GPU fell over/, "internal details stay in the log");
    assert.equal(s.errors.length, 1);
    // mid-stream: an error event, then the stream ends
    s.model.failNext = new Error("again");
    const st = await fetch(s.url + "/v1/completions", {
      method: "POST",
      body: JSON.stringify({ prompt: "a", max_tokens: 2, stream: true }),
    });
    const text = await st.text();
    assert.ok(text.includes('"error"'), text);
    assert.equal((await call(s.url, "/v1/completions", { prompt: "a", max_tokens: 2 })).status, 200);
    assert.equal((await call(s.url, "/health")).status, 200);
  } finally {
    await s.close();
  }
});

Deno.test("a model that failed for good: /health and generation answer 503", async () => {
  const s = startServer();
  try {
    assert.equal((await call(s.url, "/health")).status, 200);
    Object.assign(s.model, { failure: new Error("the model worker failed: device lost") });
    const h = await call(s.url, "/health");
    assert.equal(h.status, 503);
    assert.equal(h.body.status, "error");
    assert.match(h.body.error, /device lost/);
    assertOpenAIError(await call(s.url, "/v1/completions", { prompt: "a" }), 503, null, "model_failed");
  } finally {
    await s.close();
  }
});

Deno.test("API key: 401 without or with a wrong key, 200 with it; /health stays open", async () => {
  const s = startServer({}, { apiKey: "sekret-key" });
  try {
    const body = { prompt: "a", max_tokens: 2 };
    const none = await call(s.url, "/v1/completions", body);
    assertOpenAIError(none, 401, null, "invalid_api_key");
    assert.equal(none.headers.get("www-authenticate"), "Bearer");
    assertOpenAIError(
      await call(s.url, "/v1/completions", body, { headers: { authorization: "Bearer nope" } }),
      401,
    );
    assertOpenAIError(
      await call(s.url, "/v1/completions", body, { headers: { authorization: "sekret-key" } }),
      401,
    );
    assertOpenAIError(
      await call(s.url, "/v1/models", undefined, { headers: { authorization: "Bearer sekret-ke" } }),
      401,
    );
    assertOpenAIError(await call(s.url, "/v1/models"), 401);
    const auth = { authorization: "Bearer sekret-key" };
    assert.equal((await call(s.url, "/v1/completions", body, { headers: auth })).status, 200);
    assert.equal((await call(s.url, "/v1/models", undefined, { headers: auth })).status, 200);
    const st = await stream(s.url, "/v1/chat/completions", {
      messages: [{ role: "user", content: "x" }],
      max_tokens: 2,
    }, auth);
    assert.equal(st.status, 200);
    assert.ok(st.done);
    assert.equal((await call(s.url, "/health")).status, 200);
  } finally {
    await s.close();
  }
});

// ---------------------------------------------------------------------------------------------------------
// queueing, disconnects, load

Deno.test("queue limit: beyond maxQueue waiting requests, 429", async () => {
  const s = startServer({ chunkDelayMs: 20, contextLength: 2048 }, { maxQueue: 1 });
  try {
    const body = JSON.stringify({ prompt: "long", max_tokens: 400, stream: true });
    const ac = new AbortController();
    const running = await fetch(s.url + "/v1/completions", { method: "POST", body, signal: ac.signal });
    const waiting = await fetch(s.url + "/v1/completions", { method: "POST", body, signal: ac.signal });
    const h = await call(s.url, "/health");
    assert.equal(h.body.running, 1);
    assert.equal(h.body.waiting, 1);
    const r = await call(s.url, "/v1/completions", { prompt: "a", max_tokens: 2 });
    assertOpenAIError(r, 429, null);
    assert.equal(r.headers.get("retry-after"), "1");
    ac.abort();
    await running.body?.cancel().catch(() => {});
    await waiting.body?.cancel().catch(() => {});
    await waitFor(() => s.model.runs.filter((r) => r.endedAt >= 0).length === 2);
    assert.equal((await call(s.url, "/v1/completions", { prompt: "a", max_tokens: 2 })).status, 200);
  } finally {
    await s.close();
  }
});

Deno.test("disconnect mid-stream aborts the generation; the next request starts at once", async () => {
  const s = startServer({ chunkDelayMs: 20, contextLength: 2048 });
  try {
    const ac = new AbortController();
    const res = await fetch(s.url + "/v1/completions", {
      method: "POST",
      body: JSON.stringify({ prompt: "long story", max_tokens: 500, stream: true }),
      signal: ac.signal,
    });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const first = await reader.read();
    assert.ok(!first.done && first.value.length > 0);
    ac.abort();
    await reader.read().catch(() => {});
    // 500 tokens at 4 per 20 ms would take 2.5 s; the abort ends it within a chunk
    await waitFor(() => s.model.aborts === 1, 1000);
    const t0 = performance.now();
    const next = await call(s.url, "/v1/completions", { prompt: "next", max_tokens: 4 });
    assert.equal(next.status, 200);
    const start = s.model.runs[1].startedAt;
    assert.ok(start - t0 < 200, `next generation started ${(start - t0).toFixed(0)} ms after its request`);

    // a non-streaming request whose client goes away is aborted as well
    const ac2 = new AbortController();
    const p = fetch(s.url + "/v1/completions", {
      method: "POST",
      body: JSON.stringify({ prompt: "long story", max_tokens: 500 }),
      signal: ac2.signal,
    }).catch((e) => e);
    await waitFor(() => s.model.runs.length === 3 && s.model.runs[2].startedAt >= 0);
    ac2.abort();
    assert.equal((await p).name, "AbortError");
    await waitFor(() => s.model.aborts === 2, 1000);
    assert.equal((await call(s.url, "/health")).status, 200);
  } finally {
    await s.close();
  }
});

Deno.test("health answers during a long generation", async () => {
  const s = startServer({ chunkDelayMs: 10, chunkTokens: 1, contextLength: 2048 });
  try {
    const ac = new AbortController();
    const res = await fetch(s.url + "/v1/completions", {
      method: "POST",
      body: JSON.stringify({ prompt: "long", max_tokens: 1000, stream: true }),
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const h = await call(s.url, "/health");
      times.push(performance.now() - t0);
      assert.equal(h.status, 200);
      assert.equal(h.body.running, 1);
    }
    assert.ok(Math.max(...times) < 250, `health took ${times.map((t) => t.toFixed(1)).join(", ")} ms`);
    ac.abort();
    await reader.read().catch(() => {});
    await waitFor(() => s.model.aborts === 1);
  } finally {
    await s.close();
  }
});

Deno.test("load: 32 concurrent streaming clients x 3 requests, identical to solo runs", async () => {
  const s = startServer({ chunkDelayMs: 1, chunkTokens: 3 });
  try {
    const request = (client: number, i: number) => {
      const chat = (client + i) % 2 === 0;
      const common = { max_tokens: 6 + ((client * 3 + i) % 7), seed: client * 100 + i, temperature: 0.9 };
      return chat
        ? {
          path: "/v1/chat/completions",
          body: { ...common, messages: [{ role: "user", content: `client ${client} asks ${i}` }] },
        }
        : { path: "/v1/completions", body: { ...common, prompt: `client ${client} request ${i}` } };
    };
    const failures: string[] = [];
    const got = new Map<string, string>();
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 32 }, async (_, client) => {
      for (let i = 0; i < 3; i++) {
        const { path, body } = request(client, i);
        try {
          const r = await stream(s.url, path, body);
          if (r.status !== 200 || !r.done || !r.finishReason) failures.push(`${client}/${i}: ${r.status}`);
          got.set(`${client}/${i}`, r.text);
        } catch (e) {
          failures.push(`${client}/${i}: ${(e as Error).message}`);
        }
      }
    }));
    const elapsed = performance.now() - t0;
    assert.deepEqual(failures, []);
    assert.equal(got.size, 96);
    assert.equal(s.model.runs.length, 96);
    assert.equal(s.model.maxRunning, 1, "one generation at a time");
    // solo runs, one at a time
    for (let client = 0; client < 32; client++) {
      for (let i = 0; i < 3; i++) {
        const { path, body } = request(client, i);
        const solo = await stream(s.url, path, body);
        assert.equal(got.get(`${client}/${i}`), solo.text, `${client}/${i}`);
        assert.ok(solo.text.length > 0);
      }
    }
    assert.ok(elapsed < 30_000, `load test took ${elapsed.toFixed(0)} ms`);
  } finally {
    await s.close();
  }
});

// ---------------------------------------------------------------------------------------------------------
// serve() and the CLI command

Deno.test("serve(): loopback by default, graceful shutdown on abort", async () => {
  const fake = new FakeModel({ chunkDelayMs: 5 });
  const ac = new AbortController();
  let addr: Deno.NetAddr | null = null;
  const server = serve({ model: fake, port: 0, signal: ac.signal, onListen: (a) => (addr = a) });
  assert.equal(addr!.hostname, "127.0.0.1");
  const url = `http://127.0.0.1:${addr!.port}`;
  const res = await fetch(url + "/v1/completions", {
    method: "POST",
    body: JSON.stringify({ prompt: "x", max_tokens: 40, stream: true, seed: 1 }),
  });
  ac.abort(); // the running stream still completes
  const s = parseSse(await res.text());
  assert.equal(s.at(-1), "[DONE]");
  await server.finished;
  assert.equal(fake.disposed, false, "a model passed in stays the caller's");
});

Deno.test("cli serve: bad flags throw; a model that cannot load exits 1", async () => {
  const deps = { defaultModelDir: () => "/nonexistent" } as unknown as CliDeps;
  await assert.rejects(() => serveCommand.run({ port: "70000" }, deps), /--port/);
  await assert.rejects(() => serveCommand.run({ "max-tokens-limit": "0" }, deps), /--max-tokens-limit/);
  const errors: unknown[] = [];
  const log = console.error;
  console.error = (...a: unknown[]) => errors.push(a.join(" "));
  try {
    const dir = await Deno.makeTempDir();
    try {
      assert.equal(await serveCommand.run({ model: dir, port: "0" }, deps), 1);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    assert.ok(errors.some((e) => String(e).includes(`cannot load ${dir}`)), errors.join("\n"));
  } finally {
    console.error = log;
  }
});
