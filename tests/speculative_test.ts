/**
 * Self-speculative decoding (sparse draft, dense verify) must give exactly the dense greedy output.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert";
import { loadModel, type Model } from "../src/model/model.ts";
import { calibrate } from "../src/teal/calibrate.ts";
import type { GpuContext } from "../src/gpu/context.ts";
import { copyOp, specAcceptOps } from "../src/gpu/kernels.ts";
import { releaseOps } from "../src/model/forward.ts";
import { SPEC_AUTO } from "../src/generate/speculative_auto.ts";
import { generateCommand } from "../src/cli/generate.ts";
import { createApp } from "../src/server/app.ts";
import { FakeModel } from "./_fake_model.ts";
import {
  sampleToken,
  type SamplingOptions,
  specSeeds,
  speculativeAccept,
  tokenProbabilities,
} from "../src/generate/sampler.ts";
import { gpu, POISON, poisoned, randn, rng } from "./_gpu.ts";

Deno.test("speculative greedy equals dense greedy on tiny-llama-16m (shipped TEAL profile)", async () => {
  const model = await loadModel("models/tiny-llama-16m", { gpu: await gpu(), contextLength: 256 });
  try {
    assert(model.sparsityLevels.length > 0, "the embedded model ships a TEAL profile");
    const prompt = model.encode("The jury said that the city");
    const dense = await model.complete(prompt, { maxTokens: 16, temperature: 0, stopAtEos: false });
    const spec = await model.complete(prompt, {
      maxTokens: 16,
      temperature: 0,
      stopAtEos: false,
      speculate: 3,
      draftSparsity: 0.5,
    });
    assertEquals(spec.ids, dense.ids);
    assert(spec.speculation && spec.speculation.rounds > 0 && spec.speculation.rounds <= 16);
    assert(spec.speculation.tokensPerRound >= 1);
  } finally {
    model.dispose();
  }
});

Deno.test("speculative greedy equals dense greedy on stories260k, K = 1 and 4 (and 4 with the few-row GEMV verify), to the context's end", async () => {
  const model = await loadModel("../shared/models/stories260k", {
    gpu: await gpu(),
    contextLength: 96,
    maxPrefill: 33,
  });
  try {
    await rejects(model.complete([1], { temperature: 0, speculate: 2 }), /no TEAL profile/);
    const r = rng(3);
    const wins = Array.from(
      { length: 4 },
      () => [1, ...Array.from({ length: 32 }, () => Math.floor(r() * 512))],
    );
    model.attachProfile(await calibrate(model, wins, { ctx: 32, tokens: 128, allocation: "uniform" }));
    const dense = await model.complete([1], { maxTokens: 200, temperature: 0, stopAtEos: false });
    assertEquals(dense.ids.length, 95); // the context (96) ends the generation
    // the verify pass (K + 1 rows) through the tiled GEMM, then the few-row GEMV (the default)
    model.forward.prefillGemv = false;
    for (const k of [1, 4]) {
      const spec = await model.complete([1], {
        maxTokens: 200,
        temperature: 0,
        stopAtEos: false,
        speculate: k,
      });
      assertEquals(spec.ids, dense.ids, `K = ${k}`);
    }
    model.forward.prefillGemv = true;
    const spec = await model.complete([1], {
      maxTokens: 200,
      temperature: 0,
      stopAtEos: false,
      speculate: 4,
    });
    assertEquals(spec.ids, dense.ids, "K = 4, few-row GEMV verify");
  } finally {
    model.dispose();
  }
});

/** One acceptance round on the GPU: returns tokens[step0 + 1 .. step0 + k + 1] and the state it left. */
interface Round {
  draft: Float32Array[];
  verify: Float32Array[];
  drafts: number[];
  o: SamplingOptions;
  step0: number;
}

/**
 * Runs many independent rounds (disjoint token ranges) in one submit; each round's decode state (position
 * 1000 + step0 + k, step step0 + 1 + k: as its k draft steps would leave it) is copied in before it. Returns
 * each round's token slots, the round log and the last state.
 */
