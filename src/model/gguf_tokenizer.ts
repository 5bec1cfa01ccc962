/**
 * Tokenizers from GGUF metadata: llama.cpp's `tokenizer.ggml.*` keys turned into the equivalent Hugging Face
 * tokenizer.json, so that the one tokenizer implementation (`@huggingface/tokenizers`, via TextTokenizer)
 * serves both file formats. Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the GPT-2, Llama 3 and
 * Qwen2 pre-tokenizers is supported; anything else yields no tokenizer and a reason.
 * @module
 */
import type { GgufMetadata, GgufValue } from "./gguf.ts";
import { TextTokenizer } from "./tokenizer.ts";

/** llama.cpp `llama_token_type` values that are added tokens in HF terms. */
const TOKEN_CONTROL = 3;
const TOKEN_USER_DEFINED = 4;

// Pre-tokenizer split patterns as HF's tokenizer.json files for these families spell them.
const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const byteLevel = (useRegex: boolean) => ({
  type: "ByteLevel",
  add_prefix_space: false,
  trim_offsets: true,
  use_regex: useRegex,
});
const splitThenBytes = (pattern: string) => ({
  type: "Sequence",
  pretokenizers: [
    { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false },
    byteLevel(false),
  ],
});

/**
 * `tokenizer.ggml.pre` values (llama.cpp's pre-tokenizer names) this module maps, with the HF pre-tokenizer
 * and `ignore_merges` (Llama 3 looks whole words up before merging) of each.
 */
const PRE_TOKENIZERS: Record<string, { pre: object; ignoreMerges: boolean }> = {
  "gpt-2": { pre: byteLevel(true), ignoreMerges: false },
  "llama-bpe": { pre: splitThenBytes(LLAMA3_SPLIT), ignoreMerges: true },
  "qwen2": { pre: splitThenBytes(QWEN2_SPLIT), ignoreMerges: false },
};

/** A tokenizer built from GGUF metadata, or null and why not. */
export interface GgufTokenizerResult {
  /** The tokenizer, or null when the file has none the runtime can build. */
  tokenizer: TextTokenizer | null;
  /** Why there is no tokenizer (null when there is one, or when the file has no tokenizer at all). */
  reason: string | null;
}

const isInt = (v: GgufValue): v is number => typeof v === "number" && Number.isInteger(v);
const isString = (v: GgufValue): v is string => typeof v === "string";

/**
 * Builds the HF tokenizer.json of a GGUF byte-level BPE tokenizer (tokens, token types, merges, pre-tokenizer).
 * Errors name the file and key; an unsupported tokenizer kind returns null with the reason.
 */
export function ggufTokenizerJson(meta: GgufMetadata): { json: object | null; reason: string | null } {
  const model = meta.str("tokenizer.ggml.model");
  if (model === undefined) return { json: null, reason: null };
  if (model !== "gpt2") {
    const kind = model === "llama" ? `"llama" (SentencePiece)` : JSON.stringify(model);
    return {
      json: null,
      reason: `tokenizer.ggml.model ${kind} is not supported (byte-level BPE "gpt2" only)`,
    };
  }
  const preName = meta.str("tokenizer.ggml.pre") ?? "(missing)";
  const pre = Object.hasOwn(PRE_TOKENIZERS, preName) ? PRE_TOKENIZERS[preName] : undefined;
  if (!pre) {
    return {
      json: null,
      reason: `tokenizer.ggml.pre "${preName}" is not supported (${Object.keys(PRE_TOKENIZERS).join(", ")})`,
    };
  }
  const tokens = meta.array("tokenizer.ggml.tokens", isString, "strings") ??
    meta.fail(`missing required metadata key "tokenizer.ggml.tokens"`);
  const merges = meta.array("tokenizer.ggml.merges", isString, "strings") ??
    meta.fail(`missing required metadata key "tokenizer.ggml.merges" (a gpt2 tokenizer needs its merges)`);
  const types = meta.array("tokenizer.ggml.token_type", isInt, "integers");
  if (types && types.length !== tokens.length) {
    meta.fail(
      `tokenizer.ggml.token_type has ${types.length} entries but tokenizer.ggml.tokens ${tokens.length}`,
    );
  }
  const vocab: Record<string, number> = {};
  const added: object[] = [];
  tokens.forEach((t, id) => {
    // A duplicate keeps its first id, as HF's vocabulary (a map) and llama.cpp's token_to_id do.
    if (!Object.hasOwn(vocab, t)) vocab[t] = id;
    const type = types?.[id];
    if (type === TOKEN_CONTROL || type === TOKEN_USER_DEFINED) {
      added.push({
        id,
        content: t,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: type === TOKEN_CONTROL,
      });
    }
  });
  const pairs = merges.map((m, i): [string, string] => {
    const parts = m.split(" ");
    if (parts.length !== 2) meta.fail(`tokenizer.ggml.merges[${i}] ${JSON.stringify(m)} is not "left right"`);
    return parts as [string, string];
  });
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: pre.pre,
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: pre.ignoreMerges,
      vocab,
      merges: pairs,
    },
  };
  return { json, reason: null };
}

/**
 * The tokenizer of a GGUF file: tokenizer.json built from the metadata, special tokens from
 * `tokenizer.ggml.{bos,eos}_token_id` (BOS only when `add_bos_token` is not false), stop tokens `eosTokenIds`,
 * and the chat template from `tokenizer.chat_template`.
 */
export function ggufTokenizer(meta: GgufMetadata, eosTokenIds: number[]): GgufTokenizerResult {
  const { json, reason } = ggufTokenizerJson(meta);
  if (!json) return { tokenizer: null, reason };
  const tokens = meta.array("tokenizer.ggml.tokens", isString, "strings")!;
  const token = (key: string): string | null => {
    const id = meta.map.get(key);
    return typeof id === "number" && id >= 0 && id < tokens.length ? tokens[id] : null;
  };
  const config: Record<string, unknown> = {
    bos_token: meta.bool("tokenizer.ggml.add_bos_token") === false
      ? null
      : token("tokenizer.ggml.bos_token_id"),
    eos_token: token("tokenizer.ggml.eos_token_id"),
  };
  const template = meta.str("tokenizer.chat_template");
  if (template !== undefined) config.chat_template = template;
  return {
    tokenizer: new TextTokenizer(json, config, { eos_token_id: eosTokenIds }),
    reason: null,
  };
}
