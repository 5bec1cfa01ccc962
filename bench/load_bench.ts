/**
 * Host cost of putting one checkpoint matrix on the GPU: the host layout (transposeToF16 / quantizeBlock on
 * the CPU, then the write) against the GPU layout the loader uses (WeightPacker: the f32 rows written as they
 * are, pack.wgsl / quantize.wgsl on the GPU).
 *
 * `deno run -A bench/load_bench.ts [--size 4096]` prints, per format, the median of 5 of the host time of
 * each path and the time until the GPU is done.
 * @module
 */
import { createGpuContext } from "../src/gpu/context.ts";
import { layoutSegments, type Matrix } from "../src/gpu/kernels.ts";
import { layoutQuantSegments, QUANT_SCHEMES, quantizeBlock, type QuantScheme } from "../src/gpu/quant.ts";
import { transposeToF16, WeightPacker } from "../src/model/weights.ts";
import { median } from "../src/bench/stats.ts";

if (import.meta.main) {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  const at = Deno.args.indexOf("--size");
  const n = at >= 0 ? Number(Deno.args[at + 1]) : 4096;
  const ctx = await createGpuContext();
  console.log(`device: ${ctx.adapterName}; ${n} x ${n} f32 matrix`);
  let a = 7;
  const w = new Float32Array(n * n).map(() =>
    (a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5
  );
  for (
    const [name, s] of [["f16", null], ["int8", QUANT_SCHEMES.int8], ["int4", QUANT_SCHEMES.int4]] as [
      string,
      QuantScheme | null,
    ][]
  ) {
    const q = s ? layoutQuantSegments(n, [n], [0], s) : null;
    const f = layoutSegments(n, [n], [0]);
    const m: Matrix = {
      K: n,
      N: n,
      segments: q ? q.segments : f.segments,
      buffer: ctx.buffer(q ? q.words * 4 : f.halves * 2, "w"),
      scales: ctx.scratch("read"),
      format: s ? (s.bits === 8 ? "int8" : "int4") : "f16",
      group: s?.group,
    };
    const packer = new WeightPacker(ctx, s);
    const host: number[] = [];
    const gpuHost: number[] = [];
    const gpuDone: number[] = [];
    for (let r = 0; r < 5; r++) {
      let t0 = performance.now();
      ctx.write(m.buffer, s ? quantizeBlock(w, n, 0, m.segments[0], s) : transposeToF16(w, n, 0, n, n));
      await ctx.device.queue.onSubmittedWorkDone();
      host.push(performance.now() - t0);
      t0 = performance.now();
      packer.write(m, 0, w, 0);
      gpuHost.push(performance.now() - t0);
      await ctx.device.queue.onSubmittedWorkDone();
      gpuDone.push(performance.now() - t0);
    }
    packer.dispose();
    m.buffer.destroy();
    console.log(
      `${name.padEnd(5)} host layout ${median(host).toFixed(0)} ms | GPU layout: host ${
        median(gpuHost).toFixed(0)
      } ms, GPU done after ${median(gpuDone).toFixed(0)} ms`,
    );
  }
}
