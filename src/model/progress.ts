/**
 * A one-line progress bar on stderr for long work (weight upload, calibration).
 * @module
 */

/** Returns a progress callback drawing `label [#####.....] 42% 1.2/2.9 GB` on stderr; it ends the line at 100%. */
export function progressBar(
  label: string,
  unit: "bytes" | "items" = "bytes",
): (done: number, total: number) => void {
  const enc = new TextEncoder();
  let last = -1;
  return (done, total) => {
    const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
    if (pct === last) return;
    last = pct;
    const width = 30;
    const fill = Math.round((pct / 100) * width);
    const amount = unit === "bytes"
      ? `${(done / 1e9).toFixed(2)}/${(total / 1e9).toFixed(2)} GB`
      : `${done}/${total}`;
    const line = `\r${label} [${"#".repeat(fill)}${".".repeat(width - fill)}] ${pct}% ${amount}`;
    Deno.stderr.writeSync(enc.encode(line + (done >= total ? "\n" : "")));
  };
}
