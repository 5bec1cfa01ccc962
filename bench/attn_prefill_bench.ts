/**
 * Prefill attention (attention.wgsl) at the Llama-3-8B shape (32 q heads, 8 kv heads, head size 128): a chunk of
 * 256 rows at positions 0, 768 and 3840 (contexts 256, 1024 and 4096), by GPU timestamp queries, with the tile
 * attnPrefillTile picks and, with `--sweep`, other threads, queries a thread, keys a tile and score blocks. Each
 * tile's result is checked first: the chunk's first and last rows against the CPU reference.
 *
 * `deno run -A bench/attn_prefill_bench.ts [--quick] [--sweep] [--probe] [--rows N] [--layers L] [--json FILE]`
 * prints the median GPU microseconds of a dispatch (7 passes of many dispatches, each pass after an untimed one)
 * and the rate of multiply-adds the causal chunk needs (q k and p v), in GMAC/s. `--rows N`: chunks of N rows
 * ending at the same contexts. The dispatches cycle over L layers' caches (default 4), so that, as in a
 * prefill, a layer's keys and values are not all in L2 from the dispatch before. `--probe`: copies of the kernel
 * with a part cut out (PROBES). `--quick` (or TEALGPU_BENCH_QUICK=1): 8 q heads, 2 kv heads, head size 64, 32
 * rows at contexts 32, 128 and 320, to try it anywhere (lavapipe).
 * @module
 */
import { createGpuContext, type GpuContext, type Op } from "../src/gpu/context.ts";
import {
  attentionOp,
  attnPrefillTile,
  fillOp,
  type PrefillTile,
  type PrefillTileWant,
} from "../src/gpu/kernels.ts";
import { releaseOps } from "../src/model/forward.ts";
import { f16ToF32 } from "../src/model/dtype.ts";
import { attention } from "../src/model/reference.ts";
import { median } from "../src/bench/stats.ts";
import { type ProbeEdit, probeSource } from "../src/bench/probe.ts";

/**
 * `--probe`: copies of the kernel with one part cut out, timed with the default tile, to see where its time
 * goes (their results are wrong, so they are not checked; each edit must match the shader's text).
 */
export const PROBES: Record<string, ProbeEdit[]> = {
  // a load the workgroups never reach keeps each cache bound
  "no cache loads": [
    ["w.x = kcache[at];", "w.x = at & 0x3bff3bffu;\n    if (at == 0xffffffffu) { w.x = kcache[0]; }"],
    ["w.z = vcache[at];", "w.z = at & 0x3bff3bffu;\n    if (at == 0xffffffffu) { w.z = vcache[0]; }"],
    ["w.y = kcache[at + 1u];", "w.y = at & 0x3bff3bffu;"],
    ["w.w = vcache[at + 1u];", "w.w = at & 0x3bff3bffu;"],
  ],
  "no score FMAs": [["for (var d = 0u; d < D4; d++) {", "for (var d = 0u; d < 1u; d++) {"]],
  "no max atomics": [[
    "if (m > NEG) { atomicMax(&mx[q], ord(m)); }",
    "if (m > 1e30) { atomicMax(&mx[q], ord(m)); }",
  ]],
  "no value step": [["for (var k4 = 0u; k4 < KT4; k4++) {", "for (var k4 = 0u; k4 < 0u; k4++) {"]],
  // the tile's loads in steps 1 and 3 themselves, none ahead
  "no loads ahead": [
    ["for (var i = 0u; i < NI; i++) { pf[i] = load_item(t + i * WG, k_first); }", ""],
    ["if (j0 + KT <= k_last) {", "if (false) {"],
    ["= unpack4(pf[i].x, pf[i].y);", "= unpack4(load_item(item, j0).x, load_item(item, j0).y);"],
    ["= unpack4(pf[i].z, pf[i].w);", "= unpack4(load_item(item, j0).z, load_item(item, j0).w);"],
  ],
  "no barriers": [["workgroupBarrier();", ""]],
};

/** GPU microseconds per dispatch of a pass of `repeats` dispatches, dispatch r running `ops[r % ops.length]`. */
async function timeOps(ctx: GpuContext, ops: Op[], repeats: number): Promise<number> {
  const pass: Op[] = Array.from({ length: repeats }, (_, r) => ops[r % ops.length]);
  const t: number[] = [];
  for (let r = 0; r < 7; r++) t.push((await ctx.timePasses([pass, pass]))[1]);
  return (median(t) / repeats) * 1000;
}

