/**
 * The embedded shader module must match shaders/*.wgsl (run `deno task shaders` after editing a shader), and
 * every shader must compile into a pipeline on the test adapter.
 */
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import { readShaderSources, renderShaderModule } from "../tools/embed_shaders.ts";
import { type ShaderName, SHADERS } from "../src/gpu/shaders.generated.ts";
import { checkAdapterLimits, GpuError, shaderCode, STORAGE_BUFFERS_PER_KERNEL } from "../src/gpu/context.ts";
import { gpu } from "./_gpu.ts";

Deno.test("src/gpu/shaders.generated.ts is up to date with shaders/*.wgsl", async () => {
  const root = new URL("../", import.meta.url);
  const want = renderShaderModule(await readShaderSources(new URL("shaders/", root)));
  const got = await Deno.readTextFile(new URL("src/gpu/shaders.generated.ts", root));
  assert(got === want, "stale: run `deno task shaders`");
});

Deno.test("every embedded shader compiles without errors, with its includes", async () => {
  const ctx = await gpu();
  const errors: string[] = [];
  // fragments (no entry point) compile as part of the shaders that include them
  const kernels = Object.keys(SHADERS).filter((n) => SHADERS[n as ShaderName].includes("@compute"));
  assert(kernels.length < Object.keys(SHADERS).length, "gemv_finish is a fragment");
  for (const name of kernels) {
    const code = shaderCode(name as ShaderName);
    assert(!code.includes("#include"), `${name}: an include was left`);
    const info = await ctx.device.createShaderModule({ code, label: name }).getCompilationInfo();
    for (const m of info.messages) if (m.type === "error") errors.push(`${name}:${m.lineNum}: ${m.message}`);
  }
  assertEquals(errors, []);
});

Deno.test("the most storage buffers a kernel binds is what createGpuContext requires of the adapter", () => {
  const counts = Object.keys(SHADERS)
    .filter((n) => SHADERS[n as ShaderName].includes("@compute"))
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
