// Speculative sampling on the GPU (Leviathan et al. 2023, Chen et al. 2023): decides which of the k drafted
// tokens the dense verify pass accepts and picks the token after them, with no host round trip.
// Entry `dist` (one workgroup per distribution: draft rows q_0..q_{k-1}, then verify rows p_0..p_k) finds each
// row's argmax, top-k/top-p threshold key and kept mass with exactly the rule of sample.wgsl, so top-k/top-p
// apply identically to p and q. Entry `accept` (one workgroup) walks the drafts in order: draft x_i is
// accepted when u_i * q_i(x_i) < p_i(x_i) (probability min(1, p/q)); at the first rejection n the token is
// drawn from norm(max(0, p_n - q_n)), and when all k are accepted from p_k. Greedy (temperature 0): drafts
// are accepted while x_i = argmax p_i, then the token is argmax p_n (so the output is dense greedy). It writes
// the token to tokens[step0 + 1 + n], the decode state of the next round and n to the round log, so rounds
// can be queued back to back with no host round trip. The round's place comes from the state the k draft
// steps left: step0 = state[2] - 1 - k, pos = state[0] - k. Random numbers: the seeded
// counter-based u(seed, step) of sample.wgsl, on two streams of their own (seedAccept, seedResidual).
// src/generate/sampler.ts (speculativeAccept) mirrors this on the CPU.
// bindings: 0 params (uniform), 1 draft (f32 [k][vocab], read: the draft steps' logits),
//           2 verify (f32 [k + 1][vocab], read: the dense pass's logits), 3 stats (u32 [2k + 1][4], read_write:
//           zmax (f32 bits), argmax, threshold key, kept mass (f32 bits); dist writes, accept reads),
//           4 tokens (u32 [capacity], read_write: drafts at step0 + 1.., the decided token written after the
//           accepted ones), 5 state (u32 [4], read_write: position and token to feed, next step, stop flag),
//           6 log (u32 [1 + rounds], read_write: [0] rounds so far, [1 + r] drafts accepted in round r)
const WG: u32 = 256u;
struct Params {
  vocab: u32,
  k: u32,            // drafts per round
  logCapacity: u32,  // length of log
  _pad0: u32,
  temperature: f32,  // 0: greedy
  topP: f32,         // 1: off
  topK: u32,         // 0: off
  seedAccept: u32,
  seedResidual: u32,
  capacity: u32,     // length of tokens
  _pad1: u32,
  _pad2: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> draft: array<f32>;
@group(0) @binding(2) var<storage, read> verify: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<u32>;
@group(0) @binding(4) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(5) var<storage, read_write> state: array<u32>;
@group(0) @binding(6) var<storage, read_write> log: array<u32>;

var<workgroup> rf: array<f32, WG>;
var<workgroup> ru: array<u32, WG>;

fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}

fn uniform01(seed: u32, step: u32) -> f32 {
  return f32(pcg(pcg(step) + seed) >> 8u) * (1.0 / 16777216.0);
}

// Orders like the float: larger float, larger key.
fn key_of(f: f32) -> u32 {
  let b = bitcast<u32>(f);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn sum_f(t: u32, v: f32) -> f32 {
  rf[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { rf[t] += rf[t + s]; }
    workgroupBarrier();
  }
  let r = workgroupUniformLoad(&rf[0]);
  return r;
}

fn sum_u(t: u32, v: u32) -> u32 {
  ru[t] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { ru[t] += ru[t + s]; }
    workgroupBarrier();
  }
  let r = workgroupUniformLoad(&ru[0]);
  return r;
}

// Row w of the 2k + 1 distributions: draft rows first, then verify rows.
fn logit(w: u32, i: u32) -> f32 {
  if (w < p.k) { return draft[w * p.vocab + i]; }
  return verify[(w - p.k) * p.vocab + i];
}

@compute @workgroup_size(WG)
fn dist(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) g: vec3<u32>) {
  let w = g.x;
  var best = -3.4e38;
  var best_i = 0xffffffffu;
  for (var i = t; i < p.vocab; i += WG) {
    let v = logit(w, i);
    if (v > best) { best = v; best_i = i; }
  }
  rf[t] = best;
  ru[t] = best_i;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) {
      let ov = rf[t + s];
      let oi = ru[t + s];
      if (ov > rf[t] || (ov == rf[t] && oi < ru[t])) { rf[t] = ov; ru[t] = oi; }
    }
    workgroupBarrier();
  }
  let zmax = workgroupUniformLoad(&rf[0]);
  let arg = workgroupUniformLoad(&ru[0]);
  var thr = 0u;
  var total = 1.0;
  if (p.temperature > 0.0) {
    let inv_t = 1.0 / p.temperature;
    // top-k: the largest key t_k with count(key >= t_k) >= topK
    if (p.topK > 0u && p.topK < p.vocab) {
      var lo = 0u;
      var hi = 0xffffffffu;
      for (var it = 0u; it < 32u; it++) {
        let d = hi - lo;
        let mid = lo + (d >> 1u) + (d & 1u);
        var c = 0u;
        for (var i = t; i < p.vocab; i += WG) { c += select(0u, 1u, key_of((logit(w, i) - zmax) * inv_t) >= mid); }
        let ok = sum_u(t, c) >= p.topK;
        lo = select(lo, mid, ok);
        hi = select(mid - 1u, hi, ok);
      }
      thr = lo;
    }
    // top-p: the largest key t_p >= thr whose kept mass reaches topP of the top-k mass
    if (p.topP < 1.0) {
      var z = 0.0;
      for (var i = t; i < p.vocab; i += WG) {
        let zi = (logit(w, i) - zmax) * inv_t;
        z += select(0.0, exp(zi), key_of(zi) >= thr);
      }
      let target_mass = sum_f(t, z) * p.topP;
      var lo = thr;
      var hi = 0xffffffffu;
      for (var it = 0u; it < 32u; it++) {
        let d = hi - lo;
        let mid = lo + (d >> 1u) + (d & 1u);
        var m = 0.0;
        for (var i = t; i < p.vocab; i += WG) {
          let zi = (logit(w, i) - zmax) * inv_t;
          m += select(0.0, exp(zi), key_of(zi) >= mid);
        }
        let ok = sum_f(t, m) >= target_mass;
        lo = select(lo, mid, ok);
        hi = select(mid - 1u, hi, ok);
      }
      thr = lo;
    }
    var kept = 0.0;
    for (var i = t; i < p.vocab; i += WG) {
      let zi = (logit(w, i) - zmax) * inv_t;
      kept += select(0.0, exp(zi), key_of(zi) >= thr);
    }
    total = sum_f(t, kept);
  }
  if (t == 0u) {
    stats[w * 4u] = bitcast<u32>(zmax);
    stats[w * 4u + 1u] = arg;
    stats[w * 4u + 2u] = thr;
    stats[w * 4u + 3u] = bitcast<u32>(total);
  }
}

