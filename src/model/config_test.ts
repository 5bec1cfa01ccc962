import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert";
import {
  CheckpointError,
  configHash,
  fnv1a64,
  linearShapes,
  type ModelConfig,
  parseConfig,
  ropeInvFreq,
} from "./config.ts";

const SRC = "/models/x/config.json";
const BASE = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 384,
  intermediate_size: 1024,
  num_hidden_layers: 8,
  num_attention_heads: 6,
  num_key_value_heads: 2,
  vocab_size: 4096,
  max_position_embeddings: 1024,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  hidden_act: "silu",
  bos_token_id: 0,
  eos_token_id: 1,
};
const parse = (patch: Record<string, unknown> = {}): ModelConfig => parseConfig({ ...BASE, ...patch }, SRC);

/** Asserts that parsing fails with a CheckpointError whose message names the file and every `parts`. */
function rejects(patch: Record<string, unknown>, ...parts: string[]): void {
  assertThrows(() => parse(patch), (e: unknown) => {
    assert(e instanceof CheckpointError, `not a CheckpointError: ${e}`);
    for (const p of [SRC, ...parts]) assert(e.message.includes(p), `"${e.message}" lacks "${p}"`);
    return true;
  });
}

Deno.test("parseConfig reads a Llama config and derives defaults", () => {
  assertEquals(parse(), {
    architecture: "llama",
    hiddenSize: 384,
    intermediateSize: 1024,
    numLayers: 8,
    numHeads: 6,
    numKvHeads: 2,
    headDim: 64,
    vocabSize: 4096,
    maxPositionEmbeddings: 1024,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    tieWordEmbeddings: false,
    qkvBias: false,
    slidingWindow: null,
    bosTokenId: 0,
    eosTokenIds: [1],
  });
  const c = parse({
    num_key_value_heads: undefined,
    head_dim: 128,
    eos_token_id: [7, 1, 7],
    bos_token_id: null,
  });
  assertEquals([c.numKvHeads, c.headDim, c.eosTokenIds, c.bosTokenId], [6, 128, [7, 1], null]);
  assertEquals(parse({ head_dim: null }).headDim, 64);
  assertEquals(parse({ tie_word_embeddings: true, rope_theta: undefined }).tieWordEmbeddings, true);
  assertEquals(parse({ rope_theta: undefined }).ropeTheta, 10000);
  assertEquals(parse({ model_type: undefined }).architecture, "llama");
  assertEquals(parse({ architectures: undefined }).architecture, "llama");
});

Deno.test("parseConfig: rope_parameters (transformers 5) and rope_scaling llama3", () => {
  const llama3 = {
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  };
  const want = {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  };
  const a = parse({ rope_theta: undefined, rope_parameters: { rope_theta: 500000, rope_type: "default" } });
  assertEquals([a.ropeTheta, a.ropeScaling], [500000, null]);
  const b = parse({
    rope_theta: undefined,
    rope_parameters: { rope_theta: 500000, rope_type: "llama3", ...llama3 },
  });
  assertEquals([b.ropeTheta, b.ropeScaling], [500000, want]);
  const c = parse({ rope_theta: 500000, rope_scaling: { rope_type: "llama3", ...llama3 } });
  assertEquals([c.ropeTheta, c.ropeScaling], [500000, want]);
  assertEquals(parse({ rope_scaling: { type: "llama3", ...llama3 } }).ropeScaling, want);
  assertEquals(parse({ rope_scaling: null }).ropeScaling, null);
  rejects({ rope_scaling: { type: "linear", factor: 2 } }, "rope_scaling", '"linear"');
  rejects({ rope_scaling: { rope_type: "yarn", factor: 4 } }, '"yarn"');
  rejects({ rope_parameters: { rope_theta: 1e6, rope_type: "dynamic" } }, "rope_parameters", '"dynamic"');
  rejects({ rope_scaling: { rope_type: "llama3", ...llama3, factor: undefined } }, "rope_scaling.factor");
  rejects({ rope_scaling: { rope_type: "llama3", ...llama3, high_freq_factor: 1 } }, "high_freq_factor");
  rejects(
    { rope_scaling: { rope_type: "llama3", ...llama3, original_max_position_embeddings: 0.5 } },
    "original_max_position_embeddings",
  );
  rejects({ rope_theta: -1 }, "rope_theta");
});

