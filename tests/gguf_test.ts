/**
 * GGUF models on the GPU: the test models written as GGUF (llama.cpp's q/k permutation applied) in every
 * supported type must give the logits of the safetensors model (F32/F16/BF16: the same f16 weights on the GPU,
 * so the same logits), or, for the block formats, of a model built from exactly the values the file stores.
 * Any misplaced, mis-transposed or mis-permuted tensor changes the logits far beyond the tolerance.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects as assertRejects } from "node:assert";
import { join } from "node:path";
import { CheckpointError, expectedTensors, openCheckpoint } from "../src/model/checkpoint.ts";
import type { ModelConfig } from "../src/model/config.ts";
import { loadModel, type Model, modelFromTensors } from "../src/model/model.ts";
import { ReferenceModel } from "../src/model/reference.ts";
import { loadModelInWorker } from "../src/server/worker.ts";
import type { NamedTensor } from "../src/model/weights.ts";
import { gpt2TokenizerMetadata, gv, hfToGguf, type MetaValue, type WriteType } from "./_gguf_writer.ts";
import { gpu, randn, relErr, rng } from "./_gpu.ts";

const SHARED = new URL("../../shared/models/", import.meta.url).pathname;
const STORIES = join(SHARED, "stories260k");
const TINY = new URL("../models/tiny-llama-16m", import.meta.url).pathname;
const IDS = [1, 17, 5, 300, 42, 7, 311, 2];
const OPTS = { contextLength: 64, profile: false as const };

async function hfModel(dir: string): Promise<{ config: ModelConfig; tensors: NamedTensor[] }> {
  const ck = await openCheckpoint(dir);
  const tensors: NamedTensor[] = [];
  for await (const t of ck.readTensors()) tensors.push(t);
  return { config: ck.config, tensors };
}

/** Writes `file` as the only .gguf of a fresh folder; returns both paths. */
async function tempGguf(file: Uint8Array): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "tealgpu-gguf-" });
  const path = join(dir, "model.gguf");
  await Deno.writeFile(path, file);
  return { dir, path };
}

/** Keeps norms and biases F32 (llama.cpp does) and stores every matrix as `type`. */
const matricesAs = (type: WriteType) => (name: string): WriteType =>
  /norm\.weight$|\.bias$/.test(name) ? "F32" : type;

async function logitsOf(m: Model, ids = IDS): Promise<Float32Array> {
  try {
    return await m.logits(ids);
  } finally {
    m.dispose();
  }
}

