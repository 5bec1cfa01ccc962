/**
 * llama.cpp GGUF files (v2 and v3): header and metadata parsing with full validation, metadata -> ModelConfig,
 * GGUF -> Hugging Face tensor names, and a streaming reader that dequantizes tensor by tensor on the CPU.
 * {@link openGguf} checks everything that can be checked without reading weights (header, metadata, every
 * tensor's type, span, alignment and shape), so a bad file fails before any GPU upload.
 *
 * Format (little-endian): magic `GGUF`, u32 version, u64 tensor count, u64 metadata count; metadata as
 * (string key, u32 value type, value); tensor infos as (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type,
 * u64 offset); then the data region at the next multiple of `general.alignment` (default 32), offsets relative
 * to it. Strings are u64 length + UTF-8 bytes. `ne[0]` is the fastest-varying dimension, so a row-major
 * `[out][in]` matrix has `ne = [in, out]`.
 * @module
 */
import { basename, join } from "node:path";
import { CheckpointError, type ModelConfig, ropeInvFreq, type RopeScaling } from "./config.ts";
import { expectedTensors, type HostTensor } from "./checkpoint.ts";
import {
  dequantize,
  GGML_TYPES,
  ggmlBytes,
  type GgmlTypeInfo,
  UNSUPPORTED_GGML_TYPES,
} from "./ggml_quants.ts";
import { openFile, readAt } from "./safetensors.ts";

/** A metadata value: integers beyond 2^53 stay bigint, arrays hold their elements. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

/** One tensor's entry in a GGUF header, with its absolute position in the file. */
export interface GgufTensorInfo {
  /** GGUF tensor name, e.g. `blk.0.attn_q.weight`. */
  name: string;
  /** GGML dimensions, fastest-varying first. */
  ne: number[];
  /** Storage type. */
  type: GgmlTypeInfo;
  /** Absolute byte offset of the data in the file. */
  offset: number;
  /** Byte length of the data. */
  bytes: number;
}

/** A parsed, validated GGUF header. */
export interface GgufHeader {
  /** Path of the file. */
  path: string;
  /** GGUF version (2 or 3). */
  version: number;
  /** Metadata key -> value. */
  metadata: Map<string, GgufValue>;
  /** Tensors sorted by offset (file order, for sequential reads). */
  tensors: GgufTensorInfo[];
  /** Absolute offset of the data region. */
  dataStart: number;
}

/** Raised by the parser when the bytes it was given end before the header does but the file goes on. */
class NeedMore extends Error {
  constructor(readonly bytes: number) {
    super(`need ${bytes} bytes`);
  }
}

// GGUF metadata value types (gguf_type).
const T_U8 = 0, T_I8 = 1, T_U16 = 2, T_I16 = 3, T_U32 = 4, T_I32 = 5, T_F32 = 6, T_BOOL = 7;
const T_STRING = 8, T_ARRAY = 9, T_U64 = 10, T_I64 = 11, T_F64 = 12;
/** Smallest encoding of one value of each type, to bound element counts before allocating. */
const MIN_BYTES = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];

