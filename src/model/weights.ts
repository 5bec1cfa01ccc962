/**
 * Model weights on the GPU: one buffer per fused projection, transposed to [in][out] (f16, or group-wise int8 /
 * int4 codes with their scales, src/gpu/quant.ts) so that TEAL can skip whole input channels; norms in f32;
 * lm_head split into column parts when it exceeds one storage binding.
 * @module
 */
import type { GpuContext } from "../gpu/context.ts";
import { layoutSegments, type Matrix, PACK_TILE, packOp, roundUp } from "../gpu/kernels.ts";
import {
  layoutQuantSegments,
  QUANT_SCHEMES,
  type QuantFormat,
  quantizeOp,
  type QuantScheme,
  type WeightFormat,
} from "../gpu/quant.ts";
import type { ModelConfig } from "./config.ts";
import { ropeInvFreq } from "./config.ts";
import { f32ToF16Bits } from "./dtype.ts";

/** Threshold / counter slot of each projection within a layer (thresholds[layer * 7 + slot]). */
export const PROJ = { q: 0, k: 1, v: 2, o: 3, gate: 4, up: 5, down: 6 } as const;
/** Projection names in slot order. */
export const PROJ_NAMES = ["q", "k", "v", "o", "gate", "up", "down"] as const;
/** A projection name. */
export type ProjName = typeof PROJ_NAMES[number];
/** Slots per layer. */
export const SLOTS = 7;

/** One transformer block's weights. */
export interface LayerWeights {
  /** Attention RMSNorm weight, f32 [hidden]. */
  attnNorm: GPUBuffer;
  /** Fused q|k|v projection, [hidden] -> [heads*headDim | kvHeads*headDim | kvHeads*headDim]. */
  qkv: Matrix;
  /** q|k|v bias, f32 [heads*headDim + 2*kvHeads*headDim], or null when the model has none. */
  qkvBias: GPUBuffer | null;
  /** Attention output projection, [heads*headDim] -> [hidden]. */
  o: Matrix;
  /** MLP RMSNorm weight, f32 [hidden]. */
  mlpNorm: GPUBuffer;
  /** Fused gate|up projection, [hidden] -> [intermediate | intermediate]. */
  gateUp: Matrix;
  /** MLP down projection, [intermediate] -> [hidden]. */
  down: Matrix;
}

/** A slice of the token embedding table (f16). */
export interface EmbedPart {
  /** f16 table of tokens [tok0, tok1): its own [tok1 - tok0][hidden] rows, or a tied lm_head part's buffer. */
  buffer: GPUBuffer;
  /** First token id in this part. */
  tok0: number;
  /** One past the last token id in this part. */
  tok1: number;
  /** f16 between consecutive tokens. */
  tokStride: number;
  /** f16 between consecutive elements of one token. */
  elemStride: number;
}

/** Columns [col0, col0 + matrix.N) of lm_head. */
export interface LmHeadPart {
  /** First vocabulary column (token id) of this part. */
  col0: number;
  /** The part's weights, [hidden] -> [matrix.N] (one segment). */
  matrix: Matrix;
}

/** Every weight of the model on the GPU. */
export interface Weights {
  /** Token embedding table, in parts by token range. */
  embed: EmbedPart[];
  /** Per-layer weights, [numLayers]. */
  layers: LayerWeights[];
  /** Final RMSNorm weight, f32 [hidden]. */
  finalNorm: GPUBuffer;
  /** lm_head, [hidden] -> [vocab], in parts by column range. */
  lmHead: LmHeadPart[];
  /** f32 [headDim/2]: RoPE inverse frequencies over 2 pi (turns per position). */
  turns: GPUBuffer;
  /** Bytes of GPU memory the weights take. */
  bytes: number;
  /** Format of the linear layers and lm_head (embeddings stay f16). */
  format: WeightFormat;
  /** How the quantized formats were built (null for f16). */
  scheme: QuantScheme | null;
  /** Host copy of each projection's input-channel norms ||W[:, k]||, [layer][slot] (weight-aware scoring). */
  norms: Float32Array[][];
}

/** A host tensor as the checkpoint reader (or a test) produces it: HF name, shape, f32 data. */
export interface NamedTensor {
  /** Hugging Face tensor name, e.g. `model.layers.0.mlp.down_proj.weight`. */
  name: string;
  /** Shape ([out, in] for linear weights). */
  shape: number[];
  /** Values, row-major. */
  data: Float32Array;
}

