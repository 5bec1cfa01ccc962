/**
 * Perplexity through the decode step itself: every token of each window fed one decode step at a time (the
 * GEMV kernels, the decode attention, lm_head's GEMV), its logits read back and scored against the next token.
 * `cli.ts eval` scores windows through the prefill pass (the GEMM kernels), which never runs the decode GEMVs, so
 * a change to them (e.g. `--gemv-half`: the GEMVs' row arithmetic in f16, GEMV_HALF) is measured here. `--sparsity S`
 * runs the TEAL-sparse decode step at the model profile's thresholds for S (the sparse GEMVs; `eval --sparsity`
 * masks the prefill GEMMs' inputs instead), with the GEMV variants of S's sparsity bin (`--sparsity-bins
 * off|on|both`: the mid bin's variants, SPARSITY_BINS). One read-back a token: slow on a GPU (~10 ms each in
 * Deno), so keep the windows few.
 *
 * `deno run -A bench/decode_nll.ts --text FILE [--model PATH] [--quant none|int8|int4] [--windows 4]
 *   [--ctx 128] [--sparsity S] [--gemv-half off|on|both] [--sparsity-bins off|on|both]`
 * @module
 */
import { parseArgs } from "node:util";
import { loadModel } from "../src/model/model.ts";
import { parseQuant } from "../src/gpu/quant.ts";
import { GEMV_HALF, SPARSITY_BINS } from "../src/gpu/kernels.ts";
import { defaultModelDir } from "../src/model/default_model.ts";
import { thresholdsFor } from "../src/teal/profile.ts";

/** Mean negative log-likelihood (nats a token) of `windows` windows of `ctx` tokens after BOS. */
async function decodeNll(
  dir: string,
  quant: "none" | "int8" | "int4",
  ids: number[],
  windows: number,
  ctx: number,
  sparsity: number,
): Promise<{ nll: number; tokens: number }> {
  const model = await loadModel(dir, { quant });
  try {
    const fwd = model.forward;
    const sparse = sparsity > 0;
    if (sparse) {
      if (!model.profile) {
        throw new Error(`--sparsity: model ${dir} has no TEAL profile (run: cli.ts calibrate)`);
      }
      model.setThresholds(thresholdsFor(model.profile, sparsity));
      fwd.sparsityLevel = sparsity; // the GEMV variants of its bin
    }
    const bos = model.config.bosTokenId ?? 1;
    let sum = 0;
    let n = 0;
    for (let w = 0; w < windows; w++) {
      const win = [bos, ...ids.slice(w * ctx, (w + 1) * ctx)];
      if (win.length < 2) break;
      for (let i = 0; i + 1 < win.length; i++) {
        fwd.writeState(i, win[i], 1);
        model.gpu.run(fwd.decodeStep(sparse, i));
        const logits = await model.gpu.readF32(fwd.logits);
        let max = -Infinity;
        for (const v of logits) max = Math.max(max, v);
        let z = 0;
        for (const v of logits) z += Math.exp(v - max);
        sum += max + Math.log(z) - logits[win[i + 1]];
        n++;
      }
    }
    return { nll: sum / n, tokens: n };
  } finally {
    model.dispose();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      text: { type: "string" },
      model: { type: "string" },
      quant: { type: "string" },
      windows: { type: "string" },
      ctx: { type: "string" },
      "gemv-half": { type: "string" },
      sparsity: { type: "string" },
      "sparsity-bins": { type: "string" },
    },
  });
  if (!values.text) throw new Error("--text FILE: the text to score");
  const quant = parseQuant(values.quant, "--quant");
  const windows = Number(values.windows ?? 4);
  const ctx = Number(values.ctx ?? 128);
  if (!Number.isInteger(windows) || windows < 1) throw new RangeError("--windows: a positive integer");
  if (!Number.isInteger(ctx) || ctx < 1) throw new RangeError("--ctx: a positive integer");
  const sparsity = Number(values.sparsity ?? 0);
  if (!(sparsity >= 0 && sparsity < 1)) throw new RangeError("--sparsity: a number in [0, 1)");
  const half = values["gemv-half"] ?? "both";
  if (!["off", "on", "both"].includes(half)) throw new RangeError("--gemv-half: off, on or both");
  const bins = values["sparsity-bins"] ?? "on";
  if (!["off", "on", "both"].includes(bins)) throw new RangeError("--sparsity-bins: off, on or both");
  const dir = values.model ?? defaultModelDir();
  const probe = await loadModel(dir, { quant: "none" });
  const ids = probe.encode(await Deno.readTextFile(values.text), false);
  const device = probe.gpu.adapterName;
  probe.dispose();
  const choices = (v: string) => v === "both" ? [false, true] : [v === "on"];
  for (const on of choices(half)) {
    for (const binsOn of choices(bins)) {
      GEMV_HALF.quant = GEMV_HALF.f16 = on;
      SPARSITY_BINS.on = binsOn;
      const r = await decodeNll(dir, quant, ids, windows, ctx, sparsity);
      console.log(JSON.stringify({
        device,
        model: dir,
        quant,
        gemv_half: on,
        sparsity_bins: binsOn,
        sparsity,
        windows,
        ctx,
        tokens: r.tokens,
        nll: r.nll,
        ppl: Math.exp(r.nll),
      }));
    }
  }
}

if (import.meta.main) await main();
