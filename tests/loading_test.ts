/**
 * Checkpoint loading against the real test models, and every way a model folder can be broken: each must fail
 * up front with a CheckpointError naming the file or tensor.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects as assertRejects } from "node:assert";
import { join } from "node:path";
import { CheckpointError, expectedTensors, openCheckpoint } from "../src/model/checkpoint.ts";
import { encodeSafetensors, type RawTensor } from "../src/model/safetensors.ts";

const SHARED = new URL("../../shared/models/", import.meta.url).pathname;
const TINY = join(SHARED, "tiny-llama-16m");
const STORIES = join(SHARED, "stories260k");
const IN_REPO_TINY = new URL("../models/tiny-llama-16m", import.meta.url).pathname;

interface RawEntry {
  dtype: string;
  shape: number[];
  begin: number; // absolute file offsets
  end: number;
}

/** Minimal independent safetensors reader (DataView + JSON), so spot checks do not trust the code under test. */
function rawHeader(file: Uint8Array): Map<string, RawEntry> {
  const view = new DataView(file.buffer, file.byteOffset);
  const n = Number(view.getBigUint64(0, true));
  const json = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n)));
  const out = new Map<string, RawEntry>();
  for (const [name, v] of Object.entries(json as Record<string, Record<string, never>>)) {
    if (name === "__metadata__") continue;
    out.set(name, {
      dtype: v.dtype,
      shape: v.shape,
      begin: 8 + n + v.data_offsets[0],
      end: 8 + n + v.data_offsets[1],
    });
  }
  return out;
}

/** Element `i` of a raw tensor, decoded by hand. */
function rawElement(file: Uint8Array, e: RawEntry, i: number): number {
  const view = new DataView(file.buffer, file.byteOffset);
  if (e.dtype === "F32") return view.getFloat32(e.begin + 4 * i, true);
  assertEquals(e.dtype, "BF16");
  const f = new DataView(new ArrayBuffer(4));
  f.setUint32(0, view.getUint16(e.begin + 2 * i, true) << 16);
  return f.getFloat32(0);
}

/** Asserts a CheckpointError whose message contains every part. */
function named(...parts: string[]): (e: unknown) => boolean {
  return (e) => {
    assert(e instanceof CheckpointError, `not a CheckpointError: ${e}`);
    for (const p of parts) assert(e.message.includes(p), `"${e.message}" lacks "${p}"`);
    return true;
  };
}

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "tealgpu-ckpt-" });
}

Deno.test("tiny-llama-16m: bf16, 3 shards, rope_parameters, untied", async () => {
  const ck = await openCheckpoint(TINY);
  const c = ck.config;
  assertEquals([c.architecture, c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim], [
    "llama",
    384,
    8,
    6,
    2,
    64,
  ]);
  assertEquals([c.ropeTheta, c.ropeScaling, c.tieWordEmbeddings, c.eosTokenIds, c.bosTokenId], [
    10000,
    null,
    false,
    [1],
    0,
  ]);
  assertEquals(
    ck.files.map((f) => f.split("/").pop()),
    [1, 2, 3].map((i) => `model-0000${i}-of-00003.safetensors`),
  );
  const expected = expectedTensors(c);
  assertEquals(expected.size, 1 + 8 * 9 + 2);
  assertEquals(ck.tensors.size, expected.size);
  for (const [name, shape] of expected) {
    assertEquals(ck.tensors.get(name)?.shape, shape, name);
    assertEquals(ck.tensors.get(name)?.dtype, "BF16");
  }
  const index = JSON.parse(await Deno.readTextFile(join(TINY, "model.safetensors.index.json")));
  assertEquals(ck.totalBytes, index.metadata.total_size);

  // Spot checks against an independent decode of the raw shard bytes, in all three shards.
  const checks = [
    "model.embed_tokens.weight",
    "model.layers.2.mlp.gate_proj.weight",
    "model.layers.5.self_attn.k_proj.weight",
    "lm_head.weight",
    "model.norm.weight",
  ];
  const raws = new Map<string, { file: Uint8Array; entry: RawEntry }>();
  for (const name of checks) {
    const file = await Deno.readFile(join(TINY, index.weight_map[name]));
    raws.set(name, { file, entry: rawHeader(file).get(name)! });
    assertEquals(ck.tensors.get(name)?.file, join(TINY, index.weight_map[name]));
  }
  assertEquals(new Set(checks.map((n) => index.weight_map[n])).size, 3, "spot checks cover every shard");
  const spot = (name: string, data: Float32Array) => {
    const { file, entry } = raws.get(name)!;
    const n = (entry.end - entry.begin) / 2;
    assertEquals(data.length, n);
    for (const i of [0, 1, 7, 383, Math.floor(n / 3), n - 1]) {
      assertEquals(data[i], rawElement(file, entry, i), `${name}[${i}]`);
    }
    assert(data.some((v) => v !== 0) && data.every(Number.isFinite), name);
  };

  const seen = new Map<string, number[]>();
  const progress: [number, number][] = [];
  for await (const t of ck.readTensors((done, total) => progress.push([done, total]))) {
    assert(!seen.has(t.name), `${t.name} streamed twice`);
    seen.set(t.name, t.shape);
    assertEquals(t.data.length, t.shape.reduce((a, b) => a * b, 1));
    if (raws.has(t.name)) spot(t.name, t.data);
  }
  assertEquals(seen, expected);
  assertEquals(progress[0], [0, ck.totalBytes]);
  assertEquals(progress.at(-1), [ck.totalBytes, ck.totalBytes]);
  assert(progress.every(([d], i) => i === 0 || d > progress[i - 1][0]), "progress increases");

  for (const name of checks) spot(name, (await ck.readTensor(name)).data);
  await assertRejects(ck.readTensor("model.layers.99.mlp.up_proj.weight"), named("model.layers.99"));
});