/**
 * Transposes W [out][in] rows [r0, r1) into a [in][stride] f16 block on the host: the oracle of pack.wgsl,
 * which does this at load (WeightPacker).
 */
export function transposeToF16(
  w: Float32Array,
  inDim: number,
  r0: number,
  r1: number,
  stride: number,
): Uint16Array {
  const cols = r1 - r0;
  const t = new Float32Array(inDim * stride);
  for (let n = 0; n < cols; n++) {
    const row = (r0 + n) * inDim;
    for (let k = 0; k < inDim; k++) t[k * stride + n] = w[row + k];
  }
  return f32ToF16Bits(t);
}

/**
 * Allocates the weight buffers of a model (contents written later by {@link uploadTensor}); `quant` picks the
 * format of every linear layer and lm_head (a scheme overrides the default group size of the format).
 */
export function allocateWeights(
  ctx: GpuContext,
  c: ModelConfig,
  quant: QuantFormat = "none",
  scheme?: QuantScheme,
): Weights {
  const q = quant === "none" ? null : scheme ?? QUANT_SCHEMES[quant];
  const h = c.hiddenSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  let bytes = 0;
  const ones = (n: number) => ctx.buffer(n * 4, "ones", new Float32Array(n).fill(1));
  const matrix = (K: number, lens: number[], thr: number[], label: string): Matrix => {
    const { segments, size } = q
      ? (({ segments, words }) => ({ segments, size: words * 4 }))(layoutQuantSegments(K, lens, thr, q))
      : (({ segments, halves }) => ({ segments, size: halves * 2 }))(layoutSegments(K, lens, thr));
    if (size > ctx.maxBinding) {
      throw new Error(
        `${label}: ${size} bytes exceed the device's largest storage binding (${ctx.maxBinding})`,
      );
    }
    bytes += size;
    return {
      K,
      N: lens.reduce((a, b) => a + b, 0),
      segments,
      buffer: ctx.buffer(size, label),
      scales: ones(K * lens.length),
      ...(q ? { format: quant as WeightFormat, group: q.group } : {}),
    };
  };
  const vec = (n: number, label: string) => {
    bytes += n * 4;
    return ctx.buffer(n * 4, label);
  };
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const s = i * SLOTS;
    layers.push({
      attnNorm: vec(h, `l${i}.attn_norm`),
      qkv: matrix(h, [qDim, kvDim, kvDim], [s + PROJ.q, s + PROJ.k, s + PROJ.v], `l${i}.qkv`),
      qkvBias: c.qkvBias ? vec(qDim + 2 * kvDim, `l${i}.qkv_bias`) : null,
      o: matrix(qDim, [h], [s + PROJ.o], `l${i}.o`),
      mlpNorm: vec(h, `l${i}.mlp_norm`),
      gateUp: matrix(
        h,
        [c.intermediateSize, c.intermediateSize],
        [s + PROJ.gate, s + PROJ.up],
        `l${i}.gate_up`,
      ),
      down: matrix(c.intermediateSize, [h], [s + PROJ.down], `l${i}.down`),
    });
  }
  // lm_head [hidden] -> [vocab], split by columns to fit one binding each (quantized: whole groups per part).
  const colAlign = q ? q.group : 8;
  const maxCols = Math.max(colAlign, Math.floor(ctx.maxBinding / (2 * h) / colAlign) * colAlign);
  const lmHead: LmHeadPart[] = [];
  for (let col0 = 0; col0 < c.vocabSize; col0 += maxCols) {
    const n = Math.min(maxCols, c.vocabSize - col0);
    lmHead.push({ col0, matrix: matrix(h, [n], [0], `lm_head[${col0}]`) });
  }
  let embed: EmbedPart[];
  if (c.tieWordEmbeddings && !q) {
    // Tied: gather the token's column of the transposed lm_head instead of keeping a second copy.
    embed = lmHead.map((p) => ({
      buffer: p.matrix.buffer,
      tok0: p.col0,
      tok1: p.col0 + p.matrix.N,
      tokStride: 1,
      elemStride: p.matrix.segments[0].stride,
    }));
  } else {
    const rowsPerPart = Math.max(1, Math.floor(ctx.maxBinding / (2 * h)));
    embed = [];
    for (let tok0 = 0; tok0 < c.vocabSize; tok0 += rowsPerPart) {
      const tok1 = Math.min(c.vocabSize, tok0 + rowsPerPart);
      bytes += (tok1 - tok0) * h * 2;
      embed.push({
        buffer: ctx.buffer((tok1 - tok0) * h * 2, `embed[${tok0}]`),
        tok0,
        tok1,
        tokStride: h,
        elemStride: 1,
      });
    }
  }
  const inv = ropeInvFreq(c);
  const turns = new Float32Array(inv.length);
  for (let i = 0; i < inv.length; i++) turns[i] = inv[i] / (2 * Math.PI);
  return {
    embed,
    layers,
    finalNorm: vec(h, "final_norm"),
    lmHead,
    turns: ctx.buffer(turns.byteLength, "rope_turns", turns),
    bytes,
    format: q ? quant as WeightFormat : "f16",
    scheme: q,
    norms: layers.map(() => [] as Float32Array[]),
  };
}

