/**
 * Text tokenizer: a thin wrapper over `@huggingface/tokenizers` (tokenizer.json) with explicit BOS
 * handling, chat templates rendered by `@huggingface/jinja`, and an incremental UTF-8-safe decoder.
 *
 * @module
 */
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";

/** One chat message for {@linkcode TextTokenizer.applyChatTemplate}. */
export interface ChatMessage {
  /** Speaker role, e.g. "system", "user", "assistant". */
  role: string;
  /** Message text. */
  content: string;
}

/** Options for {@linkcode TextTokenizer.encode}. */
export interface EncodeOptions {
  /** Prepend the BOS token (once, even if the text already starts with it). Default false. */
  addBos?: boolean;
}

/** Options for {@linkcode TextTokenizer.applyChatTemplate}. */
export interface ChatTemplateOptions {
  /** Append the assistant turn prefix so the model answers next. Default true. */
  addGenerationPrompt?: boolean;
}

type Json = Record<string, unknown>;

async function readJson(path: string): Promise<Json | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as Json;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(`cannot read ${path}: ${e instanceof Error ? e.message : e}`);
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

/** A special-token field of tokenizer_config.json: a string or an AddedToken object. */
function tokenString(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as Json).content === "string") {
    return (v as Json).content as string;
  }
  return null;
}

/** Pick the chat template from tokenizer_config.json's `chat_template` (string, list or map form). */
function pickTemplate(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    const named = v as { name?: string; template?: string }[];
    const d = named.find((t) => t.name === "default") ?? named[0];
    return typeof d?.template === "string" ? d.template : null;
  }
  if (v && typeof v === "object") {
    const m = v as Record<string, unknown>;
    const d = m.default ?? Object.values(m)[0];
    return typeof d === "string" ? d : null;
  }
  return null;
}

/** A loaded tokenizer (tokenizer.json + tokenizer_config.json + optional generation_config.json). */
export class TextTokenizer {
  /** BOS token id, or null when the tokenizer defines none. */
  readonly bosTokenId: number | null;
  /** End-of-sequence token ids (tokenizer_config eos_token plus generation_config eos_token_id). */
  readonly eosTokenIds: number[];
  /** Number of token ids, added tokens included. */
  readonly vocabSize: number;
  readonly #tok: Tokenizer;
  readonly #bosToken: string | null;
  readonly #eosToken: string | null;
  readonly #template: string | null;
  #compiled: Template | null = null;

  /**
   * Build from parsed files (normally via {@linkcode TextTokenizer.load}).
   *
   * @param tokenizerJson parsed tokenizer.json
   * @param config parsed tokenizer_config.json (special tokens, chat_template)
   * @param generation parsed generation_config.json (extra eos_token_id), if any
   * @param templateFile contents of chat_template.jinja, used when config has no chat_template
   */
  constructor(
    tokenizerJson: object,
    config: Json = {},
    generation: Json | null = null,
    templateFile: string | null = null,
  ) {
    const tok = new Tokenizer(tokenizerJson, config);
    this.#tok = tok;
    this.#bosToken = tokenString(config.bos_token);
    this.#eosToken = tokenString(config.eos_token);
    this.bosTokenId = this.#bosToken === null ? null : tok.token_to_id(this.#bosToken) ?? null;
    const eos = new Set<number>();
    const eosId = this.#eosToken === null ? undefined : tok.token_to_id(this.#eosToken);
    if (eosId !== undefined) eos.add(eosId);
    const genEos = generation?.eos_token_id;
    for (const id of Array.isArray(genEos) ? genEos : [genEos]) if (typeof id === "number") eos.add(id);
    this.eosTokenIds = [...eos];
    let max = -1;
    for (const id of tok.get_vocab(true).values()) if (id > max) max = id;
    this.vocabSize = max + 1;
    this.#template = pickTemplate(config.chat_template) ?? templateFile;
  }

