/**
 * Where a decode GEMV's time goes, at Llama-3-8B shapes: the read pattern alone (the gemv grid and row walk,
 * loads XOR-ed together, no arithmetic and no staging; f16 weights), the kernel without its reduce pass, the
 * kernel with no active row (its fixed cost: launch, staging, compaction, epilogue), and the reduce pass alone.
 * `--quant int8|int4` times the quantized GEMVs (random codes made on the GPU, the shape's variants and the
 * device's kernel: gemv_qh on GPUs with shader-f16) the same way, but for the read pattern.
 *
 * `deno run -A bench/gemv_probe.ts [--quick] [--quant none|int8|int4] [--json FILE]` prints GPU microseconds per
 * dispatch (timestamp queries, median of 7 passes of many dispatches over rotating weight copies, each pass after
 * an untimed one).
 * @module
 */
import { createGpuContext, type GpuContext, type Op } from "../src/gpu/context.ts";
import { type GemvInput, gemvOp, gemvTune, REDUCE, reduceOp } from "../src/gpu/kernels.ts";
import { median } from "../src/bench/stats.ts";
import { randomMatrices } from "../src/bench/layer_gemms.ts";
import { bytesPerWeight, gemvQShader, parseQuant, QUANT_SCHEMES } from "../src/gpu/quant.ts";

const SHAPES: [number, number][] = [[28672, 4096], [14336, 4096], [4096, 14336], [6144, 4096], [4096, 4096]];

// The gemv.wgsl grid and row walk (workgroup = TPR threads per row x KG row groups, tile of TPR * 8 columns,
// split of KCHUNK rows, UNROLL loads in flight) with the loads XOR-ed instead of multiplied.
const STREAM_WGSL = `
override TPR: u32 = 16u;
override KCHUNK: u32 = 512u;
override UNROLL: u32 = 4u;
const WG: u32 = 256u;
override KG: u32 = WG / TPR;
struct P { K: u32, N8: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> wt: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> sink: array<u32>;
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let c = t % TPR;
  let kg = t / TPR;
  let vcol = wid.x * TPR + c;
  let k_base = wid.y * KCHUNK;
  let n_k = min(KCHUNK, p.K - k_base);
  var acc = vec4<u32>(0u);
  if (vcol < p.N8) {
    var j = kg;
    for (; j + (UNROLL - 1u) * KG < n_k; j += UNROLL * KG) {
      let w0 = wt[(k_base + j) * p.N8 + vcol];
      let w1 = wt[(k_base + j + KG) * p.N8 + vcol];
      let w2 = wt[(k_base + j + 2u * KG) * p.N8 + vcol];
      let w3 = wt[(k_base + j + 3u * KG) * p.N8 + vcol];
      acc ^= w0 ^ w1 ^ w2 ^ w3;
      if (UNROLL == 8u) {
        let w4 = wt[(k_base + j + 4u * KG) * p.N8 + vcol];
        let w5 = wt[(k_base + j + 5u * KG) * p.N8 + vcol];
        let w6 = wt[(k_base + j + 6u * KG) * p.N8 + vcol];
        let w7 = wt[(k_base + j + 7u * KG) * p.N8 + vcol];
        acc ^= w4 ^ w5 ^ w6 ^ w7;
      }
    }
    for (; j < n_k; j += KG) { acc ^= wt[(k_base + j) * p.N8 + vcol]; }
  }
  // never true for random weights; keeps the loads alive
  if (acc.x == 0x9e3779b9u && acc.y == 0x7f4a7c15u) { sink[0] = acc.z; }
}`;

/** GPU microseconds per op of a pass that cycles through `ops` `perPass` times in all. */
async function timeOps(ctx: GpuContext, ops: Op[], perPass: number): Promise<number> {
  const pass: Op[] = [];
  for (let i = 0; i < perPass; i++) pass.push(ops[i % ops.length]);
  const t: number[] = [];
  for (let r = 0; r < 7; r++) t.push((await ctx.timePasses([pass, pass]))[1]);
  return (median(t) / perPass) * 1000;
}

