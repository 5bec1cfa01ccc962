/**
 * One-off check: dense perplexity of a model with the CPU reference (src/model/reference.ts).
 *
 * Protocol: tokenize the whole text without BOS, cut it into non-overlapping windows of `--text` tokens
 * (default ctx = 512), prefix each with BOS, run each window from an empty KV cache and score every text
 * token of the window (its log-probability given BOS and the text before it in the window).
 *
 * tiny-llama-16m on the first 8 windows of eval_brown.txt gives 109.94 with BOS + 512 text tokens (4096
 * scored tokens), matching an independent float64 implementation; BOS + 511 text tokens gives 108.33.
 *
 *   deno run -A tools/reference_ppl.ts [--model DIR] [--data FILE] [--ctx 512] [--windows 8] [--text N]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { logSoftmax, ReferenceModel } from "../src/model/reference.ts";
import { TextTokenizer } from "../src/model/tokenizer.ts";

const root = new URL("../../shared/", import.meta.url).pathname;
const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: `${root}models/tiny-llama-16m` },
    data: { type: "string", default: `${root}data/eval_brown.txt` },
    ctx: { type: "string", default: "512" },
    windows: { type: "string", default: "8" },
    text: { type: "string" },
  },
});
const ctx = Number(values.ctx);
const textPerWindow = values.text ? Number(values.text) : ctx;
const numWindows = Number(values.windows);

const t0 = performance.now();
const model = await ReferenceModel.load(values.model);
const tok = await TextTokenizer.load(values.model);
if (!tok) throw new Error(`no tokenizer.json in ${values.model}`);
const bos = tok.bosTokenId ?? model.config.bosTokenId;
if (bos === null) throw new Error("the model has no BOS token");
const ids = tok.encode(await Deno.readTextFile(values.data));
const V = model.config.vocabSize;

let nll = 0;
let count = 0;
for (let w = 0; w < numWindows; w++) {
  const text = ids.slice(w * textPerWindow, (w + 1) * textPerWindow);
  if (text.length < textPerWindow) break;
  const window = [bos, ...text];
  model.reset();
  const logits = model.forward(window, 0);
  let windowNll = 0;
  for (let t = 1; t < window.length; t++) {
    windowNll -= logSoftmax(logits.subarray((t - 1) * V, t * V))[window[t]];
  }
  nll += windowNll;
  count += window.length - 1;
  console.error(
    `window ${w}: ${window.length} tokens, ppl ${Math.exp(windowNll / (window.length - 1)).toFixed(3)}, ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}
const seconds = (performance.now() - t0) / 1000;
console.log(
  `perplexity ${Math.exp(nll / count).toFixed(4)} over ${count} scored tokens ` +
    `(${numWindows} windows of BOS + ${textPerWindow} text tokens, ${ids.length} tokens in file), ${
      seconds.toFixed(1)
    } s`,
);