Deno.test("in-repo models/tiny-llama-16m opens like the shared copy", async () => {
  const a = await openCheckpoint(IN_REPO_TINY);
  const b = await openCheckpoint(TINY);
  assertEquals(a.config, b.config);
  assertEquals(a.totalBytes, b.totalBytes);
  assertEquals(
    (await a.readTensor("model.norm.weight")).data,
    (await b.readTensor("model.norm.weight")).data,
  );
});

Deno.test("stories260k: f32, single file, tied, rope_theta at top level", async () => {
  const ck = await openCheckpoint(STORIES);
  const c = ck.config;
  assertEquals([c.hiddenSize, c.intermediateSize, c.numLayers, c.headDim, c.vocabSize, c.tieWordEmbeddings], [
    64,
    172,
    5,
    8,
    512,
    true,
  ]);
  assertEquals([c.ropeTheta, c.eosTokenIds, c.bosTokenId], [10000, [2], 1]);
  assertEquals(ck.files, [join(STORIES, "model.safetensors")]);
  assert(!expectedTensors(c).has("lm_head.weight"));
  const file = await Deno.readFile(join(STORIES, "model.safetensors"));
  const raw = rawHeader(file);
  const e = raw.get("model.embed_tokens.weight")!;
  const embed = await ck.readTensor("model.embed_tokens.weight");
  assertEquals(embed.shape, [512, 64]);
  for (const i of [0, 5, 64 * 100 + 3, 512 * 64 - 1]) assertEquals(embed.data[i], rawElement(file, e, i));
  let count = 0;
  for await (const t of ck.readTensors()) {
    count++;
    const r = raw.get(t.name)!;
    assertEquals(t.data[t.data.length - 1], rawElement(file, r, t.data.length - 1), t.name);
  }
  assertEquals(count, 1 + 5 * 9 + 1);
});

// ---- Broken folders --------------------------------------------------------------------------------------

/** Tensors of stories260k as raw bytes, to rewrite into broken variants. */
async function storiesTensors(): Promise<RawTensor[]> {
  const file = await Deno.readFile(join(STORIES, "model.safetensors"));
  return [...rawHeader(file)].map(([name, e]) => ({
    name,
    dtype: e.dtype,
    shape: e.shape,
    data: file.slice(e.begin, e.end),
  }));
}

/** A folder with stories260k's config (patched) and `tensors` as model.safetensors. */
async function storiesVariant(
  tensors: RawTensor[],
  configPatch: Record<string, unknown> = {},
): Promise<string> {
  const dir = await tempDir();
  const config = JSON.parse(await Deno.readTextFile(join(STORIES, "config.json")));
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ ...config, ...configPatch }));
  await Deno.writeFile(join(dir, "model.safetensors"), encodeSafetensors(tensors));
  return dir;
}

/** tiny-llama's folder with config and index copied and shards symlinked (cheap), minus `skip`. */
async function tinyCopy(skip: string[] = []): Promise<string> {
  const dir = await tempDir();
  for (const f of Deno.readDirSync(TINY)) {
    if (skip.includes(f.name)) continue;
    if (f.name.endsWith(".safetensors")) await Deno.symlink(join(TINY, f.name), join(dir, f.name));
    else await Deno.copyFile(join(TINY, f.name), join(dir, f.name));
  }
  return dir;
}

