/**
 * TextTokenizer and StreamDecoder on the embedded tiny-llama tokenizer (byte-level BPE, vocab 4096).
 * @module
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { StreamDecoder, TextTokenizer } from "./tokenizer.ts";

const TINY = new URL("../../models/tiny-llama-16m", import.meta.url).pathname;
const NO_TOKENIZER = new URL("../../../shared/models/stories260k", import.meta.url).pathname;

const tok = await TextTokenizer.load(TINY);
if (!tok) throw new Error(`no tokenizer in ${TINY}`);

const SAMPLES = [
  "Hello world",
  "The jury said that the city's election was conducted.",
  "  leading and trailing spaces  ",
  "line one\nline two\n\n\ttabbed\r\n",
  "héllo wörld — naïve café",
  "emoji 😀👍🏽 and 日本語のテキスト",
  "👨‍👩‍👧‍👦",
  "",
];

Deno.test("tokenizer: metadata of tiny-llama", () => {
  assertEquals(tok.vocabSize, 4096);
  assertEquals(tok.bosTokenId, 0);
  assertEquals(tok.eosTokenIds, [1]);
  assert(tok.hasChatTemplate);
});

Deno.test("tokenizer: encode/decode round-trips unicode, emoji and whitespace", () => {
  for (const s of SAMPLES) {
    const ids = tok.encode(s);
    assert(
      ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize),
      `ids of ${JSON.stringify(s)}`,
    );
    assert(!ids.includes(0), `no BOS unless asked: ${JSON.stringify(s)}`);
    assertEquals(tok.decode(ids), s);
  }
  // byte-level BPE splits an emoji into several byte tokens, and merges common words
  assert(tok.encode("😀").length > 1);
  assert(tok.encode("the the the the").length < "the the the the".length);
});

Deno.test("tokenizer: BOS only when asked, never doubled", () => {
  const plain = tok.encode("Hello world");
  assertEquals(tok.encode("Hello world", { addBos: true }), [0, ...plain]);
  assertEquals(tok.encode("Hello world", { addBos: false }), plain);
  assertEquals(tok.encode("", { addBos: true }), [0]);
  // the special-token string is recognised as one id; addBos does not add a second one
  assertEquals(tok.encode("<|begin_of_text|>Hello world"), [0, ...plain]);
  assertEquals(tok.encode("<|begin_of_text|>Hello world", { addBos: true }), [0, ...plain]);
  assertEquals(tok.decode([0, ...plain, 1]), "<|begin_of_text|>Hello world<|end_of_text|>");
});

Deno.test("tokenizer: chat template renders exactly", () => {
  const messages = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi there!" },
  ];
  assertEquals(
    tok.applyChatTemplate(messages),
    "<|begin_of_text|>system: Be brief.\nuser: Hi there!\nassistant:",
  );
  assertEquals(
    tok.applyChatTemplate(messages, { addGenerationPrompt: false }),
    "<|begin_of_text|>system: Be brief.\nuser: Hi there!\n",
  );
  const ids = tok.encode(tok.applyChatTemplate(messages));
  assertEquals(ids[0], 0);
  assertEquals(ids.filter((id) => id === 0).length, 1);
});

Deno.test("tokenizer: no chat template is a clear error", () => {
  const json = JSON.parse(Deno.readTextFileSync(`${TINY}/tokenizer.json`));
  const bare = new TextTokenizer(json, {});
  assert(!bare.hasChatTemplate);
  let message = "";
  try {
    bare.applyChatTemplate([{ role: "user", content: "x" }]);
  } catch (e) {
    message = (e as Error).message;
  }
  assert(message.includes("no chat template"), message);
});

Deno.test("tokenizer: StreamDecoder emits the whole text incrementally, never a broken character", () => {
  const text = "Grüße 😀 from 日本! 👍🏽 naïve\nbye 🎉";
  const ids = tok.encode(text);
  // one token at a time, then in uneven chunks
  for (const chunk of [1, 3, 7]) {
    const dec = new StreamDecoder(tok);
    const parts: string[] = [];
    for (let i = 0; i < ids.length; i += chunk) parts.push(dec.push(ids.slice(i, i + chunk)));
    parts.push(dec.flush());
    for (const p of parts) assert(!p.includes("\uFFFD"), `chunk ${chunk}: ${JSON.stringify(parts)}`);
    assertEquals(parts.join(""), text);
    if (chunk === 1) {
      // text really streamed: several non-empty pieces, and some tokens emitted nothing (held-back bytes)
      assert(parts.filter((p) => p.length > 0).length > 5);
      assert(parts.slice(0, -1).some((p) => p === ""));
    }
  }
});

Deno.test("tokenizer: StreamDecoder holds back a split emoji until complete, flush emits leftovers", () => {
  const ids = tok.encode("😀");
  assert(ids.length >= 2);
  const dec = new StreamDecoder(tok);
  for (const id of ids.slice(0, -1)) assertEquals(dec.push([id]), "");
  assertEquals(dec.push(ids.slice(-1)), "😀");
  assertEquals(dec.flush(), "");
  // an incomplete character at the end only comes out on flush
  const dec2 = new StreamDecoder(tok);
  assertEquals(dec2.push(tok.encode("ok ")), "ok ");
  assertEquals(dec2.push(ids.slice(0, 1)), "");
  assertEquals(dec2.flush(), "\uFFFD");
});

Deno.test("tokenizer: load returns null for a folder without tokenizer.json", async () => {
  assertEquals(await TextTokenizer.load(NO_TOKENIZER), null);
});

Deno.test("tokenizer: StreamDecoder handles decoders where a suffix decodes differently (WordPiece spaces)", () => {
  // WordPiece decode joins words with spaces but a lone token has none: per-token decoding would lose them.
  const json = {
    model: {
      type: "WordPiece",
      unk_token: "[UNK]",
      continuing_subword_prefix: "##",
      vocab: { "[UNK]": 0, hello: 1, world: 2, "##ing": 3, walk: 4 },
    },
    pre_tokenizer: { type: "Whitespace" },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    normalizer: null,
    post_processor: null,
    added_tokens: [],
  };
  const wp = new TextTokenizer(json, {});
  const ids = wp.encode("hello world walking hello");
  assertEquals(ids, [1, 2, 4, 3, 1]);
  assertEquals(ids.map((id) => wp.decode([id])).join(""), "helloworldwalk##inghello"); // the naive way fails
  const dec = new StreamDecoder(wp);
  const parts = ids.map((id) => dec.push([id]));
  parts.push(dec.flush());
  assertEquals(parts.join(""), "hello world walking hello");
  assertEquals(parts.slice(0, 4), ["hello", " world", " walk", "ing"]);
});
