/**
 * Group-wise int8 / int4 weights that compose with TEAL: the packed layout, its CPU quantizer (the oracle of
 * `shaders/quantize.wgsl`, which quantizes at load), and the host side of `shaders/gemv_q.wgsl`,
 * `shaders/matmul_q.wgsl`, `shaders/matmul_wide_q.wgsl`, `shaders/quantize.wgsl` and `shaders/fill_q.wgsl`.
 *
 * Layout: like the f16 weights, each segment is a transposed block [K][stride] (stride in u32 words), so the
 * weights one input channel meets are one contiguous row. A row holds the codes of the segment's outputs
 * (padded to a whole group), then that row's group metadata: groups of G consecutive outputs share one f16
 * scale (int8, symmetric: w = q * s) or one f16 pair (int4: w = q * s + offset; the zero point is folded into
 * the offset). A channel TEAL drops is one run of codes + scales that is never read.
 * @module
 */
import type { GpuContext, Op } from "./context.ts";
import {
  checkGemvTune,
  GEMV_SCAN,
  type GemvFinish,
  gemvFinishParts,
  gemvHalfOn,
  type GemvInput,
  gemvInputBindings,
  type GemvTune,
  type Matrix,
  resolveGemvTune,
  roundUp,
  type Segment,
  segmentTiles,
  segWords,
  type SparsityBuffers,
} from "./kernels.ts";
import { f16BitsToF32, f32ToF16Bit } from "../model/dtype.ts";

/** Weight format of the `quant` load option: f16 ("none"), or group-wise int8 / int4. */
export type QuantFormat = "none" | "int8" | "int4";

/**
 * The GEMV kernel of quantized weights on this device: gemv_qh (rows in packed f16) when `half` says so, else
 * by GEMV_HALF.quant ({@link gemvHalfOn}). A device without shader-f16 runs gemv_q; `half` true there is refused.
 */
export function gemvQShader(ctx: GpuContext, half?: boolean): "gemv_q" | "gemv_qh" {
  return gemvHalfOn(ctx, "quant", half) ? "gemv_qh" : "gemv_q";
}

/** Every value of {@link QuantFormat}, for option checking. */
export const QUANT_FORMATS: readonly QuantFormat[] = ["none", "int8", "int4"];

/** Storage format of one {@link Matrix}. */
export type WeightFormat = "f16" | "int8" | "int4";

/** How a quantized format is built: code width, group size and whether int4 groups have a zero point. */
export interface QuantScheme {
  /** Code width in bits. */
  bits: 8 | 4;
  /** Consecutive outputs of one input channel sharing a scale (32, 64 or 128). */
  group: number;
  /**
   * int4 only: asymmetric (offset = group minimum, codes 0..15) instead of symmetric (codes -8..7 around 0).
   */
  zeroPoint: boolean;
}

/**
 * Schemes of the load option, chosen by perplexity on tiny-llama-16m (docs/quantization.md): int8 symmetric
 * in groups of 128 is within 0.1% of f16; int4 with a zero point loses 2.8% in groups of 128 as in groups of
 * 64, and less than symmetric int4 in groups of 32 (4.4%), which reads more bytes.
 */
export const QUANT_SCHEMES: Readonly<Record<"int8" | "int4", QuantScheme>> = {
  int8: { bits: 8, group: 128, zeroPoint: false },
  int4: { bits: 4, group: 128, zeroPoint: true },
};

/** Parses a `quant` option value, naming `what` (e.g. "--quant") in the error. */
export function parseQuant(value: string | undefined, what: string): QuantFormat {
  const q = value ?? "none";
  if (!(QUANT_FORMATS as readonly string[]).includes(q)) {
    throw new Error(`${what} must be one of ${QUANT_FORMATS.join(", ")}, got '${q}'`);
  }
  return q as QuantFormat;
}

/** Outputs one gemv_q thread covers: `vec` u32 words of codes (vec 4: 16 int8 or 32 int4). */
function colsPerThread(bits: number, vec = 4): number {
  return (vec * 32) / bits;
}

/** Columns one gemv_q.wgsl thread owns for a quantized matrix (`vec` u32 words of codes a row: GemvTune.VEC). */
export function gemvQColsPerThread(m: Matrix, vec = 4): number {
  return colsPerThread(schemeOf(m).bits, vec);
}

/** u32 words of group metadata in one row: int8 one f16 scale per group, int4 an f16 (scale, offset) pair. */
function metaWords(len: number, s: Pick<QuantScheme, "bits" | "group">): number {
  const groups = Math.ceil(len / s.group);
  return s.bits === 8 ? Math.ceil(groups / 2) : groups;
}

