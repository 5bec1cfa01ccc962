/**
 * Tokenizers from GGUF metadata: llama.cpp's `tokenizer.ggml.*` keys turned into the equivalent Hugging Face
 * tokenizer.json, so that the one tokenizer implementation (`@huggingface/tokenizers`, via TextTokenizer)
 * serves both file formats. Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the GPT-2, Llama 3 and
 * Qwen2 pre-tokenizers, and SentencePiece BPE (`"llama"`: Llama 2, Mistral) are supported; anything else
 * yields no tokenizer and a reason.
 * @module
 */
import { findGgufFile, GgufMetadata, type GgufValue, openGguf } from "./gguf.ts";
import { TextTokenizer } from "./tokenizer.ts";

// llama.cpp `llama_token_type` values; unknown, control and user-defined tokens are HF added tokens.
const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
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
 * `tokenizer.ggml.pre` values (llama.cpp's pre-tokenizer names) this module maps, with the HF pre-tokenizer,
 * normalizer (Qwen2's tokenizer.json applies NFC) and `ignore_merges` (Llama 3 looks whole words up before
 * merging) of each.
 */
const PRE_TOKENIZERS: Record<string, { pre: object; normalizer: object | null; ignoreMerges: boolean }> = {
  "gpt-2": { pre: byteLevel(true), normalizer: null, ignoreMerges: false },
  "llama-bpe": { pre: splitThenBytes(LLAMA3_SPLIT), normalizer: null, ignoreMerges: true },
  "qwen2": { pre: splitThenBytes(QWEN2_SPLIT), normalizer: { type: "NFC" }, ignoreMerges: false },
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

/** Token strings, llama.cpp token types and the HF vocabulary / added tokens they imply. */
function vocabulary(meta: GgufMetadata): {
  tokens: string[];
  types: number[] | undefined;
  vocab: Record<string, number>;
  added: object[];
} {
  const tokens = meta.array("tokenizer.ggml.tokens", isString, "strings") ??
    meta.fail(`missing required metadata key "tokenizer.ggml.tokens"`);
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
    if (type === TOKEN_UNKNOWN || type === TOKEN_CONTROL || type === TOKEN_USER_DEFINED) {
      added.push({
        id,
        content: t,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: type !== TOKEN_USER_DEFINED,
      });
    }
  });
  return { tokens, types, vocab, added };
}

/**
 * Builds the HF tokenizer.json of a GGUF tokenizer: byte-level BPE ("gpt2": tokens, merges, pre-tokenizer) or
 * SentencePiece BPE ("llama": tokens, scores, byte fallback). Errors name the file and key; an unsupported
 * tokenizer kind returns null with the reason.
 */
export function ggufTokenizerJson(meta: GgufMetadata): { json: object | null; reason: string | null } {
  const model = meta.str("tokenizer.ggml.model");
  if (model === undefined) return { json: null, reason: null };
  if (model === "llama") return { json: sentencePieceJson(meta), reason: null };
  if (model !== "gpt2") {
    return {
      json: null,
      reason: `tokenizer.ggml.model ${JSON.stringify(model)} is not supported ("gpt2" and "llama" only)`,
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
  const { vocab, added } = vocabulary(meta);
  const merges = meta.array("tokenizer.ggml.merges", isString, "strings") ??
    meta.fail(`missing required metadata key "tokenizer.ggml.merges" (a gpt2 tokenizer needs its merges)`);
  const pairs = merges.map((m, i): [string, string] => {
    // llama.cpp splits at the first space after the first character, so a left part may itself be " "
    const at = m.indexOf(" ", 1);
    if (at < 0) meta.fail(`tokenizer.ggml.merges[${i}] ${JSON.stringify(m)} is not "left right"`);
    return [m.slice(0, at), m.slice(at + 1)];
  });
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: pre.normalizer,
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
 * A SentencePiece BPE vocabulary (pieces + scores) as HF's LlamaConverter writes it: BPE with byte fallback
 * and merges derived from the scores as transformers' SentencePieceExtractor derives them (every split of a
 * piece into two pieces, ranked by the piece's score), so the highest-scoring merge applies first, as in
 * SentencePiece. Spaces become "▁", with one prepended (add_space_prefix) to each fragment between special
 * tokens, as llama.cpp does.
 */
function sentencePieceJson(meta: GgufMetadata): object {
  const { tokens, types, vocab, added } = vocabulary(meta);
  const scores = meta.array("tokenizer.ggml.scores", (v): v is number => typeof v === "number", "numbers") ??
    meta.fail(`missing required metadata key "tokenizer.ggml.scores" (a SentencePiece tokenizer needs them)`);
  if (scores.length !== tokens.length) {
    meta.fail(
      `tokenizer.ggml.scores has ${scores.length} entries but tokenizer.ggml.tokens ${tokens.length}`,
    );
  }
  const merges: { pair: [string, string]; score: number }[] = [];
  tokens.forEach((piece, id) => {
    // Only normal pieces are merge results: SentencePiece never builds control, byte or user-defined pieces.
    if (types && types[id] !== TOKEN_NORMAL) return;
    if (vocab[piece] !== id) return;
    const chars = [...piece]; // code points: a split must not cut a surrogate pair
    const local: { pair: [string, string]; score: number }[] = [];
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join(""), r = chars.slice(k).join("");
      if (Object.hasOwn(vocab, l) && Object.hasOwn(vocab, r)) local.push({ pair: [l, r], score: scores[id] });
    }
    local.sort((a, b) => vocab[a.pair[0]] - vocab[b.pair[0]] || vocab[a.pair[1]] - vocab[b.pair[1]]);
    merges.push(...local);
  });
  merges.sort((a, b) => b.score - a.score); // stable: ties keep vocabulary order, as in the extractor
  const unkId = meta.map.get("tokenizer.ggml.unknown_token_id");
  const unk = typeof unkId === "number" && unkId >= 0 && unkId < tokens.length
    ? tokens[unkId]
    : types
    ? tokens[types.indexOf(TOKEN_UNKNOWN)] ?? null
    : null;
  const prefix = meta.bool("tokenizer.ggml.add_space_prefix") ?? true;
  const normalizers: object[] = prefix ? [{ type: "Prepend", prepend: "\u2581" }] : [];
  normalizers.push({ type: "Replace", pattern: { String: " " }, content: "\u2581" });
  const decoders: object[] = [
    { type: "Replace", pattern: { String: "\u2581" }, content: " " },
    { type: "ByteFallback" },
    { type: "Fuse" },
  ];
  if (prefix) decoders.push({ type: "Strip", content: " ", start: 1, stop: 0 });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: "Sequence", normalizers },
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: "Sequence", decoders },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: unk,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: merges.map((m) => m.pair),
    },
  };
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
  try {
    return { tokenizer: new TextTokenizer(json, config, { eos_token_id: eosTokenIds }), reason: null };
  } catch (e) {
    return meta.fail(
      `cannot build a tokenizer from tokenizer.ggml.* (${e instanceof Error ? e.message : e})`,
    );
  }
}

/**
 * The tokenizer of a model path as `loadModel` resolves it: from the metadata of a GGUF file (or a
 * folder's one `.gguf`), else the folder's tokenizer.json. Validates the GGUF header as the loader does.
 */
export async function loadTokenizer(path: string): Promise<GgufTokenizerResult> {
  const gguf = await findGgufFile(path);
  if (!gguf) return { tokenizer: await TextTokenizer.load(path), reason: null };
  const ck = await openGguf(gguf);
  return ggufTokenizer(new GgufMetadata(ck.header.metadata, gguf), ck.config.eosTokenIds);
}
