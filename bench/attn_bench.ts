/**
 * Decode attention at the Llama-3-8B shape (32 heads, 8 kv heads, head size 128) by position: the one-workgroup-
 * per-head variant against the split variant plus its combine pass, each with the q|k|v sums, RoPE and the cache
 * store folded in (attn_decode.wgsl), at several positions per workgroup and with 1, 2 or 4 q heads a workgroup
 * (more than one: the heads of one kv head read its keys and values once). Picks ATTN.SINGLE_BELOW, attnSpan and
 * attnHeadsAt.
 *
 * `deno run -A bench/attn_bench.ts [--quick] [--probe] [--layers L] [--json FILE]` prints GPU microseconds per
 * decode step's attention (timestamp queries, median of 7 passes of many steps, each pass after an untimed one).
 * The steps cycle over L layers' caches (default 8, 268 MB at this shape), so that, as in a decode step, a
 * layer's keys and values are not still in L2 from the step before.
 * @module
 */
import { createGpuContext, type GpuContext, type Op } from "../src/gpu/context.ts";
import {
  ATTN,
  attnDecodeOps,
  attnHeadsAt,
  attnPartFloats,
  attnSpan,
  fillOp,
  gemvSplits,
} from "../src/gpu/kernels.ts";
import { releaseOps } from "../src/model/forward.ts";
import { type ProbeEdit, probeSource } from "../src/bench/probe.ts";
import { median } from "../src/bench/stats.ts";

/**
 * `--probe`: copies of the one-workgroup kernel with one part cut out, to see where its time goes (each edit
 * must match the shader's text; a stale one throws).
 */
export const PROBES: Record<string, ProbeEdit[]> = {
  "cache read-only (no store)": [
    ["var<storage, read_write> kcache", "var<storage, read> kcache"],
    ["var<storage, read_write> vcache", "var<storage, read> vcache"],
    ["if (takes && head0 % group == 0u) {", "if (false) {"],
    ["      kcache[at + w] = vec4<u32>(", "      let unused_k = vec4<u32>("],
    ["      vcache[at + w] = vec4<u32>(", "      let unused_v = vec4<u32>("],
  ],
  "q|k|v from one split": [[
    "for (var s = 0u; s < SPLITS; s++) {\n    let r = s * p.ldq;",
    "for (var s = 0u; s < 1u; s++) {\n    let r = s * p.ldq;",
  ]],
  "no key loads": [["let k4 = kcache[kr + u];", "let k4 = vec4<u32>(kr + u);"]],
  "no value loop": [["let nc = select(n, n - 1u, cur && c0 + n == j1);", "let nc = 0u;"]],
  "no reductions": [
    ["let mx = max(m_run, reduce_max(t, m));", "let mx = max(m_run, m);"],
    ["l_run = l_run * alpha + reduce_sum(t, l);", "l_run = l_run * alpha + l;\n    workgroupBarrier();"],
  ],
};

/** GPU microseconds per step of a pass of `repeats` steps, step r running `layers[r % layers.length]`. */
async function timeSteps(ctx: GpuContext, layers: Op[][], repeats: number): Promise<number> {
  const pass: Op[] = Array.from({ length: repeats }, (_, r) => layers[r % layers.length]).flat();
  const t: number[] = [];
  for (let r = 0; r < 7; r++) t.push((await ctx.timePasses([pass, pass]))[1]);
  return (median(t) / repeats) * 1000;
}