/**
 * Segment layout of a quantized matrix: blocks back to back, `base` and `stride` in u32 words (rows aligned to
 * 16 bytes for vec4 loads), `meta` the word offset of a row's group metadata after its codes.
 */
export function layoutQuantSegments(
  K: number,
  lens: number[],
  thr: number[],
  s: QuantScheme,
): { segments: Segment[]; words: number } {
  if (![32, 64, 128].includes(s.group)) throw new RangeError(`group size ${s.group}: use 32, 64 or 128`);
  const segments: Segment[] = [];
  let base = 0;
  let out = 0;
  lens.forEach((len, i) => {
    const meta = roundUp(len, s.group) * s.bits / 32;
    const stride = roundUp(meta + metaWords(len, s), 4);
    segments.push({ base, stride, len, out, thr: thr[i] ?? 0, meta });
    base += K * stride;
    out += len;
  });
  return { segments, words: base };
}

/** Bytes per weight of a format (codes plus group metadata; row padding not counted). */
export function bytesPerWeight(format: WeightFormat, group = 0): number {
  if (format === "f16") return 2;
  if (format === "int8") return 1 + 2 / group;
  return 0.5 + 4 / group;
}

/** The f16 value nearest to x in the given direction (a value exactly representable is returned as is). */
function f16Toward(x: number, dir: "up" | "down"): number {
  let b = f32ToF16Bit(x);
  let v = f16BitsToF32(b);
  // one ulp at a time (one step at most, since f32ToF16Bit rounds to nearest); sign-magnitude bits: a
  // larger magnitude is one more for a positive value, and ±0 steps to the smallest subnormal of the sign
  while (dir === "up" ? v < x : v > x) {
    const neg = (b & 0x8000) !== 0;
    const mag = b & 0x7fff;
    if (dir === "up") b = mag === 0 ? 0x0001 : neg ? b - 1 : b + 1;
    else b = mag === 0 ? 0x8001 : neg ? b + 1 : b - 1;
    v = f16BitsToF32(b);
  }
  return v;
}

/**
 * Scale (and offset) of one group of values: covers the group's range so every error is <= scale / 2. The
 * arithmetic is that of `shaders/quantize.wgsl`, which must give the same bits: strict comparisons for the
 * range (the first of -0 and +0 seen stays), and the range's difference rounded to f32 once.
 */
export function groupParams(v: ArrayLike<number>, s: QuantScheme): { scale: number; offset: number } {
  let lo = Infinity;
  let hi = -Infinity;
  let amax = 0;
  for (let i = 0; i < v.length; i++) {
    if (v[i] < lo) lo = v[i];
    if (v[i] > hi) hi = v[i];
    amax = Math.max(amax, Math.abs(v[i]));
  }
  if (s.bits === 8) return { scale: amax === 0 ? 0 : f16Toward(amax / 127, "up"), offset: 0 };
  if (!s.zeroPoint) {
    // codes -8..7 stored as 0..15: offset -8 * scale is exact in f16
    const scale = amax === 0 ? 0 : f16Toward(amax / 7, "up");
    return { scale, offset: -8 * scale };
  }
  const offset = f16Toward(lo, "down");
  const scale = hi === offset ? 0 : f16Toward(Math.fround(hi - offset) / 15, "up");
  return { scale, offset };
}

/** Code of value x in a group (int8: -127..127; int4: 0..15): x - offset rounded to f32, halves up. */
function code(x: number, p: { scale: number; offset: number }, s: QuantScheme): number {
  if (p.scale === 0) return s.bits === 8 ? 0 : (s.zeroPoint ? 0 : 8);
  const q = Math.round(Math.fround(x - p.offset) / p.scale);
  return s.bits === 8 ? Math.max(-127, Math.min(127, q)) : Math.max(0, Math.min(15, q));
}

/** The value a code stands for, computed as the kernels do (f32). */
export function dequantValue(q: number, scale: number, offset: number): number {
  return Math.fround(Math.fround(q * scale) + offset);
}

/**
 * Quantizes rows [r0, r0 + seg.len) of W [out][in] (HF layout) into the segment's [K][stride] block of u32
 * words: for each input channel k, the codes of outputs r0.. in groups, then the groups' metadata.
 */