if (import.meta.main) {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  const jsonAt = Deno.args.indexOf("--json");
  const quantAt = Deno.args.indexOf("--quant");
  const quant = parseQuant(quantAt >= 0 ? Deno.args[quantAt + 1] : undefined, "--quant");
  const ctx = await createGpuContext();
  const format = quant === "none" ? "f16" : quant;
  console.log(
    `device: ${ctx.adapterName}, ${format} weights${quant === "none" ? "" : ` (${gemvQShader(ctx)}.wgsl)`}`,
  );
  const module = ctx.device.createShaderModule({ code: STREAM_WGSL, label: "probe_stream" });
  const sink = ctx.buffer(16, "sink");
  const rows: Record<string, number | string>[] = [];
  const quick = Deno.args.includes("--quick");
  const copies = quick ? 2 : 6;
  for (const [N, K] of quick ? [[1024, 520] as [number, number]] : SHAPES) {
    const mats = randomMatrices(
      ctx,
      { name: `${N}x${K}`, K, lens: [N] },
      copies,
      quant === "none" ? null : { format: quant, scheme: QUANT_SCHEMES[quant] },
    );
    const xs = new Float32Array(K).map((_, i) => Math.sin(i * 12.9898) * 0.999);
    const x = ctx.buffer(K * 4, "x", xs);
    const tune = gemvTune(K, N, format);
    const splits = Math.ceil(K / tune.KCHUNK);
    const partials = ctx.buffer(splits * N * 4, "partials");
    const out = ctx.buffer(N * 4, "out");
    const thr = (v: number) => ({
      thresholds: ctx.buffer(16, "t", new Float32Array([v])),
      counters: ctx.buffer(16, "c"),
    });
    const perPass = quick ? 4 : Math.max(40, Math.round(4e-2 / (N * K * 2 / 3e12)));
    const bytes = N * K * bytesPerWeight(format, mats[0].group);
    const line = (what: string, us: number, b = bytes) => {
      rows.push({ N, K, what, us: Number(us.toFixed(2)), gbs: Math.round(b / (us * 1e-6) / 1e9) });
      console.log(
        `${`${N}x${K}`.padEnd(11)} ${what.padEnd(34)} ${us.toFixed(1).padStart(7)} us ${
          (b / (us * 1e-6) / 1e9).toFixed(0).padStart(6)
        } GB/s`,
      );
    };
    // the read pattern of the f16 layout (quantized rows are laid out otherwise: no stream probe for them)
    for (
      const [TPR, UNROLL] of quant === "none" ? [[tune.TPR, tune.UNROLL], [16, 4], [32, 8], [64, 8]] : []
    ) {
      const pipeline = ctx.device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: "main", constants: { TPR, KCHUNK: tune.KCHUNK, UNROLL } },
      });
      const params = ctx.uniform([K, N / 8, 0, 0], "probe");
      const ops = mats.map((m): Op => ({
        pipeline,
        bindGroup: ctx.device.createBindGroup({
          layout: pipeline.getBindGroupLayout(0),
          entries: [params, m.buffer, sink].map((buffer, binding) => ({ binding, resource: { buffer } })),
        }),
        workgroups: [Math.ceil(N / (TPR * 8)), splits, 1],
        label: "stream",
      }));
      line(`stream TPR ${TPR} UNROLL ${UNROLL}`, await timeOps(ctx, ops, perPass));
    }
    const dense = thr(0);
    const none = thr(2); // |x| < 1: no channel is active
    const half = thr(Math.SQRT1_2); // |sin| > 1/sqrt(2) for half the channels
    const red = reduceOp(ctx, partials, out, { n: N, splits, ncols: N, mode: REDUCE.store });
    const g = (sp: typeof dense, sparse: boolean) =>
      mats.map((m) => gemvOp(ctx, m, x, partials, sp, { sparse, tune }));
    line("gemv dense", await timeOps(ctx, g(dense, false), perPass));
    line("gemv dense + reduce", 2 * await timeOps(ctx, g(dense, false).flatMap((o) => [o, red]), perPass));
    line("gemv sparse ~50%", await timeOps(ctx, g(half, true), perPass), bytes / 2);
    line("gemv sparse, no active row", await timeOps(ctx, g(none, true), perPass), 0);
    line("reduce alone", await timeOps(ctx, [red], perPass), splits * N * 4);
    // the fused inputs of the model: RMSNorm (gate|up: two segments) and SwiGLU of the gate|up partials (down)
    const inputs: [string, GemvInput][] = [[
      "RMSNorm input",
      {
        kind: "rmsnorm",
        weight: x,
        ss: ctx.buffer(64, "ss", new Float32Array(16).fill(K / 16)),
        nss: 16,
        eps: 1e-5,
      },
    ]];
    if (K > 8192) {
      const gu = new Float32Array(4 * 2 * K).map((_, i) => Math.sin(i * 0.731) * 2);
      inputs.push(["SwiGLU input", {
        kind: "swiglu",
        partials: ctx.buffer(gu.byteLength, "gu", gu),
        splits: 4,
        cols: 2 * K,
      }]);
    }
    for (const [name, input] of inputs) {
      const f = (sp: typeof dense, sparse: boolean) =>
        mats.map((m) => gemvOp(ctx, m, x, partials, sp, { sparse, tune, input }));
      line(`gemv dense, ${name}`, await timeOps(ctx, f(dense, false), perPass));
      line(`gemv sparse, ${name}, no active row`, await timeOps(ctx, f(none, true), perPass), 0);
    }
    for (const m of mats) m.buffer.destroy();
  }
  if (jsonAt >= 0) {
    Deno.writeTextFileSync(
      Deno.args[jsonAt + 1],
      JSON.stringify({ device: ctx.adapterName, date: new Date().toISOString(), rows }),
    );
  }
}
