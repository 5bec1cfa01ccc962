/**
 * Every WGSL kernel against the CPU reference on random inputs at awkward sizes, outputs poisoned first.
 */
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import {
  attentionOp,
  type AttentionShape,
  ATTN,
  ATTN_PRELOAD,
  attnDecodeOps,
  attnHeads,
  attnHeadsAt,
  attnPartFloats,
  attnSpan,
  embedOp,
  GEMV_HALF,
  GEMV_SCAN,
  gemvOp,
  gemvRowsOps,
  gemvRowsPartialBytes,
  gemvSplits,
  type GemvTune,
  gemvTune,
  layoutSegments,
  MATMUL_WIDE,
  matmulHalfOverrides,
  matmulOps,
  matmulWideRows,
  type Matrix,
  prefetchRange,
  REDUCE,
  reduceOp,
  rmsNormOp,
  ropeOp,
  sampleOp,
  SAMPLER_PARAMS_BYTES,
  splitKLayout,
  swigluOp,
  writeSamplerParams,
} from "../src/gpu/kernels.ts";
import { GpuContext, GpuError } from "../src/gpu/context.ts";
import { f16ToF32, f32ToF16Bits } from "../src/model/dtype.ts";
import { transposeToF16, WeightPacker } from "../src/model/weights.ts";
import { applyRope, attention, matmulT, rmsNorm, silu } from "../src/model/reference.ts";
import { sampleToken } from "../src/generate/sampler.ts";
import {
  f16round,
  gpu,
  POISON,
  poisoned,
  PREFETCH_CASES,
  type PrefetchCase,
  prefetchChecksums,
  randn,
  relErr,
  rng,
} from "./_gpu.ts";
import { checkGemvFinish } from "./_finish.ts";
import { layoutQuantSegments, QUANT_SCHEMES } from "../src/gpu/quant.ts";

/** Uploads weights W_s ([len_s][K] each) as one fused matrix with optional per-channel scales. */
function makeMatrix(
  ctx: GpuContext,
  K: number,
  ws: Float32Array[],
  lens: number[],
  scales?: Float32Array,
): Matrix {
  const { segments, halves } = layoutSegments(K, lens, lens.map((_, i) => i));
  const buffer = ctx.buffer(halves * 2, "w");
  segments.forEach((s, i) => ctx.write(buffer, transposeToF16(ws[i], K, 0, s.len, s.stride), s.base * 2));
  const sc = scales ?? new Float32Array(K * lens.length).fill(1);
  return {
    K,
    N: lens.reduce((a, b) => a + b, 0),
    segments,
    buffer,
    scales: ctx.buffer(sc.byteLength, "scales", sc),
  };
}

/** CPU oracle of a (masked) fused projection: y = concat_s mask_s(x) . W_s^T. */
function fusedRef(
  x: Float32Array,
  rows: number,
  K: number,
  ws: Float32Array[],
  lens: number[],
  thr: number[] | null,
  scales?: Float32Array,
): { y: Float32Array; active: number[] } {
  const N = lens.reduce((a, b) => a + b, 0);
  const y = new Float32Array(rows * N);
  const active = lens.map(() => 0);
  let out = 0;
  lens.forEach((len, s) => {
    const xm = Float32Array.from(x);
    for (let r = 0; r < rows; r++) {
      for (let k = 0; k < K; k++) {
        const keep = thr === null || Math.abs(xm[r * K + k]) * (scales ? scales[s * K + k] : 1) > thr[s];
        if (keep) active[s]++;
        else xm[r * K + k] = 0;
      }
    }
    const ys = matmulT(xm, f16round(ws[s]), rows, K, len);
    for (let r = 0; r < rows; r++) for (let n = 0; n < len; n++) y[r * N + out + n] = ys[r * len + n];
    out += len;
  });
  return { y, active };
}

/** Threshold that drops about `frac` of |x| (a quantile). */
function quantile(x: Float32Array, frac: number): number {
  const a = Array.from(x, Math.abs).sort((p, q) => p - q);
  if (frac <= 0) return -1;
  if (frac >= 1) return a[a.length - 1] + 1;
  return a[Math.floor(frac * a.length)];
}

Deno.test("gemv + reduce: dense fused q|k|v with bias equals the reference at awkward sizes (EARLY too)", async () => {
  const ctx = await gpu();
  const r = rng(1);
  for (
    const [K, lens] of [[172, [64, 32, 32]], [1100, [200, 72, 72]], [7, [8]], [8200, [24, 16]], [
      1080,
      [136, 24],
    ]] as [
      number,
      number[],
    ][]
  ) {
    const ws = lens.map((n) => randn(n * K, r, 0.5));
    const m = makeMatrix(ctx, K, ws, lens);
    const x = randn(K, r);
    const bias = randn(m.N, r);
    const xb = ctx.buffer(K * 4, "x", x);
    const want = fusedRef(x, 1, K, ws, lens, null).y.map((v, i) => v + bias[i]);
    // the default variant, and eight rows in flight per thread with shorter and longer chunks
    // EARLY (the first trip's loads before the staging) adds the same rows in the same order: the same bits.
    // K 1080 in chunks of 512 leaves 56 rows in its last split, so only the first row groups take it there.
    for (
      const tune of [
        undefined,
        { TPR: 16, KCHUNK: 256, UNROLL: 8 },
        { TPR: 8, KCHUNK: 1024, UNROLL: 8 },
        { TPR: 16, KCHUNK: 512, UNROLL: 4 },
        { TPR: 8, KCHUNK: 2048, UNROLL: 8 },
      ]
    ) {
      let plain: Float32Array | null = null;
      for (const [early, PIPE] of [[false, false], [true, false], [false, true], [true, true]]) {
        const splits = tune ? Math.ceil(K / tune.KCHUNK) : gemvSplits(K, m.N);
        const partials = poisoned(ctx, splits * m.N);
        const out = poisoned(ctx, m.N);
        const sp = { thresholds: ctx.buffer(16, "t", new Float32Array(4)), counters: ctx.buffer(16, "c") };
        ctx.run([
          gemvOp(ctx, m, xb, partials, sp, {
            sparse: false,
            tune: { ...(tune ?? gemvTune(K, m.N)), PIPE },
            early,
          }),
          reduceOp(ctx, partials, out, {
            n: m.N,
            splits,
            ncols: m.N,
            mode: REDUCE.store,
            bias: ctx.buffer(bias.byteLength, "b", bias),
          }),
        ]);
        const got = await ctx.readF32(out);
        const what = `K=${K} ${JSON.stringify(tune)} early ${early} pipelined ${PIPE}`;
        assert(relErr(got, want) < 1e-4, `${what}: rel err ${relErr(got, want)}`);
        if (plain) assertEquals(got, plain, what);
        plain = got;
      }
    }
  }
});

Deno.test("gemv: sparse equals dense on the masked input; counters match a CPU count", async () => {
  const ctx = await gpu();
  const r = rng(2);
  // three segments (q|k|v-like), and one segment wide enough (>= 16384 columns) for the long K chunks
  for (const [K, lens] of [[1100, [200, 72, 72]], [300, [16390]]] as [number, number[]][]) {
    const ws = lens.map((n) => randn(n * K, r, 0.5));
    const scales = randn(K * lens.length, r).map((v) => 0.5 + Math.abs(v));
    const m = makeMatrix(ctx, K, ws, lens, scales);
    // the default variant, and other workgroup sizes and column groups the benchmarks sweep
    const tunes = [
      undefined,
      { TPR: 16, KCHUNK: 256, WG: 128 },
      { TPR: 32, KCHUNK: 512, WG: 128 },
      { TPR: 8, KCHUNK: 256, WG: 256, UNROLL: 8 },
      { TPR: 16, KCHUNK: 1024, WG: 256, UNROLL: 8 },
      // software-pipelined row walks
      { TPR: 16, KCHUNK: 1024, WG: 256, UNROLL: 8, PIPE: true },
      { TPR: 32, KCHUNK: 512, WG: 128, UNROLL: 4, PIPE: true },
      // the longest chunk gemvChunk gives: compacted indices into values staged in place
      { TPR: 16, KCHUNK: 2048, WG: 256, UNROLL: 8 },
      // the widest column groups Forward.gemvTunes allows (512 columns a tile)
      { TPR: 64, KCHUNK: 1024, WG: 256, UNROLL: 8 },
    ];
    for (const [f, frac] of [0, 0.3, 0.5, 0.9, 1, 0.2, 0, 0.6, 0.4].entries()) {
      const tune = tunes[f % tunes.length];
      const splits = tune ? Math.ceil(K / tune.KCHUNK) : gemvSplits(K, m.N);
      const x = randn(K, r);
      const thr = [quantile(x, frac), quantile(x, Math.min(1, frac + 0.1)), quantile(x, frac / 2)];
      const sp = { thresholds: ctx.buffer(12, "t", new Float32Array(thr)), counters: ctx.buffer(12, "c") };
      const partials = poisoned(ctx, splits * m.N);
      const out = poisoned(ctx, m.N);
      ctx.run([
        gemvOp(ctx, m, ctx.buffer(K * 4, "x", x), partials, sp, {
          sparse: true,
          counter: 0,
          tune,
        }),
        reduceOp(ctx, partials, out, {
          n: m.N,
          splits,
          ncols: m.N,
          mode: REDUCE.store,
        }),
      ]);
      const got = await ctx.readF32(out);
      const want = fusedRef(x, 1, K, ws, lens, thr, scales);
      const scale = Math.max(1, ...Array.from(want.y, Math.abs));
      const err = got.reduce((a, v, i) => Math.max(a, Math.abs(v - want.y[i])), 0) / scale;
      assert(err < 1e-4, `K=${K}, sparsity ${frac}: err ${err}`);
      assertEquals(
        Array.from(await ctx.readU32(sp.counters, lens.length)),
        want.active,
        `K=${K}: counters at ${frac}`,
      );
    }
  }
});

