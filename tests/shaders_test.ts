/**
 * The embedded shader module must match shaders/*.wgsl (run `deno task shaders` after editing a shader), and
 * every shader must compile into a pipeline on the test adapter.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { readShaderSources, renderShaderModule } from "../tools/embed_shaders.ts";
import { type ShaderName, SHADERS } from "../src/gpu/shaders.generated.ts";
import { shaderCode } from "../src/gpu/context.ts";
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
