/**
 * Kernel-level benchmark of the quantized GEMV (gemv_q.wgsl + its reduce pass) against the f16 GEMV at
 * Llama-3-8B shapes, dense and TEAL-sparse.
 *
 * `deno run -A bench/gemv_q_bench.ts [--quick] [--tpr 4,8,16] [--grid] [--pipe] [--probe [--f16] [--only NAME]] [--json FILE]` prints GPU
 * microseconds
 * per GEMV (timestamp queries, median of repeats, rotating weight copies so L2 never holds them) and the
 * bandwidth achieved against the bytes of the active weight rows (codes + group scales). `--tpr` sweeps the
 * threads per column group; `--grid` compares the variants behind `gemvTune` (threads per column group, chunk,
 * workgroup size, rows in flight; the first of each format is the runtime's own); `--probe` times edited copies
 * of the kernels (see PROBES; `--f16` the f16 ones, `--only NAME` one of them, at four sparsities); `--pipe` times
 * every variant with software-pipelined row walks; `--json` writes the rows.
 * @module
 */
import { createGpuContext, type GpuContext, type Op } from "../src/gpu/context.ts";
import {
  fillOp,
  GEMV,
  GEMV_HALF,
  GEMV_PIPE,
  gemvChunk,
  gemvOp,
  type GemvTune,
  gemvTune,
  layoutSegments,
  type Matrix,
  REDUCE,
  reduceOp,
} from "../src/gpu/kernels.ts";
import {
  bytesPerWeight,
  fillQuantOps,
  layoutQuantSegments,
  QUANT_SCHEMES,
  type WeightFormat,
} from "../src/gpu/quant.ts";
import { type ProbeEdit, probeSource } from "../src/bench/probe.ts";
import { median } from "../src/bench/stats.ts";

/**
 * `--probe`: edited copies of the kernels (one part cut or replaced), timed like the real ones, to see where a
 * GEMV's time goes. Results are wrong by design; only the time counts. Each edit must match the shader's text.
 */
export const PROBES: { name: string; shader: "gemv" | "gemv_q"; edits: ProbeEdit[] }[] = [
  {
    name: "no f16 conversion",
    shader: "gemv",
    edits: [
      [
        "return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));",
        "return bitcast<vec4<f32>>(w & vec4<u32>(0x3f7fffffu));",
      ],
      [
        "return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));",
        "return bitcast<vec4<f32>>(w.zwxy & vec4<u32>(0x3f7fffffu));",
      ],
    ],
  },
  {
    name: "f16 by integer ops",
    shader: "gemv",
    edits: [
      [
        "return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));",
        "return vec4<f32>(h2f_lo(w.x), h2f_hi(w.x), h2f_lo(w.y), h2f_hi(w.y));",
      ],
      [
        "return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));",
        "return vec4<f32>(h2f_lo(w.z), h2f_hi(w.z), h2f_lo(w.w), h2f_hi(w.w));",
      ],
      [
        "fn lo4(",
        "fn h2f_lo(u: u32) -> f32 { return bitcast<f32>(((u << 13u) & 0x0fffe000u) | ((u << 16u) & 0x80000000u)); }\n" +
        "fn h2f_hi(u: u32) -> f32 { return bitcast<f32>(((u >> 3u) & 0x0fffe000u) | (u & 0x80000000u)); }\nfn lo4(",
      ],
    ],
  },
  {
    name: "no input loads",
    shader: "gemv",
    edits: [[
      "fn input(k: u32, inv_rms: f32) -> f32 {",
      "fn input(k: u32, inv_rms: f32) -> f32 {\n  return f32(k % 7u) * 0.3 - 0.9;",
    ]],
  },
  {
    name: "no metadata loads",
    shader: "gemv_q",
    edits: [[/wt1\[([^\]]+)\]/g, "(($1) | 0x3c003c00u)"]],
  },
  {
    name: "no code decode",
    shader: "gemv_q",
    edits: [
      [
        "  let m = vec4<u32>(w & 0xfu, w & 0xf0u, w & 0xf00u, w & 0xf000u) | vec4<u32>(MAGIC);",
        "  return bitcast<vec4<f32>>(vec4<u32>(w) & vec4<u32>(0x3f7fffffu));\n  let m = vec4<u32>(0u);",
      ],
      [
        "  let h = w >> 16u;\n  let m = vec4<u32>(w & 0xffu,",
        "  return bitcast<vec4<f32>>(vec4<u32>(w) & vec4<u32>(0x3f7fffffu));\n  let h = w >> 16u;\n  let m = vec4<u32>(w & 0xffu,",
      ],
    ],
  },
  {
    name: "no input loads",
    shader: "gemv_q",
    edits: [[
      "fn input(k: u32, inv_rms: f32) -> f32 {",
      "fn input(k: u32, inv_rms: f32) -> f32 {\n  return f32(k % 7u) * 0.3 - 0.9;",
    ]],
  },
];

