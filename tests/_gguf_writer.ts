/**
 * A GGUF writer for tests, with quantizers written from ggml's block definitions (ggml-common.h) and the q/k
 * row permutation of llama.cpp's convert_hf_to_gguf.py. Independent of the reader under test: every quantizer
 * returns the values its own integers and scales stand for, which the loaded model must reproduce.
 * @module
 */
import { f16BitsToF32, f32ToF16Bit } from "../src/model/dtype.ts";
import type { ModelConfig } from "../src/model/config.ts";
import type { NamedTensor } from "../src/model/weights.ts";

/** A typed metadata value. */
export type MetaValue =
  | { t: "u32" | "i32" | "f32" | "u64" | "u8"; v: number }
  | { t: "bool"; v: boolean }
  | { t: "str"; v: string }
  | { t: "arr"; of: "str"; v: string[] }
  | { t: "arr"; of: "i32" | "f32"; v: number[] };

/** Metadata value constructors. */
export const gv = {
  u32: (v: number): MetaValue => ({ t: "u32", v }),
  i32: (v: number): MetaValue => ({ t: "i32", v }),
  u64: (v: number): MetaValue => ({ t: "u64", v }),
  f32: (v: number): MetaValue => ({ t: "f32", v }),
  bool: (v: boolean): MetaValue => ({ t: "bool", v }),
  str: (v: string): MetaValue => ({ t: "str", v }),
  strs: (v: string[]): MetaValue => ({ t: "arr", of: "str", v }),
  i32s: (v: number[]): MetaValue => ({ t: "arr", of: "i32", v }),
  f32s: (v: number[]): MetaValue => ({ t: "arr", of: "f32", v }),
};

/** A tensor to write: GGML dims (ne[0] fastest), ggml type id, raw bytes; `offset` overrides placement. */
export interface GgufTensorSpec {
  name: string;
  ne: number[];
  type: number;
  data: Uint8Array;
  offset?: number;
}

const TYPE_CODE = { u8: 0, u32: 4, i32: 5, f32: 6, bool: 7, str: 8, arr: 9, u64: 10 } as const;

class Bytes {
  parts: number[] = [];
  u8(v: number) {
    this.parts.push(v & 255);
  }
  u32(v: number) {
    for (let i = 0; i < 4; i++) this.parts.push((v >>> (8 * i)) & 255);
  }
  u64(v: number) {
    this.u32(v % 2 ** 32);
    this.u32(Math.floor(v / 2 ** 32));
  }
  f32(v: number) {
    const b = new Uint8Array(new Float32Array([v]).buffer);
    for (const x of b) this.parts.push(x);
  }
  str(s: string) {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    for (const x of b) this.parts.push(x);
  }
  scalar(t: string, v: number | string | boolean) {
    if (t === "u8") this.u8(v as number);
    else if (t === "u32" || t === "i32") this.u32((v as number) >>> 0);
    else if (t === "u64") this.u64(v as number);
    else if (t === "f32") this.f32(v as number);
    else if (t === "bool") this.u8(v ? 1 : 0);
    else this.str(v as string);
  }
}

/** Serializes a GGUF file (little-endian); `version` and `alignment` overridable to write broken files. */
export function encodeGguf(
  metadata: [string, MetaValue][],
  tensors: GgufTensorSpec[],
  o: { version?: number; alignment?: number } = {},
): Uint8Array {
  const align = o.alignment ?? 32;
  const h = new Bytes();
  for (const c of "GGUF") h.u8(c.charCodeAt(0));
  h.u32(o.version ?? 3);
  h.u64(tensors.length);
  h.u64(metadata.length);
  for (const [key, m] of metadata) {
    h.str(key);
    h.u32(TYPE_CODE[m.t]);
    if (m.t === "arr") {
      h.u32(TYPE_CODE[m.of]);
      h.u64(m.v.length);
      for (const x of m.v) h.scalar(m.of, x);
    } else h.scalar(m.t, m.v);
  }
  let pos = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    const off = t.offset ?? pos;
    offsets.push(off);
    pos = Math.max(pos, Math.ceil((off + t.data.length) / align) * align);
    h.str(t.name);
    h.u32(t.ne.length);
    for (const d of t.ne) h.u64(d);
    h.u32(t.type);
    h.u64(off);
  }
  const dataStart = Math.ceil(h.parts.length / align) * align;
  const end = tensors.reduce((a, t, i) => Math.max(a, offsets[i] + t.data.length), 0);
  const out = new Uint8Array(dataStart + end);
  out.set(h.parts);
  tensors.forEach((t, i) => out.set(t.data, dataStart + offsets[i]));
  return out;
}