  /**
   * Load the tokenizer of a model folder.
   *
   * @param dir folder holding tokenizer.json (and usually tokenizer_config.json)
   * @returns the tokenizer, or null when the folder has no tokenizer.json
   */
  static async load(dir: string): Promise<TextTokenizer | null> {
    const json = await readJson(`${dir}/tokenizer.json`);
    if (!json) return null;
    const config = (await readJson(`${dir}/tokenizer_config.json`)) ?? {};
    const generation = await readJson(`${dir}/generation_config.json`);
    const templateFile = await readText(`${dir}/chat_template.jinja`);
    return new TextTokenizer(json, config, generation, templateFile);
  }

  /**
   * Encode text to token ids. The tokenizer's own post-processor (which may add BOS) is not used:
   * BOS is prepended only when `opts.addBos` is set, and never twice.
   *
   * @returns token ids
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids = this.#tok.encode(text, { add_special_tokens: false }).ids;
    if (opts.addBos && this.bosTokenId !== null && ids[0] !== this.bosTokenId) ids.unshift(this.bosTokenId);
    return ids;
  }

  /**
   * Decode token ids to text. Special tokens (BOS, EOS, ...) are kept as their text unless
   * `opts.skipSpecialTokens` is set.
   *
   * @returns the text
   */
  decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return "";
    return this.#tok.decode(ids, { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  /** Whether a chat template is available. */
  get hasChatTemplate(): boolean {
    return this.#template !== null;
  }

  /**
   * Render the chat template (from tokenizer_config.json or chat_template.jinja) for `messages`,
   * with `bos_token` and `eos_token` defined.
   *
   * @returns the prompt text (encode it without `addBos`: templates usually emit BOS themselves)
   * @throws Error when the tokenizer has no chat template
   */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    if (this.#template === null) {
      throw new Error("this tokenizer has no chat template (tokenizer_config.json has no chat_template)");
    }
    this.#compiled ??= new Template(this.#template);
    return this.#compiled.render({
      messages,
      bos_token: this.#bosToken ?? "",
      eos_token: this.#eosToken ?? "",
      add_generation_prompt: opts.addGenerationPrompt ?? true,
    });
  }
}

/** Tokens the decoder may hold back waiting for a UTF-8 sequence to complete before giving up. */
const MAX_PENDING = 8;

/**
 * Incremental detokenizer for streaming generation. It decodes a sliding window of ids
 * (a few already-emitted tokens for context plus the pending ones) and emits the new part, so
 * tokenizers whose decode of a suffix differs from the suffix of a decode (leading-space handling)
 * stream correctly, and it holds text back while the decoded tail ends in U+FFFD (an incomplete
 * UTF-8 sequence split across byte tokens).
 */
export class StreamDecoder {
  readonly #tok: TextTokenizer;
  #ids: number[] = [];
  /** Start of the context window. */
  #prefix = 0;
  /** End of the context window = start of the not-yet-emitted ids. */
  #read = 0;

  /**
   * Start an empty stream.
   *
   * @param tok the tokenizer used to decode
   */
  constructor(tok: TextTokenizer) {
    this.#tok = tok;
  }

  /**
   * Add generated ids.
   *
   * @returns the newly completed text (possibly empty)
   */
  push(ids: number[]): string {
    this.#ids.push(...ids);
    return this.#step(false);
  }

  /**
   * Emit whatever is still held back (an incomplete sequence at the very end decodes to U+FFFD).
   *
   * @returns the remaining text
   */
  flush(): string {
    return this.#step(true);
  }

  #step(force: boolean): string {
    if (this.#read >= this.#ids.length) return "";
    const prefixText = this.#tok.decode(this.#ids.slice(this.#prefix, this.#read));
    const fullText = this.#tok.decode(this.#ids.slice(this.#prefix));
    const pending = this.#ids.length - this.#read;
    if (!force && fullText.endsWith("\uFFFD") && pending < MAX_PENDING) return "";
    if (!force && fullText.length <= prefixText.length) return ""; // nothing visible yet (e.g. a lone space piece)
    // The window's text normally extends the context's text; otherwise emit past the common prefix.
    let start = prefixText.length;
    if (!fullText.startsWith(prefixText)) {
      start = 0;
      while (start < prefixText.length && fullText[start] === prefixText[start]) start++;
    }
    this.#prefix = this.#read;
    this.#read = this.#ids.length;
    return fullText.slice(start);
  }
}
