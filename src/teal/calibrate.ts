/**
 * TEAL calibration: magnitude statistics of every sparsified tensor on calibration text, then TEAL's greedy
 * block-wise allocation of a block-level sparsity target over the block's seven projections.
 *
 * Greedy, per block: start dense; repeatedly raise by one step the sparsity of the projection whose step
 * increases the block's output error least per weight it zeroes (squared error against the dense block output
 * on captured block inputs; weights from each projection's real parameter count, derived from the config, so
 * GQA k/v and MHA shapes are weighed right). Record the projections' sparsities each time the block's
 * parameter-weighted sparsity crosses a grid target.
 * @module
 */
import type { Op } from "../gpu/context.ts";
import { copyOp, sqdiffOp } from "../gpu/kernels.ts";
import type { Model } from "../model/model.ts";
import { type CaptureHook, releaseOps } from "../model/forward.ts";
import { linearShapes } from "../model/config.ts";
import { PROJ_NAMES, SLOTS } from "../model/weights.ts";
import { MagnitudeHistogram } from "./histogram.ts";
import { windowNll } from "./eval.ts";
import {
  modelIdentity,
  PROFILE_VERSION,
  type ProfileLevel,
  type ScoreMode,
  type TealProfile,
} from "./profile.ts";

/** Options of {@link calibrate}. */
export interface CalibrateOptions {
  /** Calibration tokens for the statistics (default 16384). */
  tokens?: number;
  /** Text tokens per window; each window is BOS + ctx tokens (default 512). */
  ctx?: number;
  /** Tokens of block inputs the greedy search evaluates on (default 1024). */
  greedyTokens?: number;
  /** Score mode (default magnitude). */
  score?: ScoreMode;
  /** Allocation: TEAL's greedy search (default) or the same quantile for every tensor. */
  allocation?: "greedy" | "uniform";
  /** Grid spacing of the targets (default 0.05, targets 0 .. 0.9). */
  gridStep?: number;
  /** Largest target (default 0.9). */
  maxTarget?: number;
  /** Greedy step in one projection's sparsity (default 0.025). */
  greedyStep?: number;
  /** Name of the text source, recorded in the profile. */
  textName?: string;
  /** Progress: phase name, done, total. */
  onProgress?: (phase: string, done: number, total: number) => void;
}

/** Input site of each projection slot (q, k, v share one input, as do gate and up). */
const SITE_OF = ["qkv", "qkv", "qkv", "o", "gateup", "gateup", "down"] as const;

/**
 * Splits text token ids into non-overlapping windows of `ctx` tokens, each prefixed with BOS (ctx + 1 ids).
 * This is the evaluation protocol the targets were set with (tiny-llama-16m: 109.94 dense over 8 windows).
 */
export function windows(ids: number[], ctx: number, bos: number, count: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; out.length < count && i + ctx <= ids.length; i += ctx) {
    out.push([bos, ...ids.slice(i, i + ctx)]);
  }
  return out;
}

/** Parameter count of each projection slot of one block. */
export function projectionParams(model: Model): number[] {
  const s = linearShapes(model.config);
  return PROJ_NAMES.map((p) => s[p][0] * s[p][1]);
}

/**
 * Calibrates a TEAL profile for `model` on `text` (tokenized into BOS-prefixed windows), or on windows of
 * token ids given directly (each BOS + `ctx` tokens long). Needs `maxPrefill >= ctx + 1`.
 */
