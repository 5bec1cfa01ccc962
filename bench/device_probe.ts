/**
 * Probes of the device and of Deno's WebGPU that the kernels and the decode loop are designed around:
 * what the adapter offers (features such as `shader-f16` or `subgroups`, and the limits the kernels size
 * themselves by), the read bandwidth a plain WGSL kernel reaches, the GPU cost of a dependent dispatch, and
 * whether a read-back (`mapAsync`) waits only for the submission that wrote its buffer or for all submitted
 * work.
 *
 * `deno run -A bench/device_probe.ts` prints one line per probe (and `--json` one object).
 * @module
 */
import { createGpuContext, type GpuContext, type Op } from "../src/gpu/context.ts";
import { fillOp } from "../src/gpu/kernels.ts";
import { median } from "../src/bench/stats.ts";

const READ_WGSL = `
struct P { words: u32, per: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> sink: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  var acc = vec4<u32>(0u);
  let stride = nw.x * 256u;
  for (var i = g.x; i < p.words; i += stride) { acc ^= src[i]; }
  // never true for the data below; keeps the loads alive
  if (acc.x == 0x9e3779b9u && acc.y == 0x7f4a7c15u) { sink[0] = acc.z; }
}`;

/** The adapter's features and the limits the kernels size themselves by (the device gets only some). */
async function adapterFacts(): Promise<Record<string, string | number>> {
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) return {};
  const l = adapter.limits;
  const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  return {
    "adapter features": [...adapter.features].sort().join(" "),
    "max workgroup memory (bytes)": l.maxComputeWorkgroupStorageSize,
    "max threads a workgroup": l.maxComputeInvocationsPerWorkgroup,
    "max storage binding (bytes)": l.maxStorageBufferBindingSize,
    ...(info.subgroupMinSize ? { "subgroup sizes": `${info.subgroupMinSize}-${info.subgroupMaxSize}` } : {}),
  };
}

/** A buffer of random words (zero pages could read faster than real weights). */
function randomBuffer(ctx: GpuContext, bytes: number): GPUBuffer {
  const b = ctx.buffer(bytes, "probe_src");
  ctx.run([fillOp(ctx, b, { words: bytes / 4, mode: "random", seed: 1 })]);
  return b;
}

function readOp(ctx: GpuContext, src: GPUBuffer, sink: GPUBuffer, workgroups: number): Op {
  const module = ctx.device.createShaderModule({ code: READ_WGSL, label: "probe_read" });
  const pipeline = ctx.device.createComputePipeline({
    layout: "auto",
    compute: { module, entryPoint: "main" },
  });
  const params = ctx.uniform([src.size / 16, 0, 0, 0], "probe_read");
  const bindGroup = ctx.device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [params, src, sink].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  return { pipeline, bindGroup, workgroups: [workgroups, 1, 1], label: "read" };
}

/** GB/s of a grid-stride vec4<u32> read over `bytes`, best workgroup count of a few. */
async function readBandwidth(ctx: GpuContext, bytes: number): Promise<Record<string, number>> {
  const src = randomBuffer(ctx, bytes);
  const sink = ctx.buffer(16, "probe_sink");
  const out: Record<string, number> = {};
  for (const wg of [528, 1056, 2112, 4224, 8448]) {
    const op = readOp(ctx, src, sink, wg);
    const t: number[] = [];
    for (let r = 0; r < 5; r++) t.push((await ctx.timePasses([[op, op, op, op]]))[0] / 4);
    out[`read ${bytes / 2 ** 30} GiB, ${wg} workgroups (GB/s)`] = Number(
      (bytes / (median(t) / 1000) / 1e9).toFixed(0),
    );
  }
  src.destroy();
  sink.destroy();
  return out;
}

/**
 * Submits a long job A (its result copied to staging A), then a long job B (staging B), and times when
 * staging A maps. If it maps about when A is done, two read-back batches can be in flight at once.
 */
