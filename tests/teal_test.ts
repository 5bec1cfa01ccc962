/**
 * TEAL on the GPU against the CPU reference: sparse logits (GEMM) and sparse greedy decoding (GEMV) equal the
 * reference with the same masks applied through its `project` hooks; the GPU's kept-channel counters equal a
 * CPU count; weighted scoring; calibration (determinism, targets, greedy allocation, profile files);
 * perplexity against reference logits.
 *
 * Masks are decided by |x_k| * scale_k > threshold. GPU activations differ from the reference's by rounding (f16
 * KV cache, f32 sums), so a channel sitting right at a threshold could be decided differently. The thresholds
 * are therefore picked by a fixed-point search on the reference (see {@link pickThresholds}): each lies in the
 * middle of a wide gap between the scores actually seen at its projection, near the wanted quantile, with
 * every score at least MARGIN (relative) away. Then both sides make the same decisions and counts match exactly.
 */
import {
  deepStrictEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert";
import { join } from "node:path";
import { loadModel, modelFromTensors } from "../src/model/model.ts";
import type { ModelConfig } from "../src/model/config.ts";
import { argmax, type ForwardHooks, ReferenceModel } from "../src/model/reference.ts";
import { type NamedTensor, PROJ, SLOTS } from "../src/model/weights.ts";
import { calibrate, projectionParams } from "../src/teal/calibrate.ts";
import { evaluatePerplexity } from "../src/teal/eval.ts";
import { loadProfile, type TealProfile, thresholdsFor, validateProfile } from "../src/teal/profile.ts";
import { f16round, gpu, randn, relErr, rng } from "./_gpu.ts";

const TINY = new URL("../models/tiny-llama-16m", import.meta.url).pathname;
const EVAL_TEXT = new URL("../../shared/data/eval_brown.txt", import.meta.url).pathname;

const CONFIG: ModelConfig = {
  architecture: "llama",
  hiddenSize: 64,
  intermediateSize: 96,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  vocabSize: 128,
  maxPositionEmbeddings: 512,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  tieWordEmbeddings: false,
  qkvBias: false,
  slidingWindow: null,
  bosTokenId: 1,
  eosTokenIds: [2],
};
const L = CONFIG.numLayers;
/** Input width K of each slot (q, k, v, o, gate, up, down). */
const K_OF = [64, 64, 64, 64, 64, 64, 96];
const SLOT_OF = PROJ as Record<string, number>;

/** Random f16-rounded HF-named weights ([out, in]). */
function randomWeights(
  c: ModelConfig,
  seed: number,
  chain = 0,
  outGain = 1,
): { map: Map<string, Float32Array>; tensors: NamedTensor[] } {
  const r = rng(seed);
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const tensors: NamedTensor[] = [];
  const add = (name: string, shape: number[], data: Float32Array) =>
    tensors.push({ name, shape, data: f16round(data) });
  // column gains vary, so weighted scores rank channels differently from magnitudes
  const mat = (name: string, out: number, inn: number, gain = 1) => {
    const w = randn(out * inn, r, gain * Math.sqrt(3 / inn));
    const col = Array.from({ length: inn }, () => 0.3 + 1.4 * r());
    for (let i = 0; i < w.length; i++) w[i] *= col[i % inn];
    add(name, [out, inn], w);
  };
  const norm = (name: string) => add(name, [H], Float32Array.from(randn(H, r, 0.2), (v) => 1 + v));
  add("model.embed_tokens.weight", [c.vocabSize, H], randn(c.vocabSize * H, r, 1));
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    norm(p + "input_layernorm.weight");
    mat(p + "self_attn.q_proj.weight", qDim, H, 2);
    mat(p + "self_attn.k_proj.weight", kvDim, H, 2);
    mat(p + "self_attn.v_proj.weight", kvDim, H);
    mat(p + "self_attn.o_proj.weight", H, qDim, outGain);
    norm(p + "post_attention_layernorm.weight");
    mat(p + "mlp.gate_proj.weight", I, H);
    mat(p + "mlp.up_proj.weight", I, H);
    mat(p + "mlp.down_proj.weight", H, I, outGain);
  }
  norm("model.norm.weight");
  mat("lm_head.weight", c.vocabSize, H, 3);
  if (chain > 0) {
    // lm_head row j also holds the embedding of token (j + 1) mod V: the residual stream keeps the current
    // token's embedding, so this favours "next = current - 1" by a margin that a few flipped channels cannot
    // overturn (random models are otherwise chaotic under sparsity: any changed mask changes the path)
    const e = tensors[0].data;
    const lm = tensors[tensors.length - 1].data;
    for (let j = 0; j < c.vocabSize; j++) {
      const src = ((j + 1) % c.vocabSize) * H;
      for (let k = 0; k < H; k++) lm[j * H + k] = Math.fround(lm[j * H + k] + chain * e[src + k]);
    }
    tensors[tensors.length - 1].data = f16round(lm);
  }
  return { map: new Map(tensors.map((t) => [t.name, t.data])), tensors };
}

