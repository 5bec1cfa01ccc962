/**
 * Hugging Face checkpoint folders: `config.json` (+ optional `generation_config.json`) and `model.safetensors`
 * or shards listed by `model.safetensors.index.json`. {@link openCheckpoint} validates everything that can be
 * checked without reading weights (config, shard list, headers, names and shapes), so a bad folder fails in
 * seconds with a message naming the file and tensor instead of halfway through a GPU upload.
 * @module
 */
import { join } from "node:path";
import { CheckpointError, type ModelConfig, parseConfig } from "./config.ts";
import { openFile, readEntry, readSafetensorsHeader, type SafetensorsEntry } from "./safetensors.ts";

export { CheckpointError } from "./config.ts";

/** Where a tensor lives and how it is stored. */
export interface TensorInfo {
  /** HF tensor name. */
  name: string;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Stored element type. */
  dtype: "F32" | "F16" | "BF16";
  /** Path of the safetensors file holding it. */
  file: string;
}

/** A tensor read from the checkpoint, converted to f32 on the host. */
export interface HostTensor {
  /** HF tensor name. */
  name: string;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Elements, row-major. */
  data: Float32Array;
}

/** An opened, validated checkpoint folder. */
export interface Checkpoint {
  /** The model folder. */
  dir: string;
  /** Parsed config (with generation_config.json stop tokens merged). */
  config: ModelConfig;
  /** Every tensor in the weight files (including ignored ones such as a tied `lm_head.weight`). */
  tensors: Map<string, TensorInfo>;
  /** Paths of the safetensors files. */
  files: string[];
  /** Bytes of stored tensor data that {@link Checkpoint.readTensors} streams. */
  totalBytes: number;
  /**
   * Streams every tensor the config uses, file by file in on-disk order, converted to f32. Each tensor is read
   * on its own, so peak host memory is about one tensor. `onBytes(done, total)` reports stored bytes read.
   */
  readTensors(onBytes?: (done: number, total: number) => void): AsyncIterable<HostTensor>;
  /** Reads one tensor by HF name. */
  readTensor(name: string): Promise<HostTensor>;
}

/** Tensors a checkpoint may carry that the runtime recomputes or does not need. */
const IGNORED = /(^|\.)rotary_emb\.inv_freq$/;