/** Norm of each input column of W [out][in]. */
export function columnNorms(w: Float32Array, inDim: number): Float32Array {
  const acc = new Float64Array(inDim);
  for (let row = 0; row < w.length; row += inDim) {
    for (let k = 0; k < inDim; k++) acc[k] += w[row + k] * w[row + k];
  }
  return Float32Array.from(acc, Math.sqrt);
}

/** f32 bytes of W moved to the GPU per dispatch of pack.wgsl / quantize.wgsl. */
const PACK_BYTES = 64 << 20;

/**
 * Writes checkpoint matrices into their GPU layout: the f32 rows of W [out][in] go up as they are, a piece at
 * a time through one staging buffer, and pack.wgsl (f16: transpose and rounding) or quantize.wgsl (int8 /
 * int4 groups) lays them out there, bit-exact with transposeToF16 / quantizeBlock. On the H200 machine a
 * 4096x4096 matrix costs the host 8-9 ms instead of 341-780 ms (bench/load_bench.ts): seconds instead of
 * minutes for an 8B model.
 */
export class WeightPacker {
  #ctx: GpuContext;
  #scheme: QuantScheme | null;
  #staging: GPUBuffer | null = null;

  /** A packer for matrices of this context in the given format (null: f16). */
  constructor(ctx: GpuContext, scheme: QuantScheme | null) {
    this.#ctx = ctx;
    this.#scheme = scheme;
  }