/** Column norms ||W[:, k]|| of every projection, [layer][slot], computed here from the [out, in] weights. */
function norms(map: Map<string, Float32Array>, c: ModelConfig): Float32Array[][] {
  const names = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
  ];
  return Array.from({ length: c.numLayers }, (_, l) =>
    names.map((n, s) => {
      const w = map.get(`model.layers.${l}.${n}.weight`)!;
      const K = K_OF[s];
      const out = new Float32Array(K);
      for (let k = 0; k < K; k++) {
        let ss = 0;
        for (let o = 0; o < w.length / K; o++) ss += w[o * K + k] ** 2;
        out[k] = Math.sqrt(ss);
      }
      return out;
    }));
}

/** What mask hooks saw: dropped and total (row, channel) pairs per [layer * 7 + slot], and the scores. */
interface MaskStats {
  dropped: Float64Array;
  total: Float64Array;
  scores: number[][];
}
function newStats(): MaskStats {
  return {
    dropped: new Float64Array(L * SLOTS),
    total: new Float64Array(L * SLOTS),
    scores: Array.from({ length: L * SLOTS }, () => []),
  };
}

/** Reference hooks applying the TEAL masks: each projection's input thresholded with its own threshold. */
function maskHooks(thr: Float32Array, scales: Float32Array[][] | null, stats?: MaskStats): ForwardHooks {
  return {
    project: (l, proj, x) => {
      const s = SLOT_OF[proj];
      const K = K_OF[s];
      const t = thr[l * SLOTS + s];
      const y = Float32Array.from(x);
      for (let i = 0; i < y.length; i++) {
        const score = Math.fround(Math.abs(y[i]) * (scales ? scales[l][s][i % K] : 1));
        stats?.scores[l * SLOTS + s].push(score);
        if (!(score > t)) {
          y[i] = 0;
          if (stats) stats.dropped[l * SLOTS + s]++;
        }
        if (stats) stats.total[l * SLOTS + s]++;
      }
      return y;
    },
  };
}

/** Relative distance below which a score counts as "at" a threshold. */
const MARGIN = 2e-3;

/**
 * Thresholds per slot near `quantiles[slot]` of the scores that `run` produces under those very thresholds,
 * each in the middle of the widest gap among the scores near that quantile. A fixed point: a projection's
 * thresholds change only what later projections (and later layers, through the KV cache) see, so the search
 * settles stage by stage as long as `run` follows a fixed token path. 0 keeps everything non-zero; 1 drops all.
 */
