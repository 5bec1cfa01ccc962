/**
 * `cli.ts bench`: decode speed at real model shapes with random weights made on the GPU (or a real model).
 * @module
 */
import {
  benchDecode,
  benchSpeculative,
  benchTtft,
  measureAcceptance,
  type MeasuredAcceptance,
} from "../bench/decode_bench.ts";
import { randomModel } from "../bench/random_model.ts";
import { SHAPES } from "../bench/shapes.ts";
import { createGpuContext } from "../gpu/context.ts";
import {
  ATTN_PRELOAD,
  ATTN_SPLITS,
  GEMV_CHUNK,
  GEMV_HALF,
  GEMV_LONG_K,
  GEMV_PIPE,
  GEMV_SCAN,
  gemvHalfOn,
  MATMUL_WIDE,
  SPARSITY_BINS,
} from "../gpu/kernels.ts";
import { DECODE, PREFILL, prefillStepsUpTo } from "../generate/decode.ts";
import type { Model } from "../model/model.ts";
import type { Command } from "./commands.ts";
import { num, numList, onOff } from "./options.ts";
import { parseQuant } from "../gpu/quant.ts";

async function gitCommit(): Promise<string> {
  // the GPU machine gets a copy of the tree without .git: TEALGPU_COMMIT names the commit there
  const fromEnv = Deno.env.get("TEALGPU_COMMIT");
  if (fromEnv) return fromEnv;
  try {
    const out = await new Deno.Command("git", { args: ["rev-parse", "--short", "HEAD"], stderr: "null" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : "unknown";
  } catch {
    return "unknown";
  }
}

/** The bench command. */
export const benchCommand: Command = {
  summary: "decode speed (tokens/s, per-kernel GPU time, GB/s) at 7B/8B shapes",
  usage: `usage: deno run -A cli.ts bench [options]

  --shape NAME         ${Object.keys(SHAPES).join(" | ")} (random f16 weights made on the GPU; default tiny)
  --model PATH         benchmark a real model (folder or GGUF file) instead of a random shape
  --sparsity LIST      comma-separated TEAL targets (default 0,0.25,0.4,0.5,0.6,0.7)
  --tokens N           tokens to decode per run (default 128)
  --quant FORMAT       weight format: none (f16), int8 or int4 (group-wise, quantized on the GPU for
                       --shape, at load for --model; see docs/quantization.md)
  --speculate K        also time self-speculative decoding's dense verify pass (K + 1 positions) and estimate
                       its speed-up from the dense/draft step times and --acceptance
  --draft-sparsity S   draft sparsity for the estimate (default 0.5; must be one of --sparsity)
  --acceptance A|measured
                       per-token draft acceptance to assume (default 0.43, tiny-llama-16m at K=1, S=0.5), or
                       'measured': run speculative decoding (K, S) on --acceptance-model and use its acceptance
  --acceptance-model DIR
                       model (with a TEAL profile) to measure on (default: --model, else the embedded model)
  --acceptance-temperature T
                       sampling temperature of that measurement (default 0: greedy)
  --stream-interval MS decoding per read-back batch (default 250; see GenerateOptions.streamIntervalMs)
  --submit-chunk N[,M] dispatches in the first command buffer of a read-back batch in the decode loop and in
                       each later one (default 512,4096; N alone: M = N; 0: one command buffer per batch)
  --batch-growth G     read-back batch growth per batch until --stream-interval is reached (default 2,
                       DECODE.growth)
  --temperature T      sampling of the timed generations (default 0: greedy), with --top-k K (default 0: off)
                       and --top-p P (default 1: off)
  --ttft LIST          also time the first token after prompts of these lengths (e.g. 1,16,64,256)
  --context LIST       also time decode steps at these positions (e.g. 1024,4096,8191): GPU ms a token and
                       the attention's share; the KV cache before them holds random values
  --attn-heads N       q heads a workgroup of the split (long-context) decode attention at every position: 1 to
                       4, dividing the q heads a kv head (Forward.attentionHeads; default by position:
                       attnHeadsAt)
  --attn-splits N      most splits of a head group's context below the longest span (ATTN_SPLITS; default 8
                       a head of the group)
  --prefill-submit layer|pass  submit a prompt's prefill pass a layer at a time as it is built (default) or
                       whole once built (PREFILL.submitPerLayer)
  --prefill-cache N    prompt chunks of at most N rows reuse a prefill pass built once per row count (default
                       16, PREFILL.cacheRowsUpTo; 0: every pass built anew, as a first prompt of its length is;
                       --ttft times after a warm-up at each length)
  --prefill-steps N    prompts of at most N tokens go through decode steps, not the prefill GEMM (default by
                       device: 7 on a GPU, 1 on a CPU adapter)
  --gemv-epilogue      the decode GEMVs sum their own splits (Forward.gemvEpilogue: no reduce passes; check
                       the GPU first with bench/finish_check.ts)
  --swiglu-in-down on|off  the down GEMV computes SwiGLU from the gate|up GEMV's split sums while staging its
                       input (Forward.swigluInDown: no SwiGLU pass; default on for GPUs, off on CPU adapters; no
                       effect with --gemv-epilogue)
  --attn-preload on|off the short-context decode attention loads its first keys and values before it stages
                       q|k|v (Forward.attnPreload; default on)
  --attn-preload-trips N  value trips it loads then, 1 or 2 (ATTN_PRELOAD; default 2)
  --l2-prefetch on|off decode attention also reads the o projection's weights into L2 for the o GEMV
                       (Forward.l2Prefetch; default on for f16 weights, off for int8/int4)
  --l2-prefetch-passes the decode step's reduce passes also read the start of the next GEMV's weights into L2
                       (Forward.l2PrefetchPasses; no effect with --gemv-epilogue, which has no such passes)
  --l2-prefetch-heads MIB  the reduce passes instead read the first rows of every K chunk of the next GEMV, MIB
                       MiB in all (Forward.l2PrefetchHeadsBytes; default 0: off; none before q|k|v)
  --gemv-early on|off  dense decode GEMVs issue their first weight loads before staging their input
                       (Forward.gemvEarly; default on for f16 weights, off for int8/int4)
  --gemv-pipe          the decode GEMVs load each trip of weight rows while adding the previous one
                       (software pipelining; GEMV_PIPE)
  --gemv-half on|off   the int8/int4 decode GEMVs add their rows in packed f16 (gemv_qh.wgsl, GEMV_HALF; default
                       on for GPUs with the shader-f16 feature, off on CPU adapters)
  --gemv-half-f16 on|off  the same for the f16 weights' decode GEMVs (gemv_h.wgsl, GEMV_HALF.f16; default off)
  --sparsity-bins on|off  sparse steps take the GEMV variants of their target sparsity's bin (low < 0.35 <= mid
                       < 0.6 <= high; SPARSITY_BINS; default on); off: the mid variants at every sparsity
  --gemv-scan-radix 2|4|8|16  counts each round of the sparse GEMVs' compaction scan adds (GEMV_SCAN; default
                       4; 2: the Hillis-Steele scan; more: fewer rounds, fewer barriers)
  --down-tpr 16|32     threads per column group of the f16 GEMVs over long inputs (down_proj; default 32,
                       GEMV_LONG_K)
  --gemv-chunk D[,S]   multiply the decode GEMVs' input channels per split by D when dense and S when sparse
                       (0.25 to 4, default 1,1; 256 to 2048 channels; GEMV_CHUNK)
  --max-prefill N      prompt rows per prefill pass (default: loadModel's, defaultMaxPrefill: 1024 where the
                       GPU's storage bindings hold them)
  --matmul-wide N|off  prefill passes of at least N rows take the 128-column GEMM tiles (matmul_wide.wgsl,
                       matmul_wide_q.wgsl; default 65, MATMUL_WIDE.fromRows; off: every pass takes the 64x64
                       tiles of matmul.wgsl / matmul_q.wgsl)
  --matmul-tile128 N|off  wide passes of at least N rows take tiles of 128 rows, shorter ones 64 (default 1024,
                       MATMUL_WIDE.tile128From; off: always 64)
  --matmul-half on|off those wide tiles over f16 weights in f16 arithmetic (matmul_wide_h.wgsl, MATMUL_WIDE.half;
                       default off; needs the shader-f16 feature), with --matmul-half-bk 16|32 inputs a K step
                       (default 32, MATMUL_WIDE.halfBK)
  --prefill-gemm       every prefill pass (--ttft, the --speculate verify pass) through the tiled GEMM; by
                       default dense f16 passes of at most 16 rows take the few-row GEMV (Forward.prefillGemv)
  --json               print one JSON object with every row`,
  options: {
    shape: { type: "string" },
    model: { type: "string" },
    sparsity: { type: "string" },
    tokens: { type: "string" },
    quant: { type: "string" },
    speculate: { type: "string" },
    "draft-sparsity": { type: "string" },
    acceptance: { type: "string" },
    "stream-interval": { type: "string" },
    "submit-chunk": { type: "string" },
    "batch-growth": { type: "string" },
    temperature: { type: "string" },
    "top-k": { type: "string" },
    "top-p": { type: "string" },
    "acceptance-model": { type: "string" },
    "acceptance-temperature": { type: "string" },
    ttft: { type: "string" },
    context: { type: "string" },
    "attn-heads": { type: "string" },
    "attn-splits": { type: "string" },
    "attn-preload-trips": { type: "string" },
    "prefill-steps": { type: "string" },
    "prefill-submit": { type: "string" },
    "prefill-cache": { type: "string" },
    "gemv-epilogue": { type: "boolean" },
    "swiglu-in-down": { type: "string" },
    "l2-prefetch": { type: "string" },
    "attn-preload": { type: "string" },
    "l2-prefetch-passes": { type: "boolean" },
    "l2-prefetch-heads": { type: "string" },
    "gemv-early": { type: "string" },
    "gemv-pipe": { type: "boolean" },
    "gemv-half": { type: "string" },
    "gemv-half-f16": { type: "string" },
    "sparsity-bins": { type: "string" },
    "gemv-chunk": { type: "string" },
    "gemv-scan-radix": { type: "string" },
    "down-tpr": { type: "string" },
    "prefill-gemm": { type: "boolean" },
    "max-prefill": { type: "string" },
    "matmul-wide": { type: "string" },
    "matmul-tile128": { type: "string" },
    "matmul-half": { type: "string" },
    "matmul-half-bk": { type: "string" },
    json: { type: "boolean" },
  },
  async run(v, deps) {
    const quant = parseQuant(v.quant as string | undefined, "--quant");
    const sparsities = numList((v.sparsity as string | undefined) ?? "0,0.25,0.4,0.5,0.6,0.7", "sparsity");
    for (const s of sparsities) if (!(s >= 0 && s < 1)) throw new Error(`--sparsity: ${s} is outside [0, 1)`);
    const tokens = num(v, "tokens", 128, { min: 1, integer: true });
    const sampling = {
      temperature: num(v, "temperature", 0, { min: 0 }),
      topK: num(v, "top-k", 0, { min: 0, integer: true }),
      topP: num(v, "top-p", 1, { min: 0, max: 1, minExclusive: true }),
    };
    const log = (l: string) => console.error(l);
    let model: Model;
    let shape: string;
    const ttftLengths = v.ttft === undefined ? [] : numList(v.ttft as string, "ttft");
    for (const n of ttftLengths) {
      if (!(Number.isInteger(n) && n >= 1)) {
        throw new Error(`--ttft: ${n} is not a prompt length (an integer >= 1)`);
      }
    }
    // checked before the model is built (applied after, over the model's own defaults)
    for (
      const name of [
        "l2-prefetch",
        "attn-preload",
        "gemv-early",
        "swiglu-in-down",
        "matmul-half",
        "gemv-half",
        "gemv-half-f16",
        "sparsity-bins",
      ]
    ) {
      onOff(v[name], name, false);
    }
    const tile128From = v["matmul-tile128"] === "off"
      ? 2 ** 31
      : num(v, "matmul-tile128", MATMUL_WIDE.tile128From, { min: 1, max: 65536, integer: true });
    const halfBK = v["matmul-half-bk"] === undefined ? MATMUL_WIDE.halfBK : Number(v["matmul-half-bk"]);
    if (halfBK !== 16 && halfBK !== 32) {
      throw new Error(`--matmul-half-bk: ${v["matmul-half-bk"]} is not 16 or 32`);
    }
    const chunk = v["gemv-chunk"] === undefined ? [1, 1] : numList(v["gemv-chunk"] as string, "gemv-chunk");
    if (chunk.length === 1) chunk.push(chunk[0]);
    if (chunk.length !== 2 || !chunk.every((m) => [0.25, 0.5, 1, 2, 4].includes(m))) {
      throw new Error(`--gemv-chunk: ${v["gemv-chunk"]} is not D or D,S with each 0.25, 0.5, 1, 2 or 4`);
    }
    const downTpr = v["down-tpr"] === undefined ? undefined : Number(v["down-tpr"]);
    if (downTpr !== undefined && downTpr !== 16 && downTpr !== 32) {
      throw new Error(`--down-tpr: ${v["down-tpr"]} is not 16 or 32`);
    }
    const scanRadix = v["gemv-scan-radix"] === undefined ? undefined : Number(v["gemv-scan-radix"]);
    if (
      scanRadix !== undefined && scanRadix !== 2 && scanRadix !== 4 && scanRadix !== 8 && scanRadix !== 16
    ) {
      throw new Error(`--gemv-scan-radix: ${v["gemv-scan-radix"]} is not 2, 4, 8 or 16`);
    }
    const submit = v["prefill-submit"];
    if (submit !== undefined && submit !== "layer" && submit !== "pass") {
      throw new Error(`--prefill-submit: ${submit} is not layer or pass`);
    }
    const contexts = v.context === undefined ? [] : numList(v.context as string, "context");
    for (const n of contexts) {
      if (!(Number.isInteger(n) && n >= 1)) {
        throw new Error(`--context: ${n} is not a position (an integer >= 1)`);
      }
    }
    const attnHeads = v["attn-heads"] === undefined
      ? undefined
      : num(v, "attn-heads", 1, { min: 1, max: 4, integer: true });
    const preloadTrips = num(v, "attn-preload-trips", ATTN_PRELOAD.trips, { min: 1, max: 2, integer: true });
    const attnSplits = v["attn-splits"] === undefined
      ? 0
      : num(v, "attn-splits", 0, { min: 1, max: 256, integer: true });
    const contextLength = Math.max(Math.max(16, ...ttftLengths) + tokens + 64, ...contexts.map((n) => n + 1));
    const maxPrefill = v["max-prefill"] === undefined
      ? undefined
      : num(v, "max-prefill", 0, { min: 1, max: 65536, integer: true });
    const wideFrom = v["matmul-wide"] === "off"
      ? 0
      : num(v, "matmul-wide", MATMUL_WIDE.fromRows, { min: 1, max: 65536, integer: true });
    if (v.model) {
      shape = (v.model as string).replace(/\/+$/, "").split("/").pop()!;
      model = await deps.loadModel(v.model as string, { contextLength, quant, maxPrefill });
    } else {
      shape = (v.shape as string | undefined) ?? "tiny";
      const config = SHAPES[shape];
      if (!config) throw new Error(`--shape ${shape}: unknown (choose ${Object.keys(SHAPES).join(", ")})`);
      const t0 = performance.now();
      model = randomModel(await createGpuContext(), config, { contextLength, quant, maxPrefill });
      log(
        `built ${shape} with random ${model.weightFormat} weights: ${
          (model.weightBytes / 2 ** 30).toFixed(2)
        } GiB in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
    }
    try {
      const streamIntervalMs = v["stream-interval"] === undefined
        ? undefined
        : num(v, "stream-interval", 250, { min: 1, max: 60_000 });
      if (v["submit-chunk"] !== undefined) {
        const [first, later] = String(v["submit-chunk"]).split(",");
        const chunk = (value: string | undefined, fallback: number) =>
          num({ "submit-chunk": value }, "submit-chunk", fallback, { min: 0, integer: true });
        DECODE.dispatchesPerSubmit = chunk(first, DECODE.dispatchesPerSubmit);
        DECODE.dispatchesPerLaterSubmit = chunk(later, 0);
      }
      DECODE.growth = num(v, "batch-growth", DECODE.growth, { min: 1.5, max: 16 });
      if (submit !== undefined) PREFILL.submitPerLayer = submit === "layer";
      if (v["prefill-cache"] !== undefined) {
        PREFILL.cacheRowsUpTo = num(v, "prefill-cache", 0, { min: 0, integer: true });
      }
      if (v["prefill-steps"] !== undefined) {
        PREFILL.stepsUpTo = num(v, "prefill-steps", 0, { min: 0, integer: true });
      }
      model.forward.gemvEpilogue = v["gemv-epilogue"] === true;
      model.forward.swigluInDown = onOff(v["swiglu-in-down"], "swiglu-in-down", model.forward.swigluInDown);
      model.forward.l2Prefetch = onOff(v["l2-prefetch"], "l2-prefetch", model.forward.l2Prefetch);
      model.forward.attnPreload = onOff(v["attn-preload"], "attn-preload", model.forward.attnPreload);
      model.forward.l2PrefetchPasses = v["l2-prefetch-passes"] === true;
      model.forward.l2PrefetchHeadsBytes = num(v, "l2-prefetch-heads", 0, { min: 0, max: 64 }) * 2 ** 20;
      model.forward.gemvEarly = onOff(v["gemv-early"], "gemv-early", model.forward.gemvEarly);
      // read by gemvTune when the decode steps are built (none are yet)
      GEMV_PIPE.f16 = GEMV_PIPE.quant = v["gemv-pipe"] === true;
      if (v["gemv-half"] !== undefined) GEMV_HALF.quant = onOff(v["gemv-half"], "gemv-half", false);
      if (v["gemv-half-f16"] !== undefined) GEMV_HALF.f16 = onOff(v["gemv-half-f16"], "gemv-half-f16", false);
      if ((GEMV_HALF.quant === true || GEMV_HALF.f16 === true) && !model.gpu.hasF16) {
        throw new Error(`--gemv-half(-f16) on: ${model.gpu.adapterName} has no shader-f16 feature`);
      }
      SPARSITY_BINS.on = onOff(v["sparsity-bins"], "sparsity-bins", SPARSITY_BINS.on);
      [GEMV_CHUNK.dense, GEMV_CHUNK.sparse] = chunk;
      if (scanRadix !== undefined) GEMV_SCAN.radix = scanRadix;
      if (downTpr !== undefined) GEMV_LONG_K.f16TPR = downTpr;
      model.forward.prefillGemv = v["prefill-gemm"] !== true;
      if (attnHeads !== undefined) model.forward.attentionHeads = attnHeads;
      ATTN_SPLITS.perGroup = attnSplits;
      ATTN_PRELOAD.trips = preloadTrips;
      MATMUL_WIDE.fromRows = wideFrom;
      MATMUL_WIDE.tile128From = tile128From;
      MATMUL_WIDE.half = onOff(v["matmul-half"], "matmul-half", MATMUL_WIDE.half);
      MATMUL_WIDE.halfBK = halfBK;
      if (MATMUL_WIDE.half && !model.gpu.hasF16) {
        throw new Error(`--matmul-half on: ${model.gpu.adapterName} has no shader-f16 feature`);
      }
      const rows = await benchDecode(model, {
        sparsities,
        tokens,
        log,
        streamIntervalMs,
        sampling,
        contexts,
      });
      const ttft = await benchTtft(model, ttftLengths);
      for (const t of ttft) {
        const pass = t.prefillPass
          ? ` (a prefill pass of ${t.promptTokens} rows: ${t.prefillPass.hostBuildMs} ms to build, ${t.prefillPass.gpuMs} ms GPU)`
          : "";
        const rate = `${(t.promptTokens / t.ms * 1000).toFixed(0)} prompt tokens/s`;
        log(
          `time to first token after ${t.promptTokens} prompt tokens: ${t.ms.toFixed(1)} ms, ${rate}${pass}`,
        );
      }
      let speculative = null;
      if (v.speculate !== undefined) {
        const k = num(v, "speculate", 4, { min: 1, integer: true });
        const draftSparsity = num(v, "draft-sparsity", 0.5, { min: 0, max: 0.99, minExclusive: true });
        const dense = rows.find((r) => r.sparsity === 0);
        const draft = rows.find((r) => r.sparsity === draftSparsity);
        if (!dense || !draft) throw new Error(`--speculate needs 0 and ${draftSparsity} in --sparsity`);
        let measured: MeasuredAcceptance | null = null;
        if (v.acceptance === "measured") {
          const dir = (v["acceptance-model"] as string | undefined) ?? (v.model as string | undefined) ??
            deps.defaultModelDir();
          const temperature = num(v, "acceptance-temperature", 0, { min: 0 });
          const own = dir === v.model;
          const m = own ? model : await deps.loadModel(dir, { contextLength: 16 + tokens + 64 });
          try {
            measured = await measureAcceptance(m, { k, draftSparsity, temperature, tokens });
          } finally {
            if (!own) m.dispose();
          }
          log(
            `acceptance measured on ${measured.model} (K=${k}, S=${draftSparsity}, T=${temperature}, ` +
              `${measured.tokens} tokens): per-token ${measured.perTokenAcceptance.toFixed(3)}, ` +
              `${measured.tokensPerRound.toFixed(2)} tokens per verify, ${
                measured.tokensPerSecond.toFixed(1)
              } tokens/s (dense ${measured.denseTokensPerSecond.toFixed(1)})`,
          );
        }
        const acceptance = measured
          ? measured.perTokenAcceptance
          : num(v, "acceptance", 0.43, { min: 0, max: 1 });
        speculative = {
          ...await benchSpeculative(model, {
            k,
            draftSparsity,
            acceptance,
            denseMs: dense.gpuMsPerToken,
            draftMs: draft.gpuMsPerToken,
          }),
          measured,
        };
        log(
          `speculate K=${k}, draft ${draftSparsity}: verify ${speculative.verifyMs.toFixed(3)} ms, ` +
            `${
              speculative.tokensPerRound.toFixed(2)
            } tokens/round at acceptance ${speculative.acceptance} -> ` +
            `estimated ${speculative.speedup.toFixed(2)}x dense (GPU time only)`,
        );
      }
      const report = {
        device: model.gpu.adapterName,
        date: new Date().toISOString(),
        commit: await gitCommit(),
        deno: Deno.version.deno,
        shape,
        quant,
        stream_interval_ms: streamIntervalMs ?? null,
        dispatches_per_submit: DECODE.dispatchesPerSubmit,
        dispatches_per_later_submit: DECODE.dispatchesPerLaterSubmit || DECODE.dispatchesPerSubmit,
        batch_growth: DECODE.growth,
        sampling: { temperature: sampling.temperature, top_k: sampling.topK, top_p: sampling.topP },
        weight_format: model.weightFormat,
        weight_bytes: model.weightBytes,
        rows: rows.map((r) => ({
          sparsity: r.sparsity,
          realized: r.realized === null ? null : Number(r.realized.toFixed(4)),
          realized_by_projection: r.realizedByProjection?.map((v) => Number(v.toFixed(3))) ?? null,
          tokens: r.tokens,
          tokens_per_s: Number(r.tokensPerSecond.toFixed(2)),
          gpu_ms_per_token: Number(r.gpuMsPerToken.toFixed(4)),
          gb_per_s: Number(r.gbPerS.toFixed(1)),
          host_overhead: Number(r.hostOverhead.toFixed(3)),
          kernels_ms: r.kernels,
          at_context: r.atContext.map((c) => ({
            position: c.position,
            gpu_ms_per_token: c.gpuMsPerToken,
            attention_ms: c.attentionMs,
          })),
        })),
        attention_heads: model.forward.attentionHeads,
        attention_splits: ATTN_SPLITS.perGroup || null,
        prefill_steps_up_to: prefillStepsUpTo(model.forward),
        gemv_epilogue: model.forward.gemvEpilogue,
        swiglu_in_down: model.forward.swigluInDown,
        l2_prefetch: model.forward.l2Prefetch,
        attn_preload: model.forward.attnPreload ? ATTN_PRELOAD.trips : 0,
        l2_prefetch_passes: model.forward.l2PrefetchPasses,
        gemv_early: model.forward.gemvEarly,
        gemv_pipe: GEMV_PIPE.f16,
        gemv_half: gemvHalfOn(model.gpu, "quant"),
        gemv_half_f16: gemvHalfOn(model.gpu, "f16"),
        sparsity_bins: SPARSITY_BINS.on ? { ...SPARSITY_BINS } : false,
        gemv_chunk: { ...GEMV_CHUNK },
        gemv_scan_radix: GEMV_SCAN.radix,
        down_tpr: GEMV_LONG_K.f16TPR,
        prefill_gemv: model.forward.prefillGemv,
        prefill_submit_per_layer: PREFILL.submitPerLayer,
        prefill_cache_rows: PREFILL.cacheRowsUpTo,
        max_prefill: model.forward.maxPrefill,
        matmul_wide: { ...MATMUL_WIDE },
        ttft: ttft.map((t) => ({
          prompt_tokens: t.promptTokens,
          ms: Number(t.ms.toFixed(1)),
          prefill_pass: t.prefillPass,
        })),
        speculative,
      };
      if (v.json) console.log(JSON.stringify(report));
      else {
        console.log(
          `${shape}, ${model.weightFormat} weights (${
            (model.weightBytes / 2 ** 30).toFixed(2)
          } GiB) on ${report.device} ` +
            `(${report.date}, commit ${report.commit})`,
        );
        console.log("sparsity  realised  tokens/s  GPU ms/token   GB/s  host overhead");
        for (const r of report.rows) {
          console.log(
            `${r.sparsity.toFixed(2).padStart(8)}  ${(r.realized ?? 0).toFixed(3).padStart(8)}  ${
              r.tokens_per_s.toFixed(1).padStart(8)
            }  ${r.gpu_ms_per_token.toFixed(3).padStart(12)}  ${r.gb_per_s.toFixed(0).padStart(5)}  ${
              (r.host_overhead * 100).toFixed(1).padStart(12)
            }%`,
          );
        }
        if (contexts.length > 0) {
          console.log("sparsity  position  GPU ms/token  attention ms");
          for (const r of report.rows) {
            for (const c of r.at_context) {
              console.log(
                `${r.sparsity.toFixed(2).padStart(8)}  ${String(c.position).padStart(8)}  ${
                  c.gpu_ms_per_token.toFixed(3).padStart(12)
                }  ${c.attention_ms.toFixed(3).padStart(12)}`,
              );
            }
          }
        }
      }
      return 0;
    } finally {
      model.dispose();
    }
  },
};
