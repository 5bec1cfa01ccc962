/**
 * Text <-> token ids for a model folder: a thin wrapper over `@huggingface/tokenizers` (tokenizer.json and
 * tokenizer_config.json), chat templates rendered with `@huggingface/jinja`, and a streaming detokenizer.
 *
 * Special tokens are never added behind the caller's back: {@link TextTokenizer.encode} adds BOS only when
 * asked (`addBos`), whatever the tokenizer's post-processor would do.
 * @module
 */
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";

/** One chat message. */
export interface ChatMessage {
  /** "system", "user", "assistant", ... */
  role: string;
  /** The message text. */
  content: string;
}

/** Options of {@link TextTokenizer.encode}. */
export interface EncodeOptions {
  /** Prepend the BOS token (default false; nothing is added when the model has no BOS token). */
  addBos?: boolean;
}

/** Options of {@link TextTokenizer.applyChatTemplate}. */
export interface ChatTemplateOptions {
  /** End with the prompt that opens the assistant's turn (default true). */
  addGenerationPrompt?: boolean;
}

type Json = Record<string, unknown>;

async function readJson(path: string): Promise<Json | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as Json;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(`cannot read ${path}: ${(e as Error).message}`);
  }
}

async function readText(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** A special token in tokenizer_config.json: a string or an AddedToken object `{content: ...}`. */
function tokenText(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as Json).content === "string") return (v as Json).content as string;
  return null;
}

/** `eos_token_id` of config.json / generation_config.json: a number, a list, or absent. */
function idList(v: unknown): number[] {
  if (typeof v === "number") return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === "number");
  return [];
}

/** The chat template: tokenizer_config's `chat_template` (a string or a named list), else chat_template.jinja. */
function pickTemplate(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    const named = v as { name?: string; template?: string }[];
    const t = named.find((x) => x.name === "default") ?? named[0];
    return typeof t?.template === "string" ? t.template : null;
  }
  return null;
}

/** A model's tokenizer: encode, decode, chat template. */
export class TextTokenizer {
  /** BOS token id, or null when the model has none. */
  readonly bosTokenId: number | null;
  /** Token ids that end a generation (tokenizer's eos_token plus config.json / generation_config.json). */
  readonly eosTokenIds: number[];
  /** Number of token ids the tokenizer knows (largest id + 1, added tokens included). */
  readonly vocabSize: number;
  readonly #tok: Tokenizer;
  readonly #template: Template | null;
  readonly #bosText: string;
  readonly #eosText: string;

