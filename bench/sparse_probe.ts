/**
 * Why a TEAL-sparse GEMV saves less inside the decode step than alone (docs/benchmarks.md): at the Llama-3-8B
 * shape, after calibrating to 50%, times each projection's 32 GEMVs of a decode step (a) alone, back to back,
 * on the step's own data; (b) by their marginal cost in the step (the step with and without them); and the
 * same for the dense step. Every other kind of op of the step (attention, the reduce passes, SwiGLU, lm_head,
 * sampling) is timed the same way.
 *
 * `--step-grid`: each projection's variants (Forward.gemvTunes) by the whole step's time against the defaults,
 * over `--tprs` (threads per column group, default 8,16,32,64), rows in flight 4 and 8, and `--kchunks` (input
 * channels per split, default the shape's), `--wgs` (threads per workgroup, default the shape's) and `--vecs`
 * (int8/int4: words of codes a thread loads a row, 2 or 4, default the shape's), for each of `--projs` (default
 * qkv,o,gateup,down); then the best of each projection together.
 *
 * `--grid`: each projection's 32 GEMVs alone (the step's own ops, so each layer's weights are read once:
 * nothing is left in L2 for the next) over threads per column group and rows in flight (Forward.gemvTunes).
 *
 * `deno run -A bench/sparse_probe.ts [--shape llama-3-8b] [--sparsity 0.5] [--quant none|int8|int4] [--grid]
 *   [--step-grid [--tprs 8,16,32] [--kchunks 256,512,1024] [--wgs 256,512] [--vecs 2,4] [--projs qkv,o]] [--pipe]
 *   [--gemv-half-f16] [--sparse-only] [--ops]`
 * @module
 */