export function quantizeBlock(
  w: Float32Array,
  inDim: number,
  r0: number,
  seg: Segment,
  s: QuantScheme,
): Uint32Array {
  const meta = seg.meta ?? 0;
  const out = new Uint32Array(inDim * seg.stride);
  const bytes = new Uint8Array(out.buffer);
  const halves = new Uint16Array(out.buffer);
  const vals = new Float32Array(s.group);
  for (let k = 0; k < inDim; k++) {
    const row = k * seg.stride;
    for (let g0 = 0, g = 0; g0 < seg.len; g0 += s.group, g++) {
      const n = Math.min(s.group, seg.len - g0);
      const v = vals.subarray(0, n);
      for (let j = 0; j < n; j++) v[j] = w[(r0 + g0 + j) * inDim + k];
      const p = groupParams(v, s);
      for (let j = 0; j < n; j++) {
        const q = code(v[j], p, s);
        const col = g0 + j;
        if (s.bits === 8) bytes[row * 4 + col] = q & 0xff;
        else out[row + (col >> 3)] |= q << ((col & 7) * 4);
      }
      if (s.bits === 8) halves[(row + meta) * 2 + g] = f32ToF16Bit(p.scale);
      else {
        halves[(row + meta + g) * 2] = f32ToF16Bit(p.scale);
        halves[(row + meta + g) * 2 + 1] = f32ToF16Bit(p.offset);
      }
    }
  }
  return out;
}

/** The weights a quantized block stands for, back in W [len][K] (HF) layout: what the kernels compute with. */
export function dequantizeBlock(block: Uint32Array, K: number, seg: Segment, s: QuantScheme): Float32Array {
  const meta = seg.meta ?? 0;
  const w = new Float32Array(seg.len * K);
  const bytes = new Int8Array(block.buffer, block.byteOffset, block.byteLength);
  const halves = new Uint16Array(block.buffer, block.byteOffset, block.length * 2);
  for (let k = 0; k < K; k++) {
    const row = k * seg.stride;
    for (let n = 0; n < seg.len; n++) {
      const g = Math.floor(n / s.group);
      let q: number;
      let scale: number;
      let offset = 0;
      if (s.bits === 8) {
        q = bytes[row * 4 + n];
        scale = f16BitsToF32(halves[(row + meta) * 2 + g]);
      } else {
        q = (block[row + (n >> 3)] >>> ((n & 7) * 4)) & 15;
        scale = f16BitsToF32(halves[(row + meta + g) * 2]);
        offset = f16BitsToF32(halves[(row + meta + g) * 2 + 1]);
      }
      w[n * K + k] = dequantValue(q, scale, offset);
    }
  }
  return w;
}

/**
 * W [out][in] as the GPU sees it after quantization (the CPU reference on these weights is the oracle of the
 * quantized model). Column parts start at multiples of `part` outputs (lm_head's split), groups restart there.
 */
export function fakeQuantize(
  w: Float32Array,
  outDim: number,
  inDim: number,
  s: QuantScheme,
  part: number = outDim,
): Float32Array {
  const res = new Float32Array(w.length);
  for (let r0 = 0; r0 < outDim; r0 += part) {
    const len = Math.min(part, outDim - r0);
    const { segments } = layoutQuantSegments(inDim, [len], [0], s);
    const deq = dequantizeBlock(quantizeBlock(w, inDim, r0, segments[0], s), inDim, segments[0], s);
    res.set(deq, r0 * inDim);
  }
  return res;
}

/** Code width and group size of a quantized matrix (the kernels need nothing else: offsets are stored). */
function schemeOf(m: Matrix): Pick<QuantScheme, "bits" | "group"> {
  return { bits: m.format === "int4" ? 4 : 8, group: m.group ?? 128 };
}