Deno.test("gemv_h (GEMV_HALF.f16): packed-f16 rows equal the f32 kernel where f16 is exact, and are within f16 rounding on random data, dense (EARLY, PIPE) and sparse", async () => {
  const ctx = await gpu();
  assert(ctx.hasF16, "the test adapter (lavapipe) offers shader-f16");
  const r = rng(17);
  const saved = GEMV_HALF.f16;
  // weights k/64 (|w| <= 1, exact in f16) and inputs +-1/4, +-1/8: every product and every trip's sum (up to 8
  // rows) is exact in f16, so the packed-f16 rows give the f32 kernel's sums
  const signs = [0.25, -0.25, 0.125, -0.125];
  const run = async (m: Matrix, x: GPUBuffer, thr: number[], sparse: boolean, tune?: GemvTune) => {
    const splits = tune?.KCHUNK ? Math.ceil(m.K / tune.KCHUNK) : gemvSplits(m.K, m.N);
    const sp = { thresholds: ctx.buffer(12, "t", new Float32Array(thr)), counters: ctx.buffer(12, "c") };
    const partials = poisoned(ctx, splits * m.N);
    const out = poisoned(ctx, m.N);
    ctx.run([
      gemvOp(ctx, m, x, partials, sp, { sparse, counter: 0, tune, early: !sparse }),
      reduceOp(ctx, partials, out, { n: m.N, splits, ncols: m.N, mode: REDUCE.store }),
    ]);
    return { y: await ctx.readF32(out), counters: Array.from(await ctx.readU32(sp.counters, 3)) };
  };
  try {
    for (const [K, lens] of [[1100, [200, 72, 72]], [300, [16390]], [7, [9]]] as [number, number[]][]) {
      const scales = randn(K * lens.length, r).map((v) => 0.5 + Math.abs(v));
      const exactW = lens.map((n) =>
        Float32Array.from({ length: n * K }, () => Math.floor(r() * 129 - 64) / 64)
      );
      const em = makeMatrix(ctx, K, exactW, lens, scales);
      const xe = Float32Array.from({ length: K }, () => signs[Math.floor(r() * 4)]);
      const ws = lens.map((n) => randn(n * K, r, 0.5));
      const m = makeMatrix(ctx, K, ws, lens, scales);
      const x = randn(K, r);
      const [xeb, xb] = [ctx.buffer(K * 4, "x", xe), ctx.buffer(K * 4, "x", x)];
      for (
        const tune of [
          undefined,
          { TPR: 16, KCHUNK: 256, WG: 128, UNROLL: 8 },
          { TPR: 32, KCHUNK: 512, WG: 256, UNROLL: 4, PIPE: true },
        ]
      ) {
        for (const sparse of [false, true]) {
          const what = `K=${K} ${JSON.stringify(tune)} sparse=${sparse}`;
          const thrE = sparse ? [0.2, 0.2, 0.2] : [0, 0, 0]; // drops every +-1/8 (scales >= 0.5)
          const thr = sparse ? [quantile(x, 0.5), quantile(x, 0.6), quantile(x, 0.3)] : [0, 0, 0];
          GEMV_HALF.f16 = false;
          const f32e = await run(em, xeb, thrE, sparse, tune);
          GEMV_HALF.f16 = true;
          const halfE = await run(em, xeb, thrE, sparse, tune);
          const halfR = await run(m, xb, thr, sparse, tune);
          assertEquals(halfE.y, f32e.y, `${what}: exact case, f16 against f32`);
          const wantE = fusedRef(xe, 1, K, exactW, lens, sparse ? thrE : null, scales);
          assertEquals(Array.from(halfE.y), Array.from(wantE.y), `${what}: exact case against the CPU`);
          if (sparse) assertEquals(halfE.counters.slice(0, lens.length), wantE.active, `${what}: counters`);
          const want = fusedRef(x, 1, K, ws, lens, sparse ? thr : null, scales).y;
          const err = relErr(halfR.y, want);
          assert(err < 3e-3, `${what}: relative error ${err}`);
        }
      }
    }
  } finally {
    GEMV_HALF.f16 = saved;
  }
});

Deno.test("gemv epilogues (store, residual add, SwiGLU) give the reduce pass's bits, dense and sparse", async () => {
  const ctx = await gpu();
  const r = rng(21);
  const cases: [number, number[], GemvTune | undefined][] = [
    [1100, [200, 72, 72], undefined], // three segments, tiles that end mid-segment
    [530, [172, 172], { TPR: 8, KCHUNK: 256, UNROLL: 8 }], // gate|up, a short chunk: 3 splits
    [300, [16390], undefined], // wide: 32 threads per column group, one split
    [8300, [90], { TPR: 4, KCHUNK: 512 }], // long: 17 splits into one ragged tile
  ];
  for (const [K, lens, tune] of cases) {
    const ws = lens.map((n) => randn(n * K, r, 0.5));
    const m = makeMatrix(ctx, K, ws, lens);
    const x = randn(K, r);
    const label = `K=${K} [${lens}] ${JSON.stringify(tune)}`;
    await checkGemvFinish(ctx, m, x, { sparse: false, tune, label });
    const thr = [quantile(x, 0.5), quantile(x, 0.3), quantile(x, 0.7)];
    await checkGemvFinish(ctx, m, x, { sparse: true, thresholds: thr, tune, label: `${label} sparse` });
  }
});

Deno.test("reduce: residual add and SwiGLU epilogues", async () => {
  const ctx = await gpu();
  const r = rng(3);
  const K = 530;
  const I = 172;
  const ws = [randn(I * K, r, 0.3), randn(I * K, r, 0.3)];
  const m = makeMatrix(ctx, K, ws, [I, I]);
  const x = randn(K, r);
  const sp = { thresholds: ctx.buffer(16, "t"), counters: ctx.buffer(16, "c") };
  const partials = poisoned(ctx, gemvSplits(K, m.N) * m.N);
  const act = poisoned(ctx, I);
  const resid = randn(2 * I, r);
  const sum = ctx.buffer(resid.byteLength, "resid", resid);
  const ss = poisoned(ctx, 2);
  ctx.run([
    gemvOp(ctx, m, ctx.buffer(K * 4, "x", x), partials, sp, { sparse: false }),
    reduceOp(ctx, partials, act, { n: I, splits: 2, ncols: m.N, mode: REDUCE.swiglu, offB: I }),
    reduceOp(ctx, partials, sum, { n: 2 * I, splits: 2, ncols: m.N, mode: REDUCE.add, ss }),
  ]);
  const y = fusedRef(x, 1, K, ws, [I, I], null).y;
  const wantAct = new Float32Array(I).map((_, i) => silu(y[i]) * y[I + i]);
  assert(relErr(await ctx.readF32(act), wantAct) < 1e-4);
  const newResid = resid.map((v, i) => v + y[i]);
  assert(relErr(await ctx.readF32(sum), newResid) < 1e-4);
  // the residual add leaves each workgroup's sum of squares for the next fused RMSNorm
  const wantSs = [0, 1].map((w) => newResid.slice(w * 256, (w + 1) * 256).reduce((a, v) => a + v * v, 0));
  assert(relErr(await ctx.readF32(ss, 2), wantSs) < 1e-5);
});

Deno.test("reduce adds the splits in split order (the sums of f32 adds a split at a time, bit for bit), 1 to 33 splits", async () => {
  const ctx = await gpu();
  const r = rng(33);
  // fewer than a batch of sixteen loads, one, one and a part, two and a part; 300 outputs over 310 columns
  for (const splits of [1, 3, 5, 14, 16, 17, 21, 33]) {
    const n = 300;
    const np = 310;
    const parts = randn(splits * np, r);
    const out = poisoned(ctx, n + 8);
    ctx.run([
      reduceOp(ctx, ctx.buffer(parts.byteLength, "parts", parts), out, {
        n,
        splits,
        ncols: np,
        mode: REDUCE.store,
      }),
    ]);
    const want = new Float32Array(n);
    for (let o = 0; o < n; o++) {
      let sum = 0;
      for (let s = 0; s < splits; s++) sum = Math.fround(sum + parts[s * np + o]);
      want[o] = sum;
    }
    const got = await ctx.readF32(out);
    assertEquals(got.subarray(0, n), want, `${splits} splits`);
    assert(
      new Uint32Array(got.buffer, n * 4).every((w) => w === POISON),
      `${splits} splits: past the outputs`,
    );
  }
});

