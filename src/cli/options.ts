/**
 * Parsing helpers for CLI option values: each error names the flag.
 * @module
 */

/** Parses a number flag, checking its range. */
export function num(
  values: Record<string, unknown>,
  flag: string,
  fallback: number,
  check: { min?: number; max?: number; integer?: boolean; minExclusive?: boolean } = {},
): number {
  const raw = values[flag];
  if (raw === undefined) return fallback;
  const v = Number(raw);
  const bad = !Number.isFinite(v) || String(raw).trim() === "" ||
    (check.integer && !Number.isInteger(v)) ||
    (check.min !== undefined && (check.minExclusive ? v <= check.min : v < check.min)) ||
    (check.max !== undefined && v > check.max);
  if (bad) {
    const range = [
      check.integer ? "an integer" : "a number",
      check.min !== undefined ? `${check.minExclusive ? ">" : ">="} ${check.min}` : "",
      check.max !== undefined ? `<= ${check.max}` : "",
    ].filter((s) => s).join(" ");
    throw new Error(`--${flag} must be ${range}, got '${raw}'`);
  }
  return v;
}

/** Parses a comma-separated list of numbers (e.g. --prompt-ids 1,2,3 or --sparsity 0,0.25,0.5). */
export function numList(raw: string, flag: string, integer = false): number[] {
  const parts = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (parts.length === 0) throw new Error(`--${flag} is empty`);
  return parts.map((p) => {
    const v = Number(p);
    if (!Number.isFinite(v) || (integer && (!Number.isInteger(v) || v < 0))) {
      throw new Error(`--${flag}: '${p}' is not ${integer ? "a token id (integer >= 0)" : "a number"}`);
    }
    return v;
  });
}

/** An `on|off` flag's value, or `fallback` when it is not given. */
export function onOff(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (value === "on" || value === "off") return value === "on";
  throw new Error(`--${name} must be 'on' or 'off', got '${value}'`);
}

/** Usage line of `--gemv-half`, shared by the commands that load a model. */
export const GEMV_HALF_USAGE =
  `  --gemv-half on|off|auto  int8/int4 weights: the decode GEMVs add their rows in packed f16 (default auto: on
                       GPUs with the shader-f16 feature, off on CPU adapters; timed on NVIDIA only)`;

/** `--gemv-half on|off|auto` as the `gemvHalf` load option (auto: undefined, the device's default). */
export function gemvHalfFlag(value: unknown, name = "gemv-half"): boolean | undefined {
  if (value === undefined || value === "auto") return undefined;
  if (value === "on" || value === "off") return value === "on";
  throw new Error(`--${name} must be 'on', 'off' or 'auto', got '${value}'`);
}
