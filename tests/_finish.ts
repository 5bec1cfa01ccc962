/**
 * Shared check of the GEMV split-K epilogues (gemv_finish.wgsl) for any weight format: each epilogue must give
 * the bits of the GEMV + reduce pass it replaces, leave every other output element alone, and leave its
 * tickets at 0. Every epilogue run starts from poisoned partials, so a finisher that reads a split before its
 * workgroup wrote it reads poison, not the reference run's value.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import {
  type GemvFinish,
  gemvOp,
  gemvSplits,
  gemvTileN,
  gemvTiles,
  type GemvTune,
  type Matrix,
  REDUCE,
  reduceOp,
} from "../src/gpu/kernels.ts";
import type { GpuContext, Op } from "../src/gpu/context.ts";
import { POISON, poisoned, randn, relErr, rng } from "./_gpu.ts";

/** Words of the counters before the tickets (the sparse kept-channel counters of up to three segments). */
const TICKETS = 4;

export async function checkGemvFinish(
  ctx: GpuContext,
  m: Matrix,
  x: Float32Array,
  o: { sparse: boolean; thresholds?: number[]; tune?: GemvTune; label: string },
): Promise<void> {
  const { tune, label } = o;
  const tiles = gemvTiles(m, tune, o.sparse);
  const tileN = gemvTileN(m, tune, o.sparse);
  const sp = {
    thresholds: ctx.buffer(16, "t", new Float32Array([...(o.thresholds ?? []), 0, 0, 0, 0].slice(0, 4))),
    counters: ctx.buffer((TICKETS + tiles) * 4, "c"),
    tickets: TICKETS,
  };
  const xb = ctx.buffer(x.byteLength, "x", x);
  const splits = tune ? Math.ceil(m.K / tune.KCHUNK) : gemvSplits(m.K, m.N);
  const partials = poisoned(ctx, splits * m.N);
  const poison = new Uint32Array(splits * m.N).fill(POISON);
  /** The GEMV with an epilogue (or none), on partials poisoned first. */
  const gemv = (finish?: GemvFinish, state?: GPUBuffer): Op[] => {
    if (finish) ctx.write(partials, poison);
    return [gemvOp(ctx, m, xb, partials, sp, { sparse: o.sparse, counter: 0, tune, finish, state })];
  };
  const reduce = (out: GPUBuffer, mode: number, extra: Partial<Parameters<typeof reduceOp>[3]> = {}) =>
    reduceOp(ctx, partials, out, { n: m.N, splits, ncols: m.N, mode, ...extra });
  const bits = (b: Float32Array) => Array.from(new Uint32Array(b.buffer, b.byteOffset, b.length));

  // store, at an offset; then again (the second run needs the first to have put its tickets back)
  const want = poisoned(ctx, m.N);
  ctx.run([...gemv(), reduce(want, REDUCE.store)]);
  const wantY = await ctx.readF32(want);
  for (const run of [1, 2]) {
    const out = poisoned(ctx, m.N + 8);
    ctx.run(gemv({ kind: "store", out, outOffset: 3 }));
    const got = await ctx.readF32(out);
    assertEquals(bits(got.subarray(3, 3 + m.N)), bits(wantY), `${label}: store, run ${run}`);
    for (const i of [0, 1, 2, 3 + m.N, m.N + 7]) {
      assert(
        new Uint32Array(got.buffer)[i] === POISON,
        `${label}: store wrote element ${i} outside its range`,
      );
    }
  }
  // after EOS (state[3] set) the GEMV writes nothing and takes no ticket
  const eosOut = poisoned(ctx, m.N);
  ctx.run(gemv({ kind: "store", out: eosOut }, ctx.buffer(16, "state", new Uint32Array([0, 0, 0, 1]))));
  assert(
    (await ctx.readU32(eosOut)).every((v) => v === POISON),
    `${label}: a GEMV past EOS wrote its output`,
  );

  // residual add: the same bits as the reduce pass; one sum of squares per column tile, nothing past them
  const resid = randn(m.N, rng(m.N));
  const wantSum = ctx.buffer(resid.byteLength, "r", resid);
  ctx.run([...gemv(), reduce(wantSum, REDUCE.add, { ss: poisoned(ctx, Math.ceil(m.N / 256)) })]);
  const sum = ctx.buffer(resid.byteLength, "r", resid);
  const ss = poisoned(ctx, tiles + 1);
  ctx.run(gemv({ kind: "add", out: sum, ss }));
  const newResid = await ctx.readF32(wantSum);
  assertEquals(bits(await ctx.readF32(sum)), bits(newResid), `${label}: residual add`);
  const wantSs: number[] = [];
  let col = 0;
  for (const s of m.segments) {
    for (let c0 = 0; c0 < s.len; c0 += tileN) {
      let q = 0;
      for (let c = c0; c < Math.min(s.len, c0 + tileN); c++) q += newResid[col + c] ** 2;
      wantSs.push(q);
    }
    col += s.len;
  }
  const gotSs = await ctx.readF32(ss, tiles + 1);
  assert(relErr(gotSs.subarray(0, tiles), wantSs) < 1e-5, `${label}: sums of squares`);
  assert(new Uint32Array(gotSs.buffer)[tiles] === POISON, `${label}: a sum of squares past the tiles`);

  // SwiGLU of a gate|up matrix
  if (m.segments.length === 2 && m.segments[0].len === m.segments[1].len) {
    const I = m.segments[0].len;
    const wantAct = poisoned(ctx, I);
    ctx.run([...gemv(), reduce(wantAct, REDUCE.swiglu, { n: I, offB: m.segments[1].out })]);
    const act = poisoned(ctx, I + 2);
    ctx.run(gemv({ kind: "swiglu", out: act, outOffset: 1 }));
    const gotAct = await ctx.readF32(act);
    assertEquals(bits(gotAct.subarray(1, 1 + I)), bits(await ctx.readF32(wantAct)), `${label}: swiglu`);
    assert(new Uint32Array(gotAct.buffer)[0] === POISON && new Uint32Array(gotAct.buffer)[I + 1] === POISON);
  }
  const left = await ctx.readU32(sp.counters, TICKETS + tiles);
  assertEquals(Array.from(left.subarray(TICKETS)), new Array(tiles).fill(0), `${label}: tickets left set`);
}
