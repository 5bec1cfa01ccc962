/**
 * Kernel-level benchmark of the dense and TEAL-sparse GEMV (gemv.wgsl + its reduce pass) at Llama-3-8B shapes.
 *
 * `deno run -A bench/gemv_bench.ts [--quick]` prints GPU times from timestamp queries (median of repeats, each
 * repeat many dispatches in one pass over rotating weight copies so L2 never holds them), the bandwidth
 * achieved against the bytes of the active weight rows, and variant sweeps of the tunables.
 * `deno bench -A bench/` runs the same kernels as Deno benchmarks: their wall time includes Deno's >= 10 ms
 * read-back fence, amortised over 100 dispatches per iteration.
 * @module
 */
import { createGpuContext, type GpuContext, type Op } from "../src/gpu/context.ts";
import {
  type GemvInput,
  gemvOp,
  type GemvTune,
  layoutSegments,
  type Matrix,
  REDUCE,
  reduceOp,
} from "../src/gpu/kernels.ts";
import { copyOp, fillOp } from "../src/gpu/kernels.ts";
import { median } from "../src/bench/stats.ts";

/** Llama-3-8B decode GEMV shapes, N x K. */
export const SHAPES_8B: [number, number][] = [[14336, 4096], [4096, 14336], [4096, 4096], [1024, 4096]];

interface Setup {
  mats: Matrix[];
  x: GPUBuffer;
  partials: GPUBuffer;
  out: GPUBuffer;
  sp: { thresholds: GPUBuffer; counters: GPUBuffer };
}

/** Random weights (several copies, to defeat L2), a random input, and a threshold for each sparsity. */
function setup(ctx: GpuContext, N: number, K: number, copies: number, lens = [N]): Setup {
  const mats: Matrix[] = [];
  const ops: Op[] = [];
  for (let c = 0; c < copies; c++) {
    const { segments, halves } = layoutSegments(K, lens, lens.map(() => 0));
    const buffer = ctx.buffer(halves * 2, "w");
    ops.push(fillOp(ctx, buffer, { words: halves / 2, mode: "random", seed: c + 1, scale: 0.02 }));
    mats.push({ K, N, segments, buffer, scales: ctx.buffer(K * 4, "ones", new Float32Array(K).fill(1)) });
  }
  ctx.run(ops);
  // x uniform in [-1, 1): threshold t drops a fraction t of the channels
  const xs = new Float32Array(K);
  let a = 12345;
  for (let i = 0; i < K; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    xs[i] = a / 2 ** 31 - 1;
  }
  return {
    mats,
    x: ctx.buffer(K * 4, "x", xs),
    partials: ctx.buffer(Math.ceil(K / 256) * N * 4, "partials"),
    out: ctx.buffer(N * 4, "out"),
    sp: { thresholds: ctx.buffer(16, "thr"), counters: ctx.buffer(16, "cnt") },
  };
}

/** A fused RMSNorm input of K channels whose norm is 1 (weight 1, mean square 1 in 16 partial sums). */
function unitRmsInput(ctx: GpuContext, K: number): GemvInput {
  return {
    kind: "rmsnorm",
    weight: ctx.buffer(K * 4, "norm", new Float32Array(K).fill(1)),
    ss: ctx.buffer(64, "ss", new Float32Array(16).fill(K / 16)),
    nss: 16,
    eps: 1e-5,
  };
}

/** GPU microseconds of one GEMV + reduce at `sparsity` (median over repeats). */
export async function timeGemv(
  ctx: GpuContext,
  s: Setup,
  sparsity: number,
  tune: GemvTune = { TPR: 16, KCHUNK: 512 },
  input?: GemvInput,
  reps = 5,
  // a pass of ~40 ms at 3 TB/s: short passes separated by read-backs let the GPU clock down, and the
  // ramp-up then shows as a fixed cost per dispatch that the same kernel does not have inside a decode loop
  perPass = Math.min(2000, Math.max(40, Math.ceil((40e-3 * 3e12) / (s.mats[0].K * s.mats[0].N * 2)))),
  // dense only: the first trip's loads before the staging (Forward.gemvEarly)
  early = false,
): Promise<number> {
  ctx.write(s.sp.thresholds, new Float32Array([sparsity]));
  const ops = s.mats.flatMap((m) => [
    gemvOp(ctx, m, s.x, s.partials, s.sp, { sparse: sparsity > 0, tune, input, early }),
    reduceOp(ctx, s.partials, s.out, {
      n: m.N,
      splits: Math.ceil(m.K / tune.KCHUNK),
      ncols: m.N,
      mode: REDUCE.store,
    }),
  ]);
  const pass: Op[] = [];
  for (let i = 0; pass.length < perPass * 2; i++) {
    pass.push(...ops.slice((2 * i) % ops.length, (2 * i) % ops.length + 2));
  }
  const times: number[] = [];
  // each timed pass follows an untimed one in the same submission, so the clock is up when it starts
  for (let r = 0; r < reps; r++) times.push((await ctx.timePasses([pass, pass]))[1]);
  return (median(times) / perPass) * 1000;
}