if (import.meta.main) {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  const quick = Deno.args.includes("--quick");
  const jsonAt = Deno.args.indexOf("--json");
  const layersAt = Deno.args.indexOf("--layers");
  const nLayers = layersAt >= 0 ? Number(Deno.args[layersAt + 1]) : quick ? 2 : 8;
  if (!(Number.isInteger(nLayers) && nLayers >= 1 && nLayers <= 64)) {
    throw new RangeError(`--layers must be an integer in 1..64, got ${Deno.args[layersAt + 1]}`);
  }
  const ctx = await createGpuContext();
  console.log(`device: ${ctx.adapterName}`);
  const [numHeads, numKv, headDim] = quick ? [8, 2, 64] : [32, 8, 128];
  const maxSeq = quick ? 640 : 8192;
  const ldq = (numHeads + 2 * numKv) * headDim;
  const shape = { numHeads, numKv, headDim, maxSeq, ldq };
  const splits = gemvSplits(quick ? 256 : 4096, ldq);
  const random = (floats: number, seed: number, scale: number) => {
    const b = ctx.buffer(floats * 4, "random");
    ctx.run([fillOp(ctx, b, { words: floats, mode: "random", seed, scale })]);
    return b;
  };
  // f16 pairs read as f32 are not what the kernel expects of partials: fill those with f32 constants per split
  const partials = ctx.buffer(splits * ldq * 4, "partials");
  ctx.write(partials, new Float32Array(splits * ldq).map((_, i) => Math.sin(i * 0.37) * 0.5));
  const turns = ctx.buffer(headDim * 2, "turns");
  ctx.write(turns, new Float32Array(headDim / 2).map((_, i) => 10000 ** (-2 * i / headDim) / (2 * Math.PI)));
  const caches = Array.from({ length: nLayers }, (_, l) => ({
    kc: random(numKv * maxSeq * headDim / 2, 1 + 2 * l, 1),
    vc: random(numKv * maxSeq * headDim / 2, 2 + 2 * l, 1),
  }));
  const { kc, vc } = caches[0];
  const part = ctx.buffer(attnPartFloats(shape) * 4, "part");
  const out = ctx.buffer(numHeads * headDim * 4, "out");
  const rows: { pos: number; span: number; heads: number; us: number }[] = [];
  const positions = quick ? [5, 300, 639] : [128, 300, 511, 767, 1023, 2047, 4095, 8191];
  const spans = [0, 64, 128, 256, 512, 1024];
  const headsList = [1, 2, 4].filter((h) => (numHeads / numKv) % h === 0);
  const repeats = quick ? 4 : 200;
  console.log(
    `us per step by positions per workgroup (0: one workgroup per head group) / q heads a workgroup, over ` +
      `${nLayers} layers' caches; * marks the default (attnSpan, attnHeads)`,
  );
  console.log(
    `  pos ${spans.flatMap((s) => headsList.map((h) => `${s}/${h}`.padStart(8) + " ")).join("")}`,
  );
  for (const pos of positions) {
    const state = ctx.buffer(16, "state", new Uint32Array([pos, 0, 0, 0]));
    const line: string[] = [];
    for (const span of spans) {
      for (const heads of headsList) {
        const layers = caches.map((c) =>
          attnDecodeOps(ctx, { partials, splits, bias: null }, turns, c.kc, c.vc, part, out, state, shape, {
            window: 0,
            single: span === 0,
            span: span || undefined,
            heads,
            // a workgroup a split: what the span itself costs (decode caps them, attnRows)
            rows: span ? Math.ceil((pos + 1) / span) : undefined,
          })
        );
        const us = await timeSteps(ctx, layers, repeats);
        rows.push({ pos, span, heads, us: Number(us.toFixed(2)) });
        const def = heads === (span === 0 ? 1 : attnHeadsAt(pos, shape)) &&
          attnSpan(pos, attnHeadsAt(pos, shape)) === span;
        line.push(`${us.toFixed(1)}${def ? "*" : " "}`.padStart(9));
        for (const ops of layers) releaseOps(ops);
      }
    }
    console.log(`${String(pos).padStart(5)} ${line.join("")}`);
  }
  const probes: { probe: string; pos: number; us: number }[] = [];
  if (Deno.args.includes("--probe")) {
    console.log("probe (one workgroup per head), us per step:");
    for (const [name, edits] of [["as is", []] as [string, ProbeEdit[]], ...Object.entries(PROBES)]) {
      const module = ctx.device.createShaderModule({ code: probeSource("attn_decode", edits), label: name });
      const pipeline = ctx.device.createComputePipeline({
        layout: "auto",
        compute: {
          module,
          entryPoint: "main",
          constants: { SPAN: ATTN.SPAN, FINAL: 1, HEAD_DIM: headDim, SPLITS: splits, SUB: ATTN.SUB },
        },
      });
      const line: string[] = [];
      for (const pos of quick ? [5, 300] : [128, 511, 2047]) {
        const state = ctx.buffer(16, "state", new Uint32Array([pos, 0, 0, 0]));
        const [params] =
          attnDecodeOps(ctx, { partials, splits, bias: null }, turns, kc, vc, part, out, state, shape, {
            window: 0,
            single: true,
          })[0].owned ?? [];
        // binding 8: the L2 prefetch's source, unused here (PREFETCH_WG 0)
        const buffers = [
          params,
          partials,
          ctx.scratch("read"),
          turns,
          kc,
          vc,
          out,
          state,
          ctx.scratch("read"),
        ];
        const op: Op = {
          pipeline,
          bindGroup: ctx.device.createBindGroup({
            layout: pipeline.getBindGroupLayout(0),
            entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
          }),
          workgroups: [numHeads, 1, 1],
          label: name,
        };
        const us = await timeSteps(ctx, [[op]], repeats);
        probes.push({ probe: name, pos, us: Number(us.toFixed(2)) });
        line.push(`pos ${pos} ${us.toFixed(1)}`);
      }
      console.log(`  ${name.padEnd(28)} ${line.join("  ")}`);
    }
  }
  if (jsonAt >= 0) {
    Deno.writeTextFileSync(
      Deno.args[jsonAt + 1],
      JSON.stringify({ device: ctx.adapterName, date: new Date().toISOString(), shape, rows, probes }),
    );
  }
}
