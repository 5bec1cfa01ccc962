/**
 * Checks the GEMV split-K epilogues (gemv_finish.wgsl) on the GPU at Llama-3-8B shapes: each epilogue must give
 * the bits of the GEMV + reduce pass it replaces, run after run (the workgroup that finishes a tile last, and so
 * sums it, changes from run to run; the epilogue's GEMV starts from NaN partials, so a split read before it is
 * visible shows as a NaN), the residual add's sums of squares must match the host's, and the tickets must end
 * at 0.
 *
 * `deno run -A bench/finish_check.ts [--runs N] [--quant none|int8|int4] [--shape llama-3-8b|tiny|...]` prints one line per epilogue and exits
 * 1 on any difference.
 * @module
 */
import { parseArgs } from "node:util";
import { createGpuContext, type Op } from "../src/gpu/context.ts";
import {
  copyOp,
  fillOp,
  type GemvFinish,
  gemvOp,
  gemvSplits,
  gemvTileN,
  gemvTiles,
  type Matrix,
  REDUCE,
  reduceOp,
} from "../src/gpu/kernels.ts";
import { parseQuant } from "../src/gpu/quant.ts";
import { randomModel } from "../src/bench/random_model.ts";
import { SHAPES } from "../src/bench/shapes.ts";
import { releaseOps } from "../src/model/forward.ts";

const { values } = parseArgs({
  options: { runs: { type: "string" }, quant: { type: "string" }, shape: { type: "string" } },
});
const shape = SHAPES[values.shape ?? "llama-3-8b"];
if (!shape) throw new RangeError(`--shape: one of ${Object.keys(SHAPES).join(", ")}`);
const runs = Number(values.runs ?? 30);
const format = parseQuant(values.quant, "--quant");
const ctx = await createGpuContext();
const w = randomModel(ctx, shape, { contextLength: 64, quant: format }).forward.weights;
const L = w.layers[0];
const cases: { name: string; m: Matrix; kind: GemvFinish["kind"] }[] = [
  { name: "o (residual add)", m: L.o, kind: "add" },
  { name: "gate|up (SwiGLU)", m: L.gateUp, kind: "swiglu" },
  { name: "down (residual add)", m: L.down, kind: "add" },
  { name: "lm_head part 0 (store)", m: w.lmHead[0].matrix, kind: "store" },
];
let bad = 0;
for (const c of cases) {
  const m = c.m;
  const tiles = gemvTiles(m);
  const tileN = gemvTileN(m);
  const sp = {
    thresholds: ctx.buffer(16, "thr"),
    counters: ctx.buffer((4 + tiles) * 4, "counters"),
    tickets: 4,
  };
  const splits = gemvSplits(m.K, m.N);
  const x = ctx.buffer(m.K * 4, "x");
  const partials = ctx.buffer(splits * m.N * 4, "partials");
  const n = c.kind === "swiglu" ? m.N / 2 : m.N;
  const resid = ctx.buffer(n * 4, "resid");
  const want = ctx.buffer(n * 4, "want");
  const got = ctx.buffer(n * 4, "got");
  const ss = ctx.buffer(tiles * 4, "ss");
  let diffs = 0;
  let ssDiffs = 0;
  for (let r = 0; r < runs; r++) {
    const ops: Op[] = [
      fillOp(ctx, x, { words: m.K, mode: "random", seed: 100 + r, scale: 1 }),
      fillOp(ctx, resid, { words: n, mode: "random", seed: 200 + r, scale: 1 }),
      ...(c.kind === "add" ? [copyOp(ctx, resid, want, { n }), copyOp(ctx, resid, got, { n })] : []),
      gemvOp(ctx, m, x, partials, sp, { sparse: false }),
      reduceOp(ctx, partials, want, {
        n,
        splits,
        ncols: m.N,
        mode: { store: REDUCE.store, add: REDUCE.add, swiglu: REDUCE.swiglu }[c.kind],
        offB: c.kind === "swiglu" ? n : 0,
      }),
      // the epilogue's GEMV starts from NaN partials: a split read before its workgroup wrote it shows
      fillOp(ctx, partials, { words: splits * m.N, mode: "const", value: NaN }),
      gemvOp(ctx, m, x, partials, sp, {
        sparse: false,
        finish: c.kind === "add" ? { kind: "add", out: got, ss } : { kind: c.kind, out: got },
      }),
    ];
    ctx.run(ops);
    releaseOps(ops);
    const [a, b] = [await ctx.readU32(want), await ctx.readU32(got)];
    for (let i = 0; i < n; i++) if (a[i] !== b[i]) diffs++;
    if (c.kind === "add") {
      // one sum of squares per column tile of the new residual
      const y = new Float32Array(a.buffer);
      const got = await ctx.readF32(ss, tiles);
      for (let t = 0; t < tiles; t++) {
        let q = 0;
        for (let i = t * tileN; i < Math.min(n, (t + 1) * tileN); i++) q += y[i] * y[i];
        if (!(Math.abs(got[t] - q) <= 1e-4 * Math.abs(q))) ssDiffs++;
      }
    }
  }
  const left = await ctx.readU32(sp.counters, 4 + tiles);
  const ticketsLeft = left.subarray(4).some((v) => v !== 0);
  const ticketsSay = ticketsLeft ? "LEFT SET" : "0";
  console.log(
    `${format} ${c.name}: ${runs} runs, ${diffs} differing outputs, ${ssDiffs} wrong sums of squares, ` +
      `tickets ${ticketsSay}`,
  );
  if (diffs || ssDiffs || ticketsLeft) bad++;
}
Deno.exit(bad ? 1 : 0);