async function gpuRounds(ctx: GpuContext, rounds: Round[], V: number): Promise<{
  slots: number[][];
  log: number[];
  lastState: number[];
}> {
  const K = Math.max(...rounds.map((r) => r.drafts.length));
  const capacity = Math.max(...rounds.map((r) => r.step0 + r.drafts.length + 2)) + 1;
  const tokens = poisoned(ctx, capacity, "tokens");
  const state = poisoned(ctx, 4, "state");
  const stats = poisoned(ctx, (2 * K + 1) * 4, "stats");
  const log = ctx.buffer((1 + rounds.length) * 4, "log");
  const init = ctx.buffer(
    rounds.length * 16,
    "init",
    new Uint32Array(rounds.flatMap((r) => {
      const k = r.drafts.length;
      return [1000 + r.step0 + k, r.drafts[k - 1] ?? 0, r.step0 + 1 + k, 0];
    })),
  );
  const bufs: GPUBuffer[] = [tokens, state, stats, log, init];
  const ops = [];
  const packs = new Map<Round["draft"], { q: GPUBuffer; p: GPUBuffer }>();
  for (const [t, r] of rounds.entries()) {
    // (an empty write panics Deno's WebGPU)
    if (r.drafts.length > 0) ctx.write(tokens, new Uint32Array(r.drafts), (r.step0 + 1) * 4);
    let pack = packs.get(r.draft);
    if (!pack) {
      const q = new Float32Array(Math.max(1, K) * V);
      r.draft.forEach((row, i) => q.set(row, i * V));
      const pv = new Float32Array((K + 1) * V);
      r.verify.forEach((row, i) => pv.set(row, i * V));
      pack = { q: ctx.buffer(q.byteLength, "draft", q), p: ctx.buffer(pv.byteLength, "verify", pv) };
      bufs.push(pack.q, pack.p);
      packs.set(r.draft, pack);
    }
    const seeds = specSeeds(r.o.seed);
    ops.push(copyOp(ctx, init, state, { n: 4, srcOffset: 4 * t }));
    ops.push(...specAcceptOps(ctx, pack.q, pack.p, stats, tokens, state, log, {
      vocab: V,
      k: r.drafts.length,
      capacity,
      logCapacity: 1 + rounds.length,
      ...r.o,
      seedAccept: seeds.accept,
      seedResidual: seeds.residual,
    }));
  }
  ctx.run(ops);
  const all = Array.from(await ctx.readU32(tokens));
  const logged = Array.from(await ctx.readU32(log));
  const lastState = Array.from(await ctx.readU32(state));
  releaseOps(ops);
  for (const b of bufs) b.destroy();
  assertEquals(logged[0], rounds.length);
  return {
    slots: rounds.map((r) => all.slice(r.step0 + 1, r.step0 + r.drafts.length + 2)),
    log: logged.slice(1, 1 + rounds.length),
    lastState,
  };
}

/** What the CPU oracle says the round's token slots hold afterwards (POISON where nothing was written). */
function oracleSlots(r: Round): { slots: number[]; accepted: number; token: number } {
  const d = speculativeAccept(r.draft, r.verify, r.drafts, r.o, r.step0);
  const slots = [...r.drafts, POISON];
  slots[d.accepted] = d.token;
  return { slots, ...d };
}

const MODES: SamplingOptions[] = [
  { temperature: 0, topK: 0, topP: 1, seed: 0 },
  { temperature: 1, topK: 0, topP: 1, seed: 3 },
  { temperature: 0.7, topK: 12, topP: 1, seed: 4 },
  { temperature: 1.3, topK: 0, topP: 0.8, seed: 5 },
  { temperature: 0.9, topK: 25, topP: 0.9, seed: 6 },
];

Deno.test("spec_accept matches the CPU oracle on random p/q (vocab 300 and 517), outputs poisoned", async () => {
  const ctx = await gpu();
  const r = rng(41);
  for (const V of [300, 517]) {
    for (const o of MODES) {
      const rounds: Round[] = [];
      for (let t = 0; t < 12; t++) {
        const k = t % 5; // 0..4 drafts, k = 0 is the bonus token alone
        // q close to p so that some drafts are accepted and some rejected
        const verify = Array.from({ length: k + 1 }, () => randn(V, r, 3));
        const draft = verify.slice(0, k).map((row) => row.map((v) => v + (r() * 2 - 1) * 1.5));
        const step0 = t * 8;
        const drafts = draft.map((row, i) => sampleToken(row, o, step0 + 1 + i));
        rounds.push({ draft, verify, drafts, o, step0 });
      }
      // each round has its own buffers here: run them one submit each, same helper
      const outcomes = new Set<string>();
      for (const round of rounds) {
        const got = await gpuRounds(ctx, [round], V);
        const want = oracleSlots(round);
        assertEquals(got.log, [want.accepted]);
        assertEquals(got.slots[0], want.slots, `V ${V} ${JSON.stringify(o)} k ${round.drafts.length}`);
        if (round.drafts.length > 0) outcomes.add(want.accepted === 0 ? "none" : "some");
        assertEquals(got.lastState, [
          1000 + round.step0 + want.accepted + 1,
          want.token,
          round.step0 + want.accepted + 2,
          0,
        ]);
      }
      assertEquals(outcomes.size, 2, "the random rounds include rejections and acceptances");
    }
  }
});