function pickThresholds(
  run: (hooks: ForwardHooks) => void,
  quantiles: number[],
  scales: Float32Array[][] | null,
  start?: Float32Array,
): Float32Array {
  const thr = start ? Float32Array.from(start) : new Float32Array(L * SLOTS);
  for (let i = 0; i < thr.length; i++) if (quantiles[i % SLOTS] >= 1) thr[i] = 1e30;
  for (let iter = 0; iter < 16; iter++) {
    const st = newStats();
    run(maskHooks(thr, scales, st));
    let changed = false;
    for (let i = 0; i < thr.length; i++) {
      const q = quantiles[i % SLOTS];
      if (q <= 0 || q >= 1) continue;
      const v = Float64Array.from(st.scores[i]).sort();
      const n = v.length;
      const t = thr[i];
      const below = v.filter((s) => s <= t).length;
      const near = v.some((s) => Math.abs(s - t) <= MARGIN * t);
      if (t > 0 && !near && Math.abs(below / n - q) < 0.1) continue;
      // the gap wide enough for MARGIN on both sides that is nearest (in rank) to where the threshold is,
      // so that a correction drops or keeps as few other channels as possible
      const at = t > 0 && Math.abs(below / n - q) < 0.1 ? below : Math.round(q * n);
      let best = -1;
      for (let d = 0; d < n && best < 0; d++) {
        for (const j of [at - d, at + d + 1]) {
          if (j >= 1 && j < n && v[j] / v[j - 1] > (1 + 2.5 * MARGIN) ** 2) {
            best = j;
            break;
          }
        }
      }
      assert(best > 0, "no gap between the scores");
      const nt = Math.fround(Math.sqrt(v[best] * v[best - 1]));
      if (nt !== t) {
        thr[i] = nt;
        changed = true;
      }
    }
    if (!changed) return thr;
  }
  throw new Error("threshold search did not settle");
}

/** Per-slot quantiles: q, k, v and gate, up differ so that sharing a threshold would show. */
function spread(s: number): number[] {
  if (s <= 0 || s >= 1) return Array(SLOTS).fill(s);
  return [s - 0.1, s, s + 0.1, s, s - 0.05, s + 0.05, s];
}

async function syntheticModel(seed: number, chain = 0, outGain = 1) {
  const { map, tensors } = randomWeights(CONFIG, seed, chain, outGain);
  const ref = new ReferenceModel(CONFIG, map);
  const model = await modelFromTensors("teal-synthetic", CONFIG, tensors, {
    gpu: await gpu(),
    contextLength: 128,
    maxPrefill: 64,
  });
  let current: Float32Array = new Float32Array(L * SLOTS);
  model.setSparsityProfile([0, 0.5, 0.8], () => current);
  const use = (t: Float32Array) => {
    current = t;
    model.setThresholds(t);
  };
  return { map, ref, model, use };
}

/** GPU realised sparsity per [layer][slot] against the CPU count: equal within one channel of one row. */
function checkCounters(got: number[][], st: MaskStats, what: string): void {
  for (let l = 0; l < L; l++) {
    for (let s = 0; s < SLOTS; s++) {
      const i = l * SLOTS + s;
      const want = st.dropped[i] / st.total[i];
      assert(
        Math.abs(got[l][s] - want) <= 1 / st.total[i] + 1e-9,
        `${what}: layer ${l} slot ${s} realised ${got[l][s]}, CPU count ${want}`,
      );
    }
  }
}

Deno.test("TEAL sparse logits (GEMM) equal the reference with masks at 0%, ~50% and 100%; counters match", async () => {
  const { ref, model, use } = await syntheticModel(21);
  try {
    const r = rng(5);
    const ids = [1, ...Array.from({ length: 12 }, () => Math.floor(r() * CONFIG.vocabSize))];
    const run = (hooks: ForwardHooks) => {
      ref.reset();
      ref.forward(ids, 0, hooks);
    };
    ref.reset();
    const dense = ref.forward(ids, 0);
    for (const s of [0, 0.5, 1]) {
      const thr = pickThresholds(run, spread(s), null);
      const st = newStats();
      ref.reset();
      const want = ref.forward(ids, 0, maskHooks(thr, null, st));
      use(thr);
      const got = await model.logits(ids, { sparsity: 0.5 });
      const err = relErr(got, want);
      assert(err < 5e-3, `sparsity ${s}: logits relative error ${err}`);
      checkCounters(model.lastSparsity!.perTensor, st, `target ${s}`);
      const overall = model.lastSparsity!.overall;
      if (s === 0) {
        assert(overall === 0 && relErr(want, dense) < 1e-6, "threshold 0 keeps every channel");
      } else if (s === 1) {
        assert(overall === 1, `all dropped: ${overall}`);
      } else {
        assert(Math.abs(overall - 0.5) < 0.1, `~50%: ${overall}`);
        assert(relErr(want, dense) > 1e-2, "the masks change the logits");
        // q, k and v (and gate, up) were dropped at their own rates
        const p = model.lastSparsity!.perTensor[1];
        assert(p[0] < p[1] && p[1] < p[2] && p[4] < p[5], `per-projection rates ${p}`);
      }
    }
  } finally {
    model.dispose();
  }
});