  /**
   * Builds a tokenizer from parsed files; {@link TextTokenizer.load} reads them from a model folder.
   * @param tokenizerJson parsed tokenizer.json
   * @param tokenizerConfig parsed tokenizer_config.json ({} when absent)
   * @param extra model config ids (config.json / generation_config.json) and a chat template from elsewhere
   */
  constructor(
    tokenizerJson: Json,
    tokenizerConfig: Json = {},
    extra: { bosTokenId?: number | null; eosTokenIds?: number[]; chatTemplate?: string | null } = {},
  ) {
    this.#tok = new Tokenizer(tokenizerJson, tokenizerConfig);
    let maxId = -1;
    for (const id of this.#tok.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;

    const bosText = tokenText(tokenizerConfig.bos_token);
    const eosText = tokenText(tokenizerConfig.eos_token);
    const bosFromText = bosText !== null ? this.#tok.token_to_id(bosText) ?? null : null;
    this.bosTokenId = bosFromText ?? extra.bosTokenId ?? null;
    this.#bosText = bosText ?? (this.bosTokenId !== null ? this.#tok.id_to_token(this.bosTokenId) ?? "" : "");
    const eos = new Set<number>();
    const eosFromText = eosText !== null ? this.#tok.token_to_id(eosText) : undefined;
    if (eosFromText !== undefined) eos.add(eosFromText);
    for (const id of extra.eosTokenIds ?? []) eos.add(id);
    this.eosTokenIds = [...eos];
    const firstEos = this.eosTokenIds[0];
    this.#eosText = eosText ?? (firstEos !== undefined ? this.#tok.id_to_token(firstEos) ?? "" : "");

    const template = pickTemplate(tokenizerConfig.chat_template) ?? extra.chatTemplate ?? null;
    this.#template = template !== null ? new Template(template) : null;
  }

  /**
   * Reads tokenizer.json, tokenizer_config.json, config.json, generation_config.json and chat_template.jinja
   * (whichever exist) from a model folder.
   * @returns the tokenizer, or null when the folder has no tokenizer.json
   */
  static async load(dir: string): Promise<TextTokenizer | null> {
    const tokenizerJson = await readJson(`${dir}/tokenizer.json`);
    if (!tokenizerJson) return null;
    const tokenizerConfig = (await readJson(`${dir}/tokenizer_config.json`)) ?? {};
    const config = (await readJson(`${dir}/config.json`)) ?? {};
    const generation = (await readJson(`${dir}/generation_config.json`)) ?? {};
    const bos = generation.bos_token_id ?? config.bos_token_id;
    return new TextTokenizer(tokenizerJson, tokenizerConfig, {
      bosTokenId: typeof bos === "number" ? bos : null,
      eosTokenIds: [...idList(generation.eos_token_id), ...idList(config.eos_token_id)],
      chatTemplate: await readText(`${dir}/chat_template.jinja`),
    });
  }

  /** True when a chat template was found. */
  get hasChatTemplate(): boolean {
    return this.#template !== null;
  }

  /**
   * Token ids of `text`. Special-token strings inside the text (e.g. "<|begin_of_text|>" from a chat
   * template) become their ids; BOS is prepended only with `addBos`, and not twice when the text already
   * starts with it.
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids = text.length > 0 ? this.#tok.encode(text, { add_special_tokens: false }).ids : [];
    if (opts.addBos && this.bosTokenId !== null && ids[0] !== this.bosTokenId) ids.unshift(this.bosTokenId);
    return ids;
  }

  /** Text of token ids, special tokens included, without clean-up of spaces (so decode(encode(s)) === s). */
  decode(ids: number[]): string {
    if (ids.length === 0) return "";
    return this.#tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  /**
   * Renders messages with the model's chat template (bos_token and eos_token passed as strings).
   * The result already holds any BOS the template writes: encode it without `addBos`.
   * @throws Error when the model has no chat template
   */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    if (!this.#template) {
      throw new Error(
        "this model's tokenizer has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja): pass a plain prompt instead",
      );
    }
    return this.#template.render({
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? true,
      bos_token: this.#bosText,
      eos_token: this.#eosText,
    });
  }
}

/**
 * Incremental detokenizer for streaming: text grows token by token, and a multi-byte character split over
 * several tokens is held back until complete (nothing is emitted while the decoded text ends in U+FFFD).
 * Decoding happens over a short window of recent tokens (the prefix/read offsets of HF text-generation-
 * inference), so decoders that treat the first token specially (leading-space stripping) stay correct.
 * The concatenation of every `push` and the final `flush` equals `tok.decode(allIds)`.
 */
export class StreamDecoder {
  readonly #tok: TextTokenizer;
  /** Tokens from the start of the decoding window. */
  #ids: number[] = [];
  /** Tokens of #ids already emitted (their text is the window's prefix). */
  #read = 0;

  /** @param tok the tokenizer that made the ids */
  constructor(tok: TextTokenizer) {
    this.#tok = tok;
  }

  /** Adds tokens; returns the text that became complete ("" while a character is still incomplete). */
  push(ids: number[]): string {
    this.#ids.push(...ids);
    const prefix = this.#tok.decode(this.#ids.slice(0, this.#read));
    const text = this.#tok.decode(this.#ids);
    if (text.length <= prefix.length || text.endsWith("\uFFFD")) return "";
    // the emitted tokens become the context of the next window
    this.#ids = this.#ids.slice(this.#read);
    this.#read = this.#ids.length;
    return text.slice(prefix.length);
  }

  /** Returns the text still held back (an incomplete character shows as U+FFFD) and starts over. */
  flush(): string {
    const prefix = this.#tok.decode(this.#ids.slice(0, this.#read));
    const text = this.#tok.decode(this.#ids);
    this.#ids = [];
    this.#read = 0;
    return text.slice(prefix.length);
  }
}
