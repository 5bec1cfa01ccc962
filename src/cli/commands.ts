/**
 * The CLI's command table: each command's options (node:util parseArgs format), usage text and runner.
 * @module
 */
import type { ParseArgsConfig } from "node:util";
import type { LoadOptions, Model } from "../model/model.ts";
import { generateCommand } from "./generate.ts";
import { calibrateCommand, evalCommand } from "./teal.ts";
import { benchCommand } from "./bench.ts";
import { serveCommand } from "./serve.ts";

/** What a command runner gets besides its parsed options. */
export interface CliDeps {
  loadModel: (dir: string, options?: LoadOptions) => Promise<Model>;
  defaultModelDir: () => string;
}

/** One CLI command. */
export interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig["options"]>;
  run: (values: Record<string, unknown>, deps: CliDeps) => Promise<number>;
}

/** Every command by name. */
export const COMMANDS: Record<string, Command> = {
  generate: generateCommand,
  calibrate: calibrateCommand,
  eval: evalCommand,
  bench: benchCommand,
  serve: serveCommand,
};
