/**
 * MagnitudeHistogram against exact sorted quantiles: quantile and fractionBelow on random data spanning many
 * octaves, zeros, per-channel scales, monotonicity and the quantile/fractionBelow round trip.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { MagnitudeHistogram } from "./histogram.ts";

/** Mulberry32, seeded. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Signed log-normal-ish values: magnitudes over ~12 octaves, as activations have. */
function sample(n: number, seed: number, zeroFrac = 0): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (r() < zeroFrac) continue;
    const g = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
    out[i] = (r() < 0.5 ? -1 : 1) * Math.exp(1.5 * g - 1);
  }
  return out;
}

/** Exact quantile: the value below which `frac` of the sorted magnitudes lie. */
function exactQuantile(sorted: Float64Array, frac: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(frac * sorted.length) - 1))];
}

function exactFraction(sorted: Float64Array, t: number): number {
  let lo = 0, hi = sorted.length;
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    if (sorted[m] <= t) lo = m + 1;
    else hi = m;
  }
  return lo / sorted.length;
}

const FRACS = [0.01, 0.05, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.95, 0.99];

Deno.test("MagnitudeHistogram: quantile and fractionBelow match exact sorted quantiles within 2%", () => {
  const v = sample(200_000, 1);
  const h = new MagnitudeHistogram();
  // added in pieces, as calibration windows arrive
  for (let i = 0; i < v.length; i += 30_000) h.add(v.subarray(i, i + 30_000), 64);
  assertEquals(h.total, v.length);
  assertEquals(h.zeros, 0);
  const sorted = Float64Array.from(v, Math.abs).sort();
  for (const f of FRACS) {
    const want = exactQuantile(sorted, f);
    const got = h.quantile(f);
    assert(Math.abs(got / want - 1) < 0.02, `quantile(${f}) = ${got}, exact ${want}`);
    const fb = h.fractionBelow(want);
    const exact = exactFraction(sorted, want);
    assert(Math.abs(fb / exact - 1) < 0.02, `fractionBelow(${want}) = ${fb}, exact ${exact}`);
  }
  // the two are inverse: the threshold for frac f drops f of the values
  for (const f of FRACS) assert(Math.abs(h.fractionBelow(h.quantile(f)) - f) < 1e-9, `round trip ${f}`);
  // the top quantile is the largest magnitude within a bin (2^(1/64) ~ 1.1%)
  assert(Math.abs(h.quantile(1) / sorted[sorted.length - 1] - 1) < 0.011);
  assertEquals(h.fractionBelow(h.quantile(1) * 1.02), 1);
  assertEquals(h.fractionBelow(sorted[0] / 2), 0);
});

Deno.test("MagnitudeHistogram: zeros (and values below 2^-32) sit below every positive threshold", () => {
  const v = sample(50_000, 2, 0.3);
  v[0] = 1e-12; // below the first bin edge: counted with the zeros
  v[1] = -0;
  const h = new MagnitudeHistogram();
  h.add(v, 100);
  const sorted = Float64Array.from(v, Math.abs).sort();
  const zeros = sorted.filter((x) => !(x > 2 ** -32)).length;
  assertEquals(h.zeros, zeros);
  const z = zeros / v.length;
  assert(Math.abs(z - 0.3) < 0.01, `zero fraction ${z}`);
  // targets at or under the zero fraction need no threshold: dropping |x| <= 0 already gets there
  assertEquals(h.quantile(0), 0);
  assertEquals(h.quantile(z / 2), 0);
  assertEquals(h.quantile(z * (1 - 1e-12)), 0);
  // at exactly the zero fraction, (zeros / total) * total may round above zeros: the threshold then sits at the
  // first bin's lower edge, still below every non-zero magnitude
  const smallest = sorted[zeros];
  assert(h.quantile(z) <= smallest && h.fractionBelow(h.quantile(z)) - z < 1e-6);
  assertEquals(h.fractionBelow(0), z);
  assertEquals(h.fractionBelow(2 ** -40), z);
  for (const f of [0.35, 0.5, 0.65, 0.8, 0.95]) {
    const want = exactQuantile(sorted, f);
    assert(Math.abs(h.quantile(f) / want - 1) < 0.02, `quantile(${f}) = ${h.quantile(f)}, exact ${want}`);
    assert(Math.abs(h.fractionBelow(want) / exactFraction(sorted, want) - 1) < 0.02);
  }
  // an empty histogram answers 0 to everything
  const e = new MagnitudeHistogram();
  assertEquals([e.quantile(0.5), e.fractionBelow(1), e.total], [0, 0, 0]);
  // an all-zero input
  const allZero = new MagnitudeHistogram();
  allZero.add(new Float32Array(100), 10);
  assertEquals([allZero.quantile(0.5), allZero.fractionBelow(0), allZero.fractionBelow(1)], [0, 1, 1]);
});

Deno.test("MagnitudeHistogram: monotone in frac and t; per-channel scales; huge values", () => {
  const v = sample(40_000, 3, 0.05);
  const h = new MagnitudeHistogram();
  h.add(v, 40);
  let prev = -1;
  for (let i = 0; i <= 1000; i++) {
    const q = h.quantile(i / 1000);
    assert(q >= prev, `quantile not monotone at ${i / 1000}: ${q} < ${prev}`);
    prev = q;
  }
  prev = -1;
  for (let e = -40; e <= 40; e += 0.01) {
    const f = h.fractionBelow(2 ** e);
    assert(f >= prev && f <= 1, `fractionBelow not monotone at 2^${e}`);
    prev = f;
  }
  // per-channel scales: the same as adding |v * scale|
  const width = 40;
  const scale = Float32Array.from({ length: width }, (_, k) => 0.1 + k / 8);
  const scaled = new MagnitudeHistogram();
  scaled.add(v, width, scale);
  const direct = new MagnitudeHistogram();
  direct.add(Float32Array.from(v, (x, i) => x * scale[i % width]), width);
  assertEquals([scaled.zeros, scaled.total], [direct.zeros, direct.total]);
  assertEquals(Array.from(scaled.counts), Array.from(direct.counts));
  for (const f of FRACS) assertEquals(scaled.quantile(f), direct.quantile(f));
  // magnitudes beyond the last edge land in the last bin rather than disappearing
  const big = new MagnitudeHistogram();
  big.add(Float32Array.from([1, 2, 3e12, -5e15]), 4);
  assertEquals(big.total, 4);
  assertEquals(big.fractionBelow(4), 0.5);
  assert(big.quantile(1) >= 2 ** 31);
});