Deno.test("spec_accept edge cases: p == q always accepts, q's mass where p has none always rejects", async () => {
  const ctx = await gpu();
  const r = rng(42);
  const V = 517;
  for (const o of MODES) {
    // p == q: every draft is accepted, then the bonus token
    const rows = Array.from({ length: 5 }, () => randn(V, r, 3));
    const same: Round[] = Array.from({ length: 6 }, (_, t) => {
      const step0 = t * 8;
      const draft = rows.slice(0, 4);
      return {
        draft,
        verify: rows,
        drafts: draft.map((row, i) => sampleToken(row, o, step0 + 1 + i)),
        o,
        step0,
      };
    });
    const got = await gpuRounds(ctx, same, V);
    same.forEach((round, t) => {
      const want = oracleSlots(round);
      assertEquals(want.accepted, 4, "the oracle accepts every draft when p == q");
      assertEquals(got.slots[t], want.slots);
    });
    // the draft puts its mass on token 7, which p excludes (underflow, or outside p's top-k): reject it
    const verify = [randn(V, r, 1), randn(V, r, 1)];
    verify[0][7] = -1e4;
    const bad = randn(V, r, 1);
    bad[7] = 30;
    const rej: Round[] = Array.from({ length: 6 }, (_, t) => ({
      draft: [bad],
      verify,
      drafts: [7],
      o,
      step0: t * 4,
    }));
    const g2 = await gpuRounds(ctx, rej, V);
    rej.forEach((round, t) => {
      const want = oracleSlots(round);
      assertEquals(want.accepted, 0);
      assertEquals(g2.slots[t], want.slots);
      assert(g2.slots[t][0] !== 7, "a token p gives no mass is never emitted");
    });
  }
  // top-k: p keeps 5 tokens; the draft's favourite (sixth in p) is rejected, the token is one of p's five
  const o = { temperature: 1, topK: 5, topP: 1, seed: 9 };
  const pv = new Float32Array(V).fill(-2);
  [3, 50, 99, 200, 400].forEach((i) => (pv[i] = 4));
  pv[7] = 3.9;
  const q = new Float32Array(V).fill(-2);
  q[7] = 20;
  const rounds: Round[] = Array.from({ length: 16 }, (_, t) => ({
    draft: [q],
    verify: [pv, pv],
    drafts: [7],
    o,
    step0: t * 4,
  }));
  const g3 = await gpuRounds(ctx, rounds, V);
  rounds.forEach((round, t) => {
    assertEquals(g3.slots[t], oracleSlots(round).slots);
    assert([3, 50, 99, 200, 400].includes(g3.slots[t][0]));
  });
});

/** Total-variation distance between two distributions. */
function tv(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d += Math.abs(a[i] - b[i]);
  return d / 2;
}

