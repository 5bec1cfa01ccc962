/**
 * Host cost of queueing decode steps: CPU time to encode, finish and submit one step's dispatches.
 * `deno run -A bench/host_bench.ts [--model DIR | --shape NAME]` (default: the embedded model).
 * The decode loop is host-bound when this exceeds the GPU time per step (see `cli.ts bench`).
 * @module
 */
import { randomModel } from "../src/bench/random_model.ts";
import { SHAPES } from "../src/bench/shapes.ts";
import { createGpuContext } from "../src/gpu/context.ts";
import { loadModel } from "../src/model/model.ts";
import { defaultModelDir } from "../src/model/default_model.ts";

if (import.meta.main) {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  const i = Deno.args.indexOf("--shape");
  const j = Deno.args.indexOf("--model");
  const model = i >= 0
    ? randomModel(await createGpuContext(), SHAPES[Deno.args[i + 1]], { contextLength: 256 })
    : await loadModel(j >= 0 ? Deno.args[j + 1] : defaultModelDir(), { contextLength: 256 });
  const step = model.forward.decodeStep(false);
  const gpu = model.gpu;
  const steps = 32;
  console.log(`device: ${gpu.adapterName}; ${step.length} dispatches per step`);
  for (let rep = 0; rep < 4; rep++) {
    model.forward.writeState(1, 1, 1);
    const t0 = performance.now();
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (let s = 0; s < steps; s++) {
      for (const op of step) {
        pass.setPipeline(op.pipeline);
        pass.setBindGroup(0, op.bindGroup);
        pass.dispatchWorkgroups(op.workgroups[0], op.workgroups[1], op.workgroups[2]);
      }
    }
    pass.end();
    const t1 = performance.now();
    const cb = enc.finish();
    const t2 = performance.now();
    gpu.device.queue.submit([cb]);
    const t3 = performance.now();
    await gpu.device.queue.onSubmittedWorkDone();
    const t4 = performance.now();
    const us = (a: number, b: number) => (((b - a) / steps / step.length) * 1000).toFixed(2);
    console.log(
      `per dispatch: encode ${us(t0, t1)} us, finish ${us(t1, t2)} us, submit ${us(t2, t3)} us; ` +
        `per step: host ${((t3 - t0) / steps).toFixed(3)} ms, until done ${
          ((t4 - t0) / steps).toFixed(3)
        } ms`,
    );
  }
  model.dispose();
}