/** Llama-3-8B decode GEMV shapes, N x K. */
const SHAPES: [number, number][] = [[14336, 4096], [4096, 14336], [4096, 4096], [1024, 4096]];

/** `copies` random matrices of one format (made on the GPU). */
export function matrices(
  ctx: GpuContext,
  format: WeightFormat,
  N: number,
  K: number,
  copies: number,
): Matrix[] {
  const mats: Matrix[] = [];
  const ops: Op[] = [];
  for (let c = 0; c < copies; c++) {
    const scales = ctx.buffer(K * 4, "ones", new Float32Array(K).fill(1));
    if (format === "f16") {
      const { segments, halves } = layoutSegments(K, [N], [0]);
      const buffer = ctx.buffer(halves * 2, "w");
      ops.push(fillOp(ctx, buffer, { words: halves / 2, mode: "random", seed: c + 1, scale: 0.02 }));
      mats.push({ K, N, segments, buffer, scales });
    } else {
      const s = QUANT_SCHEMES[format];
      const { segments, words } = layoutQuantSegments(K, [N], [0], s);
      const m: Matrix = {
        K,
        N,
        segments,
        buffer: ctx.buffer(words * 4, "wq"),
        scales,
        format,
        group: s.group,
      };
      ops.push(...fillQuantOps(ctx, m, c + 1));
      mats.push(m);
    }
  }
  ctx.run(ops);
  return mats;
}

/** GPU microseconds of one GEMV + reduce at `sparsity` (x uniform in [-1, 1): threshold = sparsity). */
export async function timeGemv(
  ctx: GpuContext,
  mats: Matrix[],
  sparsity: number,
  tune: GemvTune,
  perPass: number,
): Promise<number> {
  const K = mats[0].K;
  const N = mats[0].N;
  const xs = new Float32Array(K);
  let a = 12345;
  for (let i = 0; i < K; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    xs[i] = a / 2 ** 31 - 1;
  }
  const x = ctx.buffer(K * 4, "x", xs);
  const sp = {
    thresholds: ctx.buffer(16, "thr", new Float32Array([sparsity])),
    counters: ctx.buffer(16, "cnt"),
  };
  const splits = Math.ceil(K / tune.KCHUNK);
  const partials = ctx.buffer(splits * N * 4, "partials");
  const out = ctx.buffer(N * 4, "out");
  const pass: Op[] = [];
  for (let i = 0; i < perPass; i++) {
    const m = mats[i % mats.length];
    pass.push(
      gemvOp(ctx, m, x, partials, sp, { sparse: sparsity > 0, tune }),
      reduceOp(ctx, partials, out, { n: N, splits, ncols: N, mode: REDUCE.store }),
    );
  }
  const times: number[] = [];
  // an untimed pass first in the same submission: a short pass after an idle read-back starts at a low clock
  for (let r = 0; r < 7; r++) times.push((await ctx.timePasses([pass, pass]))[1]);
  for (const b of [x, sp.thresholds, sp.counters, partials, out]) b.destroy();
  return (median(times) / perPass) * 1000;
}

/** One variant of the sweep: a format and its tunables (KCHUNK 0: the shape's default chunk). */
interface Variant {
  format: WeightFormat;
  TPR: number;
  KCHUNK: number;
  WG: number;
  UNROLL: number;
}

/** `--grid`: the variants compared on the H200 (threads per row, chunk, workgroup, rows in flight). */
function gridVariants(): Variant[] {
  // [TPR, KCHUNK, WG, UNROLL]; TPR 0: the runtime's choice (gemvTune); KCHUNK 0: the shape's chunk
  const f16 = "0 0 0 0|16 0 256 4|16 0 256 8|16 256 256 8|16 512 256 8|8 512 256 8|32 512 256 8|16 512 128 8";
  const quant = "0 0 0 0|8 0 256 4|8 0 256 8|16 0 256 8|32 0 256 8|16 256 256 8|16 512 256 8|16 2048 256 8|" +
    "32 256 128 8";
  const parse = (format: WeightFormat, list: string) =>
    list.split("|").map((v) => {
      const [TPR, KCHUNK, WG, UNROLL] = v.split(" ").map(Number);
      return { format, TPR, KCHUNK, WG, UNROLL };
    });
  return [...parse("f16", f16), ...parse("int8", quant), ...parse("int4", quant)];
}