async function rejectsNaming(dir: string, ...parts: string[]): Promise<void> {
  try {
    await assertRejects(openCheckpoint(dir), named(...parts));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("broken: missing config.json", async () => {
  const dir = await tempDir();
  await rejectsNaming(dir, join(dir, "config.json"), "not found");
});

Deno.test("broken: config.json is not JSON", async () => {
  const dir = await tempDir();
  await Deno.writeTextFile(join(dir, "config.json"), "{ hidden_size: 3");
  await rejectsNaming(dir, join(dir, "config.json"), "invalid JSON");
});

Deno.test("broken: no weight files", async () => {
  const dir = await tempDir();
  await Deno.copyFile(join(STORIES, "config.json"), join(dir, "config.json"));
  await rejectsNaming(dir, dir, "model.safetensors");
});

Deno.test("broken: unknown architecture", async () => {
  const dir = await storiesVariant(await storiesTensors(), {
    model_type: "gpt2",
    architectures: ["GPT2LMHeadModel"],
  });
  await rejectsNaming(dir, join(dir, "config.json"), "gpt2");
});

Deno.test("broken: missing shard", async () => {
  const dir = await tinyCopy(["model-00003-of-00003.safetensors"]);
  await rejectsNaming(dir, join(dir, "model-00003-of-00003.safetensors"), "missing");
});

Deno.test("broken: truncated shard names the file and the cut tensor", async () => {
  const name = "model-00002-of-00003.safetensors";
  const dir = await tinyCopy([name]);
  const file = await Deno.readFile(join(TINY, name));
  const last = [...rawHeader(file)].sort((a, b) => b[1].end - a[1].end)[0][0];
  await Deno.writeFile(join(dir, name), file.subarray(0, file.length - 1000));
  await rejectsNaming(dir, join(dir, name), "truncated", `"${last}"`);
});

Deno.test("broken: index maps a tensor to a shard that lacks it", async () => {
  const dir = await tinyCopy();
  const path = join(dir, "model.safetensors.index.json");
  const index = JSON.parse(await Deno.readTextFile(path));
  index.weight_map["model.norm.weight"] = "model-00001-of-00003.safetensors";
  await Deno.writeTextFile(path, JSON.stringify(index));
  await rejectsNaming(dir, '"model.norm.weight"', "model-00001-of-00003.safetensors");
});

Deno.test("broken: index escaping the folder", async () => {
  const dir = await tinyCopy();
  const path = join(dir, "model.safetensors.index.json");
  const index = JSON.parse(await Deno.readTextFile(path));
  index.weight_map["model.norm.weight"] = "../model-00003-of-00003.safetensors";
  await Deno.writeTextFile(path, JSON.stringify(index));
  await rejectsNaming(dir, path, '"model.norm.weight"');
});

Deno.test("broken: wrong tensor shape names tensor, file, expected and actual", async () => {
  const tensors = await storiesTensors();
  const k = tensors.find((t) => t.name === "model.layers.3.self_attn.k_proj.weight")!;
  assertEquals(k.shape, [32, 64]);
  k.shape = [64, 32]; // same bytes, transposed shape
  const dir = await storiesVariant(tensors);
  await rejectsNaming(
    dir,
    '"model.layers.3.self_attn.k_proj.weight"',
    join(dir, "model.safetensors"),
    "[64, 32]",
    "[32, 64]",
  );
});

Deno.test("broken: config disagrees with the weights", async () => {
  const dir = await storiesVariant(await storiesTensors(), { intermediate_size: 176 });
  await rejectsNaming(dir, '"model.layers.0.mlp.', "[176, 64]", "[172, 64]");
});

Deno.test("broken: unsupported dtype", async () => {
  const tensors = await storiesTensors();
  tensors.find((t) => t.name === "model.norm.weight")!.dtype = "I32";
  const dir = await storiesVariant(tensors);
  await rejectsNaming(dir, join(dir, "model.safetensors"), '"model.norm.weight"', "I32");
});

Deno.test("broken: corrupt JSON header", async () => {
  const dir = await storiesVariant(await storiesTensors());
  const path = join(dir, "model.safetensors");
  const file = await Deno.readFile(path);
  file[12] = 0x00;
  await Deno.writeFile(path, file);
  await rejectsNaming(dir, path, "JSON");
});

Deno.test("broken: missing and unexpected tensors", async () => {
  const tensors = await storiesTensors();
  await rejectsNaming(
    await storiesVariant(tensors.filter((t) => t.name !== "model.norm.weight")),
    '"model.norm.weight"',
    "missing",
  );
  const bias = {
    name: "model.layers.0.self_attn.q_proj.bias",
    dtype: "F32",
    shape: [64],
    data: new Uint8Array(256),
  };
  await rejectsNaming(await storiesVariant([...tensors, bias]), "unexpected", bias.name);
});

Deno.test("accepted: ignorable extras (inv_freq, tied lm_head) are not streamed", async () => {
  const tensors = await storiesTensors();
  const embed = tensors.find((t) => t.name === "model.embed_tokens.weight")!;
  const extras = [
    {
      name: "model.layers.0.self_attn.rotary_emb.inv_freq",
      dtype: "F32",
      shape: [4],
      data: new Uint8Array(16),
    },
    { ...embed, name: "lm_head.weight" },
  ];
  const dir = await storiesVariant([...tensors, ...extras]);
  await Deno.writeTextFile(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [2, 7] }));
  try {
    const ck = await openCheckpoint(dir);
    assertEquals(ck.config.eosTokenIds, [2, 7]);
    assert(ck.tensors.has("lm_head.weight"));
    const names: string[] = [];
    for await (const t of ck.readTensors()) names.push(t.name);
    assertEquals(new Set(names), new Set(expectedTensors(ck.config).keys()));
    assertEquals(ck.totalBytes, (await openCheckpoint(STORIES)).totalBytes);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
