/**
 * Why a TEAL-sparse GEMV saves less inside the decode step than alone (docs/benchmarks.md): at the Llama-3-8B
 * shape, after calibrating to 50%, times each projection's 32 GEMVs of a decode step (a) alone, back to back,
 * on the step's own data; (b) by their marginal cost in the step (the step with and without them); and the
 * same for the dense step.
 *
 * `--grid`: each projection's 32 GEMVs alone (the step's own ops, so each layer's weights are read once:
 * nothing is left in L2 for the next) over threads per column group and rows in flight (Forward.gemvTunes).
 *
 * `deno run -A bench/sparse_probe.ts [--shape llama-3-8b] [--sparsity 0.5] [--quant none|int8|int4] [--grid]`
 * @module
 */
import { parseArgs } from "node:util";
import { createGpuContext, type Op } from "../src/gpu/context.ts";
import { randomModel } from "../src/bench/random_model.ts";
import { SHAPES } from "../src/bench/shapes.ts";
import { benchDecode } from "../src/bench/decode_bench.ts";
import { median } from "../src/bench/stats.ts";
import { parseQuant } from "../src/gpu/quant.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shape: { type: "string", default: "llama-3-8b" },
    sparsity: { type: "string", default: "0.5" },
    grid: { type: "boolean" },
    quant: { type: "string", default: "none" },
  },
});
const config = SHAPES[values.shape!];
if (!config) throw new Error(`--shape ${values.shape}: unknown`);
const sparsity = Number(values.sparsity);
const gpu = await createGpuContext();
const quant = parseQuant(values.quant, "--quant");
const model = randomModel(gpu, config, { contextLength: 256, quant });
console.log(`${values.shape}, ${model.weightFormat} weights`);
await benchDecode(model, { sparsities: [0, sparsity], tokens: 32 });
const f = model.forward;
const pos0 = 40;
const time = async (ops: Op[]) => {
  const t: number[] = [];
  for (let r = 0; r < 5; r++) {
    f.writeState(pos0, 5, 1);
    t.push((await gpu.timePasses([ops]))[0]);
  }
  return median(t) * 1000; // us
};
if (values.grid) {
  const projs = ["qkv", "o", "gateup", "down"] as const;
  for (const proj of projs) {
    for (const TPR of [8, 16, 32]) {
      for (const UNROLL of [4, 8]) {
        f.gemvTunes = { [proj]: { TPR, UNROLL } };
        const line: string[] = [];
        for (const sparse of [false, true]) {
          const step = f.decodeStep(sparse, pos0);
          f.writeState(pos0, 5, 1);
          gpu.run(step);
          const mine = step.filter((op) => op.label === `gemv.${proj}`);
          line.push(`${sparse ? sparsity : 0}: ${((await time(mine)) / mine.length).toFixed(1)}`);
        }
        console.log(`${proj} TPR${TPR} UNROLL${UNROLL} alone | ${line.join(" | ")} us`);
      }
    }
  }
  f.gemvTunes = {};
}
for (const sparse of [false, true]) {
  const step = f.decodeStep(sparse, pos0);
  f.writeState(pos0, 5, 1);
  gpu.run(step);
  const whole = await time(step);
  const line: string[] = [`${sparse ? "sparse" : "dense"} step ${whole.toFixed(0)} us`];
  for (const label of ["gemv.qkv", "gemv.o", "gemv.gateup", "gemv.down"]) {
    const mine = step.filter((op) => op.label === label);
    const alone = (await time(mine)) / mine.length;
    const without = await time(step.filter((op) => op.label !== label));
    line.push(
      `${label}: alone ${alone.toFixed(1)} us, in the step ${
        ((whole - without) / mine.length).toFixed(1)
      } us`,
    );
  }
  console.log(line.join(" | "));
}
gpu.destroy();
