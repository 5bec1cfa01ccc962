/**
 * Decode speed of a real model through the real decode loop (the embedded tiny-llama-16m by default):
 * `deno run -A bench/decode_bench.ts [--model DIR] [--tokens N] [--sparsity LIST]`.
 * The same measurement as `cli.ts bench --model DIR`; kept here so `bench/` holds every benchmark entry point.
 * @module
 */
import { parseArgs } from "node:util";
import { benchDecode } from "../src/bench/decode_bench.ts";
import { defaultModelDir } from "../src/model/default_model.ts";
import { loadModel } from "../src/model/model.ts";

if (import.meta.main) {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  const { values } = parseArgs({
    args: Deno.args,
    options: { model: { type: "string" }, tokens: { type: "string" }, sparsity: { type: "string" } },
  });
  const tokens = Number(values.tokens ?? 512);
  const dir = values.model ?? defaultModelDir();
  const model = await loadModel(dir, { contextLength: 16 + tokens + 64 });
  const sparsities = (values.sparsity ?? "0").split(",").map(Number);
  const rows = await benchDecode(model, { sparsities, tokens, log: (l) => console.error(l) });
  for (const r of rows) {
    console.log(
      `${dir} on ${model.gpu.adapterName}: sparsity ${r.sparsity}: ${
        r.tokensPerSecond.toFixed(1)
      } tokens/s, ` +
        `GPU ${r.gpuMsPerToken.toFixed(3)} ms/token, host overhead ${(r.hostOverhead * 100).toFixed(1)}%`,
    );
  }
  model.dispose();
}