/** Multiply-adds of a causal chunk: each row's q k and p v over the keys it sees, every q head. */
function macs(numHeads: number, headDim: number, rows: number, posBase: number): number {
  return numHeads * headDim * 2 * (rows * posBase + (rows * (rows + 1)) / 2);
}

if (import.meta.main) {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  const quick = Deno.args.includes("--quick") || Deno.env.get("TEALGPU_BENCH_QUICK") === "1";
  const sweep = Deno.args.includes("--sweep");
  const probe = Deno.args.includes("--probe");
  const jsonAt = Deno.args.indexOf("--json");
  const layersAt = Deno.args.indexOf("--layers");
  const nLayers = layersAt >= 0 ? Number(Deno.args[layersAt + 1]) : quick ? 2 : 4;
  if (!(Number.isInteger(nLayers) && nLayers >= 1 && nLayers <= 32)) {
    throw new RangeError(`--layers must be an integer in 1..32, got ${Deno.args[layersAt + 1]}`);
  }
  const ctx = await createGpuContext();
  if (!ctx.hasTimestamps) throw new Error(`${ctx.adapterName} has no timestamp queries`);
  const wgLimit = ctx.device.limits.maxComputeWorkgroupStorageSize;
  console.log(`device: ${ctx.adapterName} (workgroup memory ${wgLimit} bytes)`);
  const [numHeads, numKv, headDim] = quick ? [8, 2, 64] : [32, 8, 128];
  const rowsAt = Deno.args.indexOf("--rows");
  const rows = rowsAt >= 0 ? Number(Deno.args[rowsAt + 1]) : quick ? 32 : 256;
  if (!(Number.isInteger(rows) && rows >= 1 && rows <= 4096)) {
    throw new RangeError(`--rows must be an integer in 1..4096, got ${Deno.args[rowsAt + 1]}`);
  }
  // contexts of the default chunk: 256, 1024, 4096 (quick: 32, 128, 320)
  const bases = (quick ? [32, 128, 320] : [256, 1024, 4096]).map((c) => Math.max(0, c - rows));
  const maxSeq = bases[bases.length - 1] + rows;
  const ldq = (numHeads + 2 * numKv) * headDim;
  const shape = { numHeads, numKv, headDim, maxSeq, ldq };
  const width = numHeads * headDim;
  // q: f32 of a few units (the kernel reads the q heads of each row); k and v: f16 uniform in [-1, 1)
  const q = new Float32Array(rows * ldq).map((_, i) => Math.sin(i * 0.37) * 2);
  const qkv = ctx.buffer(q.byteLength, "qkv", q);
  const words = numKv * maxSeq * headDim / 2;
  const caches = Array.from({ length: nLayers }, (_, l) => {
    const kc = ctx.buffer(words * 4, `k${l}`);
    const vc = ctx.buffer(words * 4, `v${l}`);
    ctx.run([
      fillOp(ctx, kc, { words, mode: "random", seed: 1 + 2 * l, scale: 1 }),
      fillOp(ctx, vc, { words, mode: "random", seed: 2 + 2 * l, scale: 1 }),
    ]);
    return { kc, vc };
  });
  const out = ctx.buffer(rows * width * 4, "out");
  const state = ctx.buffer(16, "state", new Uint32Array([0, 0, 0, 0]));
  // layer 0's caches in the reference's layout ([position][numKv * headDim]), for the check
  const toRows = async (b: GPUBuffer) => {
    const src = f16ToF32(new Uint16Array(await ctx.read(b)));
    const dst = new Float32Array(maxSeq * numKv * headDim);
    for (let h = 0; h < numKv; h++) {
      for (let j = 0; j < maxSeq; j++) {
        dst.set(
          src.subarray((h * maxSeq + j) * headDim, (h * maxSeq + j + 1) * headDim),
          (j * numKv + h) * headDim,
        );
      }
    }
    return dst;
  };
  const K = await toRows(caches[0].kc);
  const V = await toRows(caches[0].vc);

  const tiles: (PrefillTileWant | undefined)[] = [undefined];
  if (sweep) {
    // threads and queries a thread of the value step (the rows follow), keys a tile, score blocks
    for (const [threads, outQueries] of [[128, 8], [128, 4], [256, 4], [256, 8], [64, 8], [64, 4]]) {
      for (const keys of [8, 16, 32]) {
        for (const [bq, bk] of [[2, 2], [2, 4], [4, 4]]) {
          tiles.push({ threads, outQueries, keys, blockQueries: bq, blockKeys: bk });
        }
      }
    }
  }
  const results: { posBase: number; context: number; tile: PrefillTile; us: number; gmacs: number }[] = [];
  console.log(
    `${rows} rows at posBase, by tile (threads/queries a thread: rows x heads, keys a tile, score block; ` +
      `bytes; * the default): us a dispatch (GMAC/s)`,
  );
  for (const posBase of bases) {
    const at = { rows, posBase, fromState: false };
    const line: string[] = [];
    for (const want of tiles) {
      let tile: PrefillTile;
      try {
        tile = attnPrefillTile(shape, rows, wgLimit, want);
      } catch (e) {
        if (e instanceof RangeError) continue; // a sweep tile that does not fit this GPU
        throw e;
      }
      const ops = caches.map((c) => attentionOp(ctx, qkv, c.kc, c.vc, out, state, shape, at, 0, want));
      // the check: rows 0 and rows - 1 of layer 0 against the reference
      ctx.run([ops[0]]);
      const got = await ctx.readF32(out);
      const picked = [0, rows - 1];
      const qs = new Float32Array(2 * width);
      picked.forEach((r, i) => qs.set(q.subarray(r * ldq, r * ldq + width), i * width));
      const want2 = attention(qs, K, V, {
        rows: 2,
        positions: picked.map((r) => posBase + r),
        numHeads,
        numKv,
        headDim,
      });
      let num = 0;
      let den = 0;
      picked.forEach((r, i) => {
        for (let x = 0; x < width; x++) {
          num = Math.max(num, Math.abs(got[r * width + x] - want2[i * width + x]));
          den = Math.max(den, Math.abs(want2[i * width + x]));
        }
      });
      if (!(num / den < 2e-3)) {
        throw new Error(
          `wrong result at posBase ${posBase}, tile ${JSON.stringify(tile)}: rel err ${num / den}`,
        );
      }
      // about 20 ms of GPU time a pass
      const once = await timeOps(ctx, ops, nLayers);
      const repeats = Math.max(nLayers, Math.min(2000, Math.round(20000 / Math.max(once, 1))));
      const us = await timeOps(ctx, ops, repeats);
      const gmacs = macs(numHeads, headDim, rows, posBase) / us / 1000;
      results.push({
        posBase,
        context: posBase + rows,
        tile,
        us: Number(us.toFixed(2)),
        gmacs: Number(gmacs.toFixed(1)),
      });
      line.push(
        `  ${tile.threads}/${tile.outQueries}: ${tile.rows}x${tile.heads}, ${tile.keys}, ` +
          `${tile.blockQueries}x${tile.blockKeys}; ${tile.bytes}${want ? "" : " *"}: ${us.toFixed(1)} us ` +
          `(${gmacs.toFixed(0)})`,
      );
      releaseOps(ops);
    }
    console.log(`posBase ${posBase} (context ${posBase + rows}):\n${line.join("\n")}`);
  }
  const probes: { probe: string; posBase: number; us: number }[] = [];
  if (probe) {
    console.log("probe (default tile), us a dispatch:");
    for (const [name, edits] of [["as is", []] as [string, ProbeEdit[]], ...Object.entries(PROBES)]) {
      const pctx = ctx.withSources({ attention: probeSource("attention", edits) });
      const line: string[] = [];
      for (const posBase of bases) {
        const at = { rows, posBase, fromState: false };
        const ops = caches.map((c) => attentionOp(pctx, qkv, c.kc, c.vc, out, state, shape, at, 0));
        const once = await timeOps(pctx, ops, nLayers);
        const us = await timeOps(
          pctx,
          ops,
          Math.max(nLayers, Math.min(2000, Math.round(20000 / Math.max(once, 1)))),
        );
        probes.push({ probe: name, posBase, us: Number(us.toFixed(2)) });
        line.push(`posBase ${posBase} ${us.toFixed(1)}`);
        releaseOps(ops);
      }
      console.log(`  ${name.padEnd(16)} ${line.join("  ")}`);
    }
  }
  if (jsonAt >= 0) {
    Deno.writeTextFileSync(
      Deno.args[jsonAt + 1],
      JSON.stringify({
        device: ctx.adapterName,
        date: new Date().toISOString(),
        shape,
        rows,
        results,
        probes,
      }),
    );
  }
}