  /**
   * Rows [r0, r0 + len) of W [out][in] into segment `seg` of `m` (f16 padding columns become zeros). `rowsPer`
   * (rows a piece) is rounded up to whole tiles, or pairs of groups.
   */
  write(m: Matrix, seg: number, w: Float32Array, r0: number, rowsPer?: number): void {
    const ctx = this.#ctx;
    const s = m.segments[seg];
    const q = this.#scheme;
    const unit = q ? Math.max(2 * q.group, PACK_TILE) : PACK_TILE;
    const per = roundUp(rowsPer ?? Math.max(unit, Math.floor(PACK_BYTES / (4 * m.K))), unit);
    const bytes = Math.min(per, roundUp(s.len, unit)) * m.K * 4;
    if (!this.#staging || this.#staging.size < bytes) {
      this.#staging?.destroy();
      this.#staging = ctx.buffer(bytes, "pack_staging");
    }
    // f16 pieces run over the padding columns too (zeros); quantized rows hold their padding in the groups
    const end = q ? s.len : s.stride;
    for (let c0 = 0; c0 < end; c0 += per) {
      const rows = Math.max(0, Math.min(per, s.len - c0));
      if (rows > 0) ctx.write(this.#staging, w.subarray((r0 + c0) * m.K, (r0 + c0 + rows) * m.K));
      const op = q
        ? quantizeOp(ctx, this.#staging, m.buffer, s, q, { K: m.K, rows, col0: c0 })
        : packOp(ctx, this.#staging, m.buffer, {
          K: m.K,
          rows,
          cols: Math.min(per, s.stride - c0),
          stride: s.stride,
          base: s.base + c0,
        });
      ctx.run([op]);
      for (const b of op.owned ?? []) b.destroy();
    }
  }

  /** Frees the staging buffer (queued work that reads it still completes). */
  dispose(): void {
    this.#staging?.destroy();
    this.#staging = null;
  }
}

// The packer of each model being loaded (released by finishUpload).
const packers = new WeakMap<Weights, WeightPacker>();

/** Releases what uploading the weights needed beyond the weights themselves. */
export function finishUpload(weights: Weights): void {
  packers.get(weights)?.dispose();
  packers.delete(weights);
}

function writeSegment(
  ctx: GpuContext,
  weights: Weights,
  m: Matrix,
  seg: number,
  w: Float32Array,
  r0: number,
): void {
  let packer = packers.get(weights);
  if (!packer) packers.set(weights, packer = new WeightPacker(ctx, weights.scheme));
  packer.write(m, seg, w, r0);
}

/**
 * Writes one checkpoint tensor (HF name, [out][in] layout) into its place on the GPU. Returns false for a
 * tensor the runtime does not use.
 */
export function uploadTensor(ctx: GpuContext, c: ModelConfig, w: Weights, t: NamedTensor): boolean {
  const name = t.name;
  if (name === "model.embed_tokens.weight") {
    if (c.tieWordEmbeddings) {
      for (const p of w.lmHead) writeSegment(ctx, w, p.matrix, 0, t.data, p.col0);
    }
    if (!c.tieWordEmbeddings || w.format !== "f16") {
      for (const p of w.embed) {
        ctx.write(p.buffer, f32ToF16Bits(t.data.subarray(p.tok0 * c.hiddenSize, p.tok1 * c.hiddenSize)));
      }
    }
    return true;
  }
  if (name === "lm_head.weight") {
    if (c.tieWordEmbeddings) return false;
    for (const p of w.lmHead) writeSegment(ctx, w, p.matrix, 0, t.data, p.col0);
    return true;
  }
  if (name === "model.norm.weight") {
    ctx.write(w.finalNorm, t.data);
    return true;
  }
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
  if (!m) return false;
  const L = w.layers[Number(m[1])];
  if (!L) return false;
  const proj = /\.(q|k|v|o|gate|up|down)_proj\.weight$/.exec(name);
  if (proj) w.norms[Number(m[1])][PROJ[proj[1] as ProjName]] = columnNorms(t.data, t.shape[1]);
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  switch (m[2]) {
    case "input_layernorm.weight":
      ctx.write(L.attnNorm, t.data);
      return true;
    case "post_attention_layernorm.weight":
      ctx.write(L.mlpNorm, t.data);
      return true;
    case "self_attn.q_proj.weight":
      writeSegment(ctx, w, L.qkv, 0, t.data, 0);
      return true;
    case "self_attn.k_proj.weight":
      writeSegment(ctx, w, L.qkv, 1, t.data, 0);
      return true;
    case "self_attn.v_proj.weight":
      writeSegment(ctx, w, L.qkv, 2, t.data, 0);
      return true;
    case "self_attn.o_proj.weight":
      writeSegment(ctx, w, L.o, 0, t.data, 0);
      return true;
    case "mlp.gate_proj.weight":
      writeSegment(ctx, w, L.gateUp, 0, t.data, 0);
      return true;
    case "mlp.up_proj.weight":
      writeSegment(ctx, w, L.gateUp, 1, t.data, 0);
      return true;
    case "mlp.down_proj.weight":
      writeSegment(ctx, w, L.down, 0, t.data, 0);
      return true;
    case "self_attn.q_proj.bias":
      if (L.qkvBias) ctx.write(L.qkvBias, t.data, 0);
      return L.qkvBias !== null;
    case "self_attn.k_proj.bias":
      if (L.qkvBias) ctx.write(L.qkvBias, t.data, qDim * 4);
      return L.qkvBias !== null;
    case "self_attn.v_proj.bias":
      if (L.qkvBias) ctx.write(L.qkvBias, t.data, (qDim + kvDim) * 4);
      return L.qkvBias !== null;
  }
  return false;
}

/** Every buffer of the weights, for disposal. */
export function weightBuffers(w: Weights): GPUBuffer[] {
  const out: GPUBuffer[] = [w.finalNorm, w.turns];
  for (const L of w.layers) {
    out.push(L.attnNorm, L.mlpNorm, L.qkv.buffer, L.qkv.scales, L.o.buffer, L.o.scales);
    out.push(L.gateUp.buffer, L.gateUp.scales, L.down.buffer, L.down.scales);
    if (L.qkvBias) out.push(L.qkvBias);
  }
  for (const p of w.lmHead) out.push(p.matrix.buffer, p.matrix.scales);
  if (w.embed[0] && !w.lmHead.some((p) => p.matrix.buffer === w.embed[0].buffer)) {
    for (const e of w.embed) out.push(e.buffer);
  }
  return out;
}
