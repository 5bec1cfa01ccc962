/**
 * A model of a given shape with random weights made on the GPU (no 16 GB host transfer): the benchmark's
 * stand-in for real 7B/8B checkpoints, which this project does not ship. f16, or int8 / int4 codes with
 * constant group scales (src/gpu/quant.ts).
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { fillOp, type Matrix } from "../gpu/kernels.ts";
import { fillQuantOps, type QuantFormat } from "../gpu/quant.ts";
import type { ModelConfig } from "../model/config.ts";
import { defaultMaxPrefill, Model } from "../model/model.ts";
import { allocateWeights } from "../model/weights.ts";
import { releaseOps } from "../model/forward.ts";

/**
 * Builds a random-weight model; linear weights are zero-mean with unit output variance for unit inputs, in
 * the weight format `quant` (default f16).
 */
export function randomModel(
  gpu: GpuContext,
  config: ModelConfig,
  o: { contextLength: number; maxPrefill?: number; seed?: number; quant?: QuantFormat },
): Model {
  const w = allocateWeights(gpu, config, o.quant ?? "none");
  let seed = o.seed ?? 1;
  const ops = [];
  const rndMatrix = (m: Matrix) => {
    if (m.format && m.format !== "f16") ops.push(...fillQuantOps(gpu, m, seed++));
    else rnd(m.buffer, m.buffer.size, m.K);
  };
  const rnd = (buf: GPUBuffer, bytes: number, K: number) =>
    ops.push(
      fillOp(gpu, buf, {
        words: Math.floor(bytes / 4),
        mode: "random",
        seed: seed++,
        scale: Math.sqrt(3 / K),
      }),
    );
  const one = (buf: GPUBuffer) =>
    ops.push(fillOp(gpu, buf, { words: buf.size / 4, mode: "const", value: 1 }));
  for (const L of w.layers) {
    one(L.attnNorm);
    one(L.mlpNorm);
    for (const m of [L.qkv, L.o, L.gateUp, L.down]) rndMatrix(m);
    if (L.qkvBias) ops.push(fillOp(gpu, L.qkvBias, { words: L.qkvBias.size / 4, mode: "const", value: 0 }));
  }
  one(w.finalNorm);
  for (const p of w.lmHead) rndMatrix(p.matrix);
  if (!config.tieWordEmbeddings || w.format !== "f16") {
    for (const e of w.embed) rnd(e.buffer, e.buffer.size, 3);
  }
  gpu.run(ops);
  releaseOps(ops);
  const contextLength = Math.min(o.contextLength, config.maxPositionEmbeddings);
  return new Model(`random-${config.hiddenSize}x${config.numLayers}`, config, gpu, w, null, {
    contextLength,
    maxPrefill: o.maxPrefill === undefined
      ? defaultMaxPrefill(config, gpu.maxBinding, contextLength)
      : Math.min(o.maxPrefill, contextLength),
  });
}
