/**
 * Self-speculative decoding (sparse draft, dense verify) must give exactly the dense greedy output.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert";
import { loadModel } from "../src/model/model.ts";
import { calibrate } from "../src/teal/calibrate.ts";
import { gpu, rng } from "./_gpu.ts";

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
    await rejects(
      model.complete(prompt, { maxTokens: 4, temperature: 0.7, speculate: 2 }),
      /speculate needs temperature 0/,
    );
  } finally {
    model.dispose();
  }
});

Deno.test("speculative greedy equals dense greedy on stories260k, K = 1 and 4, to the context's end", async () => {
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
    for (const k of [1, 4]) {
      const spec = await model.complete([1], {
        maxTokens: 200,
        temperature: 0,
        stopAtEos: false,
        speculate: k,
      });
      assertEquals(spec.ids, dense.ids, `K = ${k}`);
    }
  } finally {
    model.dispose();
  }
});