export async function calibrate(
  model: Model,
  source: string | number[][],
  o: CalibrateOptions = {},
): Promise<TealProfile> {
  const t0 = performance.now();
  const c = model.config;
  const f = model.forward;
  const gpu = model.gpu;
  const ctx = o.ctx ?? 512;
  const tokens = o.tokens ?? 16384;
  const score = o.score ?? "magnitude";
  const gridStep = o.gridStep ?? 0.05;
  const maxTarget = o.maxTarget ?? 0.9;
  if (ctx + 1 > f.maxPrefill) {
    throw new RangeError(`windows of ${ctx + 1} tokens exceed the model's prefill size ${f.maxPrefill}`);
  }
  if (ctx < 1) throw new RangeError("--ctx must be at least 1");
  const nWin = Math.ceil(tokens / ctx);
  let wins: number[][];
  if (typeof source === "string") {
    const bos = model.tokenizer?.bosTokenId ?? c.bosTokenId;
    if (bos === null || bos === undefined) {
      throw new Error("the model has no BOS token id (config bos_token_id)");
    }
    const ids = model.encode(source, false);
    wins = windows(ids, ctx, bos, nWin);
    if (wins.length < nWin) {
      throw new RangeError(
        `calibration text has ${ids.length} tokens: ${wins.length} windows of ${ctx}, ${nWin} needed for ` +
          `${tokens} tokens (lower --tokens or --ctx, or give more text)`,
      );
    }
  } else {
    wins = source.slice(0, nWin);
    if (wins.length === 0 || wins.some((w) => w.length !== ctx + 1)) {
      throw new RangeError(`windows must be ${ctx + 1} tokens (BOS + ctx)`);
    }
  }
  const params = projectionParams(model);
  const norms = score === "weighted" ? model.columnNorms() : null;

  // 1. Statistics: one histogram per layer and projection (shared objects where inputs and scores coincide).
  const hist: MagnitudeHistogram[][] = [];
  for (let l = 0; l < c.numLayers; l++) {
    const bySite = new Map<string, MagnitudeHistogram>();
    hist.push(PROJ_NAMES.map((_, s) => {
      const key = norms ? String(s) : SITE_OF[s];
      let h = bySite.get(key);
      if (!h) bySite.set(key, h = new MagnitudeHistogram());
      return h;
    }));
  }
  const widths = {
    qkv: c.hiddenSize,
    o: c.numHeads * c.headDim,
    gateup: c.hiddenSize,
    down: c.intermediateSize,
  };
  const perRow = widths.qkv + widths.o + widths.gateup + widths.down;
  const W = ctx + 1; // rows per window
  const capture = gpu.buffer(c.numLayers * W * perRow * 4, "calib_capture");
  const gWin = Math.min(wins.length, Math.max(1, Math.ceil((o.greedyTokens ?? 1024) / ctx)));
  const blockIn = o.allocation === "uniform"
    ? []
    : Array.from({ length: c.numLayers + 1 }, (_, l) =>
      gpu.buffer(gWin * W * c.hiddenSize * 4, `block_in${l}`));
  try {
    for (let w = 0; w < wins.length; w++) {
      const rows = wins[w].length;
      const hook: CaptureHook = (layer, site, buf, width) => {
        if (site === "in") {
          return w < gWin && blockIn.length > 0
            ? [copyOp(gpu, buf, blockIn[layer], { n: rows * width, dstOffset: w * W * c.hiddenSize })]
            : [];
        }
        const off = siteOffset(site, widths);
        return [
          copyOp(gpu, buf, capture, { n: rows * width, dstOffset: layer * W * perRow + off * W }),
        ];
      };
      gpu.write(f.ids, new Uint32Array(wins[w]));
      const ops = f.prefill(rows, 0, { capture: hook, allLogits: undefined, sample: false });
      if (w < gWin && blockIn.length > 0) {
        // the last block's dense output: the residual stream after every layer
        ops.push(
          copyOp(gpu, f.X, blockIn[c.numLayers], {
            n: rows * c.hiddenSize,
            dstOffset: w * W * c.hiddenSize,
          }),
        );
      }
      gpu.run(ops);
      releaseOps(ops);
      const data = await gpu.readF32(capture, c.numLayers * W * perRow);
      for (let l = 0; l < c.numLayers; l++) {
        const seen = new Set<MagnitudeHistogram>();
        for (let s = 0; s < SLOTS; s++) {
          const h = hist[l][s];
          if (seen.has(h)) continue;
          seen.add(h);
          const site = SITE_OF[s];
          const width = widths[site];
          const start = l * W * perRow + siteOffset(site, widths) * W;
          h.add(data.subarray(start, start + rows * width), width, norms?.[l][s]);
        }
      }
      o.onProgress?.("statistics", w + 1, wins.length);
    }

    // 2. Allocation within each block.
    const targets: number[] = [];
    for (let i = 0; i * gridStep <= maxTarget + 1e-9; i++) targets.push(Number((i * gridStep).toFixed(6)));
    const perLayer: number[][][] = []; // [layer][target][slot] sparsity
    for (let l = 0; l < c.numLayers; l++) {
      perLayer.push(
        o.allocation === "uniform"
          ? targets.map((t) => PROJ_NAMES.map(() => t))
          : await greedyBlock(model, l, hist[l], params, targets, blockIn, gWin, W, o.greedyStep ?? 0.025),
      );
      o.onProgress?.("allocation", l + 1, c.numLayers);
    }

    // 3. Thresholds from the histograms.
    const total = params.reduce((a, b) => a + b, 0);
    const level = (
      target: number,
      alloc: number[][],
      allocation: ProfileLevel["allocation"],
    ): ProfileLevel => {
      let cal = 0;
      const layers = alloc.map((sp, l) => {
        const threshold = sp.map((s, j) => (s > 0 ? hist[l][j].quantile(s) : 0));
        const sparsity = threshold.map((t, j) => (sp[j] > 0 ? hist[l][j].fractionBelow(t) : 0));
        cal += sparsity.reduce((a, s, j) => a + s * params[j], 0) / total;
        return { threshold, sparsity };
      });
      return { target, calibrated: cal / c.numLayers, allocation, layers };
    };
    const flat = (lv: ProfileLevel) => Float32Array.from(lv.layers.flatMap((L) => L.threshold));
    const guardWins = wins.slice(0, GUARD_WINDOWS);
    const nll = async (lv: ProfileLevel) => {
      let sum = 0;
      for (const w of guardWins) {
        sum += windowNll(await model.logits(w, { thresholds: flat(lv) }), w, c.vocabSize);
      }
      return sum;
    };
    const levels: ProfileLevel[] = [];
    for (let ti = 0; ti < targets.length; ti++) {
      const uniform = level(targets[ti], perLayer.map(() => PROJ_NAMES.map(() => targets[ti])), "uniform");
      if (o.allocation === "uniform" || targets[ti] === 0) {
        levels.push(uniform);
        continue;
      }
      // The greedy search minimises each block's output error, which does not always carry to the model's
      // loss: of the greedy allocation, the uniform one and their midpoint (same parameter-weighted target),
      // the one with the lowest loss on the calibration windows is kept.
      const g = perLayer.map((byTarget) => byTarget[ti]);
      const candidates = [
        level(targets[ti], g, "greedy"),
        uniform,
        level(targets[ti], g.map((sp) => sp.map((s) => (s + targets[ti]) / 2)), "blend"),
      ];
      let best = candidates[0];
      let bestLoss = Infinity;
      for (const cand of candidates) {
        const loss = await nll(cand);
        if (loss < bestLoss) [best, bestLoss] = [cand, loss];
      }
      levels.push(best);
      o.onProgress?.("guard", ti + 1, targets.length);
    }
    return {
      format: "tealgpu-teal-profile",
      version: PROFILE_VERSION,
      model: { hash: modelIdentity(c), numLayers: c.numLayers, name: model.id },
      score,
      calibration: {
        text: o.textName ?? "",
        tokens: wins.length * ctx,
        ctx,
        greedyTokens: o.allocation === "uniform" ? 0 : gWin * ctx,
        seconds: Number(((performance.now() - t0) / 1000).toFixed(1)),
      },
      levels,
    };
  } finally {
    capture.destroy();
    for (const b of blockIn) b.destroy();
  }
}