Deno.test("TEAL sparse greedy decode (GEMV) equals the masked reference step by step; decode counters match", async () => {
  // seed 22 with a next-token chain and damped block outputs: the masked greedy path is self-consistent
  // (see randomWeights) and still differs from the dense one
  const { ref, model, use } = await syntheticModel(22, 1, 0.5);
  try {
    const prompt = [1, 40, 7, 99, 3];
    const n = 16;
    const V = CONFIG.vocabSize;
    /** Dense prefill (sparsePrefill is off), then masked decode steps feeding `path` (teacher forcing). */
    const forced = (path: number[]) => (hooks: ForwardHooks) => {
      ref.reset();
      ref.forward(prompt, 0);
      for (let i = 0; i + 1 < n; i++) ref.forward([path[i]], prompt.length + i, hooks);
    };
    /** Greedy decoding with masks: the path, its smallest relative top-1 margin. */
    const greedy = (hooks: ForwardHooks) => {
      ref.reset();
      let logits: Float32Array = ref.forward(prompt, 0).slice((prompt.length - 1) * V);
      const path: number[] = [];
      let margin = Infinity;
      for (let i = 0; i < n; i++) {
        const b = argmax(logits);
        const scale = logits.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
        margin = Math.min(margin, (logits[b] - Math.max(...logits.filter((_, j) => j !== b))) / scale);
        path.push(b);
        if (i + 1 < n) logits = ref.forward([b], prompt.length + i, hooks);
      }
      return { path, margin };
    };
    // thresholds settled on a path, then the greedy path under them: repeat until they agree
    const densePath = greedy({}).path;
    let path = densePath;
    let thr: Float32Array = new Float32Array(0);
    for (let round = 0;; round++) {
      assert(round < 5, "no self-consistent greedy path");
      thr = pickThresholds(forced(path), spread(0.5), null, round > 0 ? thr : undefined);
      const next = greedy(maskHooks(thr, null)).path;
      if (next.join() === path.join()) break;
      path = next;
    }
    const st = newStats();
    const { margin } = greedy(maskHooks(thr, null, st));
    assert(margin > 4e-3, `greedy margin ${margin} too small for this seed`);
    assert(path.join() !== densePath.join(), "the masks should change the greedy path");
    use(thr);
    const got = await model.complete(prompt, {
      temperature: 0,
      sparsity: 0.5,
      stopAtEos: false,
      maxTokens: n,
    });
    assertEquals(got.ids, path);
    // counters cover the n - 1 decode steps (token 0 comes from the dense prefill)
    assertEquals(st.total[0], (n - 1) * 64);
    checkCounters(model.lastSparsity!.perTensor, st, "decode");
    assert(Math.abs(got.realizedSparsity! - model.lastSparsity!.overall) < 1e-12);
    assert(Math.abs(got.realizedSparsity! - 0.5) < 0.1, `realised ${got.realizedSparsity}`);
    // the same thresholds under the targets of the low and high sparsity bins: their GEMV variants
    for (const sparsity of [0.25, 0.7]) {
      const binned = await model.complete(prompt, {
        temperature: 0,
        sparsity,
        stopAtEos: false,
        maxTokens: n,
      });
      assertEquals(binned.ids, path, `sparsity bin of ${sparsity}`);
      checkCounters(model.lastSparsity!.perTensor, st, `decode, sparsity bin of ${sparsity}`);
    }
    // the same with the sparse GEMVs summing their own splits (gemv_finish.wgsl)
    model.forward.gemvEpilogue = true;
    const fused = await model.complete(prompt, {
      temperature: 0,
      sparsity: 0.5,
      stopAtEos: false,
      maxTokens: n,
    });
    assertEquals(fused.ids, path);
    checkCounters(model.lastSparsity!.perTensor, st, "decode, GEMV epilogues");
    model.forward.gemvEpilogue = false;
    // the dense path is untouched by the thresholds
    const dense = await model.complete(prompt, { temperature: 0, stopAtEos: false, maxTokens: 4 });
    assertEquals([dense.ids, dense.realizedSparsity], [densePath.slice(0, 4), null]);
  } finally {
    model.dispose();
  }
});

