/**
 * The tiled prefill attention (attention.wgsl via attentionOp) against the CPU reference: random q in a q|k|v
 * buffer, random f16 K/V caches written straight into the cache buffers, at awkward sizes (q heads a kv head,
 * head sizes, rows and contexts that are not multiples of the tiles, chunks continuing a prompt, sliding
 * windows, positions from the state). Cache rows no query sees hold f16 NaN, so a read of them shows; output
 * rows past the chunk stay poisoned.
 */
import { ok as assert, throws } from "node:assert";
import {
  attentionOp,
  ATTN_PREFILL,
  attnPrefillBytes,
  attnPrefillTile,
  type PrefillTileWant,
} from "../src/gpu/kernels.ts";
import { f32ToF16Bits } from "../src/model/dtype.ts";
import { attention } from "../src/model/reference.ts";
import { f16round, gpu, POISON, poisoned, randn, relErr, rng } from "./_gpu.ts";

/** One prefill chunk: a shape, the chunk's rows and positions, a window, and tile parts to force. */
interface Case {
  numHeads: number;
  numKv: number;
  headDim: number;
  maxSeq: number;
  rows: number;
  posBase: number;
  /** Positions from the state: state[0] - posBase + row (the verify pass); `state` is state[0]. */
  state?: number;
  window?: number;
  tile?: PrefillTileWant;
}

const F16_NAN = 0x7e00;

/** Runs attentionOp on a case and compares with the reference; returns the tile it ran for the label. */
async function check(seed: number, c: Case): Promise<void> {
  const ctx = await gpu();
  const r = rng(seed);
  const { numHeads, numKv, headDim, maxSeq, rows } = c;
  // q|k|v rows with a few floats of slack per row, so that ldq is not the heads' width
  const ldq = (numHeads + 2 * numKv) * headDim + 6;
  const first = c.state !== undefined ? c.state - c.posBase : c.posBase;
  const positions = Array.from({ length: rows }, (_, i) => first + i);
  const last = first + rows - 1;
  assert(last < maxSeq, "case past the cache");
  const window = c.window ?? 0;
  const lo = window > 0 ? Math.max(0, first + 1 - window) : 0; // first key any row sees
  // q spans a few units of score, so the softmax is neither flat nor one-hot
  const qkv = randn(rows * ldq, r, 3);
  // caches: [numKv][maxSeq][headDim] f16, NaN outside the keys the chunk sees; the reference's
  // [position][numKv * headDim] mirror of the same values
  const kv = numKv * headDim;
  const bits = [new Uint16Array(numKv * maxSeq * headDim), new Uint16Array(numKv * maxSeq * headDim)];
  const mirror = [new Float32Array((last + 1) * kv), new Float32Array((last + 1) * kv)];
  for (let w = 0; w < 2; w++) {
    bits[w].fill(F16_NAN);
    for (let h = 0; h < numKv; h++) {
      for (let j = lo; j <= last; j++) {
        const v = f16round(randn(headDim, r));
        bits[w].set(f32ToF16Bits(v), (h * maxSeq + j) * headDim);
        mirror[w].set(v, j * kv + h * headDim);
      }
    }
  }
  const kc = ctx.buffer(bits[0].byteLength, "k", bits[0]);
  const vc = ctx.buffer(bits[1].byteLength, "v", bits[1]);
  const state = ctx.buffer(16, "state", new Uint32Array([c.state ?? 12345, 0, 0, 0]));
  const extra = 3; // rows past the chunk that must stay poisoned
  const width = numHeads * headDim;
  const out = poisoned(ctx, (rows + extra) * width);
  const shape = { numHeads, numKv, headDim, maxSeq, ldq };
  const at = { rows, posBase: c.posBase, fromState: c.state !== undefined };
  const tile = attnPrefillTile(shape, rows, ctx.device.limits.maxComputeWorkgroupStorageSize, c.tile);
  const label = `${JSON.stringify(c)} -> tile ${JSON.stringify(tile)}`;
  ctx.run([
    attentionOp(ctx, ctx.buffer(qkv.byteLength, "qkv", qkv), kc, vc, out, state, shape, at, window, c.tile),
  ]);
  const q = new Float32Array(rows * width);
  for (let i = 0; i < rows; i++) q.set(qkv.subarray(i * ldq, i * ldq + width), i * width);
  const want = attention(q, mirror[0], mirror[1], {
    rows,
    positions,
    numHeads,
    numKv,
    headDim,
    window: window || undefined,
  });
  const got = await ctx.readF32(out);
  const err = relErr(got.subarray(0, rows * width), want);
  assert(err < 2e-3, `rel err ${err}: ${label}`);
  const tail = new Uint32Array(got.buffer, rows * width * 4);
  assert(tail.every((w) => w === POISON), `rows past the chunk written: ${label}`);
}