Deno.test("reduce L2 prefetch: the pass's bits and sums of squares unchanged, each workgroup's slice read (XOR checksums), nothing else written", async () => {
  const ctx = await gpu();
  const r = rng(24);
  // random words to prefetch (never all zero: a slice read short or long changes its XOR)
  const words = new Uint32Array(4 * 16000).map(() => Math.floor(r() * 2 ** 32));
  const preBuf = ctx.buffer(words.byteLength, "pre", words);
  const gap = 5; // floats between the pass's output and the checksums, which nothing writes
  const maxWg = ATTN.PREFETCH_WG;
  const splits = 3;
  // [mode, n, ncols, srcOffset, offB, outOffset]: ragged last workgroups, outputs and columns not from 0
  const cases: [number, number, number, number, number, number][] = [
    [REDUCE.add, 700, 730, 17, 0, 5], // 3 workgroups of residual add, each with its sum of squares
    [REDUCE.swiglu, 300, 610, 3, 305, 2], // gate at columns 3.., up at 305..
    [REDUCE.store, 260, 270, 9, 0, 11], // with a bias
  ];
  for (const [mode, n, ncols, srcOffset, offB, outOffset] of cases) {
    const parts = randn(splits * ncols, r);
    const partials = ctx.buffer(parts.byteLength, "partials", parts);
    const total = (col: number) => {
      let s = 0;
      for (let k = 0; k < splits; k++) s += parts[k * ncols + col];
      return s;
    };
    const bias = randn(n, r);
    const resid = randn(n, r);
    const nwg = Math.ceil(n / 256);
    const end = outOffset + n; // the pass's output is out[outOffset, end)
    const outFloats = end + gap + 2 * maxWg + 3;
    const run = async (prefetch?: PrefetchCase) => {
      const init = new Uint32Array(outFloats).fill(POISON);
      if (mode === REDUCE.add) init.set(new Uint32Array(resid.buffer), outOffset);
      const out = ctx.buffer(init.byteLength, "out", init);
      const ss = poisoned(ctx, nwg + 3);
      ctx.run([
        reduceOp(ctx, partials, out, {
          n,
          splits,
          ncols,
          mode,
          srcOffset,
          offB,
          outOffset,
          bias: mode === REDUCE.store ? ctx.buffer(bias.byteLength, "bias", bias) : null,
          ss: mode === REDUCE.add ? ss : undefined,
          prefetch: prefetch && { ...prefetch, buffer: preBuf, check: end + gap },
        }),
      ]);
      return { out: await ctx.readU32(out), ss: await ctx.readU32(ss) };
    };
    // without a prefetch: the CPU reference
    const base = await run();
    const y = new Float32Array(base.out.buffer, outOffset * 4, n);
    const want = new Float32Array(n).map((_, o) => {
      const v = total(srcOffset + o);
      if (mode === REDUCE.add) return resid[o] + v;
      if (mode === REDUCE.swiglu) return silu(v) * total(offB + o);
      return v + bias[o];
    });
    assert(relErr(y, want) < 1e-5, `mode ${mode}: rel err ${relErr(y, want)}`);
    if (mode === REDUCE.add) {
      const ss = new Float32Array(base.ss.buffer, 0, nwg);
      const wantSs = Array.from(
        { length: nwg },
        (_, w) => want.slice(w * 256, (w + 1) * 256).reduce((a, v) => a + v * v, 0),
      );
      assert(relErr(ss, wantSs) < 1e-5, `mode ${mode}: sums of squares`);
    }
    for (const pre of PREFETCH_CASES) {
      const what = `mode ${mode}, prefetch ${JSON.stringify(pre)}`;
      const got = await run(pre);
      // (a) the outputs and the sums of squares, bit for bit (the ss past nwg stay poisoned: no prefetch
      // workgroup writes one)
      assertEquals(got.out.subarray(outOffset, end), base.out.subarray(outOffset, end), `output, ${what}`);
      assertEquals(got.ss, base.ss, `sums of squares, ${what}`);
      assert(got.ss.subarray(mode === REDUCE.add ? nwg : 0).every((w) => w === POISON), `ss past, ${what}`);
      // (b) workgroup i's checksum: the XOR of its slice as two exact 16-bit halves
      const wg = pre.workgroups ?? ATTN.PREFETCH_WG;
      const wantCheck = prefetchChecksums(words, pre, wg);
      assertEquals(
        new Float32Array(got.out.buffer, (end + gap) * 4, 2 * wg),
        wantCheck,
        `checksums, ${what}`,
      );
      // (c) the floats before the output, between it and the checksums and after them stay poisoned
      const around = [
        ...got.out.subarray(0, outOffset),
        ...got.out.subarray(end, end + gap),
        ...got.out.subarray(end + gap + 2 * wg),
      ];
      assertEquals(around.length, outOffset + gap + 2 * (maxWg - wg) + 3);
      assert(around.every((w) => w === POISON), `words around the output and checksums written, ${what}`);
    }
  }
  // checksums over the output, or past the buffer: errors before any dispatch
  const out = poisoned(ctx, 400);
  const partials = poisoned(ctx, 400);
  const call = (check: number) =>
    reduceOp(ctx, partials, out, {
      n: 300,
      splits: 1,
      ncols: 300,
      mode: REDUCE.store,
      outOffset: 20,
      prefetch: { buffer: preBuf, startVec4: 0, countVec4: 8, workgroups: 4, check },
    });
  throws(() => call(313), /overlap the output \[20, 320\)/);
  throws(() => call(19), /overlap/);
  throws(() => call(393), /run past the output's 400/);
  call(320);
  call(12);
});

Deno.test("gemv: fused RMSNorm and fused SwiGLU inputs, dense and sparse", async () => {
  const ctx = await gpu();
  const r = rng(7);
  const K = 530;
  const N = 150;
  const W = randn(N * K, r, 0.4);
  const m = makeMatrix(ctx, K, [W], [N]);
  // RMSNorm: sum of squares arrives as three partial sums
  const x = randn(K, r, 2);
  const normW = randn(K, r);
  const total = x.reduce((a, v) => a + v * v, 0);
  const ss = ctx.buffer(12, "ss", new Float32Array([total * 0.2, total * 0.5, total * 0.3]));
  const xn = rmsNorm(x, normW, 1e-5);
  for (const sparse of [false, true]) {
    const thr = quantile(xn, 0.4);
    const sp = { thresholds: ctx.buffer(16, "t", new Float32Array([thr])), counters: ctx.buffer(16, "c") };
    const partials = poisoned(ctx, gemvSplits(K, N) * N);
    const out = poisoned(ctx, N);
    ctx.run([
      gemvOp(ctx, m, ctx.buffer(K * 4, "x", x), partials, sp, {
        sparse,
        input: { kind: "rmsnorm", weight: ctx.buffer(K * 4, "nw", normW), ss, nss: 3, eps: 1e-5 },
      }),
      reduceOp(ctx, partials, out, { n: N, splits: gemvSplits(K, m.N), ncols: N, mode: REDUCE.store }),
    ]);
    const want = fusedRef(xn, 1, K, [W], [N], sparse ? [thr] : null).y;
    assert(relErr(await ctx.readF32(out), want) < 1e-4, `rmsnorm input, sparse=${sparse}`);
  }
  // SwiGLU: gate|up split partials [3][2K]
  const splits = 3;
  const gu = randn(splits * 2 * K, r, 1.5);
  const act = new Float32Array(K).map((_, k) => {
    let g = 0;
    let u = 0;
    for (let s = 0; s < splits; s++) {
      g += gu[s * 2 * K + k];
      u += gu[s * 2 * K + K + k];
    }
    return silu(g) * u;
  });
  for (const sparse of [false, true]) {
    const thr = quantile(act, 0.6);
    const sp = { thresholds: ctx.buffer(16, "t", new Float32Array([thr])), counters: ctx.buffer(16, "c") };
    const partials = poisoned(ctx, gemvSplits(K, N) * N);
    const out = poisoned(ctx, N);
    ctx.run([
      gemvOp(ctx, m, ctx.scratch("read"), partials, sp, {
        sparse,
        counter: 0,
        input: { kind: "swiglu", partials: ctx.buffer(gu.byteLength, "gu", gu), splits, cols: 2 * K },
      }),
      reduceOp(ctx, partials, out, { n: N, splits: gemvSplits(K, m.N), ncols: N, mode: REDUCE.store }),
    ]);
    const ref = fusedRef(act, 1, K, [W], [N], sparse ? [thr] : null);
    assert(relErr(await ctx.readF32(out), ref.y) < 1e-4, `swiglu input, sparse=${sparse}`);
    if (sparse) assertEquals((await ctx.readU32(sp.counters, 1))[0], ref.active[0]);
  }
});

/** RoPE inverse frequencies of a head size, and their turns buffer (invFreq / 2pi) on the GPU. */
function ropeTables(ctx: GpuContext, headDim: number): { invFreq: Float32Array; turns: GPUBuffer } {
  const invFreq = new Float32Array(headDim / 2).map((_, i) => 10000 ** (-2 * i / headDim));
  return { invFreq, turns: ctx.buffer(invFreq.byteLength, "turns", invFreq.map((v) => v / (2 * Math.PI))) };
}

/**
 * One decode attention step at `pos` from random q|k|v split partials + bias, checked against the reference:
 * the output, and the cache row the kernel stores (k rotated, both rounded to f16). `K`, `V` ([position][numKv *
 * headDim], f16-rounded) mirror the cache and get the new row.
 */
async function checkDecodeStep(
  ctx: GpuContext,
  r: () => number,
  c: {
    shape: AttentionShape;
    invFreq: Float32Array;
    turns: GPUBuffer;
    kc: GPUBuffer;
    vc: GPUBuffer;
    K: Float32Array;
    V: Float32Array;
    pos: number;
  } & Omit<Parameters<typeof attnDecodeOps>[9], "prefetch">,
): Promise<void> {
  const { numHeads, numKv, headDim, ldq, maxSeq } = c.shape;
  const splits = 3;
  const parts = randn(splits * ldq, r);
  const bias = randn(ldq, r);
  const row = new Float32Array(ldq).map((_, i) => {
    let v = bias[i];
    for (let s = 0; s < splits; s++) v += parts[s * ldq + i];
    return v;
  });
  const state = ctx.buffer(16, "state", new Uint32Array([c.pos, 0, 0, 0]));
  const out = poisoned(ctx, numHeads * headDim);
  const part = poisoned(ctx, attnPartFloats(c.shape, c.span));
  const label =
    `pos ${c.pos}, window ${c.window}, ${c.single ? "single" : "split"}, ${c.heads ?? 1} heads, ` +
    `${c.rows ?? "default"} rows${c.preload ? ", preload" : ""}`;
  const kBefore = new Uint16Array(await ctx.read(c.kc));
  const vBefore = new Uint16Array(await ctx.read(c.vc));
  ctx.run(attnDecodeOps(
    ctx,
    {
      partials: ctx.buffer(parts.byteLength, "parts", parts),
      splits,
      bias: ctx.buffer(bias.byteLength, "bias", bias),
    },
    c.turns,
    c.kc,
    c.vc,
    part,
    out,
    state,
    c.shape,
    {
      window: c.window,
      single: c.single,
      span: c.span,
      sub: c.sub,
      heads: c.heads,
      rows: c.rows,
      preload: c.preload,
    },
  ));
  const rot = Float32Array.from(row);
  applyRope(rot, [c.pos], numHeads + numKv, headDim, c.invFreq, ldq, 0);
  const kv = numKv * headDim;
  c.K.set(f16round(rot.slice(numHeads * headDim, numHeads * headDim + kv)), c.pos * kv);
  c.V.set(f16round(row.slice(numHeads * headDim + kv)), c.pos * kv);
  const want = attention(
    rot.slice(0, numHeads * headDim),
    c.K.subarray(0, (c.pos + 1) * kv),
    c.V.subarray(0, (c.pos + 1) * kv),
    {
      rows: 1,
      positions: [c.pos],
      numHeads,
      numKv,
      headDim,
      window: c.window || undefined,
    },
  );
  assert(relErr(await ctx.readF32(out), want) < 2e-3, `decode attention, ${label}`);
  // the cache: the new row stored (k rotated, both f16), every other word as it was
  for (const [buf, before, mirror, name] of [[c.kc, kBefore, c.K, "k"], [c.vc, vBefore, c.V, "v"]] as const) {
    const after = new Uint16Array(await ctx.read(buf));
    const got = new Float32Array(kv);
    for (let h = 0; h < numKv; h++) {
      const at = (h * maxSeq + c.pos) * headDim;
      got.set(f16ToF32(after.subarray(at, at + headDim)), h * headDim);
      after.set(before.subarray(at, at + headDim), at); // compared above, not below
    }
    assert(relErr(got, mirror.subarray(c.pos * kv, (c.pos + 1) * kv)) < 1e-3, `${name} cache row, ${label}`);
    assert(after.every((w, i) => w === before[i]), `${name} cache outside the row, ${label}`);
  }
}

Deno.test("rope + attention: prefill rows, then decode steps (q|k|v from split sums, RoPE, cache store)", async () => {
  const ctx = await gpu();
  const r = rng(8);
  const numHeads = 4;
  const numKv = 2;
  const headDim = 24;
  const maxSeq = 140;
  const ldq = (numHeads + 2 * numKv) * headDim;
  const shape = { numHeads, numKv, headDim, maxSeq, ldq };
  const { invFreq, turns } = ropeTables(ctx, headDim);
  const kc = poisoned(ctx, numKv * maxSeq * headDim / 2);
  const vc = poisoned(ctx, numKv * maxSeq * headDim / 2);
  const state = ctx.buffer(16, "state");
  for (const window of [0, 50]) {
    const rows = 130; // prefill positions 0..129, then decode steps at 130..
    const qkv = randn(rows * ldq, r);
    const positions = Array.from({ length: rows }, (_, i) => i);
    const qkvBuf = ctx.buffer(qkv.byteLength, "qkv", qkv);
    const att = poisoned(ctx, rows * numHeads * headDim);
    const at = { rows, posBase: 0, fromState: false };
    ctx.run([
      ropeOp(ctx, qkvBuf, turns, kc, vc, state, shape, at),
      attentionOp(ctx, qkvBuf, kc, vc, att, state, shape, at, window),
    ]);
    // reference: rotate q and k, round k and v to f16 as the cache holds them
    const ref = Float32Array.from(qkv);
    applyRope(ref, positions, numHeads + numKv, headDim, invFreq, ldq, 0);
    const q = new Float32Array(rows * numHeads * headDim);
    const k = new Float32Array(maxSeq * numKv * headDim);
    const v = new Float32Array(maxSeq * numKv * headDim);
    for (let i = 0; i < rows; i++) {
      q.set(ref.subarray(i * ldq, i * ldq + numHeads * headDim), i * numHeads * headDim);
      k.set(
        f16round(ref.slice(i * ldq + numHeads * headDim, i * ldq + (numHeads + numKv) * headDim)),
        i * numKv * headDim,
      );
      v.set(f16round(qkv.slice(i * ldq + (numHeads + numKv) * headDim, (i + 1) * ldq)), i * numKv * headDim);
    }
    const want = attention(q, k.subarray(0, rows * numKv * headDim), v.subarray(0, rows * numKv * headDim), {
      rows,
      positions,
      numHeads,
      numKv,
      headDim,
      window: window || undefined,
    });
    assert(relErr(await ctx.readF32(att), want) < 2e-3, `prefill attention, window ${window}`);
    assert(
      relErr((await ctx.readF32(qkvBuf)).filter((_, i) => i % ldq < numHeads * headDim), q) < 1e-4,
      "rotated q",
    );
    // decode steps at 130, 131, 132: one workgroup per head, split over the context, split with pieces
    const c = { shape, invFreq, turns, kc, vc, K: k, V: v, window };
    await checkDecodeStep(ctx, r, { ...c, pos: rows, single: true });
    await checkDecodeStep(ctx, r, { ...c, pos: rows + 1, single: false, span: 48 });
    await checkDecodeStep(ctx, r, { ...c, pos: rows + 2, single: false, span: 100, sub: 24 });
  }
});

/**
 * Random KV caches for a shape: the GPU's ([numKv][maxSeq][headDim] f16) and the reference's mirror of them
 * ([position][numKv * headDim], the same f16 values), which checkDecodeStep updates as the kernel stores rows.
 */
function randomCaches(
  ctx: GpuContext,
  r: () => number,
  a: AttentionShape,
): { kc: GPUBuffer; vc: GPUBuffer; K: Float32Array; V: Float32Array } {
  const { numKv, maxSeq, headDim } = a;
  const kf = randn(numKv * maxSeq * headDim, r);
  const vf = randn(numKv * maxSeq * headDim, r);
  const toRows = (v: Float32Array) => {
    const out = new Float32Array(maxSeq * numKv * headDim);
    for (let h = 0; h < numKv; h++) {
      for (let j = 0; j < maxSeq; j++) {
        for (let d = 0; d < headDim; d++) {
          out[(j * numKv + h) * headDim + d] = v[(h * maxSeq + j) * headDim + d];
        }
      }
    }
    return f16round(out);
  };
  return {
    kc: ctx.buffer(kf.length * 2, "k", f32ToF16Bits(kf)),
    vc: ctx.buffer(vf.length * 2, "v", f32ToF16Bits(vf)),
    K: toRows(kf),
    V: toRows(vf),
  };
}

Deno.test("attn_decode + attn_combine: decode attention over a long cache, both variants, with and without a window", async () => {
  const ctx = await gpu();
  const r = rng(9);
  const numHeads = 6;
  const numKv = 3;
  const headDim = 16;
  const maxSeq = 1100; // 18 splits of 64
  const shape = { numHeads, numKv, headDim, maxSeq, ldq: (numHeads + 2 * numKv) * headDim };
  const c = { shape, ...ropeTables(ctx, headDim), ...randomCaches(ctx, r, shape) };
  for (const [pos, window] of [[1030, 0], [1030, 700], [5, 0], [511, 0], [512, 3], [0, 0], [1099, 0]]) {
    // the single variant in pieces of 100 scores (online softmax across them); the split one as decode runs it
    await checkDecodeStep(ctx, r, { ...c, pos, window, single: true, sub: 100 });
    await checkDecodeStep(ctx, r, { ...c, pos, window, single: false });
    // and as decode runs it: pieces of ATTN.SUB, more keys than threads
    if (pos > 256) await checkDecodeStep(ctx, r, { ...c, pos, window, single: true });
  }
});

Deno.test("attn_decode PRELOAD: first keys and values loaded before the staging (single variant); rows past the position are NaN and never added", async () => {
  const ctx = await gpu();
  const r = rng(21);
  // [numHeads, numKv, headDim, heads a workgroup]: 128 dims fill the 16 preloaded words (16 key lanes); 40
  // leave the last thread without a lane; 256 is past what a key row holds (requested, not applied)
  for (
    const [numHeads, numKv, headDim, heads] of [[4, 2, 128, 1], [4, 1, 40, 1], [8, 2, 128, 2], [2, 1, 256, 1]]
  ) {
    const maxSeq = 530;
    const shape = { numHeads, numKv, headDim, maxSeq, ldq: (numHeads + 2 * numKv) * headDim };
    const c = { shape, ...ropeTables(ctx, headDim), ...randomCaches(ctx, r, shape), heads, preload: true };
    // the GPU's caches from the reference's mirror, with every row from `from` on NaN (f16 0x7e00): a
    // preloaded row past the position that reached a sum would make the output NaN
    const poisonFrom = (from: number) => {
      for (const [buf, mirror] of [[c.kc, c.K], [c.vc, c.V]] as const) {
        const w = new Uint16Array(numKv * maxSeq * headDim).fill(0x7e00);
        for (let h = 0; h < numKv; h++) {
          for (let j = 0; j < from; j++) {
            const row = mirror.subarray((j * numKv + h) * headDim, (j * numKv + h + 1) * headDim);
            w.set(f32ToF16Bits(row), (h * maxSeq + j) * headDim);
          }
        }
        ctx.device.queue.writeBuffer(buf, 0, w);
      }
    };
    // positions: the first, fewer keys than a lane's trip, one trip of every lane and past it, more keys than
    // threads (a second key a thread), the last single-variant position; a window (keys from past 0: the
    // preloaded rows unused); pieces of 100 scores (only the first piece's rows preloaded)
    for (
      const [pos, window, sub] of [
        [0, 0, 512],
        [5, 0, 512],
        [127, 0, 512],
        [130, 0, 512],
        [300, 0, 512],
        [
          511,
          0,
          512,
        ],
        [400, 90, 512],
        [450, 0, 100],
      ]
    ) {
      const trips0 = ATTN_PRELOAD.trips;
      // one value trip preloaded, then two (keys 128..255 of 128 dims from the second)
      for (const trips of [1, 2]) {
        ATTN_PRELOAD.trips = trips;
        try {
          poisonFrom(pos);
          await checkDecodeStep(ctx, r, { ...c, pos, window, single: true, sub });
          // the split variant ignores it (preload: true requested)
          if (pos >= 300) {
            poisonFrom(pos);
            await checkDecodeStep(ctx, r, { ...c, pos, window, single: false, span: 70, sub: 40, rows: 2 });
          }
        } finally {
          ATTN_PRELOAD.trips = trips0;
        }
      }
    }
  }
});

Deno.test("attn_decode with 2, 3 and 4 q heads a workgroup (one kv head's): both variants, windows, splits a workgroup, a head size of 40 and of 256; what cannot run is refused", async () => {
  const ctx = await gpu();
  const r = rng(12);
  // [numHeads, numKv, headDim, heads a workgroup]: 40 dims are 5 words a key (not a divisor of the 256
  // threads); 256 dims with 4 heads stage two q pairs a thread
  for (
    const [numHeads, numKv, headDim, heads] of [[12, 3, 40, 4], [12, 3, 40, 2], [6, 2, 16, 3], [8, 2, 256, 4]]
  ) {
    const maxSeq = 333;
    const shape = { numHeads, numKv, headDim, maxSeq, ldq: (numHeads + 2 * numKv) * headDim };
    const c = { shape, ...ropeTables(ctx, headDim), ...randomCaches(ctx, r, shape), heads };
    for (const [pos, window] of [[0, 0], [150, 0], [331, 90], [332, 0]]) {
      // split over the context (ragged last split, pieces of 40 scores; a workgroup a split, or each taking
      // every second or every split), and one workgroup a head group
      for (const rows of [undefined, 2, 1]) {
        await checkDecodeStep(ctx, r, { ...c, pos, window, single: false, span: 70, sub: 40, rows });
      }
      await checkDecodeStep(ctx, r, { ...c, pos, window, single: true, sub: 128 });
    }
  }
  const shape = { numHeads: 8, numKv: 2, headDim: 16, maxSeq: 64, ldq: 192 };
  const s = ctx.scratch("read");
  // more workgroup memory than the GPU has is refused, naming the limit
  const sub = Math.ceil(ctx.device.limits.maxComputeWorkgroupStorageSize / 16) + 1;
  throws(
    () =>
      attnDecodeOps(ctx, { partials: s, splits: 1, bias: null }, s, s, s, s, s, s, shape, {
        window: 0,
        single: false,
        heads: 4,
        sub,
      }),
    /bytes of workgroup memory; this GPU has \d+ \(maxComputeWorkgroupStorageSize\)/,
  );
  // heads that do not divide a kv head's, or more than 4, are refused by name
  for (const heads of [3, 8, 0]) {
    throws(
      () =>
        attnDecodeOps(ctx, { partials: s, splits: 1, bias: null }, s, s, s, s, s, s, shape, {
          window: 0,
          single: false,
          heads,
        }),
      /heads a workgroup must be 1 to 4 and divide the 4 q heads a kv head/,
    );
  }
});

Deno.test("attn_decode L2 prefetch: the attention's bits unchanged, each workgroup's slice read (XOR checksums), nothing else written", async () => {
  const ctx = await gpu();
  const r = rng(10);
  const numHeads = 6;
  const numKv = 3;
  const headDim = 16;
  const maxSeq = 300;
  const ldq = (numHeads + 2 * numKv) * headDim;
  const shape = { numHeads, numKv, headDim, maxSeq, ldq };
  const { turns } = ropeTables(ctx, headDim);
  const cache = (label: string) => {
    const f = randn(numKv * maxSeq * headDim, r);
    return ctx.buffer(f.length * 2, label, f32ToF16Bits(f));
  };
  const kc = cache("k");
  const vc = cache("v");
  const parts = randn(2 * ldq, r);
  const bias = randn(ldq, r);
  const qkv = {
    partials: ctx.buffer(parts.byteLength, "parts", parts),
    splits: 2,
    bias: ctx.buffer(bias.byteLength, "bias", bias),
  };
  // random words to prefetch (never all zero: a slice read short or long changes its XOR)
  const words = new Uint32Array(4 * 16000).map(() => Math.floor(r() * 2 ** 32));
  const preBuf = ctx.buffer(words.byteLength, "pre", words);
  const gap = 5; // floats between the attention's output and the checksums, which nothing writes
  for (const [single, pos, span] of [[true, 200, undefined], [false, 250, 64]] as const) {
    const state = ctx.buffer(16, "state", new Uint32Array([pos, 0, 0, 0]));
    const outFloats = numHeads * headDim;
    const partFloats = attnPartFloats(shape, span);
    const run = async (prefetch?: PrefetchCase) => {
      const wg = prefetch ? prefetch.workgroups ?? ATTN.PREFETCH_WG : 0;
      const written = single ? outFloats : partFloats; // the buffer the checksums go to, and its own floats
      const out = poisoned(ctx, outFloats + (single ? gap + 2 * wg + 3 : 0));
      const part = poisoned(ctx, partFloats + (single ? 0 : gap + 2 * wg + 3));
      ctx.run(attnDecodeOps(ctx, qkv, turns, kc, vc, part, out, state, shape, {
        window: 0,
        single,
        span,
        prefetch: prefetch && { ...prefetch, buffer: preBuf, check: written + gap },
      }));
      const o = await ctx.readU32(out);
      const pt = await ctx.readU32(part);
      const k = await ctx.readU32(kc);
      const v = await ctx.readU32(vc);
      return { out: o, part: pt, k, v, check: single ? o.subarray(written) : pt.subarray(written) };
    };
    const base = await run();
    for (const pre of PREFETCH_CASES) {
      const what = `${single ? "single" : "split"}, prefetch ${JSON.stringify(pre)}`;
      const got = await run(pre);
      // (a) the attention's output, its partials and the cache, bit for bit
      assertEquals(got.out.subarray(0, outFloats), base.out.subarray(0, outFloats), `output, ${what}`);
      assertEquals(got.part.subarray(0, partFloats), base.part.subarray(0, partFloats), `partials, ${what}`);
      assertEquals([got.k, got.v], [base.k, base.v], `cache, ${what}`);
      // (b) workgroup i's checksum: the XOR of its slice as two exact 16-bit halves
      const wg = pre.workgroups ?? ATTN.PREFETCH_WG;
      const want = prefetchChecksums(words, pre, wg);
      const check = got.check;
      assertEquals(
        new Float32Array(check.buffer, check.byteOffset + gap * 4, 2 * wg),
        want,
        `checksums, ${what}`,
      );
      // (c) the floats around them stay poisoned
      const around = [...check.subarray(0, gap), ...check.subarray(gap + 2 * wg)];
      assertEquals(around.length, gap + 3);
      assert(around.every((w) => w === POISON), `words around the checksums written, ${what}`);
    }
  }
  // a range past the buffer, checksums past the output, no workgroups: errors before any dispatch
  const part = poisoned(ctx, attnPartFloats(shape));
  const out = poisoned(ctx, numHeads * headDim);
  const state = ctx.buffer(16, "state");
  const call = (prefetch: { startVec4: number; countVec4: number; workgroups?: number; check?: number }) =>
    attnDecodeOps(ctx, qkv, turns, kc, vc, part, out, state, shape, {
      window: 0,
      single: true,
      prefetch: { ...prefetch, buffer: preBuf },
    });
  throws(() => call({ startVec4: 15000, countVec4: 1001 }), /run past the buffer's 16000/);
  throws(
    () => call({ startVec4: 0, countVec4: 8, workgroups: 4, check: numHeads * headDim - 7 }),
    /checksums/,
  );
  throws(() => call({ startVec4: 0, countVec4: 8, workgroups: 0 }), /workgroups must be an integer/);
  throws(() => call({ startVec4: -1, countVec4: 8 }), /must be integers >= 0/);
});

Deno.test("prefetchRange: the bytes of every segment of an f16 or int8 matrix as vec4s, capped", async () => {
  const ctx = await gpu();
  const K = 37;
  const r = rng(11);
  const m = makeMatrix(ctx, K, [randn(20 * K, r), randn(12 * K, r)], [20, 12]);
  // strides 24 and 16 f16: 37 * 40 * 2 bytes = 185 vec4
  assertEquals(prefetchRange(m, ATTN.PREFETCH_CAP_BYTES), { startVec4: 0, countVec4: 185 });
  assertEquals(prefetchRange(m, 1000), { startVec4: 0, countVec4: 62 });
  assertEquals(prefetchRange({ ...m, segments: m.segments.slice(1) }, 1e9), {
    startVec4: 111,
    countVec4: 74,
  });
  const q = layoutQuantSegments(K, [300, 40], [0, 1], QUANT_SCHEMES.int8);
  const mq: Matrix = { ...m, N: 340, segments: q.segments, format: "int8", group: 128 };
  assertEquals(prefetchRange(mq, 2 ** 30), { startVec4: 0, countVec4: q.words / 4 });
  assertEquals(prefetchRange({ ...mq, segments: q.segments.slice(1) }, 2 ** 30), {
    startVec4: q.segments[1].base / 4,
    countVec4: (q.words - q.segments[1].base) / 4,
  });
  throws(() => prefetchRange(m, -1), RangeError);
  throws(() => prefetchRange({ ...m, segments: [] }, 16), RangeError);
});

Deno.test("attnSpan: one workgroup per head below ATTN.SINGLE_BELOW, then 4 to 8 splits a head within the bounds", () => {
  for (const pos of [0, 1, ATTN.SINGLE_BELOW - 1]) assertEquals(attnSpan(pos), 0);
  for (const pos of [ATTN.SINGLE_BELOW, 600, 1023, 2047, 3000, 4095, 8191, 20000, 1 << 20]) {
    const span = attnSpan(pos);
    assert(
      span >= ATTN.SPAN && span <= ATTN.MAX_SPAN && (span & (span - 1)) === 0,
      `pos ${pos}: span ${span}`,
    );
    const splits = Math.ceil((pos + 1) / span);
    if (span > ATTN.SPAN && span < ATTN.MAX_SPAN) {
      assert(splits > 4 && splits <= 8, `pos ${pos}: ${splits} splits`);
    }
  }
  assertEquals([512, 1023, 2047, 8191].map((p) => attnSpan(p)), [64, 128, 256, 1024]);
  // four heads a workgroup: four times the splits, 16 to 32 a workgroup's heads
  for (const pos of [ATTN.SINGLE_BELOW, 1023, 2047, 4095, 8191, 20000, 32767]) {
    const span = attnSpan(pos, 4);
    const splits = Math.ceil((pos + 1) / span);
    if (span > ATTN.SPAN && span < ATTN.MAX_SPAN) {
      assert(splits > 16 && splits <= 32, `pos ${pos}: ${splits}`);
    }
  }
  assertEquals([512, 1023, 2047, 8191].map((p) => attnSpan(p, 4)), [64, 64, 64, 256]);
});

Deno.test("attnHeadsAt: one q head a workgroup, then ATTN.HEADS_FROM's counts where they divide a kv head's", () => {
  const [[two, twoFrom], [four, fourFrom]] = ATTN.HEADS_FROM;
  assertEquals([two, four], [2, 4]);
  const llama3 = { numHeads: 32, numKv: 8 };
  assertEquals(
    [0, twoFrom - 1, twoFrom, fourFrom - 1, fourFrom, 1 << 20].map((p) => attnHeadsAt(p, llama3)),
    [1, 1, 2, 2, 4, 4],
  );
  // q heads a kv head: 1, 2, 3, 4, 5, 6, 7, 8
  const shapes = [[32, 32], [6, 3], [6, 2], [12, 3], [40, 8], [48, 8], [28, 4], [64, 8]];
  assertEquals(shapes.map(([numHeads, numKv]) => attnHeads({ numHeads, numKv })), [1, 2, 1, 4, 1, 2, 1, 4]);
  assertEquals(shapes.map(([numHeads, numKv]) => attnHeadsAt(fourFrom - 1, { numHeads, numKv })), [
    1,
    2,
    1,
    2,
    1,
    2,
    1,
    2,
  ]);
});

Deno.test("gemv_rows: few-row prefill GEMM (fused segments, bias, residual add) at 1 to 16 rows equals the CPU", async () => {
  const ctx = await gpu();
  const r = rng(41);
  const cases: [number, number[]][] = [
    [1100, [200, 72, 72]], // three segments; 3 splits of 512 (M <= 8) or 5 of 256, the last ragged
    [530, [172, 172]],
    [90, [300]], // one split shorter than a chunk
    [700, [517, 6, 13]], // segment lengths that are not multiples of 4: a thread's last columns are padding
  ];
  for (const [K, lens] of cases) {
    const ws = lens.map((n) => randn(n * K, r, 0.5));
    const m = makeMatrix(ctx, K, ws, lens);
    for (const M of [1, 3, 8, 9, 16]) {
      const label = `K=${K} [${lens}] M=${M}`;
      const x = randn(M * K, r);
      const xb = ctx.buffer(x.byteLength, "x", x);
      const partials = poisoned(ctx, gemvRowsPartialBytes(m, M) / 4);
      const bias = randn(m.N, r);
      const want = fusedRef(x, M, K, ws, lens, null).y;
      // store with bias, one extra poisoned row after the M rows
      const y = poisoned(ctx, (M + 1) * m.N);
      ctx.run(
        gemvRowsOps(ctx, m, xb, y, partials, { M, ldy: m.N, bias: ctx.buffer(bias.byteLength, "b", bias) }),
      );
      const got = await ctx.readF32(y);
      const wantB = want.map((v, i) => v + bias[i % m.N]);
      assert(relErr(got.subarray(0, M * m.N), wantB) < 1e-4, `${label}: store`);
      // another variant: 32 threads per column group (8 channel groups), chunks of 128
      const tune = { TPR: 32, KCHUNK: 128 };
      const yt = poisoned(ctx, M * m.N);
      const pt = poisoned(ctx, gemvRowsPartialBytes(m, M, tune) / 4);
      ctx.run(gemvRowsOps(ctx, m, xb, yt, pt, { M, ldy: m.N, tune }));
      assert(relErr(await ctx.readF32(yt), want) < 1e-4, `${label}: TPR 32, KCHUNK 128`);
      // eight channels in flight a thread (the chunk's tail walked four and then one at a time)
      const tune8 = { TPR: 32, KCHUNK: 200, UNROLL: 8 };
      const y8 = poisoned(ctx, M * m.N);
      const p8 = poisoned(ctx, gemvRowsPartialBytes(m, M, tune8) / 4);
      ctx.run(gemvRowsOps(ctx, m, xb, y8, p8, { M, ldy: m.N, tune: tune8 }));
      assert(relErr(await ctx.readF32(y8), want) < 1e-4, `${label}: UNROLL 8`);
      assert(
        new Uint32Array(got.buffer).subarray(M * m.N).every((v) => v === POISON),
        `${label}: wrote past M`,
      );
      // residual add into a wider row stride at an offset; the columns around the output stay as they were
      const ldy = m.N + 5;
      const base = randn(M * ldy, r);
      const yb = ctx.buffer(base.byteLength, "y", base);
      ctx.run(gemvRowsOps(ctx, m, xb, yb, partials, { M, ldy, yOffset: 2, accumulate: true }));
      const sum = await ctx.readF32(yb);
      const wantSum = Float32Array.from(base);
      for (let i = 0; i < M; i++) for (let n = 0; n < m.N; n++) wantSum[i * ldy + 2 + n] += want[i * m.N + n];
      assert(relErr(sum, wantSum) < 1e-4, `${label}: residual add`);
    }
  }
  const m = makeMatrix(ctx, 64, [randn(64 * 8, r)], [8]);
  const none = poisoned(ctx, 4);
  throws(() => gemvRowsOps(ctx, m, none, none, none, { M: 17, ldy: 8 }), /17 rows/);
  throws(() => gemvRowsOps(ctx, m, none, none, none, { M: 2, ldy: 8, sparse: true }), /dense only/);
  throws(() => gemvRowsOps(ctx, m, none, none, none, { M: 2, ldy: 8 }), /partials hold/);
  throws(() => gemvRowsOps(ctx, m, none, none, none, { M: 16, ldy: 8, tune: { KCHUNK: 512 } }), /4096/);
  throws(() => gemvRowsOps(ctx, m, none, none, none, { M: 2, ldy: 8, tune: { TPR: 48 } }), /must divide/);
  throws(() => gemvRowsOps(ctx, m, none, none, none, { M: 2, ldy: 8, tune: { KCHUNK: 100.5 } }), /KCHUNK/);
});

Deno.test("matmul: prefill GEMM (fused, bias, accumulate, sparse) at 1, 7 (16-row tiles) and 130 rows, whole and split over K", async () => {
  const ctx = await gpu();
  const r = rng(4);
  const K = 172; // split 3 ways: 64 + 64 + 44 inputs, the last piece not a whole 32-input step
  const lens = [96, 40, 40];
  const ws = lens.map((n) => randn(n * K, r, 0.5));
  const m = makeMatrix(ctx, K, ws, lens);
  assertEquals(splitKLayout(K, 3), { klen: 64, splits: 3 });
  for (const M of [1, 7, 130]) {
    for (const splits of [0, 3]) {
      const label = `M=${M}${splits ? `, ${splits} K splits` : ""}`;
      const split = splits ? { partials: poisoned(ctx, splits * M * m.N), splits } : null;
      const x = randn(M * K, r);
      const bias = randn(m.N, r);
      // dense with bias
      const sp = {
        thresholds: ctx.buffer(12, "t", new Float32Array([0.3, 0.6, 0.9])),
        counters: ctx.buffer(16, "c"),
      };
      const y = poisoned(ctx, M * m.N);
      const dense = matmulOps(ctx, m, ctx.buffer(x.byteLength, "x", x), y, sp, {
        M,
        ldy: m.N,
        bias: ctx.buffer(bias.byteLength, "b", bias),
        split,
      });
      assertEquals(dense.length, splits ? 2 : 1);
      ctx.run(dense);
      const want = fusedRef(x, M, K, ws, lens, null).y.map((v, i) => v + bias[i % m.N]);
      assert(relErr(await ctx.readF32(y), want) < 1e-4, `dense ${label}`);
      // sparse, accumulating into a residual with a wider row stride and an offset; kept inputs counted
      const ldy = m.N + 5;
      const base = randn(M * ldy, r);
      const yb = ctx.buffer(base.byteLength, "y", base);
      ctx.run(matmulOps(ctx, m, ctx.buffer(x.byteLength, "x", x), yb, sp, {
        M,
        ldy,
        yOffset: 3,
        accumulate: true,
        sparse: true,
        split,
      }));
      const ref = fusedRef(x, M, K, ws, lens, [0.3, 0.6, 0.9]);
      const want2 = Float32Array.from(base);
      for (let i = 0; i < M; i++) for (let n = 0; n < m.N; n++) want2[i * ldy + 3 + n] += ref.y[i * m.N + n];
      assert(relErr(await ctx.readF32(yb), want2) < 1e-4, `sparse ${label}`);
      assertEquals(Array.from(await ctx.readU32(sp.counters, 3)), ref.active, `kept inputs ${label}`);
    }
  }
});

Deno.test("matmul_wide: prefill GEMM of many rows in 64- and 128-row tiles (fused, bias, accumulate, sparse) at awkward sizes", async () => {
  const ctx = await gpu();
  const r = rng(41);
  const saved = { ...MATMUL_WIDE };
  try {
    // K 172: the last 16-input step is partial; segments of 200 (two column tiles, the second partial), 36
    // and 44 (strides padded to 40 and 48), so tiles start at each segment
    for (const [K, lens] of [[172, [200, 36, 44]], [100, [130]]] as [number, number[]][]) {
      const ws = lens.map((n) => randn(n * K, r, 0.5));
      const m = makeMatrix(ctx, K, ws, lens);
      const thr = [0.3, 0.6, 0.9].slice(0, lens.length);
      const scales = Float32Array.from({ length: K * lens.length }, () => 0.5 + r());
      const ms = { ...m, scales: ctx.buffer(scales.byteLength, "scales", scales) };
      for (const [M, tile128From, tile] of [[65, 128, 64], [100, 128, 64], [130, 128, 128], [257, 65, 128]]) {
        MATMUL_WIDE.fromRows = 65;
        MATMUL_WIDE.tile128From = tile128From;
        assertEquals(matmulWideRows(m, M), tile);
        const label = `K=${K}, M=${M}, ${tile}-row tiles`;
        const x = randn(M * K, r);
        const bias = randn(m.N, r);
        const sp = {
          thresholds: ctx.buffer(12, "t", new Float32Array([0.3, 0.6, 0.9])),
          counters: ctx.buffer(16, "c"),
        };
        // dense with bias; one row past M stays poisoned
        const y = poisoned(ctx, (M + 1) * m.N);
        const ops = matmulOps(ctx, m, ctx.buffer(x.byteLength, "x", x), y, sp, {
          M,
          ldy: m.N,
          bias: ctx.buffer(bias.byteLength, "b", bias),
        });
        assertEquals(ops.map((o) => o.label), ["matmul_wide"]);
        ctx.run(ops);
        const got = await ctx.readF32(y);
        const want = fusedRef(x, M, K, ws, lens, null).y.map((v, i) => v + bias[i % m.N]);
        assert(relErr(got.subarray(0, M * m.N), want) < 1e-4, `dense ${label}`);
        assert(
          new Uint32Array(got.buffer, M * m.N * 4).every((v) => v === POISON),
          `past the rows, ${label}`,
        );
        // sparse with channel scales, accumulating into a residual with a wider row stride and an offset
        const ldy = m.N + 5;
        const base = randn(M * ldy, r);
        const yb = ctx.buffer(base.byteLength, "y", base);
        ctx.run(matmulOps(ctx, ms, ctx.buffer(x.byteLength, "x", x), yb, sp, {
          M,
          ldy,
          yOffset: 3,
          accumulate: true,
          sparse: true,
        }));
        const ref = fusedRef(x, M, K, ws, lens, thr, scales);
        const want2 = Float32Array.from(base);
        for (let i = 0; i < M; i++) {
          for (let n = 0; n < m.N; n++) want2[i * ldy + 3 + n] += ref.y[i * m.N + n];
        }
        assert(relErr(await ctx.readF32(yb), want2) < 1e-4, `sparse ${label}`);
        assertEquals(
          Array.from(await ctx.readU32(sp.counters, lens.length)),
          ref.active,
          `kept inputs ${label}`,
        );
      }
    }
    // what it does not take goes to matmul.wgsl: K not a multiple of 4, fewer rows, the switch off
    const odd = makeMatrix(ctx, 170, [randn(24 * 170, r)], [24]);
    assertEquals(matmulWideRows(odd, 300), 0);
    MATMUL_WIDE.fromRows = 65;
    assertEquals(matmulWideRows(makeMatrix(ctx, 16, [randn(24 * 16, r)], [24]), 64), 0);
    MATMUL_WIDE.fromRows = 0;
    assertEquals(matmulWideRows(makeMatrix(ctx, 16, [randn(24 * 16, r)], [24]), 300), 0);
  } finally {
    Object.assign(MATMUL_WIDE, saved);
  }
});

/**
 * Per-output bound of matmul_wide_h.wgsl's error against the exact product (f64 over f16-rounded weights): x
 * rounded to f16 (relative 2^-11), each step's BK products summed in f16 (gamma_BK, about BK * 2^-11 of the sum
 * of their magnitudes), so (BK + 2) * 2^-11 * sum_k |x_k * w_k|; plus 2^-14 (the smallest normal f16) for each
 * f16 rounding of a step, in case the device flushes subnormals; plus 2^-20 of |y| for the f32 adds.
 */
function halfBound(
  x: Float32Array,
  M: number,
  K: number,
  ws: Float32Array[],
  lens: number[],
  thr: number[] | null,
  BK: number,
  scales?: Float32Array,
): Float32Array {
  const absW = ws.map((w) => f16round(w).map(Math.abs));
  // |x| with the mask's zeros: the masked x of fusedRef, from its own keep rule
  const mags = fusedRef(x.map(Math.abs), M, K, absW, lens, thr, scales).y;
  const absTerm = Math.ceil(K / BK) * (2 * BK + 2) * 2 ** -14;
  return mags.map((s) => (BK + 2) * 2 ** -11 * s + absTerm);
}

/** Largest |got - want| / bound (NaN, and so a failed `<= 1`, where any element is NaN). */
function boundRatio(got: ArrayLike<number>, want: ArrayLike<number>, bound: ArrayLike<number>): number {
  if (got.length !== want.length) throw new Error(`length ${got.length} != ${want.length}`);
  let worst = 0;
  for (let i = 0; i < got.length; i++) {
    const r = Math.abs(got[i] - want[i]) / (bound[i] + 2 ** -20 * Math.abs(want[i]));
    if (Number.isNaN(r)) return NaN;
    worst = Math.max(worst, r);
  }
  return worst;
}

Deno.test("matmul_wide_h: f16-arithmetic prefill GEMM (RM 4/8, BK 16/32; fused, bias, accumulate, sparse) within its f16 error bound at awkward sizes", async () => {
  const ctx = await gpu();
  assert(ctx.hasF16, "the test adapter (lavapipe) offers shader-f16");
  const r = rng(43);
  const saved = { ...MATMUL_WIDE };
  try {
    MATMUL_WIDE.half = true;
    // K 172 and 100: the last step partial at BK 16 and 32 (12, 4 inputs); K 1000: 32 / 63 steps, so the f32
    // sum over steps matters; segments of 200 (two column tiles, the second partial), 36 and 44 (strides 40,
    // 48), so tiles start at each segment. x at two scales (the bound is relative to the magnitudes).
    const cases: [number, number[], number][] = [[172, [200, 36, 44], 1], [100, [130], 30], [
      1000,
      [72, 140],
      1,
    ]];
    for (const [K, lens, xScale] of cases) {
      const ws = lens.map((n) => randn(n * K, r, 0.5));
      const m = makeMatrix(ctx, K, ws, lens);
      const thr = [0.3, 0.6, 0.9].slice(0, lens.length).map((t) => t * xScale);
      const scales = Float32Array.from({ length: K * lens.length }, () => 0.5 + r());
      const ms = { ...m, scales: ctx.buffer(scales.byteLength, "scales", scales) };
      const rowCases = K === 1000 ? [[70, 128, 64], [131, 128, 128]] : [[65, 128, 64], [100, 128, 64], [
        130,
        128,
        128,
      ], [257, 65, 128]];
      for (const BK of [16, 32] as const) {
        for (const [M, tile128From, tile] of rowCases) {
          MATMUL_WIDE.fromRows = 65;
          MATMUL_WIDE.tile128From = tile128From;
          MATMUL_WIDE.halfBK = BK;
          assertEquals(matmulWideRows(m, M), tile);
          const label = `K=${K}, M=${M}, ${tile}-row tiles, BK ${BK}`;
          const x = randn(M * K, r, xScale);
          const xb = ctx.buffer(x.byteLength, "x", x);
          const bias = randn(m.N, r);
          const sp = {
            thresholds: ctx.buffer(12, "t", new Float32Array([0.3, 0.6, 0.9].map((t) => t * xScale))),
            counters: ctx.buffer(16, "c"),
          };
          // dense with bias; one row past M stays poisoned
          const y = poisoned(ctx, (M + 1) * m.N);
          const ops = matmulOps(ctx, m, xb, y, sp, {
            M,
            ldy: m.N,
            bias: ctx.buffer(bias.byteLength, "b", bias),
          });
          assertEquals(ops.map((o) => o.label), ["matmul_wide_h"]);
          ctx.run(ops);
          const got = await ctx.readF32(y);
          const exact = fusedRef(x, M, K, ws, lens, null).y;
          const want = exact.map((v, i) => v + bias[i % m.N]);
          const bound = halfBound(x, M, K, ws, lens, null, BK);
          const ratio = boundRatio(got.subarray(0, M * m.N), want, bound);
          assert(ratio <= 1, `dense ${label}: error ${ratio} of the bound`);
          assert(
            new Uint32Array(got.buffer, M * m.N * 4).every((v) => v === POISON),
            `past the rows, ${label}`,
          );
          // the bound is tight enough to see a skipped K step (inputs [BK, 2 BK) of every row) or two columns
          // of a segment swapped
          const xSkip = Float32Array.from(x);
          for (let i = 0; i < M; i++) xSkip.fill(0, i * K + BK, i * K + Math.min(K, 2 * BK));
          const wantSkip = fusedRef(xSkip, M, K, ws, lens, null).y.map((v, i) => v + bias[i % m.N]);
          assert(
            boundRatio(got.subarray(0, M * m.N), wantSkip, bound) > 1,
            `${label}: a skipped step passes`,
          );
          const wantSwap = Float32Array.from(want);
          for (let i = 0; i < M; i++) {
            [wantSwap[i * m.N + 5], wantSwap[i * m.N + 6]] = [want[i * m.N + 6], want[i * m.N + 5]];
          }
          assert(boundRatio(got.subarray(0, M * m.N), wantSwap, bound) > 1, `${label}: swapped columns pass`);
          // sparse with channel scales, accumulating into a residual with a wider row stride and an offset
          const ldy = m.N + 5;
          const base = randn(M * ldy, r);
          const yb = ctx.buffer(base.byteLength, "y", base);
          ctx.run(matmulOps(ctx, ms, xb, yb, sp, { M, ldy, yOffset: 3, accumulate: true, sparse: true }));
          const ref = fusedRef(x, M, K, ws, lens, thr, scales);
          const sparseBound = halfBound(x, M, K, ws, lens, thr, BK, scales);
          const want2 = Float32Array.from(base);
          const bound2 = new Float32Array(M * ldy);
          for (let i = 0; i < M; i++) {
            for (let n = 0; n < m.N; n++) {
              want2[i * ldy + 3 + n] += ref.y[i * m.N + n];
              bound2[i * ldy + 3 + n] = sparseBound[i * m.N + n];
            }
          }
          const sum = await ctx.readF32(yb);
          const ratio2 = boundRatio(sum, want2, bound2);
          assert(ratio2 <= 1, `sparse ${label}: error ${ratio2} of the bound`);
          // the columns around the output (bound 0) kept their bits
          for (let i = 0; i < M; i++) {
            for (const n of [0, 1, 2, ldy - 2, ldy - 1]) {
              assertEquals(sum[i * ldy + n], base[i * ldy + n], `${label}: row ${i} column ${n} written`);
            }
          }
          assertEquals(
            Array.from(await ctx.readU32(sp.counters, lens.length)),
            ref.active,
            `kept inputs ${label}`,
          );
          for (const b of [xb, y, yb, sp.thresholds, sp.counters]) b.destroy();
        }
      }
    }
    // quantized weights keep matmul_wide_q.wgsl; a device without shader-f16 keeps matmul_wide.wgsl and cannot
    // build the f16 shader
    throws(() => matmulHalfOverrides(6, 32), /RM 6/);
    throws(() => matmulHalfOverrides(8, 64), /BK 64/);
    const adapter = await navigator.gpu.requestAdapter();
    const device = await adapter!.requestDevice({
      requiredLimits: { maxComputeWorkgroupStorageSize: adapter!.limits.maxComputeWorkgroupStorageSize },
    });
    try {
      const plain = new GpuContext(device, "no f16", false);
      assertEquals(plain.hasF16, false);
      const m = makeMatrix(plain, 100, [randn(130 * 100, r)], [130]);
      const sp = { thresholds: plain.buffer(16, "t"), counters: plain.buffer(16, "c") };
      const x = plain.buffer(200 * 100 * 4, "x");
      const y = plain.buffer(200 * 130 * 4, "y");
      assertEquals(matmulOps(plain, m, x, y, sp, { M: 200, ldy: 130 }).map((o) => o.label), ["matmul_wide"]);
      throws(
        () => plain.pipeline({ shader: "matmul_wide_h", overrides: matmulHalfOverrides(8, 32) }),
        (e: unknown) => e instanceof GpuError && /shader-f16/.test(e.message),
      );
    } finally {
      device.destroy();
    }
  } finally {
    Object.assign(MATMUL_WIDE, saved);
  }
});

Deno.test("rmsnorm, swiglu and embed kernels", async () => {
  const ctx = await gpu();
  const r = rng(5);
  const n = 172;
  const rows = 7;
  // two rows starting at row 4; rows shorter than the workgroup and of 2.3 workgroups; one row past the two
  // stays poisoned
  for (const len of [n, 600]) {
    const x = randn(rows * len, r, 3);
    const w = randn(len, r);
    const out = poisoned(ctx, 3 * len);
    ctx.run([
      rmsNormOp(ctx, ctx.buffer(x.byteLength, "x", x), ctx.buffer(w.byteLength, "w", w), out, {
        n: len,
        rows: 2,
        eps: 1e-5,
        inRow: 4,
      }),
    ]);
    const got = await ctx.readF32(out);
    assert(
      relErr(got.subarray(0, 2 * len), rmsNorm(x.slice(4 * len, 6 * len), w, 1e-5, 2)) < 1e-5,
      `n ${len}`,
    );
    assert(
      new Uint32Array(got.buffer, 2 * len * 4).every((v) => v === POISON),
      `n ${len}: wrote past its rows`,
    );
  }

  const gu = randn(rows * 2 * n, r, 4);
  const act = poisoned(ctx, rows * n);
  ctx.run([swigluOp(ctx, ctx.buffer(gu.byteLength, "gu", gu), act, { rows, n, ld: 2 * n, offB: n })]);
  const want = new Float32Array(rows * n);
  for (let m = 0; m < rows; m++) {
    for (let i = 0; i < n; i++) want[m * n + i] = silu(gu[m * 2 * n + i]) * gu[m * 2 * n + n + i];
  }
  assert(relErr(await ctx.readF32(act), want) < 1e-5);

  // row-major table split in two parts, and a transposed (tied) table
  const vocab = 37;
  const hidden = 10;
  const table = randn(vocab * hidden, r);
  const ids = [5, 0, 36, 20, 5, 19];
  const e = poisoned(ctx, ids.length * hidden);
  const idb = ctx.buffer(ids.length * 4, "ids", new Uint32Array(ids));
  const half = f32ToF16Bits(table);
  const p1 = ctx.buffer(20 * hidden * 2, "p1", half.slice(0, 20 * hidden));
  const p2 = ctx.buffer(17 * hidden * 2, "p2", half.slice(20 * hidden));
  ctx.run([
    embedOp(ctx, p1, idb, e, {
      hidden,
      rows: ids.length,
      idOffset: 0,
      tok0: 0,
      tok1: 20,
      tokStride: hidden,
      elemStride: 1,
    }),
    embedOp(ctx, p2, idb, e, {
      hidden,
      rows: ids.length,
      idOffset: 0,
      tok0: 20,
      tok1: 37,
      tokStride: hidden,
      elemStride: 1,
    }),
  ]);
  const wantE = ids.flatMap((t) => Array.from(f16round(table.slice(t * hidden, (t + 1) * hidden))));
  assertEquals(Array.from(await ctx.readF32(e)), wantE);
  const stride = 40; // transposed [hidden][stride]
  const tr = transposeToF16(table, hidden, 0, vocab, stride);
  const e2 = poisoned(ctx, ids.length * hidden);
  ctx.run([
    embedOp(ctx, ctx.buffer(tr.byteLength, "tr", tr), idb, e2, {
      hidden,
      rows: ids.length,
      idOffset: 0,
      tok0: 0,
      tok1: vocab,
      tokStride: 1,
      elemStride: stride,
    }),
  ]);
  assertEquals(Array.from(await ctx.readF32(e2)), wantE);
  // decode: one row from the state buffer's token slot, with the per-workgroup sums of squares
  const h2 = 300;
  const t2 = randn(vocab * h2, r);
  const e3 = poisoned(ctx, h2);
  const ss = poisoned(ctx, 2);
  const st = ctx.buffer(16, "state", new Uint32Array([9, 33, 0, 0]));
  const tb = f32ToF16Bits(t2);
  ctx.run([
    embedOp(ctx, ctx.buffer(tb.byteLength, "t2", tb), st, e3, {
      hidden: h2,
      rows: 1,
      idOffset: 1,
      tok0: 0,
      tok1: vocab,
      tokStride: h2,
      elemStride: 1,
      ss,
    }),
  ]);
  const row33 = f16round(t2.slice(33 * h2, 34 * h2));
  assertEquals(Array.from(await ctx.readF32(e3)), Array.from(row33));
  const wantSs = [row33.slice(0, 256), row33.slice(256)].map((a) => a.reduce((s, v) => s + v * v, 0));
  assert(relErr(await ctx.readF32(ss, 2), wantSs) < 1e-5);
});

Deno.test("reduce storeArgmax: the logits as MODE store, and each block's largest value with its lowest index (-1 for a block of -inf), placed by part", async () => {
  const ctx = await gpu();
  const r = rng(16);
  const n = 700; // blocks of 256, 256 and 188
  const splits = 3;
  const part = randn(splits * n, r, 2);
  const sums = new Float32Array(n).map((_, o) => [0, 1, 2].reduce((a, s) => a + part[s * n + o], 0));
  // ties in block 0 (the lower index wins), a block of -inf, and a NaN that is never picked
  part[0 * n + 40] = 50;
  part[0 * n + 90] = 50;
  part[1 * n + 40] =
    part[2 * n + 40] =
    part[1 * n + 90] =
    part[2 * n + 90] =
      0;
  sums[40] = sums[90] = 50;
  for (let o = 256; o < 512; o++) {
    part[o] = -Infinity;
    sums[o] = -Infinity;
  }
  part[600] = NaN;
  sums[600] = NaN;
  const partials = ctx.buffer(part.byteLength, "partials", part);
  const out = poisoned(ctx, 50 + n);
  const blocks = poisoned(ctx, 2 * (4 + 3) + 2);
  ctx.run([
    reduceOp(ctx, partials, out, {
      n,
      splits,
      ncols: n,
      mode: REDUCE.storeArgmax,
      outOffset: 50,
      ss: blocks,
      blockOffset: 4,
    }),
  ]);
  const got = await ctx.readF32(out, 50 + n);
  assert(got.slice(0, 50).every((v) => Number.isNaN(v)), "nothing written before outOffset");
  for (let o = 0; o < n; o++) {
    const want = sums[o];
    const g = got[50 + o];
    if (Number.isNaN(want) || !Number.isFinite(want)) assert(Object.is(g, want) || (isNaN(g) && isNaN(want)));
    else assert(Math.abs(g - want) <= 1e-5 * Math.max(1, Math.abs(want)), `logit ${o}: ${g} vs ${want}`);
  }
  const b = Array.from(await ctx.readF32(blocks, 2 * (4 + 3) + 2));
  assert(b.slice(0, 8).every((v) => Number.isNaN(v)), "nothing written before blockOffset");
  assert(b.slice(14).every((v) => Number.isNaN(v)), "nothing written past the last block");
  for (let w = 0; w < 3; w++) {
    let best = -3.4e38;
    let at = -1;
    for (let o = w * 256; o < Math.min(n, (w + 1) * 256); o++) {
      if (got[50 + o] > best) [best, at] = [got[50 + o], 50 + o];
    }
    assertEquals(
      [b[8 + 2 * w], b[9 + 2 * w]],
      at < 0 ? [Math.fround(-3.4e38), -1] : [best, at],
      `block ${w}`,
    );
  }
  assertEquals(b[9], 40 + 50, "block 0: the lower of the tied indices (40, 90), + outOffset");
  assertEquals(b[11], -1, "a block of -inf has no index");
});

Deno.test("sample: greedy argmax (lowest id on ties) and seeded sampling match the CPU mirror, from the logits and from argmax blocks", async () => {
  const ctx = await gpu();
  const r = rng(6);
  const params = ctx.device.createBuffer({
    size: SAMPLER_PARAMS_BYTES,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  const state = ctx.buffer(16, "state");
  const tokens = poisoned(ctx, 64);
  const cases = [
    { temperature: 0, topK: 0, topP: 1, seed: 0 },
    { temperature: 1, topK: 0, topP: 1, seed: 7 },
    { temperature: 0.7, topK: 40, topP: 1, seed: 8 },
    { temperature: 1.3, topK: 0, topP: 0.9, seed: 9 },
    { temperature: 0.8, topK: 50, topP: 0.8, seed: 10 },
    { temperature: 1, topK: 1, topP: 1, seed: 11 },
  ];
  // 1037: every pass in its remainder loops; 4133: the eight-logit trips too (16+ logits a thread)
  for (const vocab of [1037, 4133]) {
    const logitsBuf = ctx.buffer(vocab * 4, "logits");
    const op = sampleOp(ctx, params, logitsBuf, state, tokens);
    // the same logits from two lm_head parts' reduce passes (600 + the rest; 3 + the rest's argmax blocks),
    // sampled from their blocks
    const restN = vocab - 600;
    const partA = ctx.buffer(600 * 4, "part a");
    const partB = ctx.buffer(restN * 4, "part b");
    const logits2 = poisoned(ctx, vocab);
    const nblocks = 3 + Math.ceil(restN / 256);
    const blocks = poisoned(ctx, 2 * nblocks);
    const fromBlocks = [
      reduceOp(ctx, partA, logits2, { n: 600, splits: 1, ncols: 600, mode: REDUCE.storeArgmax, ss: blocks }),
      reduceOp(ctx, partB, logits2, {
        n: restN,
        splits: 1,
        ncols: restN,
        mode: REDUCE.storeArgmax,
        outOffset: 600,
        ss: blocks,
        blockOffset: 3,
      }),
      sampleOp(ctx, params, logits2, state, tokens, { buffer: blocks, count: nblocks }),
    ];
    for (const s of cases) {
      const logits = randn(vocab, r, 4);
      logits[17] = logits[900] = 9; // tie for the maximum, across the two parts
      ctx.write(logitsBuf, logits);
      writeSamplerParams(ctx, params, vocab, 64, s);
      ctx.write(state, new Uint32Array([100, 0, 0, 0]));
      const steps = 24;
      ctx.run(Array(steps).fill(op));
      const got = Array.from(await ctx.readU32(tokens, steps));
      const want = Array.from({ length: steps }, (_, i) => sampleToken(logits, s, i));
      const what = `vocab ${vocab}, ${JSON.stringify(s)}`;
      assertEquals(got, want, what);
      ctx.write(partA, logits.slice(0, 600));
      ctx.write(partB, logits.slice(600));
      ctx.write(state, new Uint32Array([100, 0, 0, 0]));
      ctx.run(Array(steps).fill(fromBlocks).flat());
      assertEquals(Array.from(await ctx.readU32(tokens, steps)), want, `from blocks: ${what}`);
      if (s.temperature === 0) assert(got.every((t) => t === 17));
      else if (s.topK === 1) {
        assert(got.every((t) => t === 17 || t === 900), "top-1 keeps only the tied maxima");
      } else assert(new Set(got).size > 1, "sampling must vary across steps");
      assertEquals(Array.from(await ctx.readU32(state, 4)), [100 + steps, got[steps - 1], steps, 0]);
    }
    // sampling an end-of-sequence id raises the state's stop flag
    const logits = randn(vocab, r, 4);
    logits[321] = 50;
    ctx.write(logitsBuf, logits);
    writeSamplerParams(ctx, params, vocab, 64, cases[0], [7, 321]);
    ctx.write(state, new Uint32Array([5, 0, 0, 0]));
    ctx.run([op]);
    assertEquals(Array.from(await ctx.readU32(state, 4)), [6, 321, 1, 1]);
  }
});

Deno.test("pack: the GPU transpose + f16 rounding of load equals transposeToF16 bit for bit, in pieces", async () => {
  const ctx = await gpu();
  const r = rng(21);
  // rounding edge cases: ties, subnormals, overflow, infinities, NaN, signed zeros
  const special = [
    0,
    -0,
    1,
    -1,
    65504,
    65519.99,
    65520,
    -1e6,
    Infinity,
    -Infinity,
    NaN,
    6e-8,
    2.98e-8,
    2.9e-8,
    -3e-8,
    1e-5,
    6.1e-5,
    6.103515625e-5,
    1.0009765625,
    1.00048828125,
    1.00146484375,
    3.14159,
    -2.71828,
    1e-40,
  ];
  for (
    const [K, lens, rowsPer] of [[37, [45, 70], 32], [100, [17], 64], [300, [130, 64], 96]] as [
      number,
      number[],
      number,
    ][]
  ) {
    const ws = lens.map((n) => randn(n * K, r, 3));
    ws[0].set(special.map(Math.fround), 5);
    const { segments, halves } = layoutSegments(K, lens, lens.map(() => 0));
    const buffer = poisoned(ctx, halves / 2, "w");
    const m: Matrix = {
      K,
      N: lens.reduce((a, b) => a + b, 0),
      segments,
      buffer,
      scales: ctx.scratch("read"),
    };
    const packer = new WeightPacker(ctx, null);
    // segment 1 (when present) is written from rows 3.. of a taller W: the row offset is honoured
    const tall = lens.length > 1 ? new Float32Array((lens[1] + 3) * K) : null; // W rows 3..
    if (tall) tall.set(ws[1], 3 * K);
    packer.write(m, 0, ws[0], 0, rowsPer);
    if (tall) packer.write(m, 1, tall, 3, rowsPer);
    packer.dispose();
    const got = new Uint16Array(await ctx.read(buffer));
    segments.forEach((s, i) => {
      const want = transposeToF16(ws[i], K, 0, s.len, s.stride);
      const block = got.subarray(s.base, s.base + K * s.stride);
      const bad = want.findIndex((v, j) => v !== block[j]);
      assert(
        bad < 0,
        `K=${K} segment ${i}: f16 ${bad} is ${block[bad]?.toString(16)}, want ${want[bad]?.toString(16)}`,
      );
    });
  }
});

Deno.test("gemv sparse compaction: every GEMV_SCAN radix gives the Hillis-Steele scan's bits and counts", async () => {
  const ctx = await gpu();
  const r = rng(32);
  const K = 1100;
  const lens = [200, 72, 72];
  const ws = lens.map((n) => randn(n * K, r, 0.5));
  const scales = randn(K * lens.length, r).map((v) => 0.5 + Math.abs(v));
  const m = makeMatrix(ctx, K, ws, lens, scales);
  const x = randn(K, r);
  const xb = ctx.buffer(K * 4, "x", x);
  // 128, 256 and 512 threads: rounds of 16 cover 256 in two, of 8 cover 512 in three
  const tunes: GemvTune[] = [
    { TPR: 16, KCHUNK: 256, WG: 128, UNROLL: 4 },
    { TPR: 16, KCHUNK: 512, WG: 256, UNROLL: 8 },
    { TPR: 32, KCHUNK: 1024, WG: 512, UNROLL: 4 },
  ];
  const run = async (tune: GemvTune, thr: number[]) => {
    const splits = Math.ceil(K / tune.KCHUNK);
    const sp = { thresholds: ctx.buffer(12, "t", new Float32Array(thr)), counters: ctx.buffer(12, "c") };
    const partials = poisoned(ctx, splits * m.N);
    const out = poisoned(ctx, m.N);
    ctx.run([
      gemvOp(ctx, m, xb, partials, sp, { sparse: true, counter: 0, tune }),
      reduceOp(ctx, partials, out, { n: m.N, splits, ncols: m.N, mode: REDUCE.store }),
    ]);
    return { y: await ctx.readF32(out), counters: Array.from(await ctx.readU32(sp.counters, 3)) };
  };
  const saved = GEMV_SCAN.radix;
  try {
    for (const [i, frac] of [0.35, 0.6, 0.97].entries()) {
      const thr = [quantile(x, frac), quantile(x, Math.min(1, frac + 0.02)), quantile(x, frac / 2)];
      GEMV_SCAN.radix = 2;
      const base = await run(tunes[i], thr);
      const want = fusedRef(x, 1, K, ws, lens, thr, scales);
      const scale = Math.max(1, ...Array.from(want.y, Math.abs));
      const err = base.y.reduce((a, v, j) => Math.max(a, Math.abs(v - want.y[j])), 0) / scale;
      assert(err < 1e-4, `sparsity ${frac}: err ${err}`);
      for (const radix of [4, 8, 16] as const) {
        GEMV_SCAN.radix = radix;
        const got = await run(tunes[i], thr);
        assertEquals(got.y, base.y, `${JSON.stringify(tunes[i])} ${frac}: radix ${radix}`);
        assertEquals(got.counters, want.active, `${frac}: radix ${radix} counters`);
      }
    }
  } finally {
    GEMV_SCAN.radix = saved;
  }
});