/** Per-dispatch GPU cost of tiny dispatches, and of a GEMV alone and a reduce alone (microseconds). */
export async function overheads(ctx: GpuContext): Promise<Record<string, number>> {
  const a = ctx.buffer(64, "a");
  const b = ctx.buffer(64, "b");
  const per = async (ops: Op[]) => {
    const t: number[] = [];
    for (let r = 0; r < 7; r++) t.push((await ctx.timePasses([ops]))[0]);
    return (median(t) / ops.length) * 1000;
  };
  const chain = Array.from({ length: 80 }, (_, i) => copyOp(ctx, i % 2 ? a : b, i % 2 ? b : a, { n: 16 }));
  const s = setup(ctx, 1024, 4096, 8);
  const gemvs = Array.from(
    { length: 40 },
    (_, i) => gemvOp(ctx, s.mats[i % 8], s.x, s.partials, s.sp, { sparse: false }),
  );
  const reduces = Array.from(
    { length: 40 },
    () => reduceOp(ctx, s.partials, s.out, { n: 1024, splits: 8, ncols: 1024, mode: REDUCE.store }),
  );
  return {
    "tiny dependent dispatch": await per(chain),
    "gemv 1024x4096 alone": await per(gemvs),
    "reduce 1024 alone": await per(reduces),
  };
}

/**
 * `--model-grid`: the four decode GEMVs of a Llama-3-8B layer as the model runs them (q|k|v and gate|up as
 * fused segments behind an RMSNorm input; dense with the early loads f16 uses), each with its reduce pass, over
 * threads per column group, K chunks up to 2048 and rows in flight, dense and sparse. Writes the rows as JSON
 * to $GEMV_BENCH_JSON when set.
 */
async function modelGrid(ctx: GpuContext): Promise<void> {
  const sparsities = (Deno.env.get("GRID_SPARSITY") ?? "0,0.5,0.7").split(",").map(Number);
  const tprs = (Deno.env.get("GRID_TPR") ?? "8,16,32").split(",").map(Number);
  const chunks = (Deno.env.get("GRID_KCHUNK") ?? "512,1024,2048").split(",").map(Number);
  const unrolls = (Deno.env.get("GRID_UNROLL") ?? "4,8").split(",").map(Number);
  const d = Deno.env.get("GRID_SMALL") ? 16 : 1; // GRID_SMALL: a 16th of each dimension, to try the script
  const shapes: [string, number, number[], boolean][] = [
    ["qkv", 4096 / d, [4096 / d, 1024 / d, 1024 / d], true],
    ["o", 4096 / d, [4096 / d], false],
    ["gateup", 4096 / d, [14336 / d, 14336 / d], true],
    ["down", 14336 / d, [4096 / d], false],
  ];
  const rows: Record<string, unknown>[] = [];
  for (const [name, K, lens, norm] of shapes) {
    const N = lens.reduce((a, b) => a + b);
    // 1.6 GB of weights in rotation: a sparse GEMV reads the same rows of every copy, and 400 MB of them
    // (half of it read at 50%) left enough in the H200's L2 to flatter it (bench/sparse_probe.ts times the
    // model's own GEMVs instead)
    const s = setup(ctx, N, K, Math.max(2, Math.ceil((d > 1 ? 100e6 : 1.6e9) / (N * K * 2))), lens);
    const input = norm ? unitRmsInput(ctx, K) : undefined;
    for (const TPR of tprs) {
      for (const KCHUNK of chunks) {
        for (const UNROLL of unrolls) {
          const tune = { TPR, KCHUNK, UNROLL };
          const line: string[] = [];
          for (const sp of sparsities) {
            const us = await timeGemv(ctx, s, sp, tune, input, 5, undefined, sp === 0);
            rows.push({ name, N, K, ...tune, sparsity: sp, us: Number(us.toFixed(2)) });
            line.push(`${sp}: ${us.toFixed(1)}`);
          }
          console.log(`${name} TPR${TPR} KCHUNK${KCHUNK} UNROLL${UNROLL} | ${line.join(" | ")} us`);
        }
      }
    }
    for (const m of s.mats) m.buffer.destroy();
  }
  const out = Deno.env.get("GEMV_BENCH_JSON");
  if (out) await Deno.writeTextFile(out, JSON.stringify({ device: ctx.adapterName, rows }));
}

