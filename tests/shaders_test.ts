/**
 * The embedded shader module must match shaders/*.wgsl (run `deno task shaders` after editing a shader), and
 * every shader must compile into a pipeline on the test adapter (those that `enable f16` where it has
 * shader-f16).
 */
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import { readShaderSources, renderShaderModule } from "../tools/embed_shaders.ts";
import { type ShaderName, SHADERS } from "../src/gpu/shaders.generated.ts";
import {
  checkAdapterLimits,
  GpuError,
  needsF16,
  shaderCode,
  STORAGE_BUFFERS_PER_KERNEL,
} from "../src/gpu/context.ts";
import { gpu } from "./_gpu.ts";
import { type ProbeEdit, probeSource } from "../src/bench/probe.ts";

Deno.test("src/gpu/shaders.generated.ts is up to date with shaders/*.wgsl", async () => {
  const root = new URL("../", import.meta.url);
  const want = renderShaderModule(await readShaderSources(new URL("shaders/", root)));
  const got = await Deno.readTextFile(new URL("src/gpu/shaders.generated.ts", root));
  assert(got === want, "stale: run `deno task shaders`");
});

/** Shaders with an entry point that no other shader includes (the others are fragments). */
function kernelNames(): ShaderName[] {
  const included = new Set(
    Object.values(SHADERS).flatMap((code) => [...code.matchAll(/^\/\/ #include (\w+)$/gm)].map((m) => m[1])),
  );
  return (Object.keys(SHADERS) as ShaderName[]).filter((n) =>
    !included.has(n) && shaderCode(n).includes("@compute")
  );
}

Deno.test("every embedded shader compiles without errors, with its includes", async () => {
  const ctx = await gpu();
  const errors: string[] = [];
  // fragments (what other shaders include) compile as part of the shaders that include them
  const kernels = kernelNames();
  assert(!kernels.includes("gemv_finish") && !kernels.includes("gemv_q_body"), "gemv_finish is a fragment");
  assert(kernels.includes("gemv_q") && kernels.includes("gemv_qh"));
  // `enable f16;` shaders (matmul_wide_h) compile only where the device has shader-f16; lavapipe has it
  assert(kernels.some((n) => needsF16(shaderCode(n as ShaderName))), "an f16 shader");
  for (const name of kernels) {
    const code = shaderCode(name as ShaderName);
    if (needsF16(code) && !ctx.hasF16) continue;
    assert(!code.includes("#include"), `${name}: an include was left`);
    const info = await ctx.device.createShaderModule({ code, label: name }).getCompilationInfo();
    for (const m of info.messages) if (m.type === "error") errors.push(`${name}:${m.lineNum}: ${m.message}`);
  }
  assertEquals(errors, []);
});

Deno.test("the most storage buffers a kernel binds is what createGpuContext requires of the adapter", () => {
  const counts = kernelNames()
    .map((n) =>
      [
        n,
        shaderCode(n as ShaderName).match(/^\s*@group\(\d+\) @binding\(\d+\) var<storage\b/gm)?.length ?? 0,
      ] as const
    );
  const most = Math.max(...counts.map(([, c]) => c));
  assertEquals(
    most,
    STORAGE_BUFFERS_PER_KERNEL,
    `storage buffers per kernel: ${JSON.stringify(Object.fromEntries(counts))}`,
  );
});

Deno.test("an adapter that binds fewer storage buffers than a kernel is refused, naming the limit", () => {
  throws(
    () => checkAdapterLimits({ maxStorageBuffersPerShaderStage: 8 }),
    (e: unknown) =>
      e instanceof GpuError &&
      /binds at most 8 storage buffers .*maxStorageBuffersPerShaderStage.*need 12/.test(e.message),
  );
  checkAdapterLimits({ maxStorageBuffersPerShaderStage: STORAGE_BUFFERS_PER_KERNEL });
});

Deno.test("every benchmark probe's edits still match its shader (includes expanded), and the edited shaders compile", async () => {
  const { PROBES: gemvProbes } = await import("../bench/gemv_q_bench.ts");
  const { PROBES: attnProbes } = await import("../bench/attn_bench.ts");
  const { PROBES: prefillProbes } = await import("../bench/attn_prefill_bench.ts");
  const { PANEL_F16, PANEL_Q } = await import("../bench/layout_probe.ts");
  const cases: [string, ShaderName, ProbeEdit[]][] = [
    ...gemvProbes.map((p) =>
      [`gemv_q_bench: ${p.name}`, p.shader, p.edits] as [string, ShaderName, ProbeEdit[]]
    ),
    ...Object.entries(attnProbes).map(([n, e]) =>
      [`attn_bench: ${n}`, "attn_decode", e] as [string, ShaderName, ProbeEdit[]]
    ),
    ...Object.entries(prefillProbes).map((
      [n, e],
    ) => [`attn_prefill_bench: ${n}`, "attention", e] as [string, ShaderName, ProbeEdit[]]),
    ["layout_probe: f16 panels", "gemv", PANEL_F16],
    ["layout_probe: int8/int4 panels", "gemv_q", PANEL_Q],
  ];
  const ctx = await gpu();
  const errors: string[] = [];
  for (const [name, shader, edits] of cases) {
    let code: string;
    try {
      code = probeSource(shader, edits);
    } catch (e) {
      errors.push(`${name}: ${(e as Error).message}`);
      continue;
    }
    const info = await ctx.device.createShaderModule({ code, label: name }).getCompilationInfo();
    for (const m of info.messages) if (m.type === "error") errors.push(`${name}:${m.lineNum}: ${m.message}`);
  }
  assertEquals(errors, []);
});
