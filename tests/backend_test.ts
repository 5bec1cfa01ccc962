/**
 * src/gpu/backend.ts: on Linux createGpuContext asks Deno's WebGPU for Vulkan alone, so that libEGL (whose
 * per-thread state was freed twice when a `deno test` module's thread exited with the process) is never
 * loaded; a value the user set is kept. docs/testing.md has the story.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { BACKEND_VAR, backendDefault } from "../src/gpu/backend.ts";

Deno.test("backendDefault: vulkan on Linux when unset; a user's value, and other systems, are left alone", () => {
  assertEquals(backendDefault("linux", undefined), "vulkan");
  assertEquals(backendDefault("linux", "vulkan,gl"), null);
  assertEquals(backendDefault("linux", "gl"), null);
  assertEquals(backendDefault("linux", ""), null);
  assertEquals(backendDefault("darwin", undefined), null);
  assertEquals(backendDefault("windows", undefined), null);
});

const context = new URL("../src/gpu/context.ts", import.meta.url).href;
const root = new URL("..", import.meta.url).pathname;

/**
 * Runs `code` as a script in a fresh `deno run` with every permission (`all`) or only read access to the
 * repository and the script, in this environment less DENO_WEBGPU_BACKEND plus `env`; returns the last line it
 * printed.
 */
async function runProbe(code: string, all: boolean, env: Record<string, string> = {}): Promise<string> {
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/probe.ts`;
    await Deno.writeTextFile(script, code);
    const base = Object.fromEntries(Object.entries(Deno.env.toObject()).filter(([k]) => k !== BACKEND_VAR));
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", all ? "-A" : `--allow-read=${root},${dir}`, script],
      env: { ...base, ...env },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    assert(out.success, `probe failed: ${text} ${new TextDecoder().decode(out.stderr)}`);
    return text.split("\n").at(-1)!;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** createGpuContext with all permissions and `env`: the variable it leaves and whether libEGL got mapped. */
async function probe(env: Record<string, string>): Promise<{ backend: string | null; egl: boolean }> {
  const code = `import { createGpuContext } from ${JSON.stringify(context)};
await createGpuContext();
const maps = await Deno.readTextFile("/proc/self/maps");
const backend = Deno.env.get(${JSON.stringify(BACKEND_VAR)}) ?? null;
console.log(JSON.stringify({ backend, egl: maps.includes("libEGL") }));`;
  return JSON.parse(await runProbe(code, true, env));
}

Deno.test({
  name:
    "createGpuContext on Linux: DENO_WEBGPU_BACKEND unset becomes vulkan and libEGL stays out; a set value is kept",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    assertEquals(await probe({}), { backend: "vulkan", egl: false });
    const kept = await probe({ [BACKEND_VAR]: "vulkan,gl" });
    assertEquals(kept.backend, "vulkan,gl");
    // the check above can fail: with the GL backend asked for, libEGL is mapped where it is installed
    const installed = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"]
      .some((d) => {
        try {
          return Deno.statSync(`${d}/libEGL.so.1`).isFile;
        } catch {
          return false;
        }
      });
    if (installed) assert(kept.egl, "libEGL should be mapped with the GL backend on");
  },
});

Deno.test("createGpuContext without env permission still makes the context (it asks for nothing and throws nothing)", async () => {
  const code = `import { createGpuContext } from ${JSON.stringify(context)};
const ctx = await createGpuContext();
console.log("made", ctx.adapterName.length > 0);`;
  assertEquals(await runProbe(code, false), "made true");
});