// ---- Quantizers (reference layouts of ggml-common.h) -------------------------------------------------------

/** Encoded bytes and the values they decode to. */
export interface Quantized {
  bytes: Uint8Array;
  values: Float32Array;
}

/** ggml_type ids. */
export const TYPE_ID = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  BF16: 30,
} as const;
/** A type the writer encodes. */
export type WriteType = keyof typeof TYPE_ID;

const f16 = (x: number): number => f16BitsToF32(f32ToF16Bit(x));
const putF16 = (b: Uint8Array, at: number, x: number) => {
  const bits = f32ToF16Bit(x);
  b[at] = bits & 255;
  b[at + 1] = bits >> 8;
};

function encodeFloats(x: Float32Array, type: "F32" | "F16" | "BF16"): Quantized {
  if (type === "F32") return { bytes: new Uint8Array(x.slice().buffer), values: x.slice() };
  const bits = new Uint16Array(x.length);
  const values = new Float32Array(x.length);
  const u = new Uint32Array(1);
  const f = new Float32Array(u.buffer);
  for (let i = 0; i < x.length; i++) {
    if (type === "F16") {
      bits[i] = f32ToF16Bit(x[i]);
      values[i] = f16BitsToF32(bits[i]);
    } else {
      f[0] = x[i];
      const r = u[0] + 0x7fff + ((u[0] >>> 16) & 1); // round to nearest even
      bits[i] = r >>> 16;
      u[0] = bits[i] << 16;
      values[i] = f[0];
    }
  }
  return { bytes: new Uint8Array(bits.buffer), values };
}

function quantQ8_0(x: Float32Array): Quantized {
  const nb = x.length / 32;
  const bytes = new Uint8Array(nb * 34);
  const values = new Float32Array(x.length);
  for (let i = 0; i < nb; i++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[i * 32 + j]));
    const d = amax / 127;
    const id = d ? 1 / d : 0;
    putF16(bytes, i * 34, d);
    const dh = f16(d);
    for (let j = 0; j < 32; j++) {
      const q = Math.round(x[i * 32 + j] * id);
      bytes[i * 34 + 2 + j] = q & 255;
      values[i * 32 + j] = dh * q;
    }
  }
  return { bytes, values };
}

function quantQ4_0(x: Float32Array): Quantized {
  const nb = x.length / 32;
  const bytes = new Uint8Array(nb * 18);
  const values = new Float32Array(x.length);
  for (let i = 0; i < nb; i++) {
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[i * 32 + j];
      if (Math.abs(v) > amax) [amax, max] = [Math.abs(v), v];
    }
    const d = max / -8;
    const id = d ? 1 / d : 0;
    putF16(bytes, i * 18, d);
    const dh = f16(d);
    const q = (j: number) => Math.min(15, Math.trunc(x[i * 32 + j] * id + 8.5));
    for (let j = 0; j < 16; j++) {
      const lo = q(j), hi = q(j + 16);
      bytes[i * 18 + 2 + j] = lo | (hi << 4);
      values[i * 32 + j] = dh * (lo - 8);
      values[i * 32 + j + 16] = dh * (hi - 8);
    }
  }
  return { bytes, values };
}

function quantQ5_0(x: Float32Array): Quantized {
  const nb = x.length / 32;
  const bytes = new Uint8Array(nb * 22);
  const values = new Float32Array(x.length);
  for (let i = 0; i < nb; i++) {
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[i * 32 + j];
      if (Math.abs(v) > amax) [amax, max] = [Math.abs(v), v];
    }
    const d = max / -16;
    const id = d ? 1 / d : 0;
    putF16(bytes, i * 22, d);
    const dh = f16(d);
    let qh = 0;
    for (let j = 0; j < 32; j++) {
      const q = Math.min(31, Math.trunc(x[i * 32 + j] * id + 16.5));
      bytes[i * 22 + 6 + (j & 15)] |= (q & 15) << (j < 16 ? 0 : 4);
      qh |= (q >> 4) << j;
      values[i * 32 + j] = dh * (q - 16);
    }
    new DataView(bytes.buffer).setUint32(i * 22 + 2, qh >>> 0, true);
  }
  return { bytes, values };
}

