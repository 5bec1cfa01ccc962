/**
 * What the kernel-level prefill benchmarks (bench/matmul_bench.ts, bench/gemv_rows_bench.ts) share: a layer's
 * four matrix shapes, random weight copies of one shape made on the GPU, and the median GPU time of one call.
 * @module
 */
import { createGpuContext, type GpuContext, type Op } from "../gpu/context.ts";
import { fillOp, layoutSegments, type Matrix, type SparsityBuffers } from "../gpu/kernels.ts";
import { fillQuantOps, layoutQuantSegments, type QuantScheme } from "../gpu/quant.ts";
import type { ModelConfig } from "../model/config.ts";
import { releaseOps } from "../model/forward.ts";
import { median } from "./stats.ts";

/** A layer's projection shape: inputs and the output lengths of its fused segments. */
export interface LayerShape {
  name: string;
  K: number;
  lens: number[];
}

/** The four matrices of a layer: q|k|v, o, gate|up and down. */
export function layerShapes(c: ModelConfig): LayerShape[] {
  const h = c.hiddenSize;
  const kv = c.numKvHeads * c.headDim;
  return [
    { name: "q|k|v", K: h, lens: [c.numHeads * c.headDim, kv, kv] },
    { name: "o", K: c.numHeads * c.headDim, lens: [h] },
    { name: "gate|up", K: h, lens: [c.intermediateSize, c.intermediateSize] },
    { name: "down", K: c.intermediateSize, lens: [h] },
  ];
}

/**
 * `copies` matrices of one shape with random weights made on the GPU (so that L2 never holds the one timed
 * next): f16, or with `quant` random codes and constant group scales (fill_q.wgsl). Score scales are ones.
 */
export function randomMatrices(
  ctx: GpuContext,
  s: LayerShape,
  copies: number,
  quant: { format: "int8" | "int4"; scheme: QuantScheme } | null = null,
): Matrix[] {
  const { K, lens } = s;
  const out: Matrix[] = [];
  const ops: Op[] = [];
  const N = lens.reduce((a, b) => a + b, 0);
  const thr = lens.map(() => 0);
  for (let i = 0; i < copies; i++) {
    const scales = ctx.buffer(K * lens.length * 4, "scales", new Float32Array(K * lens.length).fill(1));
    if (quant) {
      const { segments, words } = layoutQuantSegments(K, lens, thr, quant.scheme);
      const m: Matrix = {
        K,
        N,
        segments,
        buffer: ctx.buffer(words * 4, "w"),
        scales,
        format: quant.format,
        group: quant.scheme.group,
      };
      ops.push(...fillQuantOps(ctx, m, i + 1));
      out.push(m);
    } else {
      const { segments, halves } = layoutSegments(K, lens, thr);
      const buffer = ctx.buffer(halves * 2, "w");
      ops.push(fillOp(ctx, buffer, { words: halves / 2, mode: "random", seed: i + 1, scale: 0.02 }));
      out.push({ K, N, segments, buffer, scales });
    }
  }
  ctx.run(ops);
  releaseOps(ops);
  return out;
}

/**
 * Median GPU microseconds of one call of `build(matrix)`: a pass of `reps` calls cycling over the copies,
 * timed 5 times, each after an untimed run of the same pass.
 */
export async function medianCallUs(
  ctx: GpuContext,
  mats: Matrix[],
  build: (m: Matrix) => Op[],
  reps: number,
): Promise<number> {
  const pass = Array.from({ length: reps }, (_, i) => build(mats[i % mats.length])).flat();
  const t: number[] = [];
  for (let r = 0; r < 5; r++) t.push((await ctx.timePasses([pass, pass]))[1]);
  releaseOps(pass);
  return (median(t) / reps) * 1000;
}

/** A kernel benchmark's GPU, the layer shapes, and x and y buffers for passes of up to `maxRows` rows. */
export interface GemmBench {
  ctx: GpuContext;
  shapes: LayerShape[];
  /** Random inputs, [maxRows][widest K] f32. */
  x: GPUBuffer;
  /** Outputs, [maxRows][widest N] f32. */
  y: GPUBuffer;
  /** The widest N of the shapes. */
  maxN: number;
  /** Thresholds and counters (the passes are dense). */
  sp: SparsityBuffers;
}

/** Sets up a kernel benchmark of a model's layer GEMMs; throws if the GPU has no timestamp queries. */
export async function gemmBench(c: ModelConfig, maxRows: number): Promise<GemmBench> {
  const ctx = await createGpuContext();
  if (!ctx.hasTimestamps) throw new Error(`${ctx.adapterName} has no timestamp queries`);
  const shapes = layerShapes(c);
  const maxN = Math.max(...shapes.map((s) => s.lens.reduce((a, b) => a + b, 0)));
  const maxK = Math.max(...shapes.map((s) => s.K));
  const x = ctx.buffer(maxRows * maxK * 4, "x");
  ctx.run([fillOp(ctx, x, { words: maxRows * maxK, mode: "random", seed: 9, scale: 1 })]);
  const y = ctx.buffer(maxRows * maxN * 4, "y");
  const sp = { thresholds: ctx.buffer(16, "thr"), counters: ctx.buffer(64, "cnt") };
  return { ctx, shapes, x, y, maxN, sp };
}
