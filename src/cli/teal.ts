/**
 * `cli.ts calibrate` and `cli.ts eval`: TEAL profiles and perplexity against sparsity.
 * @module
 */
import { calibrate } from "../teal/calibrate.ts";
import { evaluatePerplexity } from "../teal/eval.ts";
import { lineChart } from "../teal/plot.ts";
import { progressBar } from "../model/progress.ts";
import type { Command } from "./commands.ts";
import { num, numList, onOff } from "./options.ts";
import { MATMUL_WIDE } from "../gpu/kernels.ts";
import { parseQuant } from "../gpu/quant.ts";

async function readText(path: string, flag: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`--${flag} ${path}: cannot read (${(e as Error).message})`);
  }
}

function progress(): ((phase: string, done: number, total: number) => void) | undefined {
  if (!Deno.stderr.isTerminal()) return undefined;
  const bars = new Map<string, (d: number, t: number) => void>();
  return (phase, done, total) => {
    if (!bars.has(phase)) bars.set(phase, progressBar(phase.padEnd(10), "items"));
    bars.get(phase)!(done, total);
  };
}

/** The calibrate command. */
export const calibrateCommand: Command = {
  summary: "calibrate TEAL thresholds for a model (writes a profile)",
  usage: `usage: deno run -A cli.ts calibrate --model DIR --text FILE --out PROFILE.json [options]

  --model PATH         model folder or GGUF file (default: the embedded tiny-llama-16m)
  --text FILE          calibration text
  --out FILE           profile to write (name it teal-profile.json in the model folder to have it found)
  --tokens N           calibration tokens for the statistics (default 16384)
  --ctx N              text tokens per window, each window BOS + N tokens (default 512)
  --greedy-tokens N    tokens the greedy allocation evaluates block errors on (default 1024)
  --score MODE         magnitude (|x|) or weighted (|x| * ||W[:, i]||) (default magnitude)
  --uniform            same sparsity for every tensor instead of TEAL's greedy allocation
  --quant FORMAT       calibrate on none (f16, default), int8 or int4 weights (quantized at load), for a
                       profile to decode those weights with`,
  options: {
    model: { type: "string" },
    text: { type: "string" },
    out: { type: "string" },
    quant: { type: "string" },
    tokens: { type: "string" },
    ctx: { type: "string" },
    "greedy-tokens": { type: "string" },
    score: { type: "string" },
    uniform: { type: "boolean" },
  },
  async run(v, deps) {
    if (!v.text) throw new Error("--text FILE is required");
    if (!v.out) throw new Error("--out FILE is required");
    const score = (v.score as string | undefined) ?? "magnitude";
    if (score !== "magnitude" && score !== "weighted") {
      throw new Error(`--score must be magnitude or weighted, got '${score}'`);
    }
    const ctx = num(v, "ctx", 512, { min: 2, integer: true });
    const quant = parseQuant(v.quant as string | undefined, "--quant");
    const text = await readText(v.text as string, "text");
    const model = await deps.loadModel((v.model as string | undefined) ?? deps.defaultModelDir(), {
      maxPrefill: ctx + 1,
      contextLength: ctx + 2,
      profile: false,
      quant,
    });
    try {
      const profile = await calibrate(model, text, {
        tokens: num(v, "tokens", 16384, { min: 1, integer: true }),
        ctx,
        greedyTokens: num(v, "greedy-tokens", 1024, { min: 1, integer: true }),
        score,
        allocation: v.uniform ? "uniform" : "greedy",
        textName: (v.text as string).split("/").pop(),
        onProgress: progress(),
      });
      await Deno.writeTextFile(v.out as string, JSON.stringify(profile, null, 1) + "\n");
      console.error(
        `wrote ${v.out}: ${profile.levels.length} targets, ${profile.calibration.tokens} tokens, ${profile.calibration.seconds} s`,
      );
      return 0;
    } finally {
      model.dispose();
    }
  },
};

