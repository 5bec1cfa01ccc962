/**
 * `cli.ts generate`: text generation, streamed to stdout (or one JSON object with --json).
 * @module
 */
import type { Command } from "./commands.ts";
import { speculationJson } from "../generate/report.ts";
import type { GenerateResult } from "../generate/types.ts";
import { GEMV_HALF_USAGE, gemvHalfFlag, num, numList } from "./options.ts";
import { parseQuant } from "../gpu/quant.ts";

/** The text of --prompt-file: a UTF-8 file, or standard input for '-'; errors name the file. */
async function readPromptFile(path: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = path === "-"
      ? new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer())
      : await Deno.readFile(path);
  } catch (e) {
    throw new Error(`--prompt-file ${path}: ${(e as Error).message}`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`--prompt-file ${path}: not UTF-8 text`);
  }
  if (text === "") throw new Error(`--prompt-file ${path}: the file is empty`);
  return text;
}

/**
 * Prefill progress on stderr, `prefill 2048/4096 tokens` (the model reports only prompts of several passes):
 * rewritten in place on a terminal, the line ended by the last report or by `end()`; otherwise a line a
 * report.
 */
function prefillProgress(): { report: (done: number, total: number) => void; end: () => void } {
  const out = Deno.stderr;
  const inPlace = out.isTerminal();
  const enc = new TextEncoder();
  let open = false; // an in-place line waits for its end
  return {
    report(done, total) {
      const line = `prefill ${done}/${total} tokens`;
      open = inPlace && done < total;
      out.writeSync(enc.encode(inPlace ? `\r${line}${open ? "" : "\n"}` : `${line}\n`));
    },
    end() {
      if (open) out.writeSync(enc.encode("\n"));
      open = false;
    },
  };
}

/** --speculate K|auto: a clear error for anything else. */
function speculateFlag(raw: unknown): number {
  const k = Number(raw);
  if (!Number.isInteger(k) || k < 1 || String(raw).trim() === "") {
    throw new Error(`--speculate must be an integer >= 1 or 'auto', got '${raw}'`);
  }
  return k;
}

const USAGE = `usage: deno run -A cli.ts generate [options]

  --model PATH         Hugging Face model folder or GGUF file (default: the embedded tiny-llama-16m)
  --prompt TEXT        text prompt (BOS added)
  --prompt-file FILE   text prompt read from a UTF-8 file ('-': standard input), as --prompt (long documents)
  --prompt-ids 1,2,3   token ids, used as given (no BOS added)
  --chat               wrap the text prompt as one user message in the model's chat template
  --max-tokens N       most new tokens (default 128)
  --temperature T      0 is greedy (default 0.8)
  --top-k K            keep the K most likely tokens (default 0: off)
  --top-p P            nucleus mass in (0, 1] (default 1: off)
  --seed S             sampler seed (default 0)
  --stop TEXT          stop at this text (repeatable)
  --sparsity S         TEAL activation sparsity target, e.g. 0.4 (default 0: dense)
  --profile FILE       TEAL profile (default: teal-profile.json beside the model)
  --sparse-prefill     apply TEAL sparsity during prefill too
  --speculate K|auto   self-speculative decoding (needs a TEAL profile): draft K tokens sparse, verify them
                       in one dense pass; greedy output is identical to dense greedy, sampled output follows
                       the dense distribution. auto: measure and pick K and the draft sparsity
  --draft-sparsity S   sparsity of the speculative draft, in [0, 1) (default 0.5; with auto: fixes S)
  --context N          context length to allocate (default min(model max, 4096))
  --quant FORMAT       weight format: none (f16, default), int8 or int4 (quantized at load)
${GEMV_HALF_USAGE}
  --json               print {"ids", "text", "prompt_tokens", "tokens_per_s", ...} instead of streaming

A prompt longer than one prefill pass shows its progress on stderr. Ctrl-C stops the generation (during the
prompt's prefill too, once the running pass completes), prints what it made and exits with status 130; a
second Ctrl-C exits at once.`;

