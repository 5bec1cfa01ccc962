/**
 * Hugging Face `config.json` parsing for the Llama family (Llama, Mistral, Qwen2), plus what follows from a
 * config alone: RoPE inverse frequencies, projection shapes and a stable identity hash. Anything the runtime
 * cannot run exactly is refused here, before any weight is read.
 * @module
 */

/** Model families the runtime runs. */
export type Architecture = "llama" | "mistral" | "qwen2";

/** Llama 3.1-style RoPE frequency scaling (the only scaling the runtime implements). */
export interface RopeScaling {
  /** Scaling kind (HF `rope_type`). */
  type: "llama3";
  /** Divisor of the low (long-wavelength) frequencies. */
  factor: number;
  /** Wavelengths above `originalMaxPositionEmbeddings / lowFreqFactor` are fully scaled. */
  lowFreqFactor: number;
  /** Wavelengths below `originalMaxPositionEmbeddings / highFreqFactor` are kept. */
  highFreqFactor: number;
  /** Context length the model was pre-trained with. */
  originalMaxPositionEmbeddings: number;
}

/** Normalized model configuration: everything the runtime needs, validated. */
export interface ModelConfig {
  /** Model family. */
  architecture: Architecture;
  /** Residual stream width. */
  hiddenSize: number;
  /** MLP inner width. */
  intermediateSize: number;
  /** Transformer blocks. */
  numLayers: number;
  /** Query heads. */
  numHeads: number;
  /** Key/value heads (grouped-query attention); divides numHeads. */
  numKvHeads: number;
  /** Width of one head (explicit head_dim or hidden/heads); even. */
  headDim: number;
  /** Rows of the embedding and lm_head. */
  vocabSize: number;
  /** Longest context the model supports. */
  maxPositionEmbeddings: number;
  /** Epsilon of every RMSNorm. */
  rmsNormEps: number;
  /** RoPE base. */
  ropeTheta: number;
  /** RoPE frequency scaling, or null for plain RoPE. */
  ropeScaling: RopeScaling | null;
  /** lm_head reuses the token embedding. */
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2). */
  qkvBias: boolean;
  /** Attention looks back at most this many positions (Mistral, Qwen2 with use_sliding_window). */
  slidingWindow: number | null;
  /** Beginning-of-sequence token, if any. */
  bosTokenId: number | null;
  /** Tokens that end generation (config plus generation_config.json). */
  eosTokenIds: number[];
}

/** Error in a model folder: config, index or weight files. The message names the file and field or tensor. */
export class CheckpointError extends Error {
  /** Creates the error; `name` is set so that stack traces say what failed. */
  constructor(message: string) {
    super(message);
    this.name = "CheckpointError";
  }
}

const ARCH_CLASSES: Record<string, Architecture> = {
  LlamaForCausalLM: "llama",
  MistralForCausalLM: "mistral",
  Qwen2ForCausalLM: "qwen2",
};

// HF config-class defaults for fields a config.json may leave out (transformers LlamaConfig & co.).
const DEFAULT_MAX_POSITIONS: Record<Architecture, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768 };

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Parses and validates a Hugging Face `config.json` object. `source` (the file path) prefixes every error so
 * that a failure says which file is wrong.
 */
