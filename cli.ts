/**
 * Command-line interface: `deno run -A cli.ts <command> [options]`.
 *
 * Commands: generate, calibrate, eval, bench, serve. `deno run -A cli.ts help` lists their options.
 * @module
 */
import { parseArgs } from "node:util";
import { defaultModelDir, loadModel } from "./mod.ts";
import { COMMANDS } from "./src/cli/commands.ts";

const USAGE = `TealGPU: Llama-family models on WebGPU with TEAL activation sparsity

usage: deno run -A cli.ts <command> [options]

commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`).join("\n")}

Run 'cli.ts <command> --help' for a command's options.`;

/** Runs the CLI with the given arguments; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    console.log(USAGE);
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`unknown command '${name}'\n\n${USAGE}`);
    return 2;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: { ...cmd.options, help: { type: "boolean", short: "h" } },
      strict: true,
    });
  } catch (e) {
    console.error(`cli.ts ${name}: ${(e as Error).message}\n\n${cmd.usage}`);
    return 2;
  }
  if (parsed.values.help) {
    console.log(cmd.usage);
    return 0;
  }
  try {
    return await cmd.run(parsed.values as Record<string, unknown>, { loadModel, defaultModelDir });
  } catch (e) {
    const err = e as Error;
    console.error(`cli.ts ${name}: ${err.message}`);
    if (Deno.env.get("TEALGPU_DEBUG")) console.error(err.stack);
    return 1;
  }
}

if (import.meta.main) {
  // wgpu's Vulkan backend warns when XDG_RUNTIME_DIR is unset (headless servers, CI); give it a harmless one.
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  Deno.exit(await main(Deno.args));
}
