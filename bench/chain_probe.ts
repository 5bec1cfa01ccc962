/**
 * What a dependent step costs on this GPU, as separate dispatches and as stages of one dispatch: the question
 * behind every fused decode-step design. A decode step is a chain of dependent dispatches (eight a layer); each
 * boundary waits for the last workgroup of one dispatch, then launches the next. Within one dispatch the same
 * chain can run as stages ordered by tickets (each workgroup takes the next ticket from an atomic counter, so
 * every earlier ticket's workgroup has started and, resident, will finish: no deadlock on a GPU that runs
 * started workgroups to completion), each stage's workgroups waiting on a counter the stage before raises.
 *
 * Both modes run the same chain of `--stages` steps of `--wgs` workgroups (256 threads each): every thread of
 * step s + 1 reads two values step s wrote (its own and the next workgroup's, so every step depends on other
 * workgroups) and writes their sum + 1. GPU time from timestamp queries (median of 7, each after an untimed
 * run), per step; the stages' results are checked against the CPU (a stage that read before the one before it
 * had written would show).
 *
 * `deno run -A bench/chain_probe.ts [--stages 64] [--wgs 1,16,132,264,528]`
 * @module
 */
import { parseArgs } from "node:util";
import { createGpuContext, type Op } from "../src/gpu/context.ts";
import { median } from "../src/bench/stats.ts";
import { numList } from "../src/cli/options.ts";

// steps: step s reads region s and writes region s + 1 (regions of NWG * 256 u32). "dispatch": one dispatch a
// step (params.step = s); "stages": one dispatch of STAGES * NWG workgroups, tickets from counters[0], stage
// s's completed workgroups counted in counters[1 + s].
const WGSL = /* wgsl */ `
override NWG: u32 = 1u;
struct Params { step: u32, stages: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> data: array<u32>;
@group(0) @binding(2) var<storage, read_write> counters: array<atomic<u32>>;

var<workgroup> ticket: u32;

fn step_of(s: u32, w: u32, t: u32) {
  let n = NWG * 256u;
  let a = data[s * n + w * 256u + t];
  let b = data[s * n + ((w + 1u) % NWG) * 256u + t];
  data[(s + 1u) * n + w * 256u + t] = a + b + 1u;
}

@compute @workgroup_size(256)
fn dispatch(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  step_of(p.step, wid.x, t);
  if (p.stages == 0u) { atomicAdd(&counters[0], 1u); }  // never: binds counters as the stages entry does
}

@compute @workgroup_size(256)
fn stages(@builtin(local_invocation_index) t: u32) {
  if (t == 0u) { ticket = atomicAdd(&counters[0], 1u); }
  let tk = workgroupUniformLoad(&ticket);
  let s = tk / NWG;
  let w = tk % NWG;
  if (s >= p.stages) { return; }
  if (s > 0u && t == 0u) {
    // every workgroup of stage s - 1 holds an earlier ticket: started, so it finishes
    while (atomicLoad(&counters[s]) < NWG) {}
  }
  storageBarrier();
  workgroupBarrier();
  step_of(s, w, t);
  storageBarrier();
  workgroupBarrier();
  if (t == 0u) { atomicAdd(&counters[1u + s], 1u); }
}
`;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { stages: { type: "string" }, wgs: { type: "string" } } });
  const S = Number(values.stages ?? 64);
  if (!Number.isInteger(S) || S < 2) throw new RangeError("--stages: an integer >= 2");
  const wgsList = numList(values.wgs ?? "1,16,132,264,528", "--wgs", true);
  const ctx = await createGpuContext();
  if (!ctx.hasTimestamps) throw new Error(`${ctx.adapterName} has no timestamp queries`);
  const dev = ctx.device;
  const module = dev.createShaderModule({ code: WGSL, label: "chain_probe" });
  console.log(`device: ${ctx.adapterName}; ${S} dependent steps of 256-thread workgroups`);
  console.log(
    "workgroups a step | separate dispatches, µs a step | stages of one dispatch, µs a step | check",
  );
  const rows: Record<string, unknown>[] = [];
  for (const NWG of wgsList) {
    const n = NWG * 256;
    const data = ctx.buffer((S + 1) * n * 4, "data");
    const init = new Uint32Array(n).map((_, i) => (i * 2654435761) >>> 0);
    ctx.write(data, init);
    const counters = ctx.buffer((S + 2) * 4, "counters", new Uint32Array(S + 2));
    const pipe = (entryPoint: string) =>
      dev.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint, constants: { NWG } },
      });
    const pd = pipe("dispatch");
    const ps = pipe("stages");
    const params = (step: number) =>
      ctx.buffer(16, "params", new Uint32Array([step, S, 0, 0]), GPUBufferUsage.UNIFORM);
    const group = (pl: GPUComputePipeline, u: GPUBuffer) =>
      dev.createBindGroup({
        layout: pl.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: u } },
          { binding: 1, resource: { buffer: data } },
          { binding: 2, resource: { buffer: counters } },
        ],
      });
    const dispatchOps: Op[] = Array.from({ length: S }, (_, s) => ({
      pipeline: pd,
      bindGroup: group(pd, params(s)),
      workgroups: [NWG, 1, 1] as [number, number, number],
      label: "dispatch",
    }));
    const zero = new Uint32Array(S + 2);
    const stagesOp: Op = {
      pipeline: ps,
      bindGroup: group(ps, params(0)),
      workgroups: [S * NWG, 1, 1],
      label: "stages",
    };
    const timeOf = async (ops: Op[], reset: boolean): Promise<number> => {
      const t: number[] = [];
      for (let r = 0; r < 7; r++) {
        if (reset) ctx.write(counters, zero);
        await ctx.timePasses([ops]); // untimed warm-up run (its time is dropped)
        if (reset) ctx.write(counters, zero);
        t.push((await ctx.timePasses([ops]))[0]);
      }
      return (median(t) * 1000) / S;
    };
    const dUs = await timeOf(dispatchOps, false);
    const viaDispatch = await ctx.readU32(data, (S + 1) * n);
    ctx.write(data, new Uint32Array((S + 1) * n).fill(0xdeadbeef));
    ctx.write(data, init);
    const sUs = await timeOf([stagesOp], true);
    const viaStages = await ctx.readU32(data, (S + 1) * n);
    // the CPU's chain
    let cur = init;
    for (let s = 0; s < S; s++) {
      const next = new Uint32Array(n);
      for (let w = 0; w < NWG; w++) {
        for (let t = 0; t < 256; t++) {
          next[w * 256 + t] = (cur[w * 256 + t] + cur[((w + 1) % NWG) * 256 + t] + 1) >>> 0;
        }
      }
      cur = next;
    }
    const bad = (got: Uint32Array) => {
      let b = 0;
      for (let i = 0; i < n; i++) if (got[S * n + i] !== cur[i]) b++;
      return b;
    };
    const check = `dispatches ${bad(viaDispatch)} wrong, stages ${bad(viaStages)} wrong of ${n}`;
    console.log(`${NWG} | ${dUs.toFixed(2)} | ${sUs.toFixed(2)} | ${check}`);
    rows.push({ workgroups: NWG, dispatchUs: dUs, stageUs: sUs, check });
    data.destroy();
    counters.destroy();
  }
  console.log(JSON.stringify({ device: ctx.adapterName, stages: S, rows }));
}

if (import.meta.main) await main();
