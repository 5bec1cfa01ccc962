/**
 * Kernel-level timing of the few-row prefill GEMV (gemv_rows.wgsl + splitk_sum) against the tiled GEMM the
 * prefill uses by default (matmul.wgsl, split over K as Forward splits it), at the Llama-3-8B layer shapes and
 * 1 to 16 rows: GPU microseconds from timestamp queries (median of 5 passes, each after an untimed one, over
 * three weight copies so L2 never holds them), the weight bandwidth that is, and the four shapes' sum times 32
 * layers (the GEMM part of one prefill pass).
 *
 * `deno run -A bench/gemv_rows_bench.ts [--rows 1,2,4,8,16] [--grid] [--shape llama-3-8b|tiny|...]`;
 * `--grid` also sweeps gemv_rows' TPR, KCHUNK and channels in flight (UNROLL).
 * @module
 */
import { parseArgs } from "node:util";
import { gemvRowsChunk, gemvRowsOps, type GemvRowsTune, matmulOps } from "../src/gpu/kernels.ts";
import { SHAPES } from "../src/bench/shapes.ts";
import { gemmBench, medianCallUs, randomMatrices } from "../src/bench/layer_gemms.ts";
import { numList } from "../src/cli/options.ts";

/** Runs the benchmark (a script, not a `deno bench` file: `deno bench bench/` only imports it). */
async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { rows: { type: "string" }, grid: { type: "boolean" }, shape: { type: "string" } },
  });
  const rowsList = numList(values.rows ?? "1,2,4,8,16", "--rows", true);
  const c = SHAPES[values.shape ?? "llama-3-8b"];
  if (!c) throw new RangeError(`--shape: one of ${Object.keys(SHAPES).join(", ")}`);
  const COPIES = 3;
  const { ctx, shapes, x, y, maxN, sp } = await gemmBench(c, Math.max(...rowsList));
  // as Forward.#splitBuffer: room for 8 splits of a 64-row tile of the widest matrix
  const partials = ctx.buffer(Math.min(ctx.maxBinding, 64 * maxN * 8 * 4), "partials");
  console.log(`device: ${ctx.adapterName}; ${values.shape ?? "llama-3-8b"} layer shapes, f16, dense`);
  for (const M of rowsList) {
    let gemmSum = 0;
    let gemvSum = 0;
    for (const s of shapes) {
      const mats = randomMatrices(ctx, s, COPIES);
      const N = mats[0].N;
      const bytes = s.K * N * 2;
      const reps = Math.max(4, Math.min(200, Math.ceil(20e-3 * 3e12 / bytes)));
      const o = { M, ldy: N };
      // the split Forward.#split picks: K in pieces of about 512 while the partials fit
      const splits = Math.min(Math.ceil(s.K / 512), Math.floor(partials.size / (4 * M * N)));
      const gemm = await medianCallUs(
        ctx,
        mats,
        (m) => matmulOps(ctx, m, x, y, sp, { ...o, split: splits >= 2 ? { partials, splits } : null }),
        reps,
      );
      const gemv = await medianCallUs(ctx, mats, (m) => gemvRowsOps(ctx, m, x, y, partials, o), reps);
      gemmSum += gemm;
      gemvSum += gemv;
      const gbs = (us: number) => (bytes / us / 1e3).toFixed(0);
      console.log(
        `M=${M} ${s.name} ${N}x${s.K}: GEMM ${gemm.toFixed(1)} us (${gbs(gemm)} GB/s), ` +
          `gemv_rows ${gemv.toFixed(1)} us (${gbs(gemv)} GB/s)`,
      );
      if (values.grid) {
        for (const TPR of [32, 64, 128, 256]) {
          for (const KCHUNK of [128, 256, 512, 1024]) {
            for (const UNROLL of [4, 8]) {
              if (M * KCHUNK > 4096) continue;
              const tune: GemvRowsTune = { TPR, KCHUNK, UNROLL };
              const us = await medianCallUs(
                ctx,
                mats,
                (m) => gemvRowsOps(ctx, m, x, y, partials, { ...o, tune }),
                reps,
              );
              const mark = TPR === 64 && KCHUNK === gemvRowsChunk(M) && UNROLL === 4 ? " (default)" : "";
              console.log(`  TPR ${TPR} KCHUNK ${KCHUNK} UNROLL ${UNROLL}: ${us.toFixed(1)} us${mark}`);
            }
          }
        }
      }
      for (const m of mats) m.buffer.destroy();
    }
    console.log(
      `M=${M} per layer: GEMM ${gemmSum.toFixed(1)} us, gemv_rows ${gemvSum.toFixed(1)} us; ` +
        `x ${c.numLayers} layers: ${(gemmSum * c.numLayers / 1000).toFixed(2)} vs ` +
        `${(gemvSum * c.numLayers / 1000).toFixed(2)} ms`,
    );
  }
}

if (import.meta.main) await main();