import { parseArgs } from "node:util";
import { createGpuContext, type Op } from "../src/gpu/context.ts";
import { randomModel } from "../src/bench/random_model.ts";
import { SHAPES } from "../src/bench/shapes.ts";
import { benchDecode } from "../src/bench/decode_bench.ts";
import { median } from "../src/bench/stats.ts";
import { gemvQShader, parseQuant } from "../src/gpu/quant.ts";
import { GEMV_HALF, GEMV_PIPE } from "../src/gpu/kernels.ts";
import type { GemvTunes } from "../src/model/forward.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shape: { type: "string", default: "llama-3-8b" },
    sparsity: { type: "string", default: "0.5" },
    grid: { type: "boolean" },
    "step-grid": { type: "boolean" },
    quant: { type: "string", default: "none" },
    // --step-grid: threads per column group, input channels per split and threads per workgroup to try
    tprs: { type: "string" },
    kchunks: { type: "string" },
    wgs: { type: "string" },
    vecs: { type: "string" },
    // --step-grid: the projections to sweep (default all four)
    projs: { type: "string" },
    // every kind of op of the step by its marginal cost: by default only when no grid runs
    ops: { type: "boolean" },
    // the GEMVs' software-pipelined row walk (GEMV_PIPE) for every format
    pipe: { type: "boolean" },
    // the f16 weights' GEMVs with their rows in packed f16 (GEMV_HALF.f16, gemv_h.wgsl)
    "gemv-half-f16": { type: "boolean" },
    // --grid, --step-grid: the TEAL-sparse step only (the dense step does not depend on --sparsity)
    "sparse-only": { type: "boolean" },
  },
});
const config = SHAPES[values.shape!];
if (!config) throw new Error(`--shape ${values.shape}: unknown`);
const sparsity = Number(values.sparsity);
if (values.pipe) GEMV_PIPE.f16 = GEMV_PIPE.quant = true;
if (values["gemv-half-f16"]) GEMV_HALF.f16 = true;
const gpu = await createGpuContext();
const quant = parseQuant(values.quant, "--quant");
const model = randomModel(gpu, config, { contextLength: 256, quant });
console.log(
  `${values.shape}, ${model.weightFormat} weights (${
    quant === "none" ? (GEMV_HALF.f16 ? "gemv_h" : "gemv") : gemvQShader(gpu)
  }.wgsl)${values.pipe ? ", pipelined row walks" : ""}`,
);
await benchDecode(model, { sparsities: [0, sparsity], tokens: 32 });
const modes = values["sparse-only"] ? [true] : [false, true];
const f = model.forward;
const pos0 = 40;
// each timed pass follows ~30 ms of decode steps in the same submission: a short pass after the idle of a
// read-back starts at a low clock (the H200 idles at 345 MHz) and times ~3x slower
const time = async (ops: Op[]) => {
  const warm = Array.from({ length: 6 }, () => f.decodeStep(false, pos0)).flat();
  const t: number[] = [];
  for (let r = 0; r < 5; r++) {
    f.writeState(pos0, 5, 1);
    t.push((await gpu.timePasses([warm, ops]))[1]);
  }
  return median(t) * 1000; // us
};
if (values.grid) {
  const projs = ["qkv", "o", "gateup", "down"] as const;
  // best (TPR, UNROLL) per projection, dense and sparse
  const best: Record<string, GemvTunes> = { dense: {}, sparse: {} };
  for (const proj of projs) {
    const bestUs: Record<string, number> = { dense: Infinity, sparse: Infinity };
    for (const TPR of (Deno.env.get("GRID_TPR") ?? "8,16,32,64").split(",").map(Number)) {
      for (const UNROLL of [4, 8]) {
        f.gemvTunes = { [proj]: { TPR, UNROLL } };
        const line: string[] = [];
        for (const sparse of modes) {
          const step = f.decodeStep(sparse, pos0);
          f.writeState(pos0, 5, 1);
          gpu.run(step);
          const mine = step.filter((op) => op.label === `gemv.${proj}`);
          const us = (await time(mine)) / mine.length;
          const k = sparse ? "sparse" : "dense";
          if (us < bestUs[k]) {
            bestUs[k] = us;
            best[k][proj] = { TPR, UNROLL };
          }
          line.push(`${sparse ? sparsity : 0}: ${us.toFixed(1)}`);
        }
        console.log(`${proj} TPR${TPR} UNROLL${UNROLL} alone | ${line.join(" | ")} us`);
      }
    }
  }
  // whole steps (8 in a pass) with the defaults and with the best of each projection
  for (const sparse of modes) {
    const k = sparse ? "sparse" : "dense";
    const steps = async () =>
      (await time(Array.from({ length: 8 }, () => f.decodeStep(sparse, pos0)).flat())) / 8;
    f.gemvTunes = {};
    const base = await steps();
    f.gemvTunes = best[k];
    const tuned = await steps();
    console.log(
      `${k} step: defaults ${base.toFixed(1)} us, best per projection ${tuned.toFixed(1)} us ${
        JSON.stringify(best[k])
      }`,
    );
  }
  f.gemvTunes = {};
}
if (values["step-grid"]) {
  // each projection's variants timed by whole steps (8 in a pass), with everything around them: the o GEMV
  // reads its weights from L2 after the attention's prefetch, which its time alone does not show
  const list = (v: string | undefined) => v?.split(",").map(Number);
  const tprs = list(values.tprs) ?? [8, 16, 32, 64];
  // every (chunk, workgroup, words of codes) row of the grid; undefined keeps the shape's own
  const opt = (v: string | undefined): (number | undefined)[] => list(v) ?? [undefined];
  const all = ["qkv", "o", "gateup", "down"] as const;
  const projs = values.projs ? all.filter((p) => values.projs!.split(",").includes(p)) : all;
  if (values.projs && projs.length !== values.projs.split(",").length) {
    throw new Error(`--projs ${values.projs}: each one of ${all.join(", ")}`);
  }
  const rows = opt(values.kchunks).flatMap((KCHUNK) =>
    opt(values.wgs).flatMap((WG) => opt(values.vecs).map((VEC) => ({ KCHUNK, WG, VEC })))
  );
  for (const sparse of modes) {
    const steps = async () =>
      (await time(Array.from({ length: 8 }, () => f.decodeStep(sparse, pos0)).flat())) / 8;
    f.gemvTunes = {};
    const base = await steps();
    console.log(`${sparse ? "sparse" : "dense"} step with the defaults: ${base.toFixed(1)} us`);
    const best: GemvTunes = {};
    for (const proj of projs) {
      let bestUs = 0;
      for (const row of rows) {
        const line: string[] = [];
        for (const TPR of tprs) {
          for (const UNROLL of [4, 8]) {
            const tune = { TPR, UNROLL, ...row };
            f.gemvTunes = { [proj]: tune };
            let d: number;
            try {
              d = (await steps()) - base;
            } catch (e) {
              if (!(e instanceof RangeError)) throw e;
              line.push(`${TPR}/${UNROLL}: -`); // not a variant the kernels run at this shape
              continue;
            }
            if (d < bestUs) [bestUs, best[proj]] = [d, tune];
            line.push(`${TPR}/${UNROLL}: ${d.toFixed(1)}`);
          }
        }
        const head = Object.entries(row).map(([k, v]) => (v ? `${k} ${v} ` : "")).join("");
        console.log(`  ${proj} ${head}TPR/UNROLL: step minus the defaults' (us) | ${line.join(" | ")}`);
      }
    }
    f.gemvTunes = best;
    const tuned = await steps();
    f.gemvTunes = {};
    const again = await steps();
    console.log(
      `  best of each together: ${tuned.toFixed(1)} us against ${again.toFixed(1)} ${JSON.stringify(best)}`,
    );
  }
  f.gemvTunes = {};
}
const opsToo = values.ops ?? !(values.grid || values["step-grid"]);
for (const sparse of opsToo ? [false, true] : []) {
  const step = f.decodeStep(sparse, pos0);
  f.writeState(pos0, 5, 1);
  gpu.run(step);
  const whole = await time(step);
  console.log(`${sparse ? "sparse" : "dense"} step ${whole.toFixed(0)} us (${step.length} dispatches)`);
  // every kind of op, the small passes and attention as well as the GEMVs: where the step's time goes
  let sum = 0;
  for (const label of [...new Set(step.map((op) => op.label))]) {
    const mine = step.filter((op) => op.label === label);
    const alone = (await time(mine)) / mine.length;
    const marginal = whole - (await time(step.filter((op) => op.label !== label)));
    sum += marginal;
    console.log(
      `  ${label.padEnd(16)} x${String(mine.length).padEnd(3)} alone ${alone.toFixed(1).padStart(6)} us, ` +
        `in the step ${(marginal / mine.length).toFixed(1).padStart(6)} us each, ${
          marginal.toFixed(0)
        } us in all`,
    );
  }
  console.log(`  marginal costs add up to ${sum.toFixed(0)} of ${whole.toFixed(0)} us`);
}
gpu.destroy();