Deno.test("spec_accept: over 3000 seeds the emitted token follows p, not q (K = 1)", async () => {
  const ctx = await gpu();
  const V = 300;
  const o = { temperature: 1, topK: 0, topP: 1, seed: 17 };
  // p and q on a few tokens, q also on token 250 where p has (almost) nothing
  const pl = new Float32Array(V).fill(-12);
  const ql = new Float32Array(V).fill(-12);
  [[5, 2], [40, 1.5], [41, 1], [120, 0.5], [299, 1.2]].forEach(([i, v]) => (pl[i] = v));
  [[5, 1], [40, 2], [41, 0.2], [120, 1.4], [250, 1.5]].forEach(([i, v]) => (ql[i] = v));
  const p = tokenProbabilities(pl, o);
  const q = tokenProbabilities(ql, o);
  const N = 3000;
  const rounds: Round[] = Array.from({ length: N }, (_, t) => ({
    draft: [ql],
    verify: [pl, pl],
    drafts: [sampleToken(ql, o, 2 * t + 1)],
    o,
    step0: 2 * t,
  }));
  const got = await gpuRounds(ctx, rounds, V);
  const hist = new Float64Array(V);
  rounds.forEach((round, t) => {
    assertEquals(got.slots[t], oracleSlots(round).slots);
    hist[got.slots[t][0]] += 1 / N;
  });
  // sampling noise of the TV estimate here is about 0.02; wrong rules are far off
  const bound = 0.04;
  const always = q; // "always accept" emits the draft
  const beta = p.reduce((a, pi, i) => a + Math.min(pi, q[i]), 0);
  const resampleP = p.map((pi, i) => Math.min(pi, q[i]) + (1 - beta) * pi); // reject, then sample p
  assert(tv(hist, p) < bound, `TV(emitted, p) = ${tv(hist, p)}`);
  assert(tv(always, p) > 3 * bound, `always-accept TV ${tv(always, p)}`);
  assert(tv(resampleP, p) > 2 * bound, `resample-from-p TV ${tv(resampleP, p)}`);
});

/** stories260k with a quickly calibrated uniform TEAL profile (the model ships none). */
async function stories(): Promise<Model> {
  const model = await loadModel("../shared/models/stories260k", {
    gpu: await gpu(),
    contextLength: 96,
    maxPrefill: 33,
  });
  const r = rng(3);
  const wins = Array.from(
    { length: 4 },
    () => [1, ...Array.from({ length: 32 }, () => Math.floor(r() * 512))],
  );
  model.attachProfile(await calibrate(model, wins, { ctx: 32, tokens: 128, allocation: "uniform" }));
  return model;
}

Deno.test("speculative sampling on stories260k: seeded runs reproduce; (t0, t1) follow the dense distribution, not the draft's", async () => {
  const model = await stories();
  try {
    const o = { temperature: 0.9, topK: 0, topP: 0.95, stopAtEos: false, speculate: 3, draftSparsity: 0.6 };
    const a = await model.complete([1], { ...o, maxTokens: 40, seed: 5 });
    const b = await model.complete([1], { ...o, maxTokens: 40, seed: 5 });
    const c = await model.complete([1], { ...o, maxTokens: 40, seed: 6 });
    assertEquals(a.ids, b.ids);
    assertEquals(a.ids.length, 40);
    assert(c.ids.join() !== a.ids.join(), "another seed gives another sample");
    const sp = a.speculation!;
    assert(sp.acceptanceRate > 0 && sp.acceptanceRate < 1, `acceptance ${sp.acceptanceRate}`);

    // joint distribution of the first two tokens: t0 from the dense prefill, t1 from the acceptance rule
    // (K = 1, a poor draft at sparsity 0.8 so that rejections are common)
    const s = { temperature: 1, topK: 3, topP: 1, seed: 0 };
    const V = model.config.vocabSize;
    const p0 = tokenProbabilities((await model.logits([1])).subarray(0, V), s);
    const top = [...p0.keys()].filter((i) => p0[i] > 0);
    assertEquals(top.length, 3);
    const dense = new Map<string, number>();
    const draft = new Map<string, number>();
    for (const t0 of top) {
      const p1 = tokenProbabilities((await model.logits([1, t0])).subarray(V, 2 * V), s);
      const q1 = tokenProbabilities((await model.logits([1, t0], { sparsity: 0.8 })).subarray(V, 2 * V), s);
      p1.forEach((v, t1) => v > 0 && dense.set(`${t0},${t1}`, p0[t0] * v));
      q1.forEach((v, t1) => v > 0 && draft.set(`${t0},${t1}`, p0[t0] * v));
    }
    const N = 160;
    const seen = new Map<string, number>();
    let rejected = 0;
    for (let seed = 0; seed < N; seed++) {
      const r = await model.complete([1], {
        ...s,
        seed,
        maxTokens: 2,
        stopAtEos: false,
        speculate: 1,
        draftSparsity: 0.8,
      });
      const key = r.ids.join();
      seen.set(key, (seen.get(key) ?? 0) + 1 / N);
      if (r.speculation!.acceptanceRate === 0) rejected++;
    }
    const keys = new Set([...dense.keys(), ...draft.keys(), ...seen.keys()]);
    const dist = (x: Map<string, number>, y: Map<string, number>) =>
      [...keys].reduce((acc, k) => acc + Math.abs((x.get(k) ?? 0) - (y.get(k) ?? 0)), 0) / 2;
    // the sampling noise of this TV estimate (9 cells, 160 runs) is about 0.08
    const bound = 0.16;
    assert(rejected > N / 20, `rejections happen (${rejected} of ${N})`);
    assert(dist(seen, dense) < bound, `TV(speculative, dense) = ${dist(seen, dense)}`);
    // the same test would catch "always accept the draft" (the draft's own distribution)
    assert(dist(draft, dense) > bound, `TV(draft, dense) = ${dist(draft, dense)}`);
    console.log(
      `TV(speculative, dense) ${dist(seen, dense).toFixed(3)}, TV(draft, dense) ${
        dist(draft, dense).toFixed(3)
      }, rejections ${rejected}/${N}`,
    );
  } finally {
    model.dispose();
  }
});

