/**
 * Would a column-panel weight layout stream faster than the row layout the GEMVs read today?
 *
 * Today a matrix is stored transposed, [K][stride]: the weights one input channel meets are one row, and a GEMV
 * workgroup (a tile of TILE_N columns, a chunk of K) reads a 128–512-byte piece of each row of its chunk, the
 * pieces a whole row (8–56 KB) apart. In a panel layout [N / TILE_N][K][TILE_N] (quantized: the codes so, and
 * the group metadata in panels of its own after them) the same workgroup reads one contiguous block, and a
 * dropped channel is still one contiguous run that is never read.
 *
 * This probe times the runtime's own GEMV variants (gemvTune) at the Llama-3-8B decode shapes, f16, int8 and
 * int4, dense and sparse, as they are and with their addressing edited to the panel layout (bench/probe.ts
 * edits; the data is random either way, so only the time counts), over 1.6 GB of weight copies in rotation so
 * that L2 holds none of them.
 *
 * `deno run -A bench/layout_probe.ts [--quick] [--json FILE]`
 * @module
 */
import { createGpuContext } from "../src/gpu/context.ts";
import { GEMV_HALF, gemvTune } from "../src/gpu/kernels.ts";
import { bytesPerWeight, type WeightFormat } from "../src/gpu/quant.ts";
import { type ProbeEdit, probeSource } from "../src/bench/probe.ts";
import { matrices, timeGemv } from "./gemv_q_bench.ts";

/** gemv.wgsl reading [panel][K][TILE_N]: a thread's 8 columns at c * 8 of its tile's panel row. */
export const PANEL_F16: ProbeEdit[] = [
  [
    "let v_col = (seg.base + col) / 8u;",
    "let v_col = (seg.base + (tile - seg.tile0) * p.K * TILE_N) / 8u + c;",
  ],
  ["let v_stride = seg.stride / 8u;", "let v_stride = TILE_N / 8u;"],
];

/**
 * gemv_q.wgsl reading codes [panel][K][TPR vec4] and then metadata [panel][K][MWX words] (the tile's groups;
 * at least one word a row).
 */
export const PANEL_Q: ProbeEdit[] = [
  [
    "let vs = seg.stride / VEC;                     // VEC-word units per row",
    "let vs = TILE_N * BITS / (32u * VEC);\n  let pan = tile - seg.tile0;\n  let npan = (seg.len + TILE_N - 1u) / TILE_N;\n" +
    "  let MWX = max(1u, select(TILE_N / GROUP, TILE_N / GROUP / 2u, BITS == 8u));",
  ],
  [
    "let vc = (seg.base + col * BITS / 32u) / VEC;  // this thread's codes in row 0",
    "let vc = seg.base / VEC + pan * p.K * vs + c;",
  ],
  [
    "var mo = seg.base + seg.scale0 + g;            // this thread's metadata word in row 0",
    "let mo = seg.base + npan * p.K * vs * VEC + pan * p.K * MWX + min((c * COLS) / GROUP / select(1u, 2u, BITS == 8u), MWX - 1u);",
  ],
  ["if (BITS == 8u) { mo = seg.base + seg.scale0 + g / 2u; }", ""],
  ["mo, seg.stride,", "mo, MWX,"],
];

/** The decode GEMVs of a Llama-3-8B layer, N x K (q|k|v and gate|up as one segment). */
const SHAPES: [string, number, number][] = [
  ["qkv", 6144, 4096],
  ["o", 4096, 4096],
  ["gateup", 28672, 4096],
  ["down", 4096, 14336],
];

if (import.meta.main) {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
  const quick = Deno.args.includes("--quick");
  const jsonAt = Deno.args.indexOf("--json");
  // the panel edits are of the f32 kernels (gemv.wgsl, gemv_q.wgsl), so those run, not the packed-f16 ones
  GEMV_HALF.f16 = GEMV_HALF.quant = false;
  const ctx = await createGpuContext();
  console.log(`device: ${ctx.adapterName}`);
  const sources = { gemv: probeSource("gemv", PANEL_F16), gemv_q: probeSource("gemv_q", PANEL_Q) };
  const panel = ctx.withSources(sources);
  const levels = [0, 0.5, 0.7];
  const rows: Record<string, number | string>[] = [];
  console.log("shape   format  layout  " + levels.map((l) => `${l}: us (GB/s)`.padStart(16)).join(" "));
  for (const [name, N0, K0] of SHAPES) {
    const [N, K] = quick ? [N0 / 16, K0 / 16] : [N0, K0];
    for (const format of ["f16", "int8", "int4"] as WeightFormat[]) {
      const bpw = bytesPerWeight(format, 128);
      const copies = Math.max(2, Math.ceil((quick ? 4e6 : 1.6e9) / (N * K * bpw)));
      const mats = matrices(ctx, format, N, K, copies);
      for (const [layout, c] of [["rows", ctx], ["panels", panel]] as const) {
        const cells: string[] = [];
        for (const s of levels) {
          const us = await timeGemv(c, mats, s, gemvTune(K, N, format, s > 0), quick ? 4 : 200);
          const gbs = (N * K * (1 - s) * bpw) / (us * 1e-6) / 1e9;
          rows.push({
            name,
            N,
            K,
            format,
            layout,
            sparsity: s,
            us: Number(us.toFixed(2)),
            gbs: Math.round(gbs),
          });
          cells.push(`${us.toFixed(1)} (${gbs.toFixed(0)})`.padStart(16));
        }
        console.log(`${name.padEnd(7)} ${format.padEnd(7)} ${layout.padEnd(7)} ${cells.join(" ")}`);
      }
      for (const m of mats) {
        m.buffer.destroy();
        m.scales.destroy();
      }
    }
  }
  if (jsonAt >= 0) {
    Deno.writeTextFileSync(
      Deno.args[jsonAt + 1],
      JSON.stringify({ device: ctx.adapterName, date: new Date().toISOString(), rows }),
    );
  }
  ctx.destroy();
}