export function parseConfig(json: unknown, source: string): ModelConfig {
  const fail = (what: string): never => {
    throw new CheckpointError(`${source}: ${what}`);
  };
  if (!isObject(json)) return fail("expected a JSON object");
  const j = json;
  const posInt = (key: string, fallback?: number): number => {
    const v = j[key] ?? fallback;
    if (v === undefined) return fail(`missing required field "${key}"`);
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      return fail(`"${key}" must be a positive integer, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const posNum = (v: unknown, key: string): number => {
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      return fail(`"${key}" must be a positive number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const flag = (key: string, fallback: boolean): boolean => {
    const v = j[key] ?? fallback;
    if (typeof v !== "boolean") return fail(`"${key}" must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const tokenId = (v: unknown, key: string): number => {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      return fail(`"${key}" must be a non-negative integer, got ${JSON.stringify(v)}`);
    }
    return v;
  };

  const architecture = parseArchitecture(j, fail);
  const hiddenSize = posInt("hidden_size");
  const intermediateSize = posInt("intermediate_size");
  const numLayers = posInt("num_hidden_layers");
  const numHeads = posInt("num_attention_heads");
  const numKvHeads = posInt("num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0) {
    fail(`"num_attention_heads" (${numHeads}) is not a multiple of "num_key_value_heads" (${numKvHeads})`);
  }
  if (j.head_dim === undefined || j.head_dim === null) {
    if (hiddenSize % numHeads !== 0) {
      fail(
        `"hidden_size" (${hiddenSize}) is not divisible by "num_attention_heads" (${numHeads}) and no head_dim`,
      );
    }
  }
  const headDim = posInt("head_dim", hiddenSize / numHeads);
  if (headDim % 2 !== 0) fail(`"head_dim" must be even for rotary embeddings, got ${headDim}`);
  const vocabSize = posInt("vocab_size");
  const maxPositionEmbeddings = posInt("max_position_embeddings", DEFAULT_MAX_POSITIONS[architecture]);
  const rmsNormEps = posNum(j.rms_norm_eps ?? 1e-6, "rms_norm_eps");

  const act = j.hidden_act ?? "silu";
  if (act !== "silu") fail(`"hidden_act" ${JSON.stringify(act)} is not supported (only "silu")`);
  if (flag("mlp_bias", false)) fail(`"mlp_bias": true is not supported (MLP projections without bias only)`);
  // Llama's attention_bias puts a bias on o_proj as well as q/k/v; the kernels only add q/k/v biases.
  // Mistral and Qwen2 ignore the key (their bias layout is fixed by the architecture).
  if (architecture === "llama" && flag("attention_bias", false)) {
    fail(`attention_bias with o_proj bias is not supported ("attention_bias": true biases o_proj too)`);
  }
  const partial = j.partial_rotary_factor ?? 1;
  if (partial !== 1) fail(`"partial_rotary_factor" ${JSON.stringify(partial)} is not supported (only 1)`);

  const { ropeTheta, ropeScaling } = parseRope(j, fail, posNum);
  const slidingWindow = parseSlidingWindow(j, architecture, numLayers, fail);

  const bos = j.bos_token_id;
  const bosTokenId = bos === undefined || bos === null ? null : tokenId(bos, "bos_token_id");
  const eos = j.eos_token_id;
  const eosList = eos === undefined || eos === null ? [] : Array.isArray(eos) ? eos : [eos];
  const eosTokenIds = [...new Set(eosList.map((v) => tokenId(v, "eos_token_id")))];

  return {
    architecture,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    maxPositionEmbeddings,
    rmsNormEps,
    ropeTheta,
    ropeScaling,
    tieWordEmbeddings: flag("tie_word_embeddings", false), // false is the HF default for all three families
    qkvBias: architecture === "qwen2",
    slidingWindow,
    bosTokenId,
    eosTokenIds,
  };
}

function parseArchitecture(j: Json, fail: (what: string) => never): Architecture {
  const type = j.model_type;
  const classes = j.architectures;
  let arch: Architecture | undefined;
  if (type !== undefined && type !== null) {
    if (type !== "llama" && type !== "mistral" && type !== "qwen2") {
      fail(`unknown architecture: model_type ${JSON.stringify(type)} (supported: llama, mistral, qwen2)`);
    }
    arch = type as Architecture;
  }
  if (classes !== undefined && classes !== null) {
    if (!Array.isArray(classes) || classes.length === 0) fail(`"architectures" must be a non-empty array`);
    for (const c of classes as unknown[]) {
      const a = typeof c === "string" ? ARCH_CLASSES[c] : undefined;
      if (!a) {
        fail(
          `unknown architecture ${JSON.stringify(c)} (supported: ${Object.keys(ARCH_CLASSES).join(", ")})`,
        );
      }
      if (arch && a !== arch) fail(`architecture ${c} contradicts model_type ${JSON.stringify(arch)}`);
      arch = a;
    }
  }
  return arch ?? fail(`no "model_type" or "architectures": cannot tell the architecture`);
}

function parseRope(
  j: Json,
  fail: (what: string) => never,
  posNum: (v: unknown, key: string) => number,
): { ropeTheta: number; ropeScaling: RopeScaling | null } {
  // transformers 5 writes rope_parameters (theta + type + scaling fields); older configs write rope_theta and
  // rope_scaling. Read both, preferring rope_parameters as transformers 5 does.
  const params = j.rope_parameters ?? null;
  const scaling = j.rope_scaling ?? null;
  if (params !== null && !isObject(params)) fail(`"rope_parameters" must be an object`);
  if (scaling !== null && !isObject(scaling)) fail(`"rope_scaling" must be an object or null`);
  const p = params as Json | null;
  const ropeTheta = posNum(
    p?.rope_theta ?? j.rope_theta ?? 10000,
    p?.rope_theta !== undefined ? "rope_parameters.rope_theta" : "rope_theta",
  );
  let ropeScaling: RopeScaling | null = null;
  for (const [key, s] of [["rope_parameters", p], ["rope_scaling", scaling as Json | null]] as const) {
    if (!s || ropeScaling) continue;
    const type = s.rope_type ?? s.type ?? "default";
    if (type === "default") continue;
    if (type !== "llama3") {
      fail(
        `${key}: rope scaling type ${JSON.stringify(type)} is not supported (only "default" and "llama3")`,
      );
    }
    const field = (name: string): number => posNum(s[name], `${key}.${name}`);
    const origKey = "original_max_position_embeddings";
    const orig = s[origKey];
    if (typeof orig !== "number" || !Number.isSafeInteger(orig) || orig <= 0) {
      fail(`"${key}.${origKey}" must be a positive integer, got ${JSON.stringify(orig)}`);
    }
    ropeScaling = {
      type: "llama3",
      factor: field("factor"),
      lowFreqFactor: field("low_freq_factor"),
      highFreqFactor: field("high_freq_factor"),
      originalMaxPositionEmbeddings: orig as number,
    };
    // The smoothing ramp divides by (high - low); equal factors would make it 0/0.
    if (ropeScaling.highFreqFactor <= ropeScaling.lowFreqFactor) {
      fail(`${key}: high_freq_factor must exceed low_freq_factor`);
    }
  }
  return { ropeTheta, ropeScaling };
}

function parseSlidingWindow(
  j: Json,
  arch: Architecture,
  numLayers: number,
  fail: (what: string) => never,
): number | null {
  if (arch === "llama") return null;
  // HF defaults: MistralConfig sliding_window=4096; Qwen2 uses its window only with use_sliding_window.
  if (arch === "qwen2" && j.use_sliding_window !== true) return null;
  const raw = j.sliding_window === undefined ? (arch === "mistral" ? 4096 : null) : j.sliding_window;
  if (raw === null) return null;
  if (typeof raw !== "number" || !Number.isSafeInteger(raw) || raw <= 0) {
    return fail(`"sliding_window" must be a positive integer or null, got ${JSON.stringify(raw)}`);
  }
  if (arch === "qwen2") {
    // Qwen2 slides only in layers >= max_window_layers (or as layer_types says); one window for all or none.
    const types = Array.isArray(j.layer_types)
      ? j.layer_types as unknown[]
      : Array.from({ length: numLayers }, (_, i) =>
        i >= Number(j.max_window_layers ?? 28) ? "sliding" : "full");
    const sliding = types.filter((t) => String(t).startsWith("sliding")).length;
    if (sliding === 0) return null;
    if (sliding !== types.length) {
      fail(
        `sliding window on only ${sliding} of ${types.length} layers is not supported (max_window_layers)`,
      );
    }
  }
  return raw;
}

/**
 * RoPE inverse frequencies `theta^(-2i/headDim)` for i < headDim/2, with Llama 3 scaling applied exactly as
 * HF transformers' `_compute_llama3_parameters` does: long wavelengths divided by `factor`, short ones kept,
 * a linear blend in between.
 */
export function ropeInvFreq(config: ModelConfig): Float32Array {
  const dim = config.headDim;
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = 1 / Math.pow(config.ropeTheta, (2 * i) / dim);
  const s = config.ropeScaling;
  if (!s) return out;
  const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  for (let i = 0; i < out.length; i++) {
    const inv = out[i];
    const wavelen = (2 * Math.PI) / inv;
    if (wavelen > lowFreqWavelen) out[i] = inv / s.factor;
    else if (wavelen >= highFreqWavelen) {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) /
        (s.highFreqFactor - s.lowFreqFactor);
      out[i] = (1 - smooth) * inv / s.factor + smooth * inv;
    }
  }
  return out;
}

/** `[out, in]` of one linear projection. */
export type Shape2 = [number, number];

/** `[out, in]` shape of every linear projection of a block (HF weight layout), derived from the config. */
export function linearShapes(
  config: ModelConfig,
): { q: Shape2; k: Shape2; v: Shape2; o: Shape2; gate: Shape2; up: Shape2; down: Shape2 } {
  const { hiddenSize: h, intermediateSize: f, headDim: d } = config;
  const q = config.numHeads * d;
  const kv = config.numKvHeads * d;
  return { q: [q, h], k: [kv, h], v: [kv, h], o: [h, q], gate: [f, h], up: [f, h], down: [h, f] };
}

/**
 * Stable 16-hex-digit FNV-1a 64 hash of the config fields that define the network's computation. Token ids
 * are left out on purpose: stop tokens (which generation_config.json may extend) do not change the weights or
 * activations, so they must not invalidate anything keyed by this hash (TEAL profiles).
 */
export function configHash(config: ModelConfig): string {
  const c = config;
  const s = c.ropeScaling;
  const canonical = JSON.stringify([
    c.architecture,
    c.hiddenSize,
    c.intermediateSize,
    c.numLayers,
    c.numHeads,
    c.numKvHeads,
    c.headDim,
    c.vocabSize,
    c.maxPositionEmbeddings,
    c.rmsNormEps,
    c.ropeTheta,
    s && [s.type, s.factor, s.lowFreqFactor, s.highFreqFactor, s.originalMaxPositionEmbeddings],
    c.tieWordEmbeddings,
    c.qkvBias,
    c.slidingWindow,
  ]);
  return fnv1a64(canonical);
}

/** FNV-1a 64 of the UTF-8 bytes of `text`, as 16 hex digits. Sync (crypto.subtle is async), exact without BigInt. */
export function fnv1a64(text: string): string {
  let hi = 0xcbf29ce4, lo = 0x84222325;
  for (const byte of new TextEncoder().encode(text)) {
    lo = (lo ^ byte) >>> 0; // >>> 0: keep it unsigned, or the product below goes negative
    // Multiply by the FNV prime 2^40 + 0x1b3 modulo 2^64: the 2^40 term only adds lo << 8 to the high half.
    const l = lo * 0x1b3;
    const carry = Math.floor(l / 0x100000000);
    const newHi = (Math.imul(hi, 0x1b3) + carry + (lo << 8)) >>> 0;
    lo = l >>> 0;
    hi = newHi;
  }
  return hi.toString(16).padStart(8, "0") + lo.toString(16).padStart(8, "0");
}