/** Loads the GGUF made from `tensors` and the reference model of the values it stores; compares logits. */
async function compareWithStored(
  config: ModelConfig,
  tensors: NamedTensor[],
  type: WriteType,
  tol: number,
  ids = IDS,
): Promise<Map<string, WriteType>> {
  const ctx = await gpu();
  const { file, stored, types } = hfToGguf(config, tensors, matricesAs(type));
  const { dir, path } = await tempGguf(file);
  try {
    const loaded = await loadModel(path, { ...OPTS, gpu: ctx });
    assertEquals(loaded.config, config);
    const got = await logitsOf(loaded, ids);
    const want = await logitsOf(await modelFromTensors("ref", config, stored, { ...OPTS, gpu: ctx }), ids);
    const err = relErr(got, want);
    assert(err <= tol, `${type}: logits differ by ${err} (tolerance ${tol})`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return types;
}

Deno.test("stories260k as GGUF F32 / F16 / BF16 gives the safetensors model's logits", async () => {
  const ctx = await gpu();
  const { config, tensors } = await hfModel(STORIES);
  const want = await logitsOf(await loadModel(STORIES, { ...OPTS, gpu: ctx }));
  for (const type of ["F32", "F16"] as const) {
    const { dir, path } = await tempGguf(hfToGguf(config, tensors, matricesAs(type)).file);
    try {
      // the file itself, and the folder holding it as its one .gguf
      const m = await loadModel(type === "F32" ? path : dir, { ...OPTS, gpu: ctx });
      assertEquals(m.config, config);
      assertEquals([m.id, m.tokenizer], ["model", null]);
      // both reach the GPU as the same f16 weights
      const err = relErr(await logitsOf(m), want);
      assert(err <= 1e-6, `${type}: ${err}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  // BF16 rounds the f32 weights first: the same logits as a model of those values; close to the f32 model's
  await compareWithStored(config, tensors, "BF16", 1e-6);
});

Deno.test("CPU reference: stories260k as F32 GGUF computes exactly the safetensors model's logits", async () => {
  const { config, tensors } = await hfModel(STORIES);
  const { dir, path } = await tempGguf(hfToGguf(config, tensors, () => "F32").file);
  try {
    const want = (await ReferenceModel.load(STORIES)).forward(IDS, 0);
    assertEquals((await ReferenceModel.load(path)).forward(IDS, 0), want); // f32 throughout: bit for bit
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("stories260k as GGUF Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 matches a model of the stored values", async () => {
  const { config, tensors } = await hfModel(STORIES);
  for (const type of ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"] as const) {
    const types = await compareWithStored(config, tensors, type, 1e-4);
    // every matrix but the 172-wide down projections (not whole blocks: F16, as llama.cpp falls back)
    assertEquals(types.get("model.layers.0.self_attn.q_proj.weight"), type);
    assertEquals(types.get("model.embed_tokens.weight"), type);
    assertEquals(types.get("model.layers.4.mlp.down_proj.weight"), "F16");
  }
});

/** A random model whose every matrix is a whole number of 256-blocks wide, so K-quants store all of them. */
function randomModel(config: ModelConfig, seed: number): NamedTensor[] {
  const r = rng(seed);
  return [...expectedTensors(config)].map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (name.endsWith("norm.weight")) data = randn(n, r, 0.2).map((v) => 1 + v);
    else if (name.endsWith(".bias")) data = randn(n, r, 0.5);
    else data = randn(n, r, Math.sqrt(3 / shape[1]) * (name.includes("embed") ? 4 : 1));
    return { name, shape, data };
  });
}

const K_LLAMA: ModelConfig = {
  architecture: "llama",
  hiddenSize: 256,
  intermediateSize: 512,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 64,
  vocabSize: 320,
  maxPositionEmbeddings: 128,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  tieWordEmbeddings: false,
  qkvBias: false,
  slidingWindow: null,
  bosTokenId: 1,
  eosTokenIds: [2],
};

Deno.test("GGUF Q8_0 / Q4_0 with quant int8 / int4: re-quantized at load, as the stored values are from safetensors", async () => {
  const ctx = await gpu();
  const { config, tensors } = await hfModel(STORIES);
  for (const [type, quant] of [["Q8_0", "int8"], ["Q4_0", "int4"]] as const) {
    const { file, stored } = hfToGguf(config, tensors, matricesAs(type));
    const { dir, path } = await tempGguf(file);
    try {
      const loaded = await loadModel(path, { ...OPTS, gpu: ctx, quant });
      const ref = await modelFromTensors("ref", config, stored, { ...OPTS, gpu: ctx, quant });
      assertEquals([loaded.weightFormat, loaded.weightBytes], [quant, ref.weightBytes]);
      // the same dequantized values quantized by the same GPU kernel: the same codes, the same logits
      const got = await logitsOf(loaded);
      assertEquals(got, await logitsOf(ref), `${type} as ${quant}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("llama GGUF with every matrix Q4_K, Q5_K or Q6_K (GQA, untied) matches a model of the stored values", async () => {
  const tensors = randomModel(K_LLAMA, 11);
  for (const type of ["Q4_K", "Q5_K", "Q6_K"] as const) {
    const types = await compareWithStored(K_LLAMA, tensors, type, 1e-4);
    assert([...types].every(([n, t]) => t === (/norm/.test(n) ? "F32" : type)), `${type}: all matrices`);
  }
});

Deno.test("qwen2 GGUF (q/k/v bias, tied, NEOX rope: no un-permutation) Q8_0 matches the stored values", async () => {
  const config: ModelConfig = { ...K_LLAMA, architecture: "qwen2", qkvBias: true, tieWordEmbeddings: true };
  await compareWithStored(config, randomModel(config, 12), "Q8_0", 1e-4);
});

Deno.test("tiny-llama-16m as BF16 GGUF with its tokenizer: same config, logits, tokens and text", async () => {
  const ctx = await gpu();
  const { config, tensors } = await hfModel(TINY);
  const tokJson = JSON.parse(await Deno.readTextFile(join(TINY, "tokenizer.json")));
  const template = JSON.parse(await Deno.readTextFile(join(TINY, "tokenizer_config.json"))).chat_template;
  const extra: [string, MetaValue][] = [
    ...gpt2TokenizerMetadata(tokJson, "gpt-2"),
    ["tokenizer.chat_template", gv.str(template)],
  ];
  const { file } = hfToGguf(config, tensors, matricesAs("BF16"), extra);
  const { dir, path } = await tempGguf(file);
  const ref = await loadModel(TINY, { ...OPTS, gpu: ctx });
  try {
    const m = await loadModel(path, { ...OPTS, gpu: ctx });
    try {
      assertEquals(m.config, ref.config);
      const text = "The jury said that the city's 1962 election was";
      const ids = m.encode(text);
      assertEquals(ids, ref.encode(text));
      assertEquals(
        m.applyChatTemplate([{ role: "user", content: "hi" }]),
        ref.applyChatTemplate([{ role: "user", content: "hi" }]),
      );
      const err = relErr(await m.logits(ids), await ref.logits(ids));
      assert(err <= 1e-6, `logits differ by ${err}`);
      const a = await m.complete(text, { maxTokens: 12, temperature: 0 });
      const b = await ref.complete(text, { maxTokens: 12, temperature: 0 });
      assertEquals([a.ids, a.text], [b.ids, b.text]);
      // the server's worker model: weights in the worker, the GGUF's tokenizer on this thread
      m.dispose();
      const w = await loadModelInWorker(path, { contextLength: 64, profile: false });
      try {
        assertEquals(w.encode(text), ids);
        const g = w.generate(text, { maxTokens: 12, temperature: 0 });
        for await (const _ of g) { /* drain */ }
        const c = await g.result;
        assertEquals([c.ids, c.text], [b.ids, b.text]);
      } finally {
        await w.close();
      }
    } finally {
      m.dispose();
    }
  } finally {
    ref.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadModel refuses a broken GGUF before touching the GPU, naming the file", async () => {
  const { config, tensors } = await hfModel(STORIES);
  const { file } = hfToGguf(config, tensors, matricesAs("Q8_0"));
  const { dir, path } = await tempGguf(file.subarray(0, file.length - 100));
  try {
    await assertRejects(loadModel(path, OPTS), (e: unknown) => {
      assert(
        e instanceof CheckpointError && e.message.includes(path) && e.message.includes("truncated"),
        String(e),
      );
      return true;
    });
    await Deno.writeFile(join(dir, "second.gguf"), file);
    await assertRejects(loadModel(dir, OPTS), /2 GGUF files/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
