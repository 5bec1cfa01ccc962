/**
 * A model of a given shape with random f16 weights made on the GPU (no 16 GB host transfer): the benchmark's
 * stand-in for real 7B/8B checkpoints, which this project does not ship.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { fillOp } from "../gpu/kernels.ts";
import type { ModelConfig } from "../model/config.ts";
import { Model } from "../model/model.ts";
import { allocateWeights } from "../model/weights.ts";
import { releaseOps } from "../model/forward.ts";

/** Builds a random-weight model; linear weights are uniform with unit output variance for unit inputs. */
export function randomModel(
  gpu: GpuContext,
  config: ModelConfig,
  o: { contextLength: number; maxPrefill?: number; seed?: number },
): Model {
  const w = allocateWeights(gpu, config);
  let seed = o.seed ?? 1;
  const ops = [];
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
    for (const m of [L.qkv, L.o, L.gateUp, L.down]) rnd(m.buffer, m.buffer.size, m.K);
    if (L.qkvBias) ops.push(fillOp(gpu, L.qkvBias, { words: L.qkvBias.size / 4, mode: "const", value: 0 }));
  }
  one(w.finalNorm);
  for (const p of w.lmHead) rnd(p.matrix.buffer, p.matrix.buffer.size, p.matrix.K);
  if (!config.tieWordEmbeddings) { for (const e of w.embed) rnd(e.buffer, e.buffer.size, 3); }
  gpu.run(ops);
  releaseOps(ops);
  const contextLength = Math.min(o.contextLength, config.maxPositionEmbeddings);
  return new Model(`random-${config.hiddenSize}x${config.numLayers}`, config, gpu, w, null, {
    contextLength,
    maxPrefill: Math.min(o.maxPrefill ?? 128, contextLength),
  });
}