Deno.test("TEAL weighted scores: the GPU masks |x| * ||W[:, k]|| like the reference", async () => {
  const { map, ref, model, use } = await syntheticModel(23);
  try {
    const cn = norms(map, CONFIG);
    const got = model.columnNorms();
    for (let l = 0; l < L; l++) {
      for (let s = 0; s < SLOTS; s++) assert(relErr(got[l][s], cn[l][s]) < 1e-6, `norms ${l}/${s}`);
    }
    model.setScoreMode("weighted");
    const r = rng(6);
    const ids = [1, ...Array.from({ length: 9 }, () => Math.floor(r() * CONFIG.vocabSize))];
    const run = (hooks: ForwardHooks) => {
      ref.reset();
      ref.forward(ids, 0, hooks);
    };
    const thr = pickThresholds(run, spread(0.5), cn);
    const st = newStats();
    ref.reset();
    const want = ref.forward(ids, 0, maskHooks(thr, cn, st));
    use(thr);
    const logits = await model.logits(ids, { sparsity: 0.5 });
    assert(relErr(logits, want) < 5e-3, `weighted: ${relErr(logits, want)}`);
    checkCounters(model.lastSparsity!.perTensor, st, "weighted");
    // the magnitude masks with the same thresholds are different ones
    const stM = newStats();
    ref.reset();
    ref.forward(ids, 0, maskHooks(thr, null, stM));
    assert(stM.dropped.some((d, i) => d !== st.dropped[i]));
    // back to magnitude scores: the GPU follows the magnitude masks again
    model.setScoreMode("magnitude");
    const thrM = pickThresholds(run, spread(0.5), null);
    const st2 = newStats();
    ref.reset();
    const wantM = ref.forward(ids, 0, maskHooks(thrM, null, st2));
    use(thrM);
    const logitsM = await model.logits(ids, { sparsity: 0.5 });
    assert(relErr(logitsM, wantM) < 5e-3, `back to magnitude: ${relErr(logitsM, wantM)}`);
    checkCounters(model.lastSparsity!.perTensor, st2, "magnitude again");
  } finally {
    model.dispose();
  }
});