Deno.test('speculate: "auto" measures, picks a valid K and S, caches them, and keeps dense greedy output', async () => {
  const model = await stories();
  try {
    // aborted before it starts: the measurement stops at once, nothing is cached, the generation ends "abort"
    const stopped = await model.complete([1], {
      maxTokens: 8,
      temperature: 0,
      speculate: "auto",
      signal: AbortSignal.abort(),
    });
    assertEquals([stopped.finishReason, stopped.ids], ["abort", []]);
    assertEquals(model.speculationChoices.size, 0);
    const dense = await model.complete([1], { maxTokens: 40, temperature: 0, stopAtEos: false });
    const t0 = performance.now();
    const auto = await model.complete([1], {
      maxTokens: 40,
      temperature: 0,
      stopAtEos: false,
      speculate: "auto",
    });
    const measured = performance.now() - t0;
    assertEquals(auto.ids, dense.ids);
    const sp = auto.speculation!;
    const c = sp.choice!;
    assert(c !== null && c.k === sp.k && c.draftSparsity === sp.draftSparsity);
    assert(Number.isInteger(c.k) && c.k >= 1 && c.k <= SPEC_AUTO.maxK, `K = ${c.k}`);
    assert((SPEC_AUTO.sparsities as readonly number[]).includes(c.draftSparsity), `S = ${c.draftSparsity}`);
    assertEquals(c.acceptance.map((a) => a.sparsity), [...SPEC_AUTO.sparsities]);
    assert(c.acceptance.every((a) => a.acceptance >= 0 && a.acceptance <= 1));
    assert(c.verifyMs.length === SPEC_AUTO.maxK && c.verifyMs.every((v) => v > 0));
    assert(c.expectedTokensPerRound >= 1 && c.expectedTokensPerSecond > 0 && c.syncMs > 0);
    // cached: the second request measures nothing and reuses the choice; an explicit S fixes S
    const again = await model.complete([1], {
      maxTokens: 8,
      temperature: 0,
      stopAtEos: false,
      speculate: "auto",
    });
    assert(again.speculation!.choice === c);
    const fixed = await model.complete([1], {
      maxTokens: 8,
      temperature: 0,
      stopAtEos: false,
      speculate: "auto",
      draftSparsity: 0.45,
    });
    assertEquals(fixed.speculation!.draftSparsity, 0.45);
    assertEquals(fixed.speculation!.choice!.acceptance.map((a) => a.sparsity), [0.45]);
    assertEquals([...model.speculationChoices.keys()], ["greedy:auto", "greedy:0.45"]);
    console.log(
      `auto: K=${c.k} S=${c.draftSparsity} in ${measured.toFixed(0)} ms; ${JSON.stringify(c.acceptance)}`,
    );
  } finally {
    model.dispose();
  }
});

