/**
 * `cli.ts serve`: the OpenAI-compatible HTTP server, until SIGINT or SIGTERM.
 * @module
 */
import type { Command } from "./commands.ts";
import { GEMV_HALF_USAGE, gemvHalfFlag, num } from "./options.ts";
import { parseQuant } from "../gpu/quant.ts";
import { DEFAULT_LIMITS } from "../server/app.ts";
import { serve } from "../server/serve.ts";
import { loadModelInWorker } from "../server/worker.ts";

const USAGE = `usage: deno run -A cli.ts serve [options]

  --model PATH            Hugging Face model folder or GGUF file (default: the embedded tiny-llama-16m)
  --host ADDR             interface to bind (default 127.0.0.1; 0.0.0.0 for every interface)
  --port P                TCP port (default 8000)
  --api-key KEY           require 'Authorization: Bearer KEY' (default: $TEALGPU_API_KEY when set)
  --max-tokens-limit N    largest max_tokens a request may ask for (default ${DEFAULT_LIMITS.maxTokensLimit})
  --context N             context length to allocate (default min(model max, 4096))
  --profile FILE          TEAL profile (default: teal-profile.json beside the model)
  --quant FORMAT          weight format: none (f16), int8 or int4 (default: $TEALGPU_QUANT, else none)
${GEMV_HALF_USAGE} (default: $TEALGPU_GEMV_HALF, else auto)

Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health.
SIGINT/SIGTERM stop accepting connections and wait for running requests; a second signal exits at once.`;

/** The serve command. */
export const serveCommand: Command = {
  summary: "serve an OpenAI-compatible HTTP API",
  usage: USAGE,
  options: {
    model: { type: "string" },
    host: { type: "string" },
    port: { type: "string" },
    "api-key": { type: "string" },
    "max-tokens-limit": { type: "string" },
    context: { type: "string" },
    profile: { type: "string" },
    quant: { type: "string" },
    "gemv-half": { type: "string" },
  },
  async run(v, deps) {
    const port = num(v, "port", 8000, { min: 0, max: 65535, integer: true });
    const host = (v.host as string | undefined) ?? "127.0.0.1";
    const maxTokensLimit = num(v, "max-tokens-limit", DEFAULT_LIMITS.maxTokensLimit, {
      min: 1,
      integer: true,
    });
    const contextLength = v.context === undefined
      ? undefined
      : num(v, "context", 0, { min: 2, integer: true });
    const apiKey = (v["api-key"] as string | undefined) ?? (Deno.env.get("TEALGPU_API_KEY") || undefined);
    if (apiKey !== undefined && apiKey.length === 0) throw new Error("--api-key must not be empty");
    const dir = (v.model as string | undefined) ?? deps.defaultModelDir();
    const quant = v.quant !== undefined
      ? parseQuant(v.quant as string, "--quant")
      : parseQuant(Deno.env.get("TEALGPU_QUANT") || undefined, "TEALGPU_QUANT");
    const gemvHalf = v["gemv-half"] !== undefined
      ? gemvHalfFlag(v["gemv-half"])
      : gemvHalfFlag(Deno.env.get("TEALGPU_GEMV_HALF") || undefined, "gemv-half (TEALGPU_GEMV_HALF)");

    const stop = new AbortController();
    let signals = 0;
    const onSignal = () => {
      if (++signals > 1) Deno.exit(130);
      console.error("tealgpu: shutting down (waiting for running requests; signal again to exit now)");
      stop.abort();
    };
    const sigs: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
    for (const s of sigs) Deno.addSignalListener(s, onSignal);

    let failed = false;
    // the model runs in a worker thread: GPU read-backs block their thread, and this one serves HTTP
    console.error(`tealgpu: loading ${dir}`);
    const model = loadModelInWorker(dir, {
      contextLength,
      profile: v.profile as string | undefined,
      quant,
      gemvHalf,
    });
    model.then(
      (m) => {
        const sparse = m.sparsityLevels.length > 0 ? `, TEAL sparsity up to ${m.sparsityLevels.at(-1)}` : "";
        console.error(`tealgpu: model ${m.id} ready (context ${m.contextLength} tokens${sparse})`);
      },
      (e) => {
        console.error(`tealgpu: cannot load ${dir}: ${(e as Error).message}`);
        failed = true;
        stop.abort();
      },
    );
    try {
      const server = serve({ model, host, port, apiKey, maxTokensLimit, signal: stop.signal });
      await server.finished;
    } finally {
      for (const s of sigs) Deno.removeSignalListener(s, onSignal);
      await model.then((m) => m.close(), () => {}); // before cli.ts calls Deno.exit (see WorkerModel.close)
    }
    return failed ? 1 : 0;
  },
};