// Probability of token i under row w after temperature, top-k and top-p (0 outside the kept set).
fn prob(w: u32, i: u32) -> f32 {
  let z = (logit(w, i) - bitcast<f32>(stats[w * 4u])) * (1.0 / p.temperature);
  if (key_of(z) < stats[w * 4u + 2u]) { return 0.0; }
  return exp(z) / bitcast<f32>(stats[w * 4u + 3u]);
}

// Weight of token i in the distribution the decided token is drawn from: p_n, minus q_n after a rejection.
fn weight(n: u32, i: u32, residual: bool) -> f32 {
  let pi = prob(p.k + n, i);
  if (!residual) { return pi; }
  return max(0.0, pi - prob(n, i));
}

// Inverse CDF in id order over contiguous per-thread ranges (as sample.wgsl); 0xffffffff when all weights are 0.
fn draw(t: u32, n: u32, residual: bool, u: f32) -> u32 {
  let chunk = (p.vocab + WG - 1u) / WG;
  let b0 = min(t * chunk, p.vocab);
  let b1 = min(b0 + chunk, p.vocab);
  var mine = 0.0;
  var last_kept = 0xffffffffu;
  for (var i = b0; i < b1; i++) {
    let wi = weight(n, i, residual);
    if (wi > 0.0) { mine += wi; last_kept = i; }
  }
  rf[t] = mine;
  workgroupBarrier();
  for (var off = 1u; off < WG; off <<= 1u) {
    let add = select(0.0, rf[t - off], t >= off);
    workgroupBarrier();
    rf[t] += add;
    workgroupBarrier();
  }
  let total = workgroupUniformLoad(&rf[WG - 1u]);
  let target_cdf = u * total;
  let before = rf[t] - mine;
  ru[t] = 0xffffffffu;
  if (mine > 0.0 && target_cdf >= before && target_cdf < before + mine) {
    var acc = before;
    var pick = last_kept;
    for (var i = b0; i < b1; i++) {
      let wi = weight(n, i, residual);
      if (wi > 0.0) {
        acc += wi;
        if (target_cdf < acc) { pick = i; break; }
      }
    }
    ru[t] = pick;
  }
  workgroupBarrier();
  // lowest claimed pick (one thread claims unless rounding); else the highest id of positive weight
  rf[t] = select(-1.0, f32(last_kept), last_kept != 0xffffffffu);
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) {
      ru[t] = min(ru[t], ru[t + s]);
      rf[t] = max(rf[t], rf[t + s]);
    }
    workgroupBarrier();
  }
  let claimed = workgroupUniformLoad(&ru[0]);
  let highest = workgroupUniformLoad(&rf[0]);
  if (highest < 0.0) { return 0xffffffffu; }
  return select(u32(highest), claimed, claimed != 0xffffffffu);
}

@compute @workgroup_size(WG)
fn accept(@builtin(local_invocation_index) t: u32) {
  let greedy = !(p.temperature > 0.0);
  // read before the barrier below; thread 0 rewrites the state after it
  let step0 = state[2] - 1u - p.k;
  // the first rejected draft (k when all are accepted); k is small, so one thread walks them
  if (t == 0u) {
    var n = 0u;
    while (n < p.k) {
      let x = tokens[step0 + 1u + n];
      var ok: bool;
      if (greedy) {
        ok = x == stats[(p.k + n) * 4u + 1u];
      } else {
        let u = uniform01(p.seedAccept, step0 + 1u + n);
        ok = u * prob(n, x) < prob(p.k + n, x);
      }
      if (!ok) { break; }
      n++;
    }
    ru[0] = n;
  }
  let n = workgroupUniformLoad(&ru[0]);
  var token = stats[(p.k + n) * 4u + 1u];
  if (!greedy) {
    let u = uniform01(p.seedResidual, step0 + 1u + n);
    token = draw(t, n, n < p.k, u);
    // rounding can leave no positive residual: fall back to p_n itself
    if (token == 0xffffffffu) { token = draw(t, n, false, u); }
  }
  if (t == 0u) {
    let at = step0 + 1u + n;
    if (at < p.capacity) { tokens[at] = token; }
    state[0] = state[0] - p.k + n + 1u;
    state[1] = token;
    state[2] = at + 1u;
    state[3] = 0u;
    let r = log[0];
    if (1u + r < p.logCapacity) { log[1u + r] = n; }
    log[0] = r + 1u;
  }
}