async function mapSemantics(ctx: GpuContext, bytes: number): Promise<Record<string, number>> {
  const src = randomBuffer(ctx, bytes);
  const sink = ctx.buffer(16, "probe_sink");
  const op = readOp(ctx, src, sink, 2112);
  const job = (reps: number) => {
    const enc = ctx.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (let i = 0; i < reps; i++) {
      pass.setPipeline(op.pipeline);
      pass.setBindGroup(0, op.bindGroup);
      pass.dispatchWorkgroups(op.workgroups[0]);
    }
    pass.end();
    const staging = ctx.device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    enc.copyBufferToBuffer(sink, 0, staging, 0, 16);
    return { cb: enc.finish(), staging };
  };
  // warm-up and the time of one job alone
  const w = job(100);
  let t0 = performance.now();
  ctx.device.queue.submit([w.cb]);
  await w.staging.mapAsync(GPUMapMode.READ);
  const aloneMs = performance.now() - t0;
  const a = job(100);
  const b = job(100);
  t0 = performance.now();
  ctx.device.queue.submit([a.cb]);
  ctx.device.queue.submit([b.cb]);
  await a.staging.mapAsync(GPUMapMode.READ);
  const aMs = performance.now() - t0;
  await b.staging.mapAsync(GPUMapMode.READ);
  const bMs = performance.now() - t0;
  // a tiny read-back with nothing else queued: the fixed cost of one mapAsync
  const tiny: number[] = [];
  for (let r = 0; r < 5; r++) {
    const s = job(0);
    const t = performance.now();
    ctx.device.queue.submit([s.cb]);
    await s.staging.mapAsync(GPUMapMode.READ);
    tiny.push(performance.now() - t);
  }
  src.destroy();
  sink.destroy();
  return {
    "job alone, submit to mapped (ms)": Number(aloneMs.toFixed(2)),
    "A then B queued: A mapped after (ms)": Number(aMs.toFixed(2)),
    "A then B queued: B mapped after (ms)": Number(bMs.toFixed(2)),
    "empty job, submit to mapped, median (ms)": Number(median(tiny).toFixed(2)),
  };
}

/** GPU microseconds per dispatch of a chain of tiny dependent dispatches (the barrier cost). */
async function dispatchCost(ctx: GpuContext): Promise<Record<string, number>> {
  const a = ctx.buffer(1 << 20, "a");
  const sink = ctx.buffer(16, "sink");
  const op = readOp(ctx, a, sink, 1);
  const small = readOp(ctx, a, sink, 132);
  const t1: number[] = [];
  const t2: number[] = [];
  for (let r = 0; r < 5; r++) {
    t1.push((await ctx.timePasses([Array(200).fill(op)]))[0]);
    t2.push((await ctx.timePasses([Array(200).fill(small)]))[0]);
  }
  a.destroy();
  sink.destroy();
  return {
    "dispatch, 1 workgroup reading 1 MiB (us)": Number((median(t1) / 200 * 1000).toFixed(2)),
    "dispatch, 132 workgroups reading 1 MiB (us)": Number((median(t2) / 200 * 1000).toFixed(2)),
  };
}

if (import.meta.main) {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  const ctx = await createGpuContext();
  const big = ctx.adapterName.includes("llvmpipe") ? 2 ** 26 : 2 ** 31;
  const result = {
    device: ctx.adapterName,
    date: new Date().toISOString(),
    ...await adapterFacts(),
    ...await readBandwidth(ctx, Math.min(big, ctx.maxBinding - (ctx.maxBinding % 16))),
    ...await dispatchCost(ctx),
    ...await mapSemantics(ctx, big / 2),
  };
  if (Deno.args.includes("--json")) console.log(JSON.stringify(result));
  else for (const [k, v] of Object.entries(result)) console.log(`${k}: ${v}`);
  ctx.destroy();
}