/** Q4_1 / Q5_1 (`fifth`): d = (max - min) / levels, m = min, q = trunc((x - min) / d + 0.5) as ggml rounds. */
function quantQ1(x: Float32Array, fifth: boolean): Quantized {
  const size = fifth ? 24 : 20, levels = fifth ? 31 : 15, qsAt = fifth ? 8 : 4;
  const nb = x.length / 32;
  const bytes = new Uint8Array(nb * size);
  const values = new Float32Array(x.length);
  for (let i = 0; i < nb; i++) {
    const block = x.subarray(i * 32, i * 32 + 32);
    const min = Math.min(...block), max = Math.max(...block);
    const d = (max - min) / levels;
    const id = d ? 1 / d : 0;
    const p = i * size;
    putF16(bytes, p, d);
    putF16(bytes, p + 2, min);
    const dh = f16(d), mh = f16(min);
    let qh = 0;
    for (let j = 0; j < 32; j++) {
      const q = Math.min(levels, Math.trunc((block[j] - min) * id + 0.5));
      bytes[p + qsAt + (j & 15)] |= (q & 15) << (j < 16 ? 0 : 4);
      qh |= (q >> 4) << j;
      values[i * 32 + j] = dh * q + mh;
    }
    if (fifth) new DataView(bytes.buffer).setUint32(p + 4, qh >>> 0, true);
  }
  return { bytes, values };
}

const clamp = (v: number, lo: number, hi: number) => Math.max(lo, Math.min(hi, v));