/** gemv_q.wgsl: gemvOp's contract (same bindings, splits and fused inputs) over int8 / int4 weights. */
export function gemvQOp(
  ctx: GpuContext,
  m: Matrix,
  x: GPUBuffer,
  partials: GPUBuffer,
  sp: SparsityBuffers,
  opts: {
    sparse: boolean;
    counter?: number;
    label?: string;
    input?: GemvInput;
    state?: GPUBuffer;
    tune?: GemvTune;
    finish?: GemvFinish;
    early?: boolean;
    /** Rows in packed f16 (gemv_qh.wgsl); default {@link gemvHalfOn}. */
    half?: boolean;
  },
): Op {
  const s = schemeOf(m);
  // the split count is fixed by gemvChunk: reduce, rope and the SwiGLU pass read that many partials
  const tune = resolveGemvTune(m.K, m.N, m.format, opts.sparse ?? false, opts.tune);
  checkGemvTune(tune, ctx.device.limits.maxComputeWorkgroupStorageSize);
  const { TPR, KCHUNK, WG, UNROLL } = tune;
  const tileN = TPR * colsPerThread(s.bits, tune.VEC);
  const inp = opts.input ?? { kind: "plain" };
  const splits = Math.ceil(m.K / KCHUNK);
  const fin = gemvFinishParts(ctx, m, sp, opts.finish, tileN, splits);
  const params = ctx.uniform(
    [
      m.K,
      m.N,
      m.segments.length,
      opts.counter ?? 0,
      fin.tickets,
      inp.kind === "rmsnorm" ? inp.eps : 0,
      fin.outOffset,
      inp.kind === "swiglu" ? inp.cols : 0,
      ...segWords(m.segments, tileN),
    ],
    "gemv_q",
    [false, false, false, false, false, true],
  );
  const shared = gemvInputBindings(ctx, m, x, partials, sp, inp, opts.state, fin);
  const tiles = segmentTiles(m.segments, tileN);
  return ctx.op({
    variant: {
      shader: gemvQShader(ctx, opts.half),
      overrides: {
        TPR,
        KCHUNK,
        WG,
        UNROLL,
        SPARSE: opts.sparse ? 1 : 0,
        EARLY: opts.early && !opts.sparse ? 1 : 0,
        PIPE: tune.PIPE ? 1 : 0,
        SCAN_RADIX: GEMV_SCAN.radix,
        VEC: tune.VEC,
        BITS: s.bits,
        GROUP: s.group,
        ...shared.overrides,
        ...fin.overrides,
      },
    },
    // bindings 11 and 12: the weights again, read as vec2<u32> (VEC 2) and as u32 (metadata words)
    bindings: [params, ...shared.bindings, m.buffer, m.buffer],
    owned: [params],
    workgroups: [tiles, splits],
    label: opts.label ?? "gemv",
  });
}

/**
 * quantize.wgsl: rows [0, rows) of W [out][in] (f32 in `src`) into block columns [col0, col0 + rows) of segment
 * `seg` of a quantized matrix in `dst`, codes and group metadata bit-exact with {@link quantizeBlock}; `col0`
 * a multiple of two groups.
 */
export function quantizeOp(
  ctx: GpuContext,
  src: GPUBuffer,
  dst: GPUBuffer,
  seg: Segment,
  s: QuantScheme,
  o: { K: number; rows: number; col0: number },
): Op {
  if (o.col0 % (2 * s.group) !== 0) {
    throw new RangeError(`quantize: col0 ${o.col0} is not a multiple of 2 groups`);
  }
  const pairs = Math.ceil(Math.ceil(o.rows / s.group) / 2);
  const params = ctx.uniform(
    [o.K, o.rows, pairs, seg.stride, seg.base, o.col0, seg.meta ?? 0, 0],
    "quantize",
  );
  return ctx.op({
    variant: {
      shader: "quantize",
      overrides: { BITS: s.bits, GROUP: s.group, ZERO_POINT: s.zeroPoint ? 1 : 0 },
    },
    bindings: [params, src, dst],
    owned: [params],
    workgroups: [Math.ceil(o.K / 64), pairs],
    label: "quantize",
  });
}

/** The quantized GEMV and GEMM kernels' format overrides of a matrix: code bits and outputs per group scale. */
export function quantOverrides(m: Matrix): { BITS: number; GROUP: number } {
  const s = schemeOf(m);
  return { BITS: s.bits, GROUP: s.group };
}

/**
 * fill_q.wgsl ops: random codes and a constant scale in every group of a quantized matrix, made on the GPU
 * (benchmarks at 8B shapes need no host transfer). Weights come out zero-mean with variance 1 / K.
 */
export function fillQuantOps(ctx: GpuContext, m: Matrix, seed: number): Op[] {
  const s = schemeOf(m);
  // int8: uniform bytes -128..127 (variance ~ 128^2 / 3); int4: 0..15 around 7.5 (variance 255 / 12)
  const scale = s.bits === 8 ? 1 / (Math.sqrt(128 * 128 / 3) * Math.sqrt(m.K)) : 1 / Math.sqrt(21.25 * m.K);
  const pair = s.bits === 8 ? [scale, scale] : [scale, -7.5 * scale];
  const metaWord = (f32ToF16Bit(pair[0]) | (f32ToF16Bit(pair[1]) << 16)) >>> 0;
  return m.segments.map((g, i) => {
    const words = m.K * g.stride;
    const params = ctx.uniform(
      [g.base, g.stride, g.meta ?? 0, words, (seed * 7 + i) >>> 0, metaWord, metaWords(g.len, s), 0],
      "fill_q",
    );
    const groups = Math.ceil(words / 256);
    const x = Math.min(groups, 65535);
    return ctx.op({
      variant: { shader: "fill_q" },
      bindings: [params, m.buffer],
      owned: [params],
      workgroups: [x, Math.ceil(groups / x)],
      label: "fill_q",
    });
  });
}