/** The HF tensor names a config implies, with their shapes. */
export function expectedTensors(config: ModelConfig): Map<string, number[]> {
  const c = config;
  const h = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const m = new Map<string, number[]>([["model.embed_tokens.weight", [c.vocabSize, h]]]);
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}.`;
    m.set(p + "input_layernorm.weight", [h]);
    m.set(p + "self_attn.q_proj.weight", [q, h]);
    m.set(p + "self_attn.k_proj.weight", [kv, h]);
    m.set(p + "self_attn.v_proj.weight", [kv, h]);
    m.set(p + "self_attn.o_proj.weight", [h, q]);
    if (c.qkvBias) {
      m.set(p + "self_attn.q_proj.bias", [q]);
      m.set(p + "self_attn.k_proj.bias", [kv]);
      m.set(p + "self_attn.v_proj.bias", [kv]);
    }
    m.set(p + "post_attention_layernorm.weight", [h]);
    m.set(p + "mlp.gate_proj.weight", [c.intermediateSize, h]);
    m.set(p + "mlp.up_proj.weight", [c.intermediateSize, h]);
    m.set(p + "mlp.down_proj.weight", [h, c.intermediateSize]);
  }
  m.set("model.norm.weight", [h]);
  if (!c.tieWordEmbeddings) m.set("lm_head.weight", [c.vocabSize, h]);
  return m;
}

async function readJson(path: string, what: string): Promise<unknown | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new CheckpointError(`${path}: cannot read ${what} (${e instanceof Error ? e.message : e})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${path}: invalid JSON (${e instanceof Error ? e.message : e})`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Adds generation_config.json's stop (and, when missing, BOS) tokens: HF generate() stops on those too. */
async function mergeGenerationConfig(dir: string, config: ModelConfig): Promise<ModelConfig> {
  const path = join(dir, "generation_config.json");
  const g = await readJson(path, "generation config");
  if (g === undefined) return config;
  if (typeof g !== "object" || g === null || Array.isArray(g)) {
    throw new CheckpointError(`${path}: expected a JSON object`);
  }
  const gen = g as Record<string, unknown>;
  const ids = (v: unknown, key: string): number[] => {
    const list = v === undefined || v === null ? [] : Array.isArray(v) ? v : [v];
    for (const id of list) {
      if (!Number.isSafeInteger(id) || (id as number) < 0) {
        throw new CheckpointError(
          `${path}: "${key}" must hold non-negative integers, got ${JSON.stringify(v)}`,
        );
      }
    }
    return list as number[];
  };
  const eos = [...new Set([...config.eosTokenIds, ...ids(gen.eos_token_id, "eos_token_id")])];
  const bos = config.bosTokenId ?? ids(gen.bos_token_id, "bos_token_id")[0] ?? null;
  return { ...config, eosTokenIds: eos, bosTokenId: bos };
}

/** Shard file names (relative to dir) and, when sharded, the index's tensor -> file map. */
async function listShards(dir: string): Promise<{ names: string[]; weightMap: Map<string, string> | null }> {
  // Same precedence as transformers: a single model.safetensors wins over an index.
  if (await exists(join(dir, "model.safetensors"))) return { names: ["model.safetensors"], weightMap: null };
  const indexPath = join(dir, "model.safetensors.index.json");
  const index = await readJson(indexPath, "shard index");
  if (index === undefined) {
    throw new CheckpointError(
      `${dir}: no model.safetensors or model.safetensors.index.json (safetensors weights)`,
    );
  }
  const wm = (index as Record<string, unknown> | null)?.weight_map;
  if (typeof wm !== "object" || wm === null || Array.isArray(wm) || Object.keys(wm).length === 0) {
    throw new CheckpointError(`${indexPath}: missing or empty "weight_map"`);
  }
  const weightMap = new Map<string, string>();
  for (const [tensor, file] of Object.entries(wm)) {
    // Shards must stay inside the folder: an index is data, not a licence to read arbitrary paths.
    if (
      typeof file !== "string" || file === "" || file.startsWith("/") || file.split(/[\\/]/).includes("..")
    ) {
      throw new CheckpointError(
        `${indexPath}: tensor "${tensor}" maps to invalid file ${JSON.stringify(file)}`,
      );
    }
    weightMap.set(tensor, file);
  }
  const names = [...new Set(weightMap.values())].sort();
  for (const name of names) {
    if (!await exists(join(dir, name))) {
      throw new CheckpointError(`${join(dir, name)}: shard listed in ${indexPath} is missing`);
    }
  }
  return { names, weightMap };
}

interface Located {
  info: TensorInfo;
  entry: SafetensorsEntry;
}

const fmt = (shape: number[]): string => `[${shape.join(", ")}]`;

/**
 * Opens and validates a Hugging Face model folder: config, shard index, every safetensors header, and every
 * tensor name and shape against the config. Reads no weight data.
 */
export async function openCheckpoint(dir: string): Promise<Checkpoint> {
  const configPath = join(dir, "config.json");
  const json = await readJson(configPath, "config");
  if (json === undefined) {
    throw new CheckpointError(`${configPath}: not found (a model folder needs config.json)`);
  }
  const config = await mergeGenerationConfig(dir, parseConfig(json, configPath));

  const { names, weightMap } = await listShards(dir);
  const files = names.map((n) => join(dir, n));
  const headers = await Promise.all(files.map(readSafetensorsHeader));
  const found = new Map<string, Located>();
  for (const h of headers) {
    for (const e of h.tensors) {
      const prev = found.get(e.name);
      if (prev) {
        throw new CheckpointError(`tensor "${e.name}" appears in both ${prev.info.file} and ${h.path}`);
      }
      found.set(e.name, { info: { name: e.name, shape: e.shape, dtype: e.dtype, file: h.path }, entry: e });
    }
  }
  if (weightMap) {
    for (const [name, file] of weightMap) {
      const at = found.get(name);
      if (!at || at.info.file !== join(dir, file)) {
        throw new CheckpointError(
          `tensor "${name}": ${
            join(dir, "model.safetensors.index.json")
          } places it in ${file}, which does not hold it`,
        );
      }
    }
  }

  const expected = expectedTensors(config);
  for (const [name, shape] of expected) {
    const at = found.get(name);
    if (!at) throw new CheckpointError(`tensor "${name}" ${fmt(shape)} is missing from ${files.join(", ")}`);
    if (at.info.shape.length !== shape.length || at.info.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(
        `tensor "${name}" in ${at.info.file} has shape ${fmt(at.info.shape)}, expected ${
          fmt(shape)
        } from ${configPath}`,
      );
    }
  }
  // A tied checkpoint may still store lm_head.weight (a copy of the embedding): accepted, and not read.
  const ignorable = (n: string) => IGNORED.test(n) || (n === "lm_head.weight" && config.tieWordEmbeddings);
  const extra = [...found.values()].filter((t) => !expected.has(t.info.name) && !ignorable(t.info.name));
  if (extra.length > 0) {
    const list = extra.slice(0, 5).map((t) => `"${t.info.name}" (${t.info.file})`).join(", ");
    const more = extra.length > 5 ? ` and ${extra.length - 5} more` : "";
    throw new CheckpointError(`unexpected tensors not used by ${configPath}: ${list}${more}`);
  }

  // Streaming plan: used tensors, shard by shard, in file order so reads are sequential.
  const plan = headers.map((h) => ({ path: h.path, entries: h.tensors.filter((e) => expected.has(e.name)) }));
  const totalBytes = plan.reduce((a, p) => a + p.entries.reduce((b, e) => b + e.bytes, 0), 0);
  const tensors = new Map([...found].map(([n, t]) => [n, t.info]));

  async function* readTensors(onBytes?: (done: number, total: number) => void): AsyncGenerator<HostTensor> {
    let done = 0;
    onBytes?.(0, totalBytes);
    for (const { path, entries } of plan) {
      const file = await openFile(path);
      try {
        for (const e of entries) {
          const data = await readEntry(file, path, e);
          done += e.bytes;
          onBytes?.(done, totalBytes);
          yield { name: e.name, shape: [...e.shape], data };
        }
      } finally {
        file.close();
      }
    }
  }

  async function readTensor(name: string): Promise<HostTensor> {
    const at = found.get(name);
    if (!at) throw new CheckpointError(`tensor "${name}" is not in the checkpoint ${dir}`);
    const file = await openFile(at.info.file);
    try {
      return { name, shape: [...at.entry.shape], data: await readEntry(file, at.info.file, at.entry) };
    } finally {
      file.close();
    }
  }

  return { dir, config, tensors, files, totalBytes, readTensors, readTensor };
}