Deno.test("parseConfig: Mistral and Qwen2 specifics", () => {
  const m = parse({ architectures: ["MistralForCausalLM"], model_type: "mistral", sliding_window: 4096 });
  assertEquals([m.architecture, m.slidingWindow, m.qkvBias], ["mistral", 4096, false]);
  assertEquals(
    parse({ architectures: ["MistralForCausalLM"], model_type: "mistral", sliding_window: null })
      .slidingWindow,
    null,
  );
  // HF MistralConfig's default window.
  assertEquals(parse({ architectures: ["MistralForCausalLM"], model_type: "mistral" }).slidingWindow, 4096);
  const qwen = { architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", sliding_window: 32768 };
  const q = parse({ ...qwen, use_sliding_window: false, max_window_layers: 0 });
  assertEquals([q.architecture, q.qkvBias, q.slidingWindow, q.tieWordEmbeddings], [
    "qwen2",
    true,
    null,
    false,
  ]);
  assertEquals(parse({ ...qwen, use_sliding_window: true, max_window_layers: 0 }).slidingWindow, 32768);
  assertEquals(parse({ ...qwen, use_sliding_window: true, max_window_layers: 8 }).slidingWindow, null);
  rejects({ ...qwen, use_sliding_window: true, max_window_layers: 4 }, "4 of 8 layers");
  rejects(
    { architectures: ["MistralForCausalLM"], model_type: "mistral", sliding_window: 0 },
    "sliding_window",
  );
  // Qwen2 ignores attention_bias (its q/k/v bias is fixed), Llama refuses it.
  assertEquals(parse({ ...qwen, attention_bias: true }).qkvBias, true);
  rejects({ attention_bias: true }, "attention_bias with o_proj bias is not supported");
});

Deno.test("parseConfig rejects unknown architectures and invalid fields, naming file and field", () => {
  rejects({ model_type: "gpt2", architectures: undefined }, '"gpt2"');
  rejects({ model_type: undefined, architectures: ["GPT2LMHeadModel"] }, "GPT2LMHeadModel");
  rejects({ architectures: ["LlamaForSequenceClassification"] }, "LlamaForSequenceClassification");
  rejects({ model_type: "mistral" }, "contradicts");
  rejects({ model_type: undefined, architectures: undefined }, "architecture");
  rejects({ hidden_size: undefined }, "hidden_size");
  rejects({ hidden_size: 0 }, "hidden_size");
  rejects({ intermediate_size: 10.5 }, "intermediate_size");
  rejects({ num_hidden_layers: "8" }, "num_hidden_layers");
  rejects({ vocab_size: -4 }, "vocab_size");
  rejects({ num_key_value_heads: 4 }, "num_key_value_heads");
  rejects({ hidden_size: 380 }, "hidden_size", "num_attention_heads");
  rejects({ head_dim: 63 }, "head_dim");
  rejects({ rms_norm_eps: 0 }, "rms_norm_eps");
  rejects({ hidden_act: "gelu" }, "hidden_act", "gelu");
  rejects({ mlp_bias: true }, "mlp_bias");
  rejects({ partial_rotary_factor: 0.5 }, "partial_rotary_factor");
  rejects({ eos_token_id: [1, "x"] }, "eos_token_id");
  rejects({ bos_token_id: -1 }, "bos_token_id");
  rejects({ tie_word_embeddings: "yes" }, "tie_word_embeddings");
  assertThrows(() => parseConfig([1, 2], SRC), /\/models\/x\/config\.json/);
});

// Literal transcription of HF transformers' _compute_default_rope_parameters + _compute_llama3_parameters.
function hfLlama3(
  theta: number,
  dim: number,
  factor: number,
  low: number,
  high: number,
  orig: number,
): number[] {
  const inv = Array.from({ length: dim / 2 }, (_, i) => 1 / theta ** ((2 * i) / dim));
  const lowWave = orig / low, highWave = orig / high;
  return inv.map((f) => {
    const wavelen = 2 * Math.PI / f;
    const scaled = wavelen > lowWave ? f / factor : f;
    const smooth = (orig / wavelen - low) / (high - low);
    const smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
    const medium = !(wavelen < highWave) && !(wavelen > lowWave);
    return medium ? smoothed : scaled;
  });
}

Deno.test("ropeInvFreq: default frequencies and llama3 scaling as HF computes them", () => {
  const plain = ropeInvFreq(parse());
  assertEquals(plain.length, 32);
  assertEquals(plain[0], 1);
  assert(Math.abs(plain[1] - 10000 ** (-2 / 64)) < 1e-7);
  assert(Math.abs(plain[31] - 10000 ** (-62 / 64)) < 1e-11);

  const scaling = {
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  };
  const c = parse({
    hidden_size: 4096,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    rope_theta: 500000,
    rope_scaling: { rope_type: "llama3", ...scaling },
  });
  const got = ropeInvFreq(c);
  const want = hfLlama3(500000, 128, 8, 1, 4, 8192);
  assertEquals(got.length, 64);
  for (let i = 0; i < 64; i++) {
    assert(Math.abs(got[i] - want[i]) <= 1e-6 * want[i], `i=${i}: ${got[i]} vs ${want[i]}`);
    const base = 500000 ** ((-2 * i) / 128);
    const wavelen = 2 * Math.PI / base;
    // High-frequency end (wavelength < 8192/4) unchanged, low-frequency end (> 8192/1) divided by 8, and
    // the band in between strictly between the two.
    if (wavelen < 2048) assert(Math.abs(got[i] - base) <= 1e-6 * base, `high i=${i}`);
    else if (wavelen > 8192) assert(Math.abs(got[i] - base / 8) <= 1e-6 * base / 8, `low i=${i}`);
    else assert(got[i] < base * (1 + 1e-6) && got[i] > base / 8 * (1 - 1e-6), `mid i=${i}`);
  }
  assertEquals(got[0], 1);
  assert(Math.abs(got[63] - 500000 ** (-126 / 128) / 8) < 1e-12);
  // Some of the 64 frequencies must fall in each band, or the checks above prove nothing.
  const bands = want.map((_, i) => 2 * Math.PI * 500000 ** ((2 * i) / 128)).map((w) =>
    w < 2048 ? 0 : w > 8192 ? 2 : 1
  );
  assertEquals(new Set(bands).size, 3);
});

Deno.test("linearShapes follow the config ([out, in])", () => {
  assertEquals(linearShapes(parse({ head_dim: 32 })), {
    q: [192, 384],
    k: [64, 384],
    v: [64, 384],
    o: [384, 192],
    gate: [1024, 384],
    up: [1024, 384],
    down: [384, 1024],
  });
});

Deno.test("configHash is stable, sensitive to the network, blind to token ids", () => {
  // Published FNV-1a 64 test vectors.
  assertEquals(fnv1a64(""), "cbf29ce484222325");
  assertEquals(fnv1a64("a"), "af63dc4c8601ec8c");
  assertEquals(fnv1a64("foobar"), "85944171f73967e8");
  const big = (t: string) => {
    let x = 0xcbf29ce484222325n;
    for (const b of new TextEncoder().encode(t)) x = ((x ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
    return x.toString(16).padStart(16, "0");
  };
  for (const t of ["\u00ff\u00fe", JSON.stringify(BASE), "x".repeat(1000)]) assertEquals(fnv1a64(t), big(t));
  const h = configHash(parse());
  assert(/^[0-9a-f]{16}$/.test(h));
  assertEquals(configHash(parse()), h);
  assertEquals(configHash(parse({ eos_token_id: [1, 2], bos_token_id: 5 })), h);
  const variants = [
    { num_key_value_heads: 3 },
    { intermediate_size: 1025 },
    { rms_norm_eps: 1e-6 },
    { rope_theta: 500000 },
    { tie_word_embeddings: true },
    { architectures: ["MistralForCausalLM"], model_type: "mistral", sliding_window: null },
  ];
  const hashes = new Set([h, ...variants.map((v) => configHash(parse(v)))]);
  assertEquals(hashes.size, variants.length + 1);
});