/** Byte cursor over a header prefix; every read is bounds-checked against the prefix and the file. */
class Cursor {
  pos = 0;
  what = "header";
  readonly #view: DataView;
  readonly #utf8 = new TextDecoder();
  constructor(readonly bytes: Uint8Array, readonly path: string, readonly fileSize: number) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  fail(what: string): never {
    throw new CheckpointError(`${this.path}: ${what}`);
  }
  need(n: number): void {
    if (this.pos + n <= this.bytes.length) return;
    if (this.pos + n > this.fileSize) {
      this.fail(`file is truncated: ${this.what} ends past the end of the file (${this.fileSize} bytes)`);
    }
    throw new NeedMore(this.pos + n);
  }
  /** Fails unless `count` items of at least `min` bytes each can fit in the rest of the file. */
  fits(count: number, min: number, what: string): void {
    if (count * min > this.fileSize - this.pos) {
      this.fail(
        `file is truncated: ${count} ${what} (declared in ${this.what}) cannot fit in the rest of the file`,
      );
    }
  }
  u8(): number {
    this.need(1);
    return this.#view.getUint8(this.pos++);
  }
  u32(): number {
    this.need(4);
    const v = this.#view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.#view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }
  /** A u64 that must be a count or offset: larger than 2^53 is corrupt for any real file. */
  count(what: string): number {
    const v = this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${this.what}: implausible ${what} ${v}`);
    return Number(v);
  }
  str(): string {
    const n = this.count("string length");
    this.fits(n, 1, "string bytes");
    this.need(n);
    const s = this.#utf8.decode(this.bytes.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
  value(type: number, depth = 0): GgufValue {
    const v = this.#view;
    const at = (n: number) => {
      this.need(n);
      const p = this.pos;
      this.pos += n;
      return p;
    };
    switch (type) {
      case T_U8:
        return this.u8();
      case T_I8:
        return v.getInt8(at(1));
      case T_U16:
        return v.getUint16(at(2), true);
      case T_I16:
        return v.getInt16(at(2), true);
      case T_U32:
        return v.getUint32(at(4), true);
      case T_I32:
        return v.getInt32(at(4), true);
      case T_F32:
        return shortestF32(v.getFloat32(at(4), true));
      case T_BOOL: {
        const b = this.u8();
        if (b > 1) this.fail(`${this.what}: invalid bool byte ${b}`);
        return b === 1;
      }
      case T_STRING:
        return this.str();
      case T_U64:
      case T_I64: {
        const p = at(8);
        const big = type === T_U64 ? v.getBigUint64(p, true) : v.getBigInt64(p, true);
        const safe = big <= BigInt(Number.MAX_SAFE_INTEGER) && big >= BigInt(Number.MIN_SAFE_INTEGER);
        return safe ? Number(big) : big;
      }
      case T_F64:
        return v.getFloat64(at(8), true);
      case T_ARRAY: {
        const elem = this.u32();
        if (elem > T_F64) this.fail(`${this.what}: array of unknown value type ${elem}`);
        // Nesting is legal but no model uses more than a level or two; the bound stops a stack overflow.
        if (elem === T_ARRAY && depth >= 8) this.fail(`${this.what}: arrays nested too deeply`);
        const n = this.count("array length");
        this.fits(n, MIN_BYTES[elem], "array elements");
        const out: GgufValue[] = new Array(n);
        for (let i = 0; i < n; i++) out[i] = this.value(elem, depth + 1);
        return out;
      }
      default:
        return this.fail(`${this.what}: unknown metadata value type ${type}`);
    }
  }
}

/**
 * The shortest decimal that rounds to the same f32: converters write f64 config values (1e-5) as f32, and this
 * gives the written value back instead of 9.99999974737875e-6.
 */
function shortestF32(x: number): number {
  if (!Number.isFinite(x)) return x;
  for (let p = 1; p <= 9; p++) {
    const d = Number(x.toPrecision(p));
    if (Math.fround(d) === x) return d;
  }
  return x;
}

const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const MAX_DIMS = 4; // GGML_MAX_DIMS

/**
 * Parses and validates a GGUF header from `bytes`, a prefix of the file `path` of `fileSize` bytes: magic,
 * version, metadata, tensor infos (supported type, whole blocks, aligned, inside the file, no overlaps).
 * Throws an internal "need more" signal when the prefix is too short; {@link readGgufHeader} handles it.
 */
export function parseGgufHeader(bytes: Uint8Array, path: string, fileSize: number): GgufHeader {
  const c: Cursor = new Cursor(bytes, path, fileSize);
  c.what = "the GGUF magic";
  const magic = c.u32();
  if (magic !== GGUF_MAGIC) {
    const seen = [...bytes.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    c.fail(`not a GGUF file: bad magic (bytes ${seen}, expected 47 47 55 46 "GGUF")`);
  }
  c.what = "the GGUF version";
  const version = c.u32();
  if (version !== 2 && version !== 3) {
    // A big-endian file reads as a byte-swapped version here.
    if (version === 0x02000000 || version === 0x03000000) {
      c.fail(`big-endian GGUF is not supported (little-endian v2 and v3 only)`);
    }
    c.fail(`unsupported GGUF version ${version} (v2 and v3 are supported)`);
  }
  c.what = "the tensor and metadata counts";
  const nTensors = c.count("tensor count");
  const nKv = c.count("metadata count");
  c.fits(nKv, 8 + 4 + 1, "metadata entries");

  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    c.what = `metadata entry ${i}`;
    const key = c.str();
    c.what = `metadata key "${key}"`;
    if (metadata.has(key)) c.fail(`duplicate metadata key "${key}"`);
    metadata.set(key, c.value(c.u32()));
  }

  c.what = "the tensor count";
  c.fits(nTensors, 8 + 4 + 8 + 4 + 8, "tensor infos");
  const infos: { name: string; ne: number[]; typeId: number; rel: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    c.what = `tensor info ${i}`;
    const name = c.str();
    c.what = `tensor info "${name}"`;
    const nDims = c.u32();
    if (nDims < 1 || nDims > MAX_DIMS) c.fail(`tensor "${name}" has ${nDims} dimensions (1 to 4 allowed)`);
    const ne: number[] = [];
    for (let d = 0; d < nDims; d++) ne.push(c.count("dimension"));
    const typeId = c.u32();
    const rel = c.count("offset");
    infos.push({ name, ne, typeId, rel });
  }

  const alignment = metadata.get("general.alignment") ?? 32;
  if (
    typeof alignment !== "number" || !Number.isInteger(alignment) || alignment <= 0 ||
    (alignment & (alignment - 1))
  ) {
    c.fail(`"general.alignment" must be a positive power of two, got ${String(alignment)}`);
  }
  const dataStart = Math.ceil(c.pos / alignment) * alignment;
  const dataLen = fileSize - dataStart;

  const names = new Set<string>();
  const tensors: GgufTensorInfo[] = [];
  for (const { name, ne, typeId, rel } of infos) {
    const t = `tensor "${name}"`;
    if (names.has(name)) c.fail(`${t} appears twice`);
    names.add(name);
    const type = GGML_TYPES.get(typeId);
    if (!type) {
      const known = UNSUPPORTED_GGML_TYPES.get(typeId);
      const supported = [...GGML_TYPES.values()].map((x) => x.name).join(", ");
      c.fail(
        known
          ? `${t} has ggml type ${known} (${typeId}), which is not supported (supported: ${supported})`
          : `${t} has unknown ggml type ${typeId} (supported: ${supported})`,
      );
    }
    const shape = `[${ne.join(", ")}]`;
    if (ne.some((d) => d === 0)) c.fail(`${t} has an empty dimension: ne = ${shape}`);
    const elements = ne.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(elements)) c.fail(`${t}: implausible shape ne = ${shape}`);
    if (ne[0] % type.blockSize !== 0) {
      c.fail(`${t}: ne[0] = ${ne[0]} is not a multiple of the ${type.name} block size ${type.blockSize}`);
    }
    if (rel % alignment !== 0) c.fail(`${t}: data offset ${rel} is not aligned to ${alignment} bytes`);
    const bytes = ggmlBytes(type, elements);
    if (rel + bytes > dataLen) {
      c.fail(
        `file is truncated: ${t} (${type.name} ${shape}) needs data bytes [${rel}, ${rel + bytes}) ` +
          `but the data region holds only ${Math.max(0, dataLen)}`,
      );
    }
    tensors.push({ name, ne, type, offset: dataStart + rel, bytes });
  }
  tensors.sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < tensors.length; i++) {
    const prev = tensors[i - 1];
    if (prev.offset + prev.bytes > tensors[i].offset) {
      c.fail(`tensors "${prev.name}" and "${tensors[i].name}" overlap`);
    }
  }
  return { path, version, metadata, tensors, dataStart };
}

/** Reads and validates the header of the GGUF file `path`, reading only as much of the file as it needs. */
export async function readGgufHeader(path: string): Promise<GgufHeader> {
  const file = await openFile(path);
  try {
    const size = (await file.stat()).size;
    let want = Math.min(size, 1 << 20);
    for (;;) {
      const bytes = await readAt(file, 0, want, path, "GGUF header");
      try {
        return parseGgufHeader(bytes, path, size);
      } catch (e) {
        if (!(e instanceof NeedMore)) throw e;
        // Token lists make headers of several MB: grow geometrically so the re-reads stay linear overall.
        want = Math.min(size, Math.max(want * 2, e.bytes));
      }
    }
  } finally {
    file.close();
  }
}

// ---- Metadata -> ModelConfig -----------------------------------------------------------------------------

/** GGUF architectures the runtime runs, with the family they map to. */
const ARCHS: Record<string, "llama" | "qwen2"> = { llama: "llama", qwen2: "qwen2" };

/** Typed reads of metadata values; every failure names the file and key. */
export class GgufMetadata {
  /** Metadata key -> value. */
  readonly map: Map<string, GgufValue>;
  /** File the metadata came from (prefixes every error). */
  readonly path: string;

  /**
   * Wraps parsed metadata.
   * @param map Metadata key -> value.
   * @param path File the metadata came from.
   */
  constructor(map: Map<string, GgufValue>, path: string) {
    this.map = map;
    this.path = path;
  }

  /** Throws a {@link CheckpointError} naming the file. */
  fail(what: string): never {
    throw new CheckpointError(`${this.path}: ${what}`);
  }

  /** A non-negative integer, or `fallback` (a missing key without fallback is an error). */
  int(key: string, fallback?: number): number {
    const v = this.map.get(key) ?? fallback;
    if (v === undefined) return this.fail(`missing required metadata key "${key}"`);
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      return this.fail(`metadata "${key}" must be a non-negative integer, got ${String(v)}`);
    }
    return v;
  }

  /** A positive integer. */
  posInt(key: string, fallback?: number): number {
    const v = this.int(key, fallback);
    if (v === 0) this.fail(`metadata "${key}" must be positive, got 0`);
    return v;
  }

  /** A positive finite number. */
  posNum(key: string, fallback?: number): number {
    const v = this.map.get(key) ?? fallback;
    if (v === undefined) return this.fail(`missing required metadata key "${key}"`);
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      return this.fail(`metadata "${key}" must be a positive number, got ${String(v)}`);
    }
    return v;
  }

  /** A string, or undefined when absent. */
  str(key: string): string | undefined {
    const v = this.map.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== "string") return this.fail(`metadata "${key}" must be a string`);
    return v;
  }

  /** A boolean, or undefined when absent. */
  bool(key: string): boolean | undefined {
    const v = this.map.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== "boolean") return this.fail(`metadata "${key}" must be a bool`);
    return v;
  }

  /** An array whose elements all pass `ok`, or undefined when absent. */
  array<T extends GgufValue>(key: string, ok: (v: GgufValue) => v is T, what: string): T[] | undefined {
    const v = this.map.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || !v.every(ok)) return this.fail(`metadata "${key}" must be an array of ${what}`);
    return v as T[];
  }
}

const isString = (v: GgufValue): v is string => typeof v === "string";

/**
 * ModelConfig from GGUF metadata. `embedRows` (token_embd's row count) gives the vocabulary size when the
 * file has neither `{arch}.vocab_size` nor a token list; `tied` is true when the file has no `output.weight`;
 * `ropeFactors` is the `rope_freqs.weight` tensor (Llama 3 frequency scaling), if present.
 */
export function ggufConfig(
  meta: GgufMetadata,
  o: { embedRows: number | null; tied: boolean; ropeFactors: Float32Array | null },
): ModelConfig {
  const archName = meta.str("general.architecture");
  if (archName === undefined) meta.fail(`missing required metadata key "general.architecture"`);
  const architecture = Object.hasOwn(ARCHS, archName!) ? ARCHS[archName!] : undefined;
  if (!architecture) {
    meta.fail(`unknown architecture "${archName}" in general.architecture (supported: llama, qwen2)`);
  }
  const a = `${archName}.`;
  if (meta.int(a + "expert_count", 0) > 0) {
    meta.fail(
      `mixture-of-experts models are not supported (${a}expert_count = ${meta.int(a + "expert_count")})`,
    );
  }
  const hiddenSize = meta.posInt(a + "embedding_length");
  const numHeads = meta.posInt(a + "attention.head_count");
  const numKvHeads = meta.posInt(a + "attention.head_count_kv", numHeads);
  if (numHeads % numKvHeads !== 0) {
    meta.fail(`${a}attention.head_count (${numHeads}) is not a multiple of head_count_kv (${numKvHeads})`);
  }
  if (!meta.map.has(a + "attention.key_length") && hiddenSize % numHeads !== 0) {
    meta.fail(`${a}embedding_length (${hiddenSize}) is not divisible by head_count (${numHeads})`);
  }
  const headDim = meta.posInt(a + "attention.key_length", hiddenSize / numHeads);
  if (meta.int(a + "attention.value_length", headDim) !== headDim) {
    meta.fail(`${a}attention.value_length differs from key_length (${headDim}): not supported`);
  }
  if (headDim % 2 !== 0) meta.fail(`head dimension ${headDim} must be even for rotary embeddings`);
  const ropeDim = meta.posInt(a + "rope.dimension_count", headDim);
  if (ropeDim !== headDim) {
    meta.fail(
      `${a}rope.dimension_count ${ropeDim} != head dimension ${headDim}: partial RoPE is not supported`,
    );
  }
  const tokens = meta.array("tokenizer.ggml.tokens", isString, "strings");
  const vocabSize = meta.map.has(a + "vocab_size")
    ? meta.posInt(a + "vocab_size")
    : tokens?.length ?? o.embedRows ??
      meta.fail(`no vocabulary size: no tokenizer.ggml.tokens and no token_embd`);
  if (vocabSize === 0) meta.fail(`the vocabulary is empty`);
  const ropeTheta = meta.posNum(a + "rope.freq_base", 10000);

  const scalingType = meta.str(a + "rope.scaling.type");
  if (scalingType !== undefined && scalingType !== "none") {
    meta.fail(`${a}rope.scaling.type "${scalingType}" is not supported (only none, or Llama 3 rope_freqs)`);
  }
  const config: ModelConfig = {
    architecture,
    hiddenSize,
    intermediateSize: meta.posInt(a + "feed_forward_length"),
    numLayers: meta.posInt(a + "block_count"),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    maxPositionEmbeddings: meta.posInt(a + "context_length"),
    rmsNormEps: meta.posNum(a + "attention.layer_norm_rms_epsilon"),
    ropeTheta,
    ropeScaling: null,
    tieWordEmbeddings: o.tied,
    qkvBias: architecture === "qwen2",
    // llama.cpp runs both architectures with full attention (no sliding-window key), and so do we.
    slidingWindow: null,
    bosTokenId: null,
    eosTokenIds: [],
  };
  if (o.ropeFactors) {
    config.ropeScaling = llama3ScalingFromFactors(o.ropeFactors, config, meta);
  }
  const tokenId = (key: string): number | null => {
    if (!meta.map.has(key)) return null;
    const id = meta.int(key);
    // Some converters write an out-of-range placeholder for tokens a vocabulary lacks: ignore those.
    return id < vocabSize ? id : null;
  };
  const addBos = meta.bool("tokenizer.ggml.add_bos_token");
  config.bosTokenId = addBos === false ? null : tokenId("tokenizer.ggml.bos_token_id");
  // llama.cpp stops on every end-of-generation token: eos, end-of-turn and end-of-message.
  const eos = ["eos", "eot", "eom"].map((k) => tokenId(`tokenizer.ggml.${k}_token_id`));
  config.eosTokenIds = [...new Set(eos.filter((id): id is number => id !== null))];
  return config;
}

/**
 * Recovers HF's llama3 rope scaling from llama.cpp's `rope_freqs` (per-frequency divisors, as
 * convert_hf_to_gguf.py computes them). Only the ratios of original context, low and high factor matter, so
 * lowFreqFactor is fixed at 1; the fit is checked against every factor before it is accepted.
 */
export function llama3ScalingFromFactors(
  factors: Float32Array,
  config: ModelConfig,
  meta: GgufMetadata,
): RopeScaling | null {
  const half = config.headDim / 2;
  if (factors.length !== half) {
    meta.fail(`tensor "rope_freqs.weight" has ${factors.length} values, expected ${half} (head dim / 2)`);
  }
  const plain = ropeInvFreq({ ...config, ropeScaling: null });
  const factor = Math.max(...factors);
  if (factors.every((f) => Math.abs(f - 1) < 1e-6)) return null;
  const eps = 1e-5 * factor;
  const ramp = [...factors.keys()].filter((i) => factors[i] > 1 + eps && factors[i] < factor - eps);
  const fail = (): never =>
    meta.fail(`tensor "rope_freqs.weight" is not a Llama 3 frequency scaling (only that kind is supported)`);
  if (ramp.length < 2 || factor <= 1) return fail();
  // On the ramp: smooth = (orig / wavelen - low) / (high - low), linear in 1/wavelen; with low = 1 the two ends
  // of the ramp give slope orig / (high - 1) and intercept -1 / (high - 1).
  const point = (i: number) => {
    const invWavelen = plain[i] / (2 * Math.PI);
    const smooth = (1 / factors[i] - 1 / factor) / (1 - 1 / factor);
    return [invWavelen, smooth];
  };
  const [x0, y0] = point(ramp[0]);
  const [x1, y1] = point(ramp[ramp.length - 1]);
  const slope = (y1 - y0) / (x1 - x0);
  const intercept = y0 - slope * x0;
  if (!(intercept < 0)) return fail();
  const high = 1 - 1 / intercept;
  const scaling: RopeScaling = {
    type: "llama3",
    factor,
    lowFreqFactor: 1,
    highFreqFactor: high,
    originalMaxPositionEmbeddings: slope * (high - 1),
  };
  const o = meta.map.get(`${meta.str("general.architecture")}.rope.scaling.original_context_length`);
  // When the file says the original context, use it to state the same parameters HF's config would.
  if (typeof o === "number" && o > 0) {
    const k = o / scaling.originalMaxPositionEmbeddings;
    scaling.originalMaxPositionEmbeddings = o;
    scaling.lowFreqFactor = k;
    scaling.highFreqFactor = high * k;
  }
  const scaled = ropeInvFreq({ ...config, ropeScaling: scaling });
  for (let i = 0; i < half; i++) {
    if (Math.abs(scaled[i] * factors[i] / plain[i] - 1) > 1e-4) return fail();
  }
  return scaling;
}

// ---- GGUF -> HF tensor names -----------------------------------------------------------------------------

const BLOCK_NAMES: Record<string, string> = {
  "attn_norm.weight": "input_layernorm.weight",
  "ffn_norm.weight": "post_attention_layernorm.weight",
  "attn_q.weight": "self_attn.q_proj.weight",
  "attn_k.weight": "self_attn.k_proj.weight",
  "attn_v.weight": "self_attn.v_proj.weight",
  "attn_output.weight": "self_attn.o_proj.weight",
  "attn_q.bias": "self_attn.q_proj.bias",
  "attn_k.bias": "self_attn.k_proj.bias",
  "attn_v.bias": "self_attn.v_proj.bias",
  "ffn_gate.weight": "mlp.gate_proj.weight",
  "ffn_up.weight": "mlp.up_proj.weight",
  "ffn_down.weight": "mlp.down_proj.weight",
};

const TOP_NAMES: Record<string, string> = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
};

/** The Hugging Face name of a GGUF tensor name, or null when the runtime has no use for it. */
export function hfTensorName(gguf: string): string | null {
  if (Object.hasOwn(TOP_NAMES, gguf)) return TOP_NAMES[gguf];
  const m = /^blk\.(\d+)\.(.+)$/.exec(gguf);
  if (m && Object.hasOwn(BLOCK_NAMES, m[2])) return `model.layers.${Number(m[1])}.${BLOCK_NAMES[m[2]]}`;
  return null;
}

/**
 * Undoes convert_hf_to_gguf.py's `permute` of llama-arch q/k rows: per head, HF row `s * D/2 + i` (rotate-half
 * order) was written as row `2i + s` (GGML's interleaved RoPE pairs). `data` is `[rows][cols]`, rows = heads * D.
 */
export function unpermuteRows(data: Float32Array, heads: number, cols: number): Float32Array {
  const rows = data.length / cols;
  const d = rows / heads;
  const out = new Float32Array(data.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < d / 2; i++) {
      for (let s = 0; s < 2; s++) {
        const src = (h * d + 2 * i + s) * cols;
        out.set(data.subarray(src, src + cols), (h * d + s * (d / 2) + i) * cols);
      }
    }
  }
  return out;
}

// ---- Opening a file --------------------------------------------------------------------------------------

/** An opened, validated GGUF model file. */
export interface GgufCheckpoint {
  /** Path of the file. */
  path: string;
  /** Model config derived from the metadata. */
  config: ModelConfig;
  /** The parsed header (metadata holds the tokenizer and chat template). */
  header: GgufHeader;
  /** Bytes of stored tensor data that {@link GgufCheckpoint.readTensors} streams. */
  totalBytes: number;
  /**
   * Streams every model tensor in file order under its HF name, dequantized to f32 (llama q/k rows restored
   * to HF order). Peak host memory is about one tensor. `onBytes(done, total)` reports stored bytes read.
   */
  readTensors(onBytes?: (done: number, total: number) => void): AsyncIterable<HostTensor>;
  /** Reads one tensor by HF name. */
  readTensor(name: string): Promise<HostTensor>;
}

const fmt = (shape: number[]): string => `[${shape.join(", ")}]`;

/**
 * Opens and validates a GGUF model file: header, metadata -> config, and every tensor's name, type and shape
 * against the config. Reads no weight data except the tiny `rope_freqs` tensor of Llama 3 files.
 */
export async function openGguf(path: string): Promise<GgufCheckpoint> {
  const header = await readGgufHeader(path);
  const meta = new GgufMetadata(header.metadata, path);
  const byName = new Map(header.tensors.map((t) => [t.name, t]));
  const embed = byName.get("token_embd.weight");
  const rope = byName.get("rope_freqs.weight");
  let ropeFactors: Float32Array | null = null;
  if (rope) {
    if (rope.type.name !== "F32" || rope.ne.length !== 1) {
      meta.fail(`tensor "rope_freqs.weight" must be a 1-D F32 tensor, got ${rope.type.name} ${fmt(rope.ne)}`);
    }
    const file = await openFile(path);
    try {
      ropeFactors = dequantize(await readAt(file, rope.offset, rope.bytes, path, "rope_freqs.weight"), "F32");
    } finally {
      file.close();
    }
  }
  const config = ggufConfig(meta, {
    embedRows: embed && embed.ne.length === 2 ? embed.ne[1] : null,
    tied: !byName.has("output.weight"),
    ropeFactors,
  });

  const expected = expectedTensors(config);
  const plan: { info: GgufTensorInfo; hf: string; shape: number[] }[] = [];
  const unexpected: string[] = [];
  for (const t of header.tensors) {
    if (t.name === "rope_freqs.weight") continue;
    const hf = hfTensorName(t.name);
    const shape = hf ? expected.get(hf) : undefined;
    if (!hf || !shape) {
      unexpected.push(t.name);
      continue;
    }
    const actual = [...t.ne].reverse();
    if (actual.length !== shape.length || actual.some((d, i) => d !== shape[i])) {
      meta.fail(
        `tensor "${t.name}" (${hf}) has shape ${fmt(actual)} (ne ${fmt(t.ne)}), expected ${
          fmt(shape)
        } from the GGUF metadata`,
      );
    }
    plan.push({ info: t, hf, shape });
  }
  if (unexpected.length > 0) {
    const more = unexpected.length > 5 ? ` and ${unexpected.length - 5} more` : "";
    meta.fail(
      `unexpected tensors not used by a ${config.architecture} model: ${
        unexpected.slice(0, 5).map((n) => `"${n}"`).join(", ")
      }${more}`,
    );
  }
  const present = new Set(plan.map((p) => p.hf));
  for (const [hf, shape] of expected) {
    if (!present.has(hf)) {
      const gguf = ggufNameOf(hf);
      meta.fail(`tensor "${gguf}" (${hf}, HF shape ${fmt(shape)}) is missing`);
    }
  }
  const totalBytes = plan.reduce((a, p) => a + p.info.bytes, 0);

  // convert_hf_to_gguf.py permutes q/k rows only for the llama architecture; qwen2 keeps HF (NEOX) order.
  const heads = (hf: string): number | null => {
    if (config.architecture !== "llama") return null;
    if (hf.endsWith("q_proj.weight")) return config.numHeads;
    if (hf.endsWith("k_proj.weight")) return config.numKvHeads;
    return null;
  };
  const decode = (raw: Uint8Array, p: (typeof plan)[number]): HostTensor => {
    let data = dequantize(raw, p.info.type.name);
    const h = heads(p.hf);
    if (h !== null) data = unpermuteRows(data, h, p.shape[1]);
    return { name: p.hf, shape: [...p.shape], data };
  };

  async function* readTensors(onBytes?: (done: number, total: number) => void): AsyncGenerator<HostTensor> {
    let done = 0;
    onBytes?.(0, totalBytes);
    const file = await openFile(path);
    try {
      for (const p of plan) {
        const raw = await readAt(file, p.info.offset, p.info.bytes, path, `tensor "${p.info.name}"`);
        done += p.info.bytes;
        onBytes?.(done, totalBytes);
        yield decode(raw, p);
      }
    } finally {
      file.close();
    }
  }

  async function readTensor(name: string): Promise<HostTensor> {
    const p = plan.find((x) => x.hf === name);
    if (!p) throw new CheckpointError(`tensor "${name}" is not in the GGUF file ${path}`);
    const file = await openFile(path);
    try {
      return decode(await readAt(file, p.info.offset, p.info.bytes, path, `tensor "${p.info.name}"`), p);
    } finally {
      file.close();
    }
  }

  return { path, config, header, totalBytes, readTensors, readTensor };
}

/** GGUF name of an HF tensor name (for messages about missing tensors). */
function ggufNameOf(hf: string): string {
  for (const [g, h] of Object.entries(TOP_NAMES)) if (h === hf) return g;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (m) { for (const [g, h] of Object.entries(BLOCK_NAMES)) if (h === m[2]) return `blk.${m[1]}.${g}`; }
  return hf;
}

/** Model id of a GGUF file: its name without the extension. */
export function ggufModelId(path: string): string {
  return basename(path).replace(/\.gguf$/i, "");
}

/**
 * The GGUF file `path` names: `path` itself when it is a file, the folder's one `.gguf` when the folder holds
 * no safetensors weights, or null (a Hugging Face folder, or nothing there: the HF loader reports that).
 */
export async function findGgufFile(path: string): Promise<string | null> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      if (/\.gguf$/i.test(path)) throw new CheckpointError(`${path}: file not found`);
      return null;
    }
    throw e;
  }
  if (stat.isFile) return path;
  if (!stat.isDirectory) return null;
  const names: string[] = [];
  for await (const e of Deno.readDir(path)) names.push(e.name);
  if (names.some((n) => n.endsWith(".safetensors") || n === "model.safetensors.index.json")) return null;
  const ggufs = names.filter((n) => n.toLowerCase().endsWith(".gguf")).sort();
  if (ggufs.length === 0) return null;
  if (ggufs.length > 1) {
    throw new CheckpointError(
      `${path}: holds ${ggufs.length} GGUF files (${ggufs.join(", ")}): pass the file to load`,
    );
  }
  return join(path, ggufs[0]);
}
