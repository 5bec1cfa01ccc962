/**
 * Edited copies of the embedded shaders, for benchmarks that time a kernel with one part cut or replaced
 * (bench/attn_bench.ts, bench/gemv_q_bench.ts; build pipelines from them with GpuContext.withSources).
 * @module
 */
import type { ShaderName } from "../gpu/shaders.generated.ts";
import { shaderCode } from "../gpu/context.ts";

/** One edit: text (every occurrence) or a pattern, and its replacement. */
export type ProbeEdit = [string | RegExp, string];

/**
 * The shader's WGSL, its includes expanded (an edit may fall in a fragment, e.g. gemv_q_body), with the edits
 * applied; throws if an edit no longer matches (the shader changed).
 */
export function probeSource(shader: ShaderName, edits: ProbeEdit[]): string {
  let src = shaderCode(shader);
  for (const [a, b] of edits) {
    const next = typeof a === "string" ? src.replaceAll(a, b) : src.replace(a, b);
    if (next === src) throw new Error(`probe edit no longer matches ${shader}.wgsl: ${a}`);
    src = next;
  }
  return src;
}
