/**
 * The f16-arithmetic prefill GEMM (shaders/matmul_wide_h.wgsl, MATMUL_WIDE.half) in the whole embedded model:
 * a prompt of 240 tokens run as one prefill pass, with the switch on and off, against each other and the CPU
 * reference. The kernel itself is held to its error bound in tests/kernels_test.ts; here the question is what
 * its rounding (x in f16, each K step's products summed in f16) does to the logits and the greedy tokens.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { loadModel, type Model } from "../src/model/model.ts";
import { argmax, ReferenceModel } from "../src/model/reference.ts";
import { releaseOps } from "../src/model/forward.ts";
import { MATMUL_WIDE } from "../src/gpu/kernels.ts";
import { gpu, relErr } from "./_gpu.ts";

const TINY = new URL("../models/tiny-llama-16m", import.meta.url).pathname;
const TEXT = new URL("../../shared/data/eval_brown.txt", import.meta.url).pathname;
const ROWS = 240;

/** The labels of a prefill pass's GEMM ops over `rows` rows, counted. */
function gemmKernels(model: Model, rows: number): Record<string, number> {
  const f = model.forward;
  const logits = f.ctx.buffer(rows * f.config.vocabSize * 4, "logits");
  const ops = f.prefill(rows, 0, { allLogits: logits });
  const count: Record<string, number> = {};
  for (const op of ops) if (op.label.startsWith("matmul")) count[op.label] = (count[op.label] ?? 0) + 1;
  releaseOps(ops);
  logits.destroy();
  return count;
}

/** Largest |a - b|. */
function maxAbs(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Each row's argmax, and its margin over the runner-up. */
function top(logits: Float32Array, V: number): { ids: number[]; margins: number[] } {
  const ids: number[] = [];
  const margins: number[] = [];
  for (let r = 0; r < logits.length / V; r++) {
    const row = logits.subarray(r * V, (r + 1) * V);
    const best = argmax(row);
    let second = -Infinity;
    for (let i = 0; i < V; i++) if (i !== best) second = Math.max(second, row[i]);
    ids.push(best);
    margins.push(row[best] - second);
  }
  return { ids, margins };
}

Deno.test("matmul_wide_h in the embedded model: a 240-token prefill's logits stay near the f32 GEMM's, the greedy tokens match", async () => {
  const ctx = await gpu();
  assert(ctx.hasF16, "the test adapter (lavapipe) offers shader-f16");
  const model = await loadModel(TINY, { gpu: ctx, contextLength: ROWS + 32, profile: false });
  const saved = { ...MATMUL_WIDE };
  try {
    const V = model.config.vocabSize;
    const bos = model.config.bosTokenId ?? 0;
    const text = await Deno.readTextFile(TEXT);
    const ids = [bos, ...model.encode(text.slice(0, 4000), false).slice(0, ROWS - 1)];
    assertEquals(ids.length, ROWS);
    assert(model.forward.maxPrefill >= ROWS, "one prefill pass");
    // every GEMM of the pass (4 a layer and lm_head) takes the switch's kernel
    const gemms = 4 * model.config.numLayers + model.forward.weights.lmHead.length;
    MATMUL_WIDE.half = false;
    assertEquals(gemmKernels(model, ROWS), { matmul_wide: gemms });
    const f32 = await model.logits(ids);
    const f32Greedy = (await model.complete(ids, { maxTokens: 8, temperature: 0 })).ids;
    MATMUL_WIDE.half = true;
    assertEquals(gemmKernels(model, ROWS), { matmul_wide_h: gemms });
    const half = await model.logits(ids);
    const halfGreedy = (await model.complete(ids, { maxTokens: 8, temperature: 0 })).ids;

    const ref = await ReferenceModel.load(TINY);
    const want = ref.forward(ids, 0);
    const diff = { abs: maxAbs(half, f32), rel: relErr(half, f32) };
    const vsRef = { f32: relErr(f32, want), half: relErr(half, want) };
    console.log(
      `f16 GEMM against f32 GEMM over ${ROWS} rows: max |diff| ${diff.abs.toExponential(3)}, ` +
        `relative ${diff.rel.toExponential(3)}; against the CPU reference: f32 ${
          vsRef.f32.toExponential(3)
        }, f16 ${vsRef.half.toExponential(3)}`,
    );
    assert(half.every(Number.isFinite), "finite logits");
    // a few times the f32 path's own distance from the reference (f16 weights and KV cache), and far from
    // what a wrong kernel gives (relative error of order 1)
    assert(diff.rel < 1e-2, `logits relative difference ${diff.rel}`);
    assert(vsRef.half < 1e-2, `against the reference: ${vsRef.half} (f32 ${vsRef.f32})`);
    // next tokens: every row whose f32 top-1 margin exceeds twice the largest difference has the same argmax
    // (most rows: a small model has many near ties), and all but two rows of all
    const a = top(f32, V);
    const b = top(half, V);
    const safe = a.margins.map((m, r) => (m > 2 * diff.abs ? r : -1)).filter((r) => r >= 0);
    assert(safe.length > 0.75 * ROWS, `${safe.length} of ${ROWS} rows with a safe margin`);
    for (const r of safe) assertEquals(b.ids[r], a.ids[r], `row ${r}: next token`);
    const same = a.ids.filter((id, r) => id === b.ids[r]).length;
    assert(same >= ROWS - 2, `${same} of ${ROWS} next tokens match`);
    // greedy continuation after the prompt (its prefill, and so the KV cache, through the f16 GEMM)
    assertEquals(halfGreedy, f32Greedy, "greedy tokens after the prompt");
  } finally {
    Object.assign(MATMUL_WIDE, saved);
    model.dispose();
  }
});
