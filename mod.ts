/**
 * TealGPU: Llama-family language models on WebGPU for Deno, with TEAL activation sparsity for faster decoding.
 *
 * @example Generate text with the embedded default model
 * ```ts
 * import { defaultModelDir, loadModel } from "@tealgpu/tealgpu";
 *
 * const model = await loadModel(defaultModelDir());
 * for await (const chunk of model.generate("The jury said", { maxTokens: 32, temperature: 0 })) {
 *   await Deno.stdout.write(new TextEncoder().encode(chunk.text));
 * }
 * model.dispose();
 * ```
 * @module
 */
export {
  DEFAULT_CONTEXT,
  defaultMaxPrefill,
  GENERATE_DEFAULTS,
  loadModel,
  Model,
  modelFromTensors,
} from "./src/model/model.ts";
export type { LoadOptions, SparsityReport } from "./src/model/model.ts";
export type { BatchTrace } from "./src/generate/decode.ts";
export type {
  FinishReason,
  GenerateChunk,
  GenerateOptions,
  GenerateResult,
  Generation,
  SpeculationReport,
  TextModel,
} from "./src/generate/types.ts";
export type { SpeculativeChoice } from "./src/generate/speculative_auto.ts";
export type { Architecture, ModelConfig, RopeScaling } from "./src/model/config.ts";
export type { EmbedPart, LayerWeights, LmHeadPart, NamedTensor, Weights } from "./src/model/weights.ts";
export type { Matrix, Segment } from "./src/gpu/kernels.ts";
export type { QuantFormat, QuantScheme, WeightFormat } from "./src/gpu/quant.ts";
export { type ChatMessage, TextTokenizer } from "./src/model/tokenizer.ts";
export type { ChatTemplateOptions, EncodeOptions } from "./src/model/tokenizer.ts";
export { createGpuContext, GpuContext, GpuError } from "./src/gpu/context.ts";
export type { Dispatch, GpuContextOptions, Op, Variant } from "./src/gpu/context.ts";
export type { ShaderName } from "./src/gpu/shaders.generated.ts";
export { defaultModelDir } from "./src/model/default_model.ts";
export { createApp, DEFAULT_LIMITS, resolveLimits } from "./src/server/app.ts";
export type { App, OpenAIError, ServerLimits, ServerOptions } from "./src/server/app.ts";
export { serve } from "./src/server/serve.ts";
export type { ServeOptions } from "./src/server/serve.ts";
export { calibrate } from "./src/teal/calibrate.ts";
export type { CalibrateOptions } from "./src/teal/calibrate.ts";
export { evaluatePerplexity } from "./src/teal/eval.ts";
export type { EvalOptions, EvalResult } from "./src/teal/eval.ts";
export { loadProfile, thresholdsFor, validateProfile } from "./src/teal/profile.ts";
export type { ProfileLevel, ScoreMode, TealProfile } from "./src/teal/profile.ts";
