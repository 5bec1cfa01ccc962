/**
 * Draws tokens/s against sparsity from `cli.ts bench --json` outputs (docs/benchmarks/*.json) as an SVG.
 * `deno run -A tools/bench_chart.ts OUT.svg RUN.json [RUN.json ...]`
 * @module
 */
import { lineChart, type Series } from "../src/teal/plot.ts";

if (import.meta.main) {
  const [out, ...inputs] = Deno.args;
  const series: Series[] = [];
  for (const path of inputs) {
    const line = (await Deno.readTextFile(path)).split("\n").filter((l) => l.startsWith("{")).pop();
    if (!line) throw new Error(`${path}: no JSON line`);
    const run = JSON.parse(line);
    series.push({
      name: `${run.shape} (${run.device}, ${run.commit})`,
      points: run.rows.map((r: { sparsity: number; tokens_per_s: number }) => ({
        x: r.sparsity,
        y: r.tokens_per_s,
      })),
    });
  }
  await Deno.writeTextFile(
    out,
    lineChart(series, {
      title: "TealGPU decode speed against TEAL sparsity",
      xLabel: "sparsity",
      yLabel: "tokens/s",
    }),
  );
}
