/**
 * Draws tokens/s against sparsity from `cli.ts bench --json` outputs (docs/benchmarks/*.json) as an SVG; a
 * `.jsonl` of `../shared/bench/peer_hf_decode.py` lines adds each peer mode as a flat line (dense only).
 * `deno run -A tools/bench_chart.ts OUT.svg RUN.json [RUN.json ...] [PEER.jsonl]`
 * @module
 */
import { lineChart, type Series } from "../src/teal/plot.ts";

if (import.meta.main) {
  const [out, ...inputs] = Deno.args;
  const series: Series[] = [];
  const peers: { name: string; y: number }[] = [];
  for (const path of inputs) {
    if (path.endsWith(".jsonl")) {
      for (const l of (await Deno.readTextFile(path)).split("\n").filter((l) => l.startsWith("{"))) {
        const p = JSON.parse(l);
        peers.push({ name: `${p.peer} ${p.mode} (${p.device}, dense)`, y: p.tok_per_s });
      }
      continue;
    }
    const line = (await Deno.readTextFile(path)).split("\n").filter((l) => l.startsWith("{")).pop();
    if (!line) throw new Error(`${path}: no JSON line`);
    const run = JSON.parse(line);
    series.push({
      name: `${run.shape} ${run.weight_format ?? "f16"} (${run.device}, ${run.commit})`,
      points: run.rows.map((r: { sparsity: number; tokens_per_s: number }) => ({
        x: r.sparsity,
        y: r.tokens_per_s,
      })),
    });
  }
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  for (const p of peers) {
    series.push({ name: p.name, points: [{ x: Math.min(...xs), y: p.y }, { x: Math.max(...xs), y: p.y }] });
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