if (import.meta.main) {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  const quick = Deno.args.includes("--quick");
  const ctx = await createGpuContext();
  console.log(`device: ${ctx.adapterName}`);
  if (Deno.args.includes("--overhead")) {
    for (const [k, v] of Object.entries(await overheads(ctx))) console.log(`${k}: ${v.toFixed(2)} us`);
    Deno.exit(0);
  }
  if (Deno.args.includes("--fused")) {
    // the gate|up GEMV as the model runs it (two segments, RMSNorm fused into the input) against the same
    // bytes as one segment with a plain input: what the fusions cost the sparse kernel
    const [N, K] = Deno.env.get("GEMV_FUSED_SMALL") ? [2048, 1024] : [28672, 4096];
    const tune = { TPR: 16, KCHUNK: 1024 };
    const rms = unitRmsInput(ctx, K);
    for (
      const [name, lens, input] of [
        ["1 segment, plain input", [N], undefined],
        ["2 segments, plain input", [N / 2, N / 2], undefined],
        ["2 segments, RMSNorm input", [N / 2, N / 2], rms],
      ] as [string, number[], GemvInput | undefined][]
    ) {
      const s = setup(ctx, N, K, 3, lens);
      const line: string[] = [];
      for (const sp of [0, 0.5, 0.7]) {
        const us = await timeGemv(ctx, s, sp, tune, input);
        line.push(`${sp}: ${us.toFixed(1)}us`);
      }
      console.log(`${N}x${K} ${name} | ${line.join(" | ")}`);
      for (const m of s.mats) m.buffer.destroy();
    }
    Deno.exit(0);
  }
  if (Deno.args.includes("--model-grid")) {
    await modelGrid(ctx);
    ctx.destroy();
    Deno.exit(0);
  }
  const grid = Deno.args.includes("--grid");
  const sparsities = quick ? [0, 0.5] : grid ? [0, 0.5, 0.7] : [0, 0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
  // --grid: column groups, K chunks and workgroup sizes
  const gridTunes: GemvTune[] = [8, 16, 32].flatMap((TPR) =>
    [256, 512, 1024].flatMap((KCHUNK) => [128, 256].map((WG) => ({ TPR, KCHUNK, WG })))
  );
  const tunes = quick ? [{ TPR: 16, KCHUNK: 512 }] : grid ? gridTunes : [
    { TPR: 16, KCHUNK: 512 },
    { TPR: 16, KCHUNK: 256 },
    { TPR: 16, KCHUNK: 1024 },
    { TPR: 32, KCHUNK: 512 },
    { TPR: 32, KCHUNK: 1024 },
    { TPR: 8, KCHUNK: 512 },
  ];
  const rows: Record<string, unknown>[] = [];
  for (const [N, K] of SHAPES_8B) {
    const s = setup(ctx, N, K, Math.max(2, Math.ceil(400e6 / (N * K * 2))));
    for (const tune of tunes) {
      const line: string[] = [];
      for (const sp of sparsities) {
        const us = await timeGemv(ctx, s, sp, tune);
        const gbs = (N * K * 2 * (1 - sp)) / (us * 1e-6) / 1e9;
        rows.push({ N, K, ...tune, sparsity: sp, us: Number(us.toFixed(2)), gbs: Number(gbs.toFixed(0)) });
        line.push(`${sp}: ${us.toFixed(1)}us ${gbs.toFixed(0)}GB/s`);
      }
      console.log(
        `${N}x${K} TPR${tune.TPR} KCHUNK${tune.KCHUNK} WG${tune.WG ?? 256} | ${line.join(" | ")}`,
      );
    }
    for (const m of s.mats) m.buffer.destroy();
  }
  const out = Deno.env.get("GEMV_BENCH_JSON");
  if (out) {
    await Deno.writeTextFile(
      out,
      JSON.stringify({ device: ctx.adapterName, date: new Date().toISOString(), rows }),
    );
  }
  ctx.destroy();
} else {
  const ctx = await createGpuContext();
  for (const [N, K] of [[1024, 4096]] as [number, number][]) {
    const s = setup(ctx, N, K, 2);
    for (const sp of [0, 0.5]) {
      const ops = s.mats.flatMap((m) => [gemvOp(ctx, m, s.x, s.partials, s.sp, { sparse: sp > 0 })]);
      Deno.bench(`gemv ${N}x${K} sparsity ${sp} (x100 per iteration)`, async () => {
        ctx.write(s.sp.thresholds, new Float32Array([sp]));
        ctx.run(Array.from({ length: 100 }, (_, i) => ops[i % ops.length]));
        await ctx.device.queue.onSubmittedWorkDone();
      });
    }
  }
}