/** Q4_K, or with `fifth` Q5_K (32 levels, fifth bits in qh[32] between the scales and qs). */
function quantK(x: Float32Array, fifth: boolean): Quantized {
  const size = fifth ? 176 : 144, levels = fifth ? 31 : 15;
  const nb = x.length / 256;
  const bytes = new Uint8Array(nb * size);
  const values = new Float32Array(x.length);
  for (let i = 0; i < nb; i++) {
    const p = i * size;
    const scale: number[] = [], mins: number[] = [];
    for (let s = 0; s < 8; s++) {
      let mn = 0, mx = -Infinity;
      for (let l = 0; l < 32; l++) {
        const v = x[i * 256 + s * 32 + l];
        mn = Math.min(mn, v);
        mx = Math.max(mx, v);
      }
      scale.push((mx - mn) / levels);
      mins.push(-mn);
    }
    const d = Math.max(...scale) / 63, dmin = Math.max(...mins) / 63;
    putF16(bytes, p, d);
    putF16(bytes, p + 2, dmin);
    const dh = f16(d), mh = f16(dmin);
    const sc = scale.map((s) => (dh ? clamp(Math.round(s / dh), 0, 63) : 0));
    const m = mins.map((v) => (mh ? clamp(Math.round(v / mh), 0, 63) : 0));
    for (let j = 0; j < 4; j++) {
      bytes[p + 4 + j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
      bytes[p + 4 + j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
      bytes[p + 4 + j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
    }
    for (let e = 0; e < 256; e++) {
      const s = e >> 5;
      const step = dh * sc[s], off = mh * m[s];
      const q = step ? clamp(Math.round((x[i * 256 + e] + off) / step), 0, levels) : 0;
      const byte = p + (fifth ? 48 : 16) + 32 * (e >> 6) + (e & 31);
      bytes[byte] |= (e & 32) ? (q & 15) << 4 : q & 15;
      if (fifth) bytes[p + 16 + (e & 31)] |= (q >> 4) << s;
      values[i * 256 + e] = step * q - off;
    }
  }
  return { bytes, values };
}

function quantQ6K(x: Float32Array): Quantized {
  const nb = x.length / 256;
  const bytes = new Uint8Array(nb * 210);
  const values = new Float32Array(x.length);
  for (let i = 0; i < nb; i++) {
    const p = i * 210;
    // Signed scales as ggml's make_qx_quants chooses them (max / -32): negative int8 scales get exercised.
    const scale: number[] = [];
    for (let s = 0; s < 16; s++) {
      let amax = 0, max = 0;
      for (let l = 0; l < 16; l++) {
        const v = x[i * 256 + s * 16 + l];
        if (Math.abs(v) > amax) [amax, max] = [Math.abs(v), v];
      }
      scale.push(max / -32);
    }
    const d = Math.max(...scale.map(Math.abs)) / 127;
    putF16(bytes, p + 208, d);
    const dh = f16(d);
    const sc = scale.map((s) => (dh ? clamp(Math.round(s / dh), -128, 127) : 0));
    sc.forEach((v, s) => (bytes[p + 192 + s] = v & 255));
    for (let e = 0; e < 256; e++) {
      const step = dh * sc[e >> 4];
      const q = step ? clamp(Math.round(x[i * 256 + e] / step), -32, 31) : 0;
      const u = q + 32;
      const half = e >> 7, g = (e >> 5) & 3, l = e & 31;
      bytes[p + 64 * half + l + 32 * (g & 1)] |= (u & 15) << (4 * (g >> 1));
      bytes[p + 128 + 32 * half + l] |= (u >> 4) << (2 * g);
      values[i * 256 + e] = step * q;
    }
  }
  return { bytes, values };
}

/** Encodes `x` (a whole number of blocks) as `type`. */
export function quantize(x: Float32Array, type: WriteType): Quantized {
  switch (type) {
    case "F32":
    case "F16":
    case "BF16":
      return encodeFloats(x, type);
    case "Q8_0":
      return quantQ8_0(x);
    case "Q4_0":
      return quantQ4_0(x);
    case "Q5_0":
      return quantQ5_0(x);
    case "Q4_1":
      return quantQ1(x, false);
    case "Q5_1":
      return quantQ1(x, true);
    case "Q4_K":
      return quantK(x, false);
    case "Q5_K":
      return quantK(x, true);
    case "Q6_K":
      return quantQ6K(x);
  }
}

/** Elements per block of each writable type. */
export const BLOCK: Record<WriteType, number> = {
  F32: 1,
  F16: 1,
  BF16: 1,
  Q8_0: 32,
  Q4_0: 32,
  Q4_1: 32,
  Q5_0: 32,
  Q5_1: 32,
  Q4_K: 256,
  Q5_K: 256,
  Q6_K: 256,
};

// ---- HF model -> GGUF --------------------------------------------------------------------------------------

/**
 * convert_hf_to_gguf.py `permute`: w.reshape(heads, 2, D/2, in).swapaxes(1, 2).reshape(w.shape). Returns the
 * HF row each GGUF row holds.
 */
export function ggmlRopeRowSource(rows: number, heads: number): number[] {
  const d = rows / heads;
  return Array.from({ length: rows }, (_, g) => {
    const h = Math.floor(g / d), rem = g % d;
    return h * d + (rem & 1) * (d / 2) + (rem >> 1);
  });
}

const HF_TO_GGUF: [RegExp, string][] = [
  [/^model\.embed_tokens\.weight$/, "token_embd.weight"],
  [/^model\.norm\.weight$/, "output_norm.weight"],
  [/^lm_head\.weight$/, "output.weight"],
  [/^model\.layers\.(\d+)\.input_layernorm\.weight$/, "blk.$1.attn_norm.weight"],
  [/^model\.layers\.(\d+)\.post_attention_layernorm\.weight$/, "blk.$1.ffn_norm.weight"],
  [/^model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$/, "blk.$1.attn_$2.$3"],
  [/^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$/, "blk.$1.attn_output.weight"],
  [/^model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$/, "blk.$1.ffn_$2.weight"],
];

/** GGUF name of an HF tensor name. */
export function ggufName(hf: string): string {
  for (const [re, to] of HF_TO_GGUF) if (re.test(hf)) return hf.replace(re, to);
  throw new Error(`no GGUF name for ${hf}`);
}

/** The `{arch}.*` and general metadata llama.cpp writes for a config. */
export function configMetadata(
  c: ModelConfig,
  arch: string = c.architecture === "qwen2" ? "qwen2" : "llama",
): [string, MetaValue][] {
  const a = arch + ".";
  const m: [string, MetaValue][] = [
    ["general.architecture", gv.str(arch)],
    ["general.name", gv.str("test model")],
    [a + "context_length", gv.u32(c.maxPositionEmbeddings)],
    [a + "embedding_length", gv.u32(c.hiddenSize)],
    [a + "block_count", gv.u32(c.numLayers)],
    [a + "feed_forward_length", gv.u32(c.intermediateSize)],
    [a + "attention.head_count", gv.u32(c.numHeads)],
    [a + "attention.head_count_kv", gv.u32(c.numKvHeads)],
    [a + "rope.freq_base", gv.f32(c.ropeTheta)],
    [a + "attention.layer_norm_rms_epsilon", gv.f32(c.rmsNormEps)],
    [a + "rope.dimension_count", gv.u32(c.headDim)],
    [a + "attention.key_length", gv.u32(c.headDim)],
    [a + "attention.value_length", gv.u32(c.headDim)],
    [a + "vocab_size", gv.u32(c.vocabSize)],
  ];
  if (c.bosTokenId !== null) m.push(["tokenizer.ggml.bos_token_id", gv.u32(c.bosTokenId)]);
  if (c.eosTokenIds.length > 0) m.push(["tokenizer.ggml.eos_token_id", gv.u32(c.eosTokenIds[0])]);
  return m;
}

/**
 * Writes HF tensors as a GGUF: names mapped, llama q/k rows permuted as llama.cpp does, each tensor stored as
 * `typeFor(name)` (falling back to F16 when its rows are not whole blocks, as llama.cpp falls back). Returns
 * the file and the HF tensors holding exactly the values the file stores.
 */
export function hfToGguf(
  config: ModelConfig,
  tensors: NamedTensor[],
  typeFor: (hfName: string) => WriteType,
  extraMetadata: [string, MetaValue][] = [],
): { file: Uint8Array; stored: NamedTensor[]; types: Map<string, WriteType> } {
  const specs: GgufTensorSpec[] = [];
  const stored: NamedTensor[] = [];
  const types = new Map<string, WriteType>();
  for (const t of tensors) {
    const cols = t.shape.length === 2 ? t.shape[1] : t.shape[0];
    const rows = t.data.length / cols;
    let type = typeFor(t.name);
    if (cols % BLOCK[type] !== 0) type = "F16";
    types.set(t.name, type);
    const heads = config.architecture === "llama"
      ? (/q_proj\.weight$/.test(t.name)
        ? config.numHeads
        : /k_proj\.weight$/.test(t.name)
        ? config.numKvHeads
        : 0)
      : 0;
    let data = t.data;
    const src = heads ? ggmlRopeRowSource(rows, heads) : null;
    if (src) {
      data = new Float32Array(t.data.length);
      src.forEach((r, g) => data.set(t.data.subarray(r * cols, (r + 1) * cols), g * cols));
    }
    const q = quantize(data, type);
    let values = q.values;
    if (src) {
      values = new Float32Array(values.length);
      src.forEach((r, g) => values.set(q.values.subarray(g * cols, (g + 1) * cols), r * cols));
    }
    stored.push({ name: t.name, shape: [...t.shape], data: values });
    specs.push({ name: ggufName(t.name), ne: [...t.shape].reverse(), type: TYPE_ID[type], data: q.bytes });
  }
  const meta = [...configMetadata(config), ...extraMetadata];
  return { file: encodeGguf(meta, specs), stored, types };
}

/**
 * GGUF tokenizer metadata for an HF byte-level BPE tokenizer.json (what convert_hf_to_gguf.py writes for a
 * "gpt2" model): tokens by id, token types (special added tokens CONTROL), merges as "left right".
 */
export function gpt2TokenizerMetadata(
  tokenizerJson: Record<string, unknown>,
  pre: string,
): [string, MetaValue][] {
  const model = tokenizerJson.model as { vocab: Record<string, number>; merges: (string | string[])[] };
  const added = tokenizerJson.added_tokens as { id: number; content: string; special: boolean }[];
  const size = Math.max(...Object.values(model.vocab), ...added.map((a) => a.id)) + 1;
  const tokens: string[] = new Array(size).fill("");
  const types: number[] = new Array(size).fill(1);
  for (const [t, id] of Object.entries(model.vocab)) tokens[id] = t;
  for (const a of added) {
    tokens[a.id] = a.content;
    types[a.id] = a.special ? 3 : 4;
  }
  return [
    ["tokenizer.ggml.model", gv.str("gpt2")],
    ["tokenizer.ggml.pre", gv.str(pre)],
    ["tokenizer.ggml.tokens", gv.strs(tokens)],
    ["tokenizer.ggml.token_type", gv.i32s(types)],
    ["tokenizer.ggml.merges", gv.strs(model.merges.map((m) => (Array.isArray(m) ? m.join(" ") : m)))],
  ];
}