/** The eval command. */
export const evalCommand: Command = {
  summary: "perplexity of a text, dense and at TEAL sparsity levels",
  usage: `usage: deno run -A cli.ts eval --text FILE [options]

  --model PATH         model folder or GGUF file (default: the embedded tiny-llama-16m)
  --text FILE          text to score
  --ctx N              text tokens per window, each window BOS + N tokens (default 512)
  --windows N          windows to score (default 8)
  --sparsity LIST      comma-separated targets (default 0)
  --profile FILE       TEAL profile (default: teal-profile.json in the model folder)
  --quant FORMAT       weight format: none (f16, default), int8 or int4 (quantized at load)
  --matmul-half on|off the prefill GEMM of f16 weights in f16 arithmetic (matmul_wide_h.wgsl, MATMUL_WIDE.half;
                       default off; needs the shader-f16 feature; int8 / int4 weights keep their kernels)
  --json               print {"weight_format", "weight_bytes", "matmul_half", "results": [{"sparsity", "ppl",
                       "tokens", "realized"}]}
  --plot FILE.svg      draw perplexity against sparsity`,
  options: {
    model: { type: "string" },
    text: { type: "string" },
    ctx: { type: "string" },
    windows: { type: "string" },
    sparsity: { type: "string" },
    profile: { type: "string" },
    quant: { type: "string" },
    "matmul-half": { type: "string" },
    json: { type: "boolean" },
    plot: { type: "string" },
  },
  async run(v, deps) {
    if (!v.text) throw new Error("--text FILE is required");
    const half = onOff(v["matmul-half"], "matmul-half", MATMUL_WIDE.half);
    const ctx = num(v, "ctx", 512, { min: 2, integer: true });
    const sparsities = v.sparsity ? numList(v.sparsity as string, "sparsity") : [0];
    for (const s of sparsities) if (!(s >= 0 && s < 1)) throw new Error(`--sparsity: ${s} is outside [0, 1)`);
    const quant = parseQuant(v.quant as string | undefined, "--quant");
    const text = await readText(v.text as string, "text");
    const dir = (v.model as string | undefined) ?? deps.defaultModelDir();
    const model = await deps.loadModel(dir, {
      maxPrefill: ctx + 1,
      contextLength: ctx + 2,
      profile: v.profile as string | undefined,
      quant,
    });
    const savedHalf = MATMUL_WIDE.half;
    try {
      if (half && !model.gpu.hasF16) {
        throw new Error(`--matmul-half on: ${model.gpu.adapterName} has no shader-f16 feature`);
      }
      // read as the passes are built: each window's
      MATMUL_WIDE.half = half;
      const bar = Deno.stderr.isTerminal() ? progressBar("eval".padEnd(10), "items") : undefined;
      const results = await evaluatePerplexity(model, text, {
        ctx,
        windows: num(v, "windows", 8, { min: 1, integer: true }),
        sparsities,
        onProgress: bar,
      });
      if (v.json) {
        console.log(JSON.stringify({
          weight_format: model.weightFormat,
          weight_bytes: model.weightBytes,
          matmul_half: half && model.weightFormat === "f16",
          results: results.map((r) => ({
            sparsity: r.sparsity,
            ppl: Number(r.ppl.toFixed(4)),
            tokens: r.tokens,
            realized: Number(r.realized.toFixed(4)),
          })),
        }));
      } else {
        console.log(
          `${model.id}, ${model.weightFormat} weights (${(model.weightBytes / 2 ** 20).toFixed(1)} MiB)${
            half && model.weightFormat === "f16" ? ", f16-arithmetic prefill GEMM" : ""
          }`,
        );
        console.log("sparsity  perplexity  tokens  realised");
        for (const r of results) {
          console.log(
            `${r.sparsity.toFixed(2).padStart(8)}  ${r.ppl.toFixed(3).padStart(10)}  ${
              String(r.tokens).padStart(6)
            }  ${r.realized.toFixed(3).padStart(8)}`,
          );
        }
      }
      if (v.plot) {
        const svg = lineChart([{
          name: model.id,
          points: results.map((r) => ({ x: r.sparsity, y: Number(r.ppl.toFixed(3)) })),
        }], {
          title: `Perplexity against TEAL sparsity (${model.id}, ${results[0].tokens} tokens)`,
          xLabel: "target sparsity",
          yLabel: "perplexity",
        });
        await Deno.writeTextFile(v.plot as string, svg);
        console.error(`wrote ${v.plot}`);
      }
      return 0;
    } finally {
      MATMUL_WIDE.half = savedHalf;
      model.dispose();
    }
  },
};