if (import.meta.main) {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  const quick = Deno.args.includes("--quick");
  const grid = Deno.args.includes("--grid");
  // --pipe: every variant with software-pipelined row walks (GemvTune.PIPE), the runtime's pick included
  const pipe = Deno.args.includes("--pipe");
  GEMV_PIPE.f16 = GEMV_PIPE.quant = pipe;
  const at = Deno.args.indexOf("--tpr");
  const tprs = at >= 0 ? Deno.args[at + 1].split(",").map(Number) : [4, 8, 16];
  const jsonAt = Deno.args.indexOf("--json");
  const ctx = await createGpuContext();
  console.log(`device: ${ctx.adapterName}`);
  const shapes = quick ? SHAPES.slice(2, 3) : SHAPES;
  const copies = quick ? 2 : 8;
  const variants: Variant[] = grid
    ? gridVariants()
    : ["f16", "int8", "int4"].flatMap((f) =>
      (f === "f16" ? [GEMV.TPR] : tprs).map((TPR) => ({
        format: f as WeightFormat,
        TPR,
        KCHUNK: 0,
        WG: 256,
        UNROLL: 4,
      }))
    );
  const rows: Record<string, number | string | boolean>[] = [];
  if (Deno.args.includes("--probe")) {
    // the probes edit the f32 kernels (gemv.wgsl, gemv_q.wgsl), so those run, not the packed-f16 ones
    GEMV_HALF.f16 = GEMV_HALF.quant = false;
    const f16Only = Deno.args.includes("--f16");
    const formats = (f16Only ? ["f16"] : ["f16", "int8", "int4"]) as WeightFormat[];
    const onlyAt = Deno.args.indexOf("--only");
    const only = onlyAt >= 0 ? Deno.args[onlyAt + 1] : null;
    const levels = f16Only || only ? [0, 0.25, 0.5, 0.7] : [0, 0.5];
    for (const [N, K] of quick ? SHAPES.slice(2, 3) : SHAPES) {
      for (const format of formats) {
        const mats = matrices(ctx, format, N, K, copies);
        const shader = format === "f16" ? "gemv" : "gemv_q";
        const tune = gemvTune(K, N, format);
        for (
          const probe of [
            { name: "as is", edits: [] },
            ...PROBES.filter((p) => p.shader === shader && (!only || p.name === only)),
          ]
        ) {
          const pctx = probe.edits.length
            ? ctx.withSources({ [shader]: probeSource(shader, probe.edits) })
            : ctx;
          const us: number[] = [];
          for (const sp of levels) {
            us.push(await timeGemv(pctx, mats, sp, tune, quick ? 4 : 400));
            rows.push({
              N,
              K,
              format,
              probe: probe.name,
              sparsity: sp,
              us: Number(us[us.length - 1].toFixed(2)),
            });
          }
          console.log(
            `${`${N} x ${K}`.padEnd(14)} ${format.padEnd(5)} ${probe.name.padEnd(26)} ${
              levels.map((l, i) => `${l}: ${us[i].toFixed(1).padStart(6)}`).join("  ")
            } us`,
          );
        }
        for (const m of mats) {
          m.buffer.destroy();
          m.scales.destroy();
        }
      }
    }
  }
  if (!Deno.args.includes("--probe")) {
    console.log("N x K          format  TPR KCHUNK  WG  UNR  sparsity        us    GB/s");
  }
  for (const [N, K] of Deno.args.includes("--probe") ? [] : shapes) {
    for (const format of ["f16", "int8", "int4"] as const) {
      const mine = variants.filter((v) => v.format === format);
      if (mine.length === 0) continue;
      const mats = matrices(ctx, format, N, K, copies);
      const bpw = bytesPerWeight(format, mats[0].group);
      for (const v of mine) {
        // TPR 0: the variant the runtime picks (gemvTune)
        const tune = v.TPR === 0
          ? gemvTune(K, N, format)
          : { TPR: v.TPR, KCHUNK: v.KCHUNK || gemvChunk(K, N), WG: v.WG, UNROLL: v.UNROLL, PIPE: pipe };
        for (const s of [0, 0.5]) {
          const us = await timeGemv(ctx, mats, s, tune, quick ? 4 : 400);
          const gbs = (N * K * (1 - s) * bpw) / (us * 1e-6) / 1e9;
          rows.push({ N, K, format, ...tune, sparsity: s, us: Number(us.toFixed(2)), gbs: Math.round(gbs) });
          console.log(
            `${`${N} x ${K}`.padEnd(14)} ${format.padEnd(6)} ${String(tune.TPR).padStart(4)} ${
              String(tune.KCHUNK).padStart(6)
            } ${String(tune.WG).padStart(3)} ${String(tune.UNROLL).padStart(4)}  ${
              s.toFixed(2).padStart(8)
            }  ${us.toFixed(1).padStart(8)}  ${gbs.toFixed(0).padStart(6)}`,
          );
        }
      }
      for (const m of mats) {
        m.buffer.destroy();
        m.scales.destroy();
      }
    }
  }
  if (jsonAt >= 0) {
    const doc = { device: ctx.adapterName, date: new Date().toISOString(), rows };
    Deno.writeTextFileSync(Deno.args[jsonAt + 1], JSON.stringify(doc));
  }
}