Deno.test("prefill attention: 1, 2, 4 and 8 q heads a kv head at head sizes 24, 40, 64 and 128", async () => {
  // G = 1 (64 rows a workgroup at 24 dims, 32 keys a tile), 37 rows: a partial row tile
  await check(1, { numHeads: 3, numKv: 3, headDim: 24, maxSeq: 50, rows: 37, posBase: 0 });
  // G = 2, a chunk continuing a prompt (50 keys already cached), a cache longer than used
  await check(2, { numHeads: 4, numKv: 2, headDim: 40, maxSeq: 100, rows: 7, posBase: 50 });
  // G = 4 at 64 dims: 16 rows a workgroup, 130 rows (9 row tiles, the last of 2), 16 keys a tile
  await check(3, { numHeads: 8, numKv: 2, headDim: 64, maxSeq: 140, rows: 130, posBase: 0 });
  // G = 4 at 128 dims (the Llama-3 tile: 8 rows x 4 heads, 8 keys), 37 rows after 29: 66 keys, 8 tiles + 2
  await check(4, { numHeads: 8, numKv: 2, headDim: 128, maxSeq: 80, rows: 37, posBase: 29 });
  // G = 8: one row (a verify-like chunk, 8 slots) at position 300: 301 keys, 37 tiles of 8 + 5
  await check(5, { numHeads: 16, numKv: 2, headDim: 128, maxSeq: 333, rows: 1, posBase: 300 });
  await check(6, { numHeads: 8, numKv: 1, headDim: 24, maxSeq: 40, rows: 19, posBase: 3 });
});

Deno.test("prefill attention: sliding windows smaller than a key tile, and longer than the chunk", async () => {
  // window 5 < the 8 keys a tile at 128 dims: each row sees 5 keys, a tile's 8 rows span 12
  await check(11, { numHeads: 8, numKv: 2, headDim: 128, maxSeq: 64, rows: 21, posBase: 30, window: 5 });
  // window 3 with one head a kv head, 64 rows a workgroup
  await check(12, { numHeads: 2, numKv: 2, headDim: 64, maxSeq: 90, rows: 40, posBase: 45, window: 3 });
  // window 100 > the 30-row chunk, starting past position 100: the first rows see keys from pos - 99
  await check(13, { numHeads: 4, numKv: 2, headDim: 40, maxSeq: 260, rows: 30, posBase: 200, window: 100 });
  // a window longer than the whole context: no key cut
  await check(14, { numHeads: 8, numKv: 2, headDim: 24, maxSeq: 70, rows: 17, posBase: 10, window: 500 });
});

Deno.test("prefill attention: positions from the state (verify pass), head sizes 256 and 4n + 2, forced tiles", async () => {
  // fromState: positions state[0] - posBase + row = 74 ..
  await check(21, { numHeads: 8, numKv: 1, headDim: 24, maxSeq: 100, rows: 19, posBase: 3, state: 77 });
  await check(22, {
    numHeads: 8,
    numKv: 2,
    headDim: 64,
    maxSeq: 200,
    rows: 5,
    posBase: 0,
    state: 150,
    window: 9,
  });
  // 256 dims: 16 query slots, 4 keys a tile
  await check(23, { numHeads: 4, numKv: 2, headDim: 256, maxSeq: 40, rows: 9, posBase: 20 });
  // 22 dims: the last vec4 of a head holds one f16 pair
  await check(24, { numHeads: 6, numKv: 2, headDim: 22, maxSeq: 60, rows: 13, posBase: 33, window: 20 });
  // q heads of a kv head over several workgroups: 3 of 8 a workgroup (the last takes 2); 1 of 4
  await check(25, {
    numHeads: 8,
    numKv: 1,
    headDim: 40,
    maxSeq: 50,
    rows: 11,
    posBase: 6,
    tile: { heads: 3 },
  });
  await check(26, {
    numHeads: 8,
    numKv: 2,
    headDim: 64,
    maxSeq: 50,
    rows: 9,
    posBase: 30,
    tile: { heads: 1 },
  });
  // the smallest key tile and a one-row tile
  await check(27, {
    numHeads: 4,
    numKv: 2,
    headDim: 128,
    maxSeq: 50,
    rows: 6,
    posBase: 17,
    tile: { keys: 4 },
  });
  await check(28, { numHeads: 4, numKv: 1, headDim: 40, maxSeq: 50, rows: 5, posBase: 9, tile: { rows: 1 } });
  // 32 keys a tile at 24 dims with 4 x 4 score blocks; 128 threads with 8 queries a thread of the value
  // step, and 64 threads (one query slot a softmax thread)
  await check(29, {
    numHeads: 2,
    numKv: 1,
    headDim: 24,
    maxSeq: 99,
    rows: 33,
    posBase: 60,
    tile: { keys: 32, blockQueries: 4, blockKeys: 4 },
  });
  await check(30, {
    numHeads: 8,
    numKv: 2,
    headDim: 128,
    maxSeq: 99,
    rows: 23,
    posBase: 41,
    window: 30,
    tile: { threads: 128, outQueries: 8, keys: 16, blockKeys: 2 },
  });
  await check(31, {
    numHeads: 6,
    numKv: 3,
    headDim: 40,
    maxSeq: 99,
    rows: 19,
    posBase: 50,
    tile: { threads: 64, outQueries: 8, blockQueries: 4, blockKeys: 2 },
  });
});

