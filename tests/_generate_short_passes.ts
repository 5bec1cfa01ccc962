/**
 * `cli.ts generate` with prefill passes of 16 rows, so that a prompt of a few hundred tokens takes many passes:
 * for tests that run the command as a process of its own (Ctrl-C during prefill).
 * @module
 */
import { parseArgs } from "node:util";
import { COMMANDS } from "../src/cli/commands.ts";
import { defaultModelDir } from "../src/model/default_model.ts";
import { loadModel } from "../src/model/model.ts";

const generate = COMMANDS.generate;
const { values } = parseArgs({ args: Deno.args, options: generate.options, strict: true });
Deno.exit(
  await generate.run(values, {
    loadModel: (dir, o) => loadModel(dir, { ...o, maxPrefill: 16 }),
    defaultModelDir,
  }),
);