Deno.test("bad speculate / draftSparsity values are clear errors (API and CLI)", async () => {
  const model = await loadModel("../shared/models/stories260k", {
    gpu: await gpu(),
    contextLength: 96,
    maxPrefill: 33,
  });
  try {
    await rejects(model.complete([1], { speculate: 2 }), /no TEAL profile/);
    model.setSparsityProfile([0, 0.5], () => new Float32Array(model.config.numLayers * 7));
    for (const speculate of [0, 33, 2.5, -1, NaN]) {
      await rejects(
        model.complete([1], { speculate }),
        /speculate must be "auto" or an integer in \[1, 32\]/,
      );
    }
    await rejects(model.complete([1], { speculate: "fast" as unknown as number }), /speculate must be/);
    for (const draftSparsity of [1, -0.1, 1.5]) {
      await rejects(
        model.complete([1], { speculate: 2, draftSparsity }),
        /draftSparsity must be in \[0, 1\)/,
      );
    }
    await rejects(
      model.complete([1], { speculate: 2, draftSparsity: 0.7 }),
      /outside the TEAL profile's range/,
    );
  } finally {
    model.dispose();
  }
  const deps = {
    loadModel: () => Promise.reject(new Error("the options are checked before the model loads")),
    defaultModelDir: () => "models/tiny-llama-16m",
  };
  for (const speculate of ["0", "2.5", "fast", "-3"]) {
    await rejects(
      generateCommand.run({ prompt: "x", speculate }, deps),
      /--speculate must be an integer >= 1/,
    );
  }
  for (const d of ["1", "-0.1", "x"]) {
    await rejects(
      generateCommand.run({ prompt: "x", speculate: "2", "draft-sparsity": d }, deps),
      /--draft-sparsity must be a number >= 0 <= 0.999/,
    );
  }
});

Deno.test("server: speculate / draft_sparsity validated (400 naming the field), reported in `speculation`", async () => {
  const model = new FakeModel({ sparsityLevels: [0, 0.25, 0.5, 0.7] });
  const app = createApp({ model, maxSpeculate: 8 });
  const post = async (body: unknown, path = "/v1/completions") => {
    const res = await app.fetch(
      new Request("http://x" + path, { method: "POST", body: JSON.stringify(body) }),
    );
    return { status: res.status, body: await res.json().catch(() => null) };
  };
  const ok = await post({ prompt: "hi", max_tokens: 3, speculate: 4, draft_sparsity: 0.25, temperature: 0 });
  assertEquals(ok.status, 200);
  assertEquals(model.runs.at(-1)!.options.speculate, 4);
  assertEquals(model.runs.at(-1)!.options.draftSparsity, 0.25);
  assertEquals(ok.body.speculation.k, 4);
  assertEquals(ok.body.speculation.tokens_per_verify, 2);
  assertEquals(ok.body.speculation.acceptance_rate, 0.5);
  assert("tokens_per_s" in ok.body.speculation);
  const auto = await post(
    { messages: [{ role: "user", content: "hi" }], max_tokens: 2, speculate: "auto" },
    "/v1/chat/completions",
  );
  assertEquals(auto.status, 200);
  assertEquals(model.runs.at(-1)!.options.speculate, "auto");
  assertEquals(auto.body.speculation.k, 3);
  const plain = await post({ prompt: "hi", max_tokens: 2 });
  assert(!("speculation" in plain.body));
  for (
    const [body, param] of [
      [{ speculate: 0 }, "speculate"],
      [{ speculate: 9 }, "speculate"],
      [{ speculate: 2.5 }, "speculate"],
      [{ speculate: "4" }, "speculate"],
      [{ speculate: "fast" }, "speculate"],
      [{ speculate: 2, draft_sparsity: 1 }, "draft_sparsity"],
      [{ speculate: 2, draft_sparsity: -0.1 }, "draft_sparsity"],
      [{ speculate: 2, draft_sparsity: 0.8 }, "draft_sparsity"],
      [{ speculate: 2, draft_sparsity: "0.5" }, "draft_sparsity"],
      [{ draft_sparsity: 0.5 }, "draft_sparsity"],
    ] as const
  ) {
    const r = await post({ prompt: "hi", max_tokens: 2, ...body });
    assertEquals([r.status, r.body.error.param], [400, param], JSON.stringify(body));
  }
  const dense = createApp({ model: new FakeModel({ sparsityLevels: [] }) });
  const res = await dense.fetch(
    new Request("http://x/v1/completions", {
      method: "POST",
      body: JSON.stringify({ prompt: "x", speculate: 2 }),
    }),
  );
  assertEquals(res.status, 400);
  assert(/TEAL profile/.test((await res.json()).error.message));
  // streaming: the finish chunk carries the report
  const stream = await app.fetch(
    new Request("http://x/v1/completions", {
      method: "POST",
      body: JSON.stringify({ prompt: "hi", max_tokens: 3, speculate: 2, stream: true }),
    }),
  );
  const events = (await stream.text()).split("\n\n").filter((e) => e.startsWith("data: {"));
  const last = JSON.parse(events.at(-1)!.slice(6));
  assertEquals(last.speculation.k, 2);
});
