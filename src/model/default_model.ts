/**
 * Where the embedded default model lives.
 * @module
 */

/**
 * Folder of the embedded default model (`models/tiny-llama-16m` in a checkout). The JSR package does not ship
 * the weights: there, pass a model folder instead.
 */
export function defaultModelDir(): string {
  const url = new URL("../../models/tiny-llama-16m", import.meta.url);
  if (url.protocol !== "file:") {
    throw new Error(
      "the embedded default model is only in a local checkout of TealGPU; pass a model folder (--model DIR)",
    );
  }
  return decodeURIComponent(url.pathname);
}