/** The generate command. */
export const generateCommand: Command = {
  summary: "generate text from a prompt",
  usage: USAGE,
  options: {
    model: { type: "string" },
    prompt: { type: "string" },
    "prompt-file": { type: "string" },
    "prompt-ids": { type: "string" },
    chat: { type: "boolean" },
    "max-tokens": { type: "string" },
    temperature: { type: "string" },
    "top-k": { type: "string" },
    "top-p": { type: "string" },
    seed: { type: "string" },
    stop: { type: "string", multiple: true },
    sparsity: { type: "string" },
    profile: { type: "string" },
    "sparse-prefill": { type: "boolean" },
    context: { type: "string" },
    quant: { type: "string" },
    "gemv-half": { type: "string" },
    speculate: { type: "string" },
    "draft-sparsity": { type: "string" },
    json: { type: "boolean" },
  },
  async run(v, deps) {
    const given = [v.prompt, v["prompt-file"], v["prompt-ids"]].filter((p) => p !== undefined).length;
    if (given !== 1) {
      throw new Error("give exactly one of --prompt TEXT, --prompt-file FILE or --prompt-ids 1,2,3");
    }
    // read before the model loads, so a wrong path fails at once
    const text = v["prompt-file"] !== undefined
      ? await readPromptFile(v["prompt-file"] as string)
      : v.prompt as string | undefined;
    const options = {
      maxTokens: num(v, "max-tokens", 128, { min: 1, integer: true }),
      temperature: num(v, "temperature", 0.8, { min: 0 }),
      topK: num(v, "top-k", 0, { min: 0, integer: true }),
      topP: num(v, "top-p", 1, { min: 0, max: 1, minExclusive: true }),
      seed: num(v, "seed", 0, { min: 0, max: 0xffffffff, integer: true }),
      sparsity: num(v, "sparsity", 0, { min: 0, max: 0.99 }),
      sparsePrefill: Boolean(v["sparse-prefill"]),
      stop: (v.stop as string[] | undefined) ?? [],
      speculate: v.speculate === undefined
        ? undefined
        : v.speculate === "auto"
        ? "auto" as const
        : speculateFlag(v.speculate),
      draftSparsity: v["draft-sparsity"] === undefined
        ? undefined
        : num(v, "draft-sparsity", 0.5, { min: 0, max: 0.999 }),
    };
    const quant = parseQuant(v.quant as string | undefined, "--quant");
    const gemvHalf = gemvHalfFlag(v["gemv-half"]);
    const dir = (v.model as string | undefined) ?? deps.defaultModelDir();
    const contextLength = v.context === undefined
      ? undefined
      : num(v, "context", 0, { min: 2, integer: true });
    const model = await deps.loadModel(dir, {
      contextLength,
      profile: v.profile as string | undefined,
      quant,
      gemvHalf,
    });
    try {
      let prompt: string | number[];
      if (v["prompt-ids"] !== undefined) prompt = numList(v["prompt-ids"] as string, "prompt-ids", true);
      else if (v.chat) {
        prompt = model.encode(model.applyChatTemplate([{ role: "user", content: text! }]), false);
      } else prompt = text!;
      const progress = prefillProgress();
      const interrupt = new AbortController();
      let interrupts = 0;
      const onInterrupt = () => {
        if (++interrupts > 1) Deno.exit(130);
        progress.end();
        console.error("stopping (Ctrl-C again to exit at once)");
        interrupt.abort();
      };
      Deno.addSignalListener("SIGINT", onInterrupt);
      let r: GenerateResult;
      try {
        const gen = model.generate(prompt, {
          ...options,
          signal: interrupt.signal,
          onPrefillProgress: progress.report,
        });
        const enc = new TextEncoder();
        for await (const chunk of gen) {
          if (!v.json && chunk.text) await Deno.stdout.write(enc.encode(chunk.text));
        }
        r = await gen.result;
      } finally {
        Deno.removeSignalListener("SIGINT", onInterrupt);
        progress.end();
      }
      if (r.finishReason === "abort") {
        // the pass or batch queued past the stop still runs: let it finish before the buffers are freed and
        // the process exits
        await model.gpu.device.queue.onSubmittedWorkDone();
      }
      if (v.json) {
        console.log(JSON.stringify({
          ids: r.ids,
          text: r.text,
          prompt_tokens: r.promptTokens,
          tokens_per_s: Number(r.tokensPerSecond.toFixed(2)),
          finish_reason: r.finishReason,
          ttft_ms: Number(r.timeToFirstTokenMs.toFixed(2)),
          sparsity: options.sparsity,
          realized_sparsity: r.realizedSparsity,
          weight_format: model.weightFormat,
          weight_bytes: model.weightBytes,
          ...(r.speculation ? { speculation: speculationJson(r.speculation) } : {}),
        }));
      } else {
        if (!model.hasTokenizer) console.log(r.ids.join(" "));
        else console.log();
        console.error(
          `[${r.ids.length} tokens, ${r.tokensPerSecond.toFixed(1)} tokens/s, first token ${
            r.timeToFirstTokenMs.toFixed(0)
          } ms, ${r.finishReason}${
            r.realizedSparsity !== null ? `, realised sparsity ${r.realizedSparsity.toFixed(3)}` : ""
          }${
            r.speculation
              ? `, speculate K=${r.speculation.k} S=${r.speculation.draftSparsity}${
                r.speculation.choice
                  ? ` (auto: expected ${r.speculation.choice.expectedTokensPerSecond.toFixed(1)} tokens/s, ${
                    r.speculation.choice.expectedSpeedup.toFixed(2)
                  }x dense)`
                  : ""
              }: acceptance ${r.speculation.acceptanceRate.toFixed(3)}, ${
                r.speculation.tokensPerRound.toFixed(2)
              } tokens per verify`
              : ""
          }]`,
        );
      }
      return r.finishReason === "abort" ? 130 : 0;
    } finally {
      model.dispose();
    }
  },
};