function siteOffset(site: string, w: { qkv: number; o: number; gateup: number; down: number }): number {
  switch (site) {
    case "qkv":
      return 0;
    case "o":
      return w.qkv;
    case "gateup":
      return w.qkv + w.o;
    default:
      return w.qkv + w.o + w.gateup;
  }
}

/** Calibration windows whose loss decides between the greedy and the uniform allocation of a target. */
const GUARD_WINDOWS = 32;

/** Largest sparsity the search gives one projection. */
const MAX_PROJ_SPARSITY = 0.99;

/** TEAL's greedy search for one block; returns, for each target, each projection's sparsity. */
async function greedyBlock(
  model: Model,
  layer: number,
  hist: MagnitudeHistogram[],
  params: number[],
  targets: number[],
  blockIn: GPUBuffer[],
  gWin: number,
  ctx: number,
  step: number,
): Promise<number[][]> {
  const gpu = model.gpu;
  const f = model.forward;
  const c = model.config;
  const h = c.hiddenSize;
  const total = params.reduce((a, b) => a + b, 0);
  const errs = gpu.buffer(SLOTS * gWin * 4, "greedy_err");
  // per window: restore the block input, run the block sparse, compare with the dense output
  const runs: Op[][] = [];
  for (let w = 0; w < gWin; w++) {
    const ops: Op[] = [copyOp(gpu, blockIn[layer], f.X, { n: ctx * h, srcOffset: w * ctx * h })];
    ops.push(...f.layerPrefill(layer, ctx, 0, true));
    runs.push(ops);
  }
  // the block's dense output for window w is that window of the next block's input
  const diff = (slot: number, w: number) =>
    sqdiffOp(gpu, f.X, blockIn[layer + 1], errs, { n: ctx * h, slot: slot * gWin + w, bOffset: w * ctx * h });
  const diffs: Op[][] = PROJ_NAMES.map((_, j) => Array.from({ length: gWin }, (_, w) => diff(j, w)));
  const thresholds = new Float32Array(c.numLayers * SLOTS);
  const sp = PROJ_NAMES.map(() => 0);
  let current = 0; // block output error of the current allocation (dense: 0)
  const out: number[][] = [];
  let ti = 0;
  const blockSparsity = () => sp.reduce((a, s, j) => a + s * params[j], 0) / total;
  const record = () => {
    while (ti < targets.length && blockSparsity() >= targets[ti] - 1e-9) {
      out.push([...sp]);
      ti++;
    }
  };
  record();
  try {
    while (ti < targets.length) {
      const candidates = PROJ_NAMES.map((_, j) => j).filter((j) => sp[j] < MAX_PROJ_SPARSITY);
      if (candidates.length === 0) break;
      for (const j of candidates) {
        const trial = [...sp];
        trial[j] = Math.min(MAX_PROJ_SPARSITY, sp[j] + step);
        for (let s = 0; s < SLOTS; s++) {
          thresholds[layer * SLOTS + s] = trial[s] > 0 ? hist[s].quantile(trial[s]) : 0;
        }
        gpu.write(f.sparsity.thresholds, thresholds);
        const enc = gpu.device.createCommandEncoder();
        for (let w = 0; w < gWin; w++) gpu.encode(enc, [...runs[w], diffs[j][w]]);
        gpu.device.queue.submit([enc.finish()]);
      }
      const e = await gpu.readF32(errs, SLOTS * gWin);
      // the step that adds the least error per weight it zeroes
      let best = candidates[0];
      let bestCost = Infinity;
      let bestErr = current;
      for (const j of candidates) {
        let sum = 0;
        for (let w = 0; w < gWin; w++) sum += e[j * gWin + w];
        const zeroed = (Math.min(MAX_PROJ_SPARSITY, sp[j] + step) - sp[j]) * params[j];
        const cost = (sum - current) / zeroed;
        if (cost < bestCost) {
          bestCost = cost;
          best = j;
          bestErr = sum;
        }
      }
      sp[best] = Math.min(MAX_PROJ_SPARSITY, sp[best] + step);
      current = bestErr;
      record();
    }
    while (out.length < targets.length) out.push([...sp]);
    return out;
  } finally {
    for (const r of runs) releaseOps(r);
    for (const d of diffs) releaseOps(d);
    errs.destroy();
  }
}