Deno.test("TEAL calibration: deterministic, on target, greedy allocation, profiles", async (t) => {
  const { model } = await syntheticModel(24);
  const tmp = await Deno.makeTempDir({ prefix: "tealgpu-teal-" });
  try {
    const r = rng(9);
    const ctx = 32;
    const wins = Array.from(
      { length: 4 },
      () => [1, ...Array.from({ length: ctx }, () => Math.floor(r() * CONFIG.vocabSize))],
    );
    // small: on lavapipe each greedy step (7 trial block runs and a read-back) costs ~80 ms
    const opts = { ctx, tokens: 128, greedyTokens: 32, gridStep: 0.1, maxTarget: 0.9, greedyStep: 0.1 };
    const params = projectionParams(model);
    assertEquals(params, [64 * 64, 32 * 64, 32 * 64, 64 * 64, 96 * 64, 96 * 64, 64 * 96]);
    const total = params.reduce((a, b) => a + b, 0);
    const greedy = await calibrate(model, wins, { ...opts, allocation: "greedy" });
    const uniform = await calibrate(model, wins, { ...opts, allocation: "uniform" });

    await t.step("levels hit their targets", () => {
      for (const p of [greedy, uniform]) {
        assertEquals(p.levels.map((l) => l.target), [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]);
        assertEquals(p.calibration.tokens, 128);
        for (const lv of p.levels) {
          assert(Math.abs(lv.calibrated - lv.target) <= 0.03, `${lv.target}: calibrated ${lv.calibrated}`);
        }
        assert(p.levels[0].layers.every((ly) => ly.threshold.every((v) => v === 0)));
      }
      for (const lv of uniform.levels) {
        for (const ly of lv.layers) {
          ly.sparsity.forEach((s) => assert(Math.abs(s - lv.target) <= 0.03, `uniform ${lv.target}: ${s}`));
        }
      }
      // uniform thresholds rise with the target (greedy levels need not: a level may keep the uniform
      // allocation when the greedy one loses on the calibration loss)
      for (let l = 0; l < L; l++) {
        for (let s = 0; s < SLOTS; s++) {
          for (let i = 1; i < uniform.levels.length; i++) {
            assert(uniform.levels[i].layers[l].threshold[s] > uniform.levels[i - 1].layers[l].threshold[s]);
          }
        }
      }
    });

    await t.step("greedy allocation is parameter-weighted to the target in every layer", () => {
      for (const lv of greedy.levels) {
        for (const ly of lv.layers) {
          const w = ly.sparsity.reduce((a, s, j) => a + s * params[j], 0) / total;
          assert(Math.abs(w - lv.target) <= 0.03, `target ${lv.target}: weighted ${w} (${ly.sparsity})`);
        }
      }
    });

    await t.step("calibration is deterministic", async () => {
      assertEquals((await calibrate(model, wins, { ...opts, allocation: "uniform" })).levels, uniform.levels);
      // the greedy search is sequential: a run to a lower maxTarget repeats the first levels exactly
      const again = await calibrate(model, wins, { ...opts, maxTarget: 0.2, allocation: "greedy" });
      assertEquals(again.levels, greedy.levels.slice(0, 3));
    });

    await t.step("profiles validate against their model and are refused by another", () => {
      const json = JSON.parse(JSON.stringify(greedy));
      assertEquals(validateProfile(json, "mem.json", CONFIG).levels, greedy.levels);
      for (const other of [{ ...CONFIG, numLayers: 3 }, { ...CONFIG, intermediateSize: 104 }]) {
        assertThrows(() => validateProfile(json, "mem.json", other), (e: unknown) => {
          assert(
            e instanceof Error && e.message.includes("TEAL profile mem.json") &&
              e.message.includes("another model"),
            `${e}`,
          );
          return true;
        });
      }
    });

    await t.step("thresholdsFor interpolates between levels and refuses targets off the grid", () => {
      const at = (s: number) => Array.from(thresholdsFor(greedy, s));
      const flat = (i: number) => greedy.levels[i].layers.flatMap((ly) => ly.threshold).map(Math.fround);
      assertEquals(at(0.3), flat(3));
      assertEquals(at(0), flat(0));
      assertEquals(at(0.9), flat(9));
      const mid = at(0.25);
      const lo = flat(2), hi = flat(3);
      mid.forEach((v, i) =>
        assert(Math.abs(v - (lo[i] + hi[i]) / 2) <= 1e-6 * Math.max(1, hi[i]), `interp ${i}`)
      );
      const q = at(0.32);
      const lo3 = flat(3), hi4 = flat(4);
      q.forEach((v, i) => assert(Math.abs(v - (0.8 * lo3[i] + 0.2 * hi4[i])) <= 1e-5 * Math.max(1, hi4[i])));
      for (const bad of [0.95, -0.01, NaN]) {
        assertThrows(() => thresholdsFor(greedy, bad), (e: unknown) => {
          assert(e instanceof RangeError && e.message.includes("outside the profile's range"), `${e}`);
          return true;
        });
      }
    });

    await t.step("loadProfile names the file and the field", async () => {
      const write = async (name: string, body: string) => {
        const p = join(tmp, name);
        await Deno.writeTextFile(p, body);
        return p;
      };
      const named = (path: string, field: string) => (e: unknown) => {
        assert(e instanceof Error && e.message.includes(path) && e.message.includes(field), `${e}`);
        return true;
      };
      const good = await write("good.json", JSON.stringify(greedy));
      assertEquals((await loadProfile(good, CONFIG)).levels, greedy.levels);
      const badJson = await write("bad.json", JSON.stringify(greedy).slice(0, 100));
      await assertRejects(loadProfile(badJson, CONFIG), named(badJson, "invalid JSON"));
      const v2 = await write("v2.json", JSON.stringify({ ...greedy, version: 2 }));
      await assertRejects(loadProfile(v2, CONFIG), named(v2, "'version'"));
      const layers = await write(
        "layers.json",
        JSON.stringify({
          ...greedy,
          levels: greedy.levels.map((lv) => ({ ...lv, layers: lv.layers.slice(0, 1) })),
        }),
      );
      await assertRejects(loadProfile(layers, CONFIG), named(layers, "levels[0].layers"));
      const short = JSON.parse(JSON.stringify(greedy)) as TealProfile;
      short.levels[2].layers[1].threshold.pop();
      const shortPath = await write("short.json", JSON.stringify(short));
      await assertRejects(loadProfile(shortPath, CONFIG), named(shortPath, "levels[2].layers[1].threshold"));
      await assertRejects(
        loadProfile(join(tmp, "missing.json"), CONFIG),
        named(join(tmp, "missing.json"), "cannot read"),
      );
    });

    await t.step("text evaluation needs a tokenizer", async () => {
      await assertRejects(evaluatePerplexity(model, "some text", { ctx: 8, windows: 1 }), /tokenizer/);
    });

    await t.step("an attached profile reaches its target on the calibration windows", async () => {
      model.attachProfile(greedy);
      assertEquals(model.sparsityLevels, greedy.levels.map((l) => l.target));
      let realised = 0;
      for (const w of wins.slice(0, 2)) {
        await model.logits(w, { sparsity: 0.5 });
        realised += model.lastSparsity!.overall / 2;
      }
      assert(Math.abs(realised - 0.5) <= 0.05, `realised ${realised}`);
      await assertRejects(model.logits(wins[0], { sparsity: 0.95 }), RangeError);
    });
  } finally {
    model.dispose();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("evaluatePerplexity (dense) on tiny-llama-16m equals exp(mean NLL) of the reference logits", async () => {
  const model = await loadModel(TINY, { gpu: await gpu(), contextLength: 128, profile: false });
  try {
    const text = (await Deno.readTextFile(EVAL_TEXT)).slice(0, 2000);
    const ctx = 63; // BOS + 63 = 64 rows: one GEMM row tile, half the lavapipe time of 65 rows
    const [res] = await evaluatePerplexity(model, text, { ctx, windows: 2 });
    assertEquals([res.sparsity, res.tokens, res.realized], [0, 2 * ctx, 0]);
    const ids = model.encode(text, false);
    assert(ids.length >= 2 * ctx);
    const ref = await ReferenceModel.load(TINY);
    const V = ref.config.vocabSize;
    let nll = 0;
    for (let w = 0; w < 2; w++) {
      const win = [0, ...ids.slice(w * ctx, (w + 1) * ctx)];
      ref.reset();
      const logits = ref.forward(win, 0);
      for (let r = 0; r < ctx; r++) {
        const row = logits.subarray(r * V, (r + 1) * V);
        const max = row.reduce((a, v) => Math.max(a, v), -Infinity);
        const lse = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
        nll += lse - row[win[r + 1]];
      }
    }
    const want = Math.exp(nll / (2 * ctx));
    assert(Math.abs(res.ppl / want - 1) < 1e-3, `ppl ${res.ppl}, reference ${want}`);
    assert(res.ppl > 5 && res.ppl < 2000, `plausible perplexity ${res.ppl}`);
  } finally {
    model.dispose();
  }
});
