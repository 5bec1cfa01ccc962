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
export { DEFAULT_CONTEXT, GENERATE_DEFAULTS, loadModel, Model, modelFromTensors } from "./src/model/model.ts";
export type { LoadOptions, SparsityReport } from "./src/model/model.ts";
export type {
  FinishReason,
  GenerateChunk,
  GenerateOptions,
  GenerateResult,
  Generation,
  TextModel,
} from "./src/generate/types.ts";
export type { ModelConfig } from "./src/model/config.ts";
export type { NamedTensor } from "./src/model/weights.ts";
export { type ChatMessage, TextTokenizer } from "./src/model/tokenizer.ts";
export { createGpuContext, GpuContext, GpuError } from "./src/gpu/context.ts";
export { defaultModelDir } from "./src/model/default_model.ts";
