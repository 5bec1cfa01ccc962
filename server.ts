/**
 * The OpenAI-compatible HTTP server as a `deno serve` module:
 *
 * ```sh
 * TEALGPU_MODEL=/models/TinyLlama-1.1B-Chat-v1.0 TEALGPU_API_KEY=secret \
 *   deno serve -A --host 127.0.0.1 --port 8000 server.ts
 * ```
 *
 * Environment:
 * - `TEALGPU_MODEL`: model folder (default: the embedded tiny-llama-16m of a checkout).
 * - `TEALGPU_API_KEY`: when set, every endpoint but `/health` requires `Authorization: Bearer <key>`.
 * - `TEALGPU_QUANT`: weight format, `none` (f16, default), `int8` or `int4` (quantized at load).
 * - `TEALGPU_GEMV_HALF`: `on`, `off` or `auto` (default): int8/int4 decode GEMVs in packed f16 arithmetic.
 *
 * The model loads in the background, in a worker thread: `/health` answers 503 until it is ready. Run one process per GPU (do not
 * use `deno serve --parallel`: each worker would load its own copy of the model). Endpoints:
 * `POST /v1/completions`, `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`.
 * @module
 */
import { createApp } from "./src/server/app.ts";
import { defaultModelDir } from "./src/model/default_model.ts";
import { loadModelInWorker } from "./src/server/worker.ts";
import { parseQuant } from "./src/gpu/quant.ts";
import { gemvHalfFlag } from "./src/cli/options.ts";

// wgpu's Vulkan backend warns when XDG_RUNTIME_DIR is unset (headless servers); give it a harmless one.
if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());

const dir = Deno.env.get("TEALGPU_MODEL") || defaultModelDir();
const quant = parseQuant(Deno.env.get("TEALGPU_QUANT") || undefined, "TEALGPU_QUANT");
const gemvHalf = gemvHalfFlag(
  Deno.env.get("TEALGPU_GEMV_HALF") || undefined,
  "gemv-half (TEALGPU_GEMV_HALF)",
);
const app = createApp({
  // GPU work runs in a worker thread so it never blocks this one's event loop
  model: loadModelInWorker(dir, { quant, gemvHalf }).then((m) => {
    console.error(`tealgpu: model ${m.id} ready (context ${m.contextLength} tokens)`);
    return m;
  }),
  apiKey: Deno.env.get("TEALGPU_API_KEY") || undefined,
});

/** The `deno serve` handler. */
const handler: Deno.ServeDefaultExport = { fetch: (req: Request): Promise<Response> => app.fetch(req) };
export default handler;