Deno.test("prefill attention tiles: Llama-3's, smaller under a lower workgroup-memory limit, refusals", () => {
  const llama = { numHeads: 32, numKv: 8, headDim: 128 };
  // the H200's 48 KB: the large tile of 64 slots (8 a thread of the value step) and 16 keys; 40 KB: 32 slots
  // and 32 keys; within ATTN_PREFILL.MAX_BYTES: the picking below
  const big = attnPrefillTile(llama, 256, 49152);
  assert(big.rows === 16 && big.heads === 4 && big.queries === 64 && big.keys === 16, JSON.stringify(big));
  assert(big.outQueries === 8 && big.blockKeys === 4 && big.bytes === 47872, JSON.stringify(big));
  const mid = attnPrefillTile(llama, 256, 40000);
  assert(
    mid.rows === 8 && mid.queries === 32 && mid.keys === 32 && mid.outQueries === 4,
    JSON.stringify(mid),
  );
  assert(attnPrefillTile(llama, 5, 49152).rows === 8, "a short chunk: a power of two of rows");
  const t = attnPrefillTile(llama, 256, 32768);
  assert(t.rows === 8 && t.heads === 4 && t.queries === 32 && t.keys === 8, JSON.stringify(t));
  assert(
    t.threads === 256 && t.outQueries === 4 && t.blockQueries === 2 && t.blockKeys === 4,
    JSON.stringify(t),
  );
  assert(t.bytes === attnPrefillBytes(128, 32, 8, 256) && t.bytes <= 24576, JSON.stringify(t));
  // a short chunk takes fewer rows: 3 rows -> 4
  assert(attnPrefillTile(llama, 3, 32768).rows === 4);
  // WebGPU's default 16 KB: fewer rows and keys
  const small = attnPrefillTile(llama, 256, 16384);
  assert(small.bytes <= 16384 && small.rows < 8, JSON.stringify(small));
  // head size 256 in 16 KB, and one head a kv head at 128 dims with many heads
  assert(attnPrefillTile({ numHeads: 8, numKv: 2, headDim: 256 }, 64, 16384).bytes <= 16384);
  const mqa = attnPrefillTile({ numHeads: 64, numKv: 1, headDim: 128 }, 64, 16384);
  assert(mqa.heads < 64 && mqa.bytes <= 16384, JSON.stringify(mqa));
  // every default tile: one vec4 of the key tile a thread, slots a multiple of 8, within the slots
  for (const d of [2, 6, 24, 40, 64, 80, 96, 128, 200, 256]) {
    for (const [h, kvh] of [[1, 1], [7, 1], [8, 2], [32, 1]]) {
      const x = attnPrefillTile({ numHeads: h, numKv: kvh, headDim: d }, 100, 32768);
      assert(x.keys * Math.ceil(d / 4) <= x.threads && x.queries % 8 === 0, JSON.stringify(x));
      assert(x.rows * x.heads <= x.queries && x.queries <= ATTN_PREFILL.MAX_QUERIES, JSON.stringify(x));
    }
  }
  throws(
    () => attnPrefillTile(llama, 256, 4000),
    /needs \d+ bytes of workgroup memory .* this GPU has 4000 \(maxComputeWorkgroupStorageSize\)/,
  );
  throws(
    () => attnPrefillTile({ numHeads: 4, numKv: 2, headDim: 258 }, 8, 49152),
    /even head size of at most 256/,
  );
  throws(() => attnPrefillTile({ numHeads: 4, numKv: 2, headDim: 63 }, 8, 49152), /even head size/);
  throws(() => attnPrefillTile({ numHeads: 6, numKv: 4, headDim: 64 }, 8, 49152), /not a multiple/);
  // tiles asked for that cannot be: too many keys to stage at 256 dims (64: 16 vec4s a thread), too many
  // slots, a bad key count, bad threads or blocks
  throws(
    () => attnPrefillTile({ numHeads: 4, numKv: 2, headDim: 256 }, 8, 49152, { keys: 64 }),
    /no tile .* fits/,
  );
  throws(() => attnPrefillTile(llama, 8, 49152, { rows: 16 }), /more than its 32 query slots/);
  throws(() => attnPrefillTile(llama, 8, 49152, { keys: 6 }), /multiple of 4/);
  throws(() => attnPrefillTile(llama, 8, 49152, { heads: 5 }), /integer in 1\.\.4/);
  throws(() => attnPrefillTile(llama, 8, 49152, { threads: 96 }), /threads must be 64, 128 or 256/);
  throws(() => attnPrefillTile(llama, 8, 49152, { blockKeys: 3 }), /2 or 4 queries by 2 or 4 keys/);
  throws(
    () => attnPrefillTile({ numHeads: 4, numKv: 2, headDim: 256 }, 8, 49152, { threads: 64 }),
    /fewer than 8/,
  );
});
