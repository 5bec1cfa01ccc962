/**
 * TEAL profiles: per-layer, per-projection thresholds for a grid of model-wide sparsity targets, tied to one
 * model by a hash of its config and tensor shapes. Versioned JSON, written by `cli.ts calibrate`.
 * @module
 */
import { configHash, type ModelConfig } from "../model/config.ts";
import { PROJ_NAMES, SLOTS } from "../model/weights.ts";

/** How an input channel is scored against its threshold. */
export type ScoreMode = "magnitude" | "weighted";

/** One target on the grid. */
export interface ProfileLevel {
  /** Model-wide target sparsity (parameter-weighted over the sparsified projections). */
  target: number;
  /** Sparsity measured on the calibration text with these thresholds (parameter-weighted). */
  calibrated: number;
  /**
   * How the target was spread over the projections: TEAL's greedy search, the same for every tensor, or the
   * midpoint of the two.
   */
  allocation?: "greedy" | "uniform" | "blend";
  /** Per layer: thresholds and calibration sparsities of q, k, v, o, gate, up, down. */
  layers: { threshold: number[]; sparsity: number[] }[];
}

/** A TEAL profile file. */
export interface TealProfile {
  /** File format marker. */
  format: "tealgpu-teal-profile";
  /** Format version. */
  version: 1;
  /** The model it was calibrated for: config hash, layer count, folder name. */
  model: { hash: string; numLayers: number; name: string };
  /** magnitude: |x_i| > t; weighted: |x_i| * ||W[:, i]|| > t (WINA-style, norms folded into the kernel). */
  score: ScoreMode;
  /** Calibration text (file name), tokens, window length, greedy-search tokens and seconds taken. */
  calibration: { text: string; tokens: number; ctx: number; greedyTokens: number; seconds: number };
  /** One entry per target on the grid, ascending. */
  levels: ProfileLevel[];
}

/** Profile file format version this runtime reads and writes. */
export const PROFILE_VERSION = 1;
/** File name found automatically beside a model. */
export const PROFILE_FILE = "teal-profile.json";

/** The model identity a profile must carry: a hash of the config and every tensor shape it implies. */
export function modelIdentity(config: ModelConfig): string {
  return configHash(config);
}

function fail(source: string, what: string): never {
  throw new Error(`TEAL profile ${source}: ${what}`);
}

/** Checks a parsed profile against a model; every error names the file and the field. */
export function validateProfile(json: unknown, source: string, config: ModelConfig): TealProfile {
  const p = json as TealProfile;
  if (typeof p !== "object" || p === null) fail(source, "not a JSON object");
  if (p.format !== "tealgpu-teal-profile") {
    fail(source, `field 'format' is ${JSON.stringify(p.format)}, not a TEAL profile`);
  }
  if (p.version !== PROFILE_VERSION) {
    fail(source, `field 'version' is ${p.version}; this runtime reads version ${PROFILE_VERSION}`);
  }
  if (p.model?.hash !== modelIdentity(config)) {
    fail(
      source,
      `it was calibrated for another model (model.hash ${p.model?.hash} '${p.model?.name}', this model is ${
        modelIdentity(config)
      }): run cli.ts calibrate for this model`,
    );
  }
  if (p.score !== "magnitude" && p.score !== "weighted") {
    fail(source, `field 'score' is ${JSON.stringify(p.score)}`);
  }
  if (!Array.isArray(p.levels) || p.levels.length === 0) fail(source, "field 'levels' is empty");
  let prev = -1;
  p.levels.forEach((lv, i) => {
    if (!(typeof lv.target === "number" && lv.target >= 0 && lv.target < 1 && lv.target > prev)) {
      fail(source, `levels[${i}].target must be in [0, 1) and ascending`);
    }
    prev = lv.target;
    if (!Array.isArray(lv.layers) || lv.layers.length !== config.numLayers) {
      fail(source, `levels[${i}].layers must have ${config.numLayers} entries`);
    }
    lv.layers.forEach((L, l) => {
      for (const f of ["threshold", "sparsity"] as const) {
        if (
          !Array.isArray(L[f]) || L[f].length !== SLOTS ||
          !L[f].every((v) => typeof v === "number" && Number.isFinite(v))
        ) {
          fail(source, `levels[${i}].layers[${l}].${f} must be ${SLOTS} numbers (${PROJ_NAMES.join(", ")})`);
        }
      }
    });
  });
  return p;
}

/** Reads and validates a profile file. */
export async function loadProfile(path: string, config: ModelConfig): Promise<TealProfile> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`TEAL profile ${path}: cannot read (${(e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`TEAL profile ${path}: invalid JSON (${(e as Error).message})`);
  }
  return validateProfile(json, path, config);
}

/** Path of `teal-profile.json` in a model folder, or null. */
export async function findProfile(dir: string): Promise<string | null> {
  const path = `${dir.replace(/\/+$/, "")}/${PROFILE_FILE}`;
  try {
    return (await Deno.stat(path)).isFile ? path : null;
  } catch {
    return null;
  }
}

/** Highest target a profile offers. */
export function maxTarget(p: TealProfile): number {
  return p.levels[p.levels.length - 1].target;
}

/**
 * Thresholds (f32 [layers * 7]) for a target: the level's own on the grid, linear interpolation between the two
 * neighbouring levels otherwise. Targets outside the grid are refused.
 */
export function thresholdsFor(p: TealProfile, target: number): Float32Array {
  const levels = p.levels;
  if (!(target >= levels[0].target && target <= maxTarget(p))) {
    throw new RangeError(
      `sparsity ${target} is outside the profile's range [${levels[0].target}, ${maxTarget(p)}]`,
    );
  }
  let hi = levels.findIndex((l) => l.target >= target);
  if (hi < 0) hi = levels.length - 1;
  const lo = Math.max(0, levels[hi].target === target ? hi : hi - 1);
  const a = levels[lo];
  const b = levels[hi];
  const f = b.target === a.target ? 0 : (target - a.target) / (b.target - a.target);
  const out = new Float32Array(a.layers.length * SLOTS);
  a.layers.forEach((L, l) => {
    for (let s = 0; s < SLOTS; s++) {
      out[l * SLOTS + s] = L.threshold[s] + f * (b.layers[l].threshold[s] - L.threshold[s]);
    }
  });
  return out;
}
