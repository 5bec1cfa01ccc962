/**
 * The OpenAI-compatible server over real HTTP on loopback, against the real embedded model
 * (models/tiny-llama-16m) hosted in a worker thread as `serve()` runs it (lavapipe in CI: requests stay short).
 * @module
 */
import assert from "node:assert/strict";
import { createApp } from "../src/server/app.ts";
import { defaultModelDir } from "../src/model/default_model.ts";
import { loadModelInWorker, type WorkerModel } from "../src/server/worker.ts";
import { serveCommand } from "../src/cli/serve.ts";
import type { CliDeps } from "../src/cli/commands.ts";
import type { GenerateOptions, GenerateResult, Generation, TextModel } from "../src/generate/types.ts";

if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());

/**
 * The real model, with every generation's result recorded (bound methods keep private fields working) and
 * `extra` options added to every generation.
 */
function observed(
  model: WorkerModel,
  extra: GenerateOptions = {},
): { model: TextModel; results: Promise<GenerateResult>[] } {
  const results: Promise<GenerateResult>[] = [];
  const proxy = new Proxy(model, {
    get(target, p) {
      if (p === "generate") {
        return (prompt: string | number[], o?: GenerateOptions): Generation => {
          const g = target.generate(prompt, { ...o, ...extra });
          results.push(g.result);
          g.result.catch(() => {});
          return g;
        };
      }
      const v = Reflect.get(target, p, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { model: proxy, results };
}

async function post(url: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return await fetch(url + path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
}

/** Parses a whole SSE body: the JSON payloads, whether it ended with [DONE], the text and finish reason. */
function parseSse(raw: string): {
  // deno-lint-ignore no-explicit-any
  chunks: any[];
  done: boolean;
  text: string;
  finishReason: string | null;
} {
  const data = raw.split("\n\n").filter((b) => b !== "").map((b) => {
    assert.ok(b.startsWith("data: "), `SSE event ${JSON.stringify(b)}`);
    return b.slice(6);
  });
  const done = data.at(-1) === "[DONE]";
  const chunks = data.filter((d) => d !== "[DONE]").map((d) => JSON.parse(d));
  let text = "";
  let finishReason: string | null = null;
  for (const c of chunks) {
    for (const ch of c.choices) {
      text += ch.text ?? ch.delta?.content ?? "";
      finishReason = ch.finish_reason ?? finishReason;
    }
  }
  return { chunks, done, text, finishReason };
}

async function direct(model: TextModel, ids: number[], o: GenerateOptions): Promise<GenerateResult> {
  const g = model.generate(ids, o);
  for await (const _ of g) { /* drain */ }
  return await g.result;
}

Deno.test("server on the real tiny model", async (t) => {
  const t0 = performance.now();
  const real = await loadModelInWorker(defaultModelDir());
  const { model, results } = observed(real);
  const app = createApp({ model, onError: (e) => console.error(e) });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => app.fetch(req));
  const url = `http://127.0.0.1:${server.addr.port}`;
  try {
    // solo runs (one at a time); the concurrent step replays them
    const solo = new Map<
      string,
      { path: string; body: Record<string, unknown>; text: string; finish: string }
    >();
    const streamAlone = async (key: string, path: string, body: Record<string, unknown>) => {
      const res = await post(url, path, { ...body, stream: true });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type")!, /^text\/event-stream/);
      const s = parseSse(await res.text());
      assert.ok(s.done, "ends with [DONE]");
      solo.set(key, { path, body, text: s.text, finish: s.finishReason! });
      return s;
    };

    await t.step("health and a completion equal to a direct generation", async () => {
      const h = await fetch(url + "/health");
      assert.equal(h.status, 200);
      assert.equal((await h.json()).model, real.id);
      const body = { prompt: "The jury said that", max_tokens: 6, temperature: 0 };
      const res = await post(url, "/v1/completions", body);
      assert.equal(res.status, 200);
      const r = await res.json();
      assert.match(r.id, /^cmpl-/);
      const ids = real.encode(body.prompt, true);
      const want = await direct(real, ids, { maxTokens: 6, temperature: 0, topP: 1, topK: 0 });
      assert.equal(r.choices[0].text, want.text);
      assert.equal(r.usage.prompt_tokens, ids.length);
      assert.equal(r.usage.completion_tokens, want.ids.length);
      assert.equal(r.choices[0].finish_reason, want.finishReason === "length" ? "length" : "stop");
      solo.set("a", { path: "/v1/completions", body, text: want.text, finish: r.choices[0].finish_reason });
    });

    await t.step("a streamed chat completion equals the same request unstreamed", async () => {
      const body = {
        messages: [{ role: "user", content: "Tell me about the jury." }],
        max_tokens: 6,
        temperature: 0.8,
        seed: 3,
      };
      const whole = await (await post(url, "/v1/chat/completions", body)).json();
      const s = await streamAlone("b", "/v1/chat/completions", body);
      assert.equal(s.chunks[0].choices[0].delta.role, "assistant");
      assert.match(s.chunks[0].id, /^chatcmpl-/);
      assert.equal(s.text, whole.choices[0].message.content);
      assert.equal(s.finishReason, whole.choices[0].finish_reason);
      await streamAlone("c", "/v1/completions", {
        prompt: "Story: the cat",
        max_tokens: 6,
        seed: 5,
        temperature: 0.9,
      });
      await streamAlone("d", "/v1/chat/completions", {
        messages: [{ role: "user", content: "Question?" }],
        max_tokens: 6,
        seed: 6,
        temperature: 0.9,
      });
    });

    await t.step("/health answers promptly during a long generation", async () => {
      const ac = new AbortController();
      const res = await post(
        url,
        "/v1/completions",
        { prompt: "Once upon a time", max_tokens: 1000, temperature: 1, seed: 1, stream: true },
        ac.signal,
      );
      const reader = res.body!.getReader();
      let ended = false;
      const drained = (async () => {
        while (!(await reader.read()).done) { /* keep the stream flowing */ }
        ended = true;
      })().catch(() => {});
      const times: number[] = [];
      while (!ended && times.length < 15) {
        const t1 = performance.now();
        const h = await fetch(url + "/health");
        const body = await h.json();
        if (body.running !== 1) break;
        times.push(performance.now() - t1);
        await new Promise((r) => setTimeout(r, 20));
      }
      ac.abort();
      await drained;
      await results.at(-1);
      times.sort((a, b) => a - b);
      const median = times[Math.floor(times.length / 2)];
      console.log(
        `/health during generation: ${times.length} probes, median ${median?.toFixed(1)} ms, max ${
          times.at(-1)?.toFixed(1)
        } ms`,
      );
      assert.ok(times.length >= 3, `only ${times.length} probes while the generation ran`);
      assert.ok(times.at(-1)! < 250, `slowest /health took ${times.at(-1)} ms`);
      assert.ok(median < 50, `median /health took ${median} ms`);
    });

    await t.step("a client disconnect aborts the generation", async () => {
      const ac = new AbortController();
      const n = results.length;
      const res = await post(
        url,
        "/v1/completions",
        { prompt: "Once upon a time", max_tokens: 600, temperature: 1, seed: 2, stream: true },
        ac.signal,
      );
      const reader = res.body!.getReader();
      await reader.read();
      ac.abort();
      await reader.read().catch(() => {});
      const r = await results[n];
      assert.equal(r.finishReason, "abort");
      assert.ok(r.ids.length < 600);
      const t1 = performance.now();
      const next = await post(url, "/v1/completions", { prompt: "Hello", max_tokens: 4, temperature: 0 });
      assert.equal(next.status, 200);
      await next.json();
      console.log(`request after the disconnect: ${(performance.now() - t1).toFixed(0)} ms`);
    });

    await t.step("8 concurrent streams equal solo runs with the same seed", async () => {
      // each of the 4 solo requests twice, all at once
      const keys = ["a", "b", "c", "d", "d", "c", "b", "a"];
      const streamed = await Promise.all(keys.map(async (k) => {
        const { path, body } = solo.get(k)!;
        const res = await post(url, path, { ...body, stream: true });
        assert.equal(res.status, 200);
        return parseSse(await res.text());
      }));
      keys.forEach((k, i) => {
        assert.ok(streamed[i].done, `stream ${i} ends with [DONE]`);
        assert.equal(streamed[i].text, solo.get(k)!.text, `stream ${i} (${k})`);
        assert.equal(streamed[i].finishReason, solo.get(k)!.finish, `stream ${i} (${k})`);
      });
    });
  } finally {
    await server.shutdown();
    await Promise.allSettled(results);
    await real.close(); // the worker thread must be gone before the test run ends (see WorkerModel.close)
    console.log(`real-model server test: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
});

Deno.test("server on a worker model of short prefill passes: a client that disconnects during a long prompt's prefill stops it between passes", async () => {
  const stories = new URL("../../shared/models/stories260k", import.meta.url).pathname;
  const real = await loadModelInWorker(stories, { maxPrefill: 16, contextLength: 512, profile: false });
  // the worker relays the prefill progress; the first report of the first request disconnects its client
  const progress: number[][] = [];
  const client = new AbortController();
  const { model, results } = observed(real, {
    onPrefillProgress: (done, total) => {
      progress.push([done, total]);
      if (results.length === 1) client.abort();
    },
  });
  const app = createApp({ model, onError: (e) => console.error(e) });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => app.fetch(req));
  const url = `http://127.0.0.1:${server.addr.port}`;
  try {
    const ids = Array.from({ length: 400 }, (_, i) => 3 + ((i * 37) % 500)); // 25 passes of 16 rows
    // streamed: Deno's server notices at once that the client of an event stream went away (here before any
    // event), but not always that of a plain request whose body was over about 1 KB
    const body = { prompt: ids, max_tokens: 8, temperature: 0, stream: true };
    const res0 = await post(url, "/v1/completions", body, client.signal);
    assert.equal(res0.status, 200);
    await assert.rejects(res0.text());
    const r = await results[0];
    assert.equal(r.finishReason, "abort");
    assert.deepEqual(r.ids, []);
    const last = progress.at(-1)!;
    assert.ok(last[0] < 400, `prefill went on to ${last[0]} of 400 tokens`);
    // the model serves on: the same request in full reports every pass and gives a direct run's tokens
    progress.length = 0;
    const res = await post(url, "/v1/completions", body);
    assert.equal(res.status, 200);
    const full = parseSse(await res.text());
    assert.ok(full.done, "ends with [DONE]");
    assert.deepEqual(progress, Array.from({ length: 25 }, (_, i) => [Math.min(400, 16 * (i + 1)), 400]));
    const want = await direct(real, ids, { maxTokens: 8, temperature: 0 });
    assert.equal(want.ids.length, 8);
    assert.deepEqual((await results[1]).ids, want.ids);
    // a callback that throws on this thread ends its generation with the error; the worker serves on
    const fail = () => {
      throw new Error("progress callback failed");
    };
    await assert.rejects(
      direct(real, ids, { maxTokens: 8, temperature: 0, onPrefillProgress: fail }),
      /progress callback failed/,
    );
    assert.deepEqual((await direct(real, ids, { maxTokens: 8, temperature: 0 })).ids, want.ids);
  } finally {
    await server.shutdown();
    await Promise.allSettled(results);
    await real.close();
  }
});

Deno.test("cli serve: loads in a worker, serves, exits 0 on SIGTERM", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const url = `http://127.0.0.1:${port}`;
  const log = console.error;
  const lines: string[] = [];
  console.error = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    const deps = { defaultModelDir } as unknown as CliDeps;
    const exit = serveCommand.run({ port: String(port), "api-key": "k", "max-tokens-limit": "4" }, deps);
    let status = 0;
    for (let i = 0; i < 300 && status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const h = await fetch(url + "/health").catch(() => null);
      status = h?.status ?? 0;
      await h?.body?.cancel();
    }
    assert.equal(status, 200, lines.join("\n"));
    const res = await fetch(url + "/v1/completions", {
      method: "POST",
      headers: { authorization: "Bearer k" },
      body: JSON.stringify({ prompt: "Hello", max_tokens: 5 }),
    });
    assert.equal(res.status, 400, "max_tokens above --max-tokens-limit");
    await res.body?.cancel();
    const ok = await fetch(url + "/v1/completions", {
      method: "POST",
      headers: { authorization: "Bearer k" },
      body: JSON.stringify({ prompt: "Hello", max_tokens: 4 }),
    });
    assert.equal(ok.status, 200);
    assert.equal((await ok.json()).usage.completion_tokens <= 4, true);
    Deno.kill(Deno.pid, "SIGTERM");
    assert.equal(await exit, 0);
  } finally {
    console.error = log;
  }
});
