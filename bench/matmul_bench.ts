/**
 * Kernel-level timing of the prefill GEMM for passes of many rows at the Llama-3-8B layer shapes: matmul.wgsl
 * (64x64 tiles, 4x4 outputs a thread) against matmul_wide.wgsl in 64- and 128-row tiles of 128 columns and,
 * where the device has shader-f16, matmul_wide_h.wgsl (the same tiles in f16 arithmetic, MATMUL_WIDE.half) at
 * K steps of 16 and 32 inputs; or with `--quant int8|int4` (random codes and constant group scales,
 * fill_q.wgsl) matmul_q.wgsl against matmul_wide_q.wgsl. GPU microseconds from timestamp queries (median of 5
 * passes, each after an untimed one, over three weight copies), the arithmetic rate that is (2 M K N flops),
 * and the four shapes' sum times the layers (the GEMM part of one prefill pass of M rows).
 *
 * `deno run -A bench/matmul_bench.ts [--rows 64,128,256,512,1024] [--shape llama-3-8b|tiny|...]
 *   [--quant none|int8|int4] [--group 32|64|128] [--half on|off]` (--half off: not the f16-arithmetic kernels)
 * @module
 */
import { parseArgs } from "node:util";
import { MATMUL_WIDE, matmulOps, type MatmulWideSettings } from "../src/gpu/kernels.ts";
import { parseQuant, QUANT_SCHEMES, type QuantScheme } from "../src/gpu/quant.ts";
import { SHAPES } from "../src/bench/shapes.ts";
import { gemmBench, medianCallUs, randomMatrices } from "../src/bench/layer_gemms.ts";
import { numList, onOff } from "../src/cli/options.ts";

/** Runs the benchmark (a script, not a `deno bench` file: `deno bench bench/` only imports it). */
async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rows: { type: "string" },
      shape: { type: "string" },
      quant: { type: "string" },
      group: { type: "string" },
      half: { type: "string" },
    },
  });
  const rowsList = numList(values.rows ?? "64,128,256,512,1024", "--rows", true);
  const c = SHAPES[values.shape ?? "llama-3-8b"];
  if (!c) throw new RangeError(`--shape: one of ${Object.keys(SHAPES).join(", ")}`);
  const quant = parseQuant(values.quant, "--quant");
  // the quantized scheme: the load option's, or its group size replaced (layoutQuantSegments checks it)
  const scheme: QuantScheme | null = quant === "none"
    ? null
    : { ...QUANT_SCHEMES[quant], group: values.group ? Number(values.group) : QUANT_SCHEMES[quant].group };
  const COPIES = 3;
  const { ctx, shapes, x, y, sp } = await gemmBench(c, Math.max(...rowsList));
  const saved = { ...MATMUL_WIDE };
  // kernel, and the MATMUL_WIDE settings that pick it
  const q = scheme ? "_q" : "";
  const f32 = { half: false, halfBK: 32 } as const;
  const kernels: [string, MatmulWideSettings][] = [
    [`matmul${q} 64x64`, { fromRows: 0, tile128From: 0, ...f32 }],
    [`wide${q} 64x128`, { fromRows: 1, tile128From: Infinity, ...f32 }],
    [`wide${q} 128x128`, { fromRows: 1, tile128From: 1, ...f32 }],
  ];
  // the f16-arithmetic kernel takes f16 weights, on devices with shader-f16
  const half = onOff(values.half, "half", true) && !scheme;
  if (half && !ctx.hasF16) console.log(`${ctx.adapterName} has no shader-f16: no f16-arithmetic kernels`);
  if (half && ctx.hasF16) {
    for (const [tile, tile128From] of [["64x128", Infinity], ["128x128", 1]] as const) {
      for (const halfBK of [16, 32] as const) {
        kernels.push([`half ${tile} bk${halfBK}`, { fromRows: 1, tile128From, half: true, halfBK }]);
      }
    }
  }
  const format = scheme ? `${quant} in groups of ${scheme.group}` : "f16";
  console.log(`device: ${ctx.adapterName}; ${values.shape ?? "llama-3-8b"} layer shapes, ${format}, dense`);
  for (const M of rowsList) {
    const sums = kernels.map(() => 0);
    for (const s of shapes) {
      const mats = randomMatrices(
        ctx,
        s,
        COPIES,
        scheme && { format: quant === "int4" ? "int4" : "int8", scheme },
      );
      const N = mats[0].N;
      const flops = 2 * M * s.K * N;
      const reps = Math.max(2, Math.min(100, Math.ceil(20e-3 * 20e12 / flops)));
      const line: string[] = [];
      for (const [i, [name, set]] of kernels.entries()) {
        Object.assign(MATMUL_WIDE, set);
        const us = await medianCallUs(ctx, mats, (m) => matmulOps(ctx, m, x, y, sp, { M, ldy: N }), reps);
        sums[i] += us;
        line.push(`${name} ${us.toFixed(1)} us (${(flops / us / 1e6).toFixed(1)} TFLOP/s)`);
      }
      Object.assign(MATMUL_WIDE, saved);
      console.log(`M=${M} ${s.name} ${N}x${s.K}: ${line.join(", ")}`);
      for (const m of mats) m.buffer.destroy();
    }
    console.log(
      `M=${M} x ${c.numLayers} layers: ` +
        kernels.map(([name], i) => `${name} ${(sums[i] * c.numLayers / 1000).toFixed(2)} ms`).join(", "),
    );
  }
}

if (import.meta.main) await main();
