// Picks the next token on the GPU and advances the decode state, so no host round trip sits between steps.
// Greedy (temperature 0): argmax, lowest id on ties. Otherwise z = (logit - max) / temperature; top-k keeps
// tokens whose z is at least the k-th largest (found by a radix search over order-preserving u32 keys), top-p
// then keeps the most likely tokens whose mass reaches top_p of that (the same search), and the token is drawn by
// inverse CDF in id order with u = rand(seed, step). src/generate/sampler.ts mirrors this on the CPU.
// bindings: 0 params (uniform), 1 logits (f32 [vocab], read), 2 state (u32, read_write:
//           [0] position of the next token to feed, [1] that token, [2] tokens sampled so far, [3] set to 1
//           once an end-of-sequence token is sampled: later queued steps skip their GEMVs),
//           3 tokens (u32 [capacity], write: tokens[step] = sampled token),
//           4 blocks (f32 [2 BLOCKS], read: reduce.wgsl MODE 3's (largest logit, its lowest index or -1) per
//           block of 256 logits; a scratch buffer when BLOCKS is 0)
// BLOCKS > 0: the argmax comes from the blocks, not from a pass over every logit (one workgroup reading a 128k
// vocabulary took ~25 us a token on the H200, about 0.5% of an 8B decode step).
override BLOCKS: u32 = 0u;
const WG: u32 = 256u;
struct Params {
  vocab: u32,
  topK: u32,       // 0: off
  seed: u32,
  capacity: u32,   // length of tokens
  temperature: f32,
  topP: f32,       // 1: off
  numEos: u32,     // end-of-sequence ids in eos (at most 4)
  _pad0: u32,
  eos: vec4<u32>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: array<u32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(4) var<storage, read> blocks: array<f32>;

var<workgroup> rf: array<f32, WG>;
var<workgroup> ru: array<u32, WG>;

fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}

// Orders like the float: larger float, larger key.
fn key_of(f: f32) -> u32 {
  let b = bitcast<u32>(f);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// z of a logit under the max and the temperature (set once the argmax is known)
var<private> zmax_s: f32;
var<private> inv_t_s: f32;

fn z_of(l: f32) -> f32 { return (l - zmax_s) * inv_t_s; }

// The passes over the vocabulary below take eight logits a trip, their loads issued together: one load a trip
// left each thread waiting out an L2 round trip per logit (a 128k vocabulary is 500 a thread), ~100 us a pass;
// with the 32 passes top-p bisected in, 3.3 ms a token on the H200 at an 8B shape (2026-12-03).

struct Eight { l0: f32, l1: f32, l2: f32, l3: f32, l4: f32, l5: f32, l6: f32, l7: f32 }

// Logits i, i + step, ..., i + 7 step, their loads issued together (named fields: an array went to memory).
fn load8(i: u32, step: u32) -> Eight {
  return Eight(logits[i], logits[i + step], logits[i + 2u * step], logits[i + 3u * step], logits[i + 4u * step],
               logits[i + 5u * step], logits[i + 6u * step], logits[i + 7u * step]);
}

// A logit's softmax mass (exp z >= 0) when its key is at least `thr`, else -1: kept and mass in one test.
fn cdf_term(l: f32, thr: u32) -> f32 {
  let z = z_of(l);
  return select(-1.0, exp(z), key_of(z) >= thr);
}

fn mass_of(l: f32, mid: u32) -> f32 {
  let z = z_of(l);
  return select(0.0, exp(z), key_of(z) >= mid);
}

// This thread's softmax mass (exp z) of the logits whose key is at least `mid` (ids t, t + WG, ...).
fn mass_at_least(t: u32, mid: u32) -> f32 {
  var m = 0.0;
  var i = t;
  for (; i + 7u * WG < p.vocab; i += 8u * WG) {
    let e = load8(i, WG);
    m += mass_of(e.l0, mid) + mass_of(e.l1, mid) + mass_of(e.l2, mid) + mass_of(e.l3, mid) + mass_of(e.l4, mid) +
      mass_of(e.l5, mid) + mass_of(e.l6, mid) + mass_of(e.l7, mid);
  }
  for (; i < p.vocab; i += WG) { m += mass_of(logits[i], mid); }
  return m;
}

// The largest key t at which the count (mass false) or the softmax mass (mass true) of the logits whose key is
// at least t (and at least `floor`) still reaches `need`: both only fall as t rises, and t = 0 qualifies. A
// radix search, four bits of t a round from the top: each round tallies, over the logits that share the bits
// already fixed, the weight of each value of the next four (a histogram of 16), and keeps the largest value at
// which the weight at or above still reaches `need`. Eight passes over the vocabulary; bisection took 32, and a
// 16-way search that weighed 15 keys per logit was barely faster (2.4 against 3.3 ms a token at an 8B shape).
var<workgroup> hist: array<f32, 4096>;  // 16 buckets x WG threads (a column a thread: no races), then sums
var<workgroup> r_prefix: u32;
var<workgroup> r_above: f32;

fn tally(t: u32, l: f32, prefix: u32, high: u32, shift: u32, floor: u32, mass: bool) {
  let z = z_of(l);
  let key = key_of(z);
  if ((key & high) == prefix && key >= floor) {
    let b = (key >> shift) & 15u;
    hist[b * WG + t] += select(1.0, exp(z), mass);
  }
}

fn radix_search(t: u32, need: f32, floor: u32, mass: bool) -> u32 {
  var prefix = 0u;
  var above = 0.0;  // weight of the keys above every key that shares the prefix
  for (var round = 0u; round < 8u; round++) {
    let shift = 28u - 4u * round;
    // the bits already fixed (none in round 0: a shift by 32 would be a shift by 0)
    let high = select(0xffffffffu << (shift + 4u), 0u, round == 0u);
    for (var b = 0u; b < 16u; b++) { hist[b * WG + t] = 0.0; }
    var i = t;
    for (; i + 7u * WG < p.vocab; i += 8u * WG) {
      let e = load8(i, WG);
      tally(t, e.l0, prefix, high, shift, floor, mass);
      tally(t, e.l1, prefix, high, shift, floor, mass);
      tally(t, e.l2, prefix, high, shift, floor, mass);
      tally(t, e.l3, prefix, high, shift, floor, mass);
      tally(t, e.l4, prefix, high, shift, floor, mass);
      tally(t, e.l5, prefix, high, shift, floor, mass);
      tally(t, e.l6, prefix, high, shift, floor, mass);
      tally(t, e.l7, prefix, high, shift, floor, mass);
    }
    for (; i < p.vocab; i += WG) { tally(t, logits[i], prefix, high, shift, floor, mass); }
    workgroupBarrier();
    // bucket b's 16 sums of 16 columns, then thread 0 adds them up and walks the buckets from the top
    let b = t / 16u;
    var part = 0.0;
    for (var e = 0u; e < 16u; e++) { part += hist[b * WG + (t % 16u) * 16u + e]; }
    workgroupBarrier();
    hist[t] = part;
    workgroupBarrier();
    if (t == 0u) {
      var acc = above;
      var pick = 0u;
      for (var v = 15u; v > 0u; v--) {
        var w = 0.0;
        for (var g = 0u; g < 16u; g++) { w += hist[v * 16u + g]; }
        if (acc + w >= need) {
          pick = v;
          break;
        }
        acc += w;
      }
      r_prefix = prefix | (pick << shift);
      r_above = acc;
    }
    prefix = workgroupUniformLoad(&r_prefix);
    above = workgroupUniformLoad(&r_above);
  }
  return prefix;
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

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32) {
  // argmax, lowest id on ties
  var best = -3.4e38;
  var best_i = 0xffffffffu;
  // four loads a step in flight (a 128k vocabulary is 500 loads per thread); ids rise within a thread, so the
  // strict > keeps the lowest id on ties
  var ia = t;
  if (BLOCKS > 0u) {
    // each block's pair, in block order: a larger value, or the same value at a lower index
    for (var b = t; b < BLOCKS; b += WG) {
      let v = blocks[2u * b];
      let at = blocks[2u * b + 1u];
      let i = select(0xffffffffu, u32(at), at >= 0.0);
      if (v > best || (v == best && i < best_i)) {
        best = v;
        best_i = i;
      }
    }
    ia = p.vocab;  // the logits' loops below have nothing left to read
  }
  for (; ia + 3u * WG < p.vocab; ia += 4u * WG) {
    let v0 = logits[ia];
    let v1 = logits[ia + WG];
    let v2 = logits[ia + 2u * WG];
    let v3 = logits[ia + 3u * WG];
    if (v0 > best) { best = v0; best_i = ia; }
    if (v1 > best) { best = v1; best_i = ia + WG; }
    if (v2 > best) { best = v2; best_i = ia + 2u * WG; }
    if (v3 > best) { best = v3; best_i = ia + 3u * WG; }
  }
  for (; ia < p.vocab; ia += WG) {
    let v = logits[ia];
    if (v > best) { best = v; best_i = ia; }
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
  var token = workgroupUniformLoad(&ru[0]);
  let step = state[2];

  if (p.temperature > 0.0) {
    let inv_t = 1.0 / p.temperature;
    zmax_s = zmax;
    inv_t_s = inv_t;
    // top-k: the largest key t_k with count(key >= t_k) >= topK
    var thr = 0u;
    if (p.topK > 0u && p.topK < p.vocab) {
      // counts are exact in f32 (a vocabulary below 2^24)
      thr = radix_search(t, f32(p.topK), 0u, false);
    }
    // top-p: the largest key t_p >= thr whose kept mass reaches topP of the top-k mass
    if (p.topP < 1.0) {
      let target_mass = sum_f(t, mass_at_least(t, thr)) * p.topP;
      thr = radix_search(t, target_mass, thr, true);
    }
    // inverse CDF in id order over contiguous per-thread ranges
    let chunk = (p.vocab + WG - 1u) / WG;
    let b0 = min(t * chunk, p.vocab);
    let b1 = min(b0 + chunk, p.vocab);
    var mine = 0.0;
    var last_kept = 0xffffffffu;
    var i = b0;
    for (; i + 7u < b1; i += 8u) {
      let e = load8(i, 1u);
      // each logit's z and key computed once (cdf_term: its mass, or -1 when dropped)
      let m0 = cdf_term(e.l0, thr);
      let m1 = cdf_term(e.l1, thr);
      let m2 = cdf_term(e.l2, thr);
      let m3 = cdf_term(e.l3, thr);
      let m4 = cdf_term(e.l4, thr);
      let m5 = cdf_term(e.l5, thr);
      let m6 = cdf_term(e.l6, thr);
      let m7 = cdf_term(e.l7, thr);
      mine += max(m0, 0.0) + max(m1, 0.0) + max(m2, 0.0) + max(m3, 0.0) + max(m4, 0.0) + max(m5, 0.0) +
        max(m6, 0.0) + max(m7, 0.0);
      if (m0 >= 0.0) { last_kept = i; }
      if (m1 >= 0.0) { last_kept = i + 1u; }
      if (m2 >= 0.0) { last_kept = i + 2u; }
      if (m3 >= 0.0) { last_kept = i + 3u; }
      if (m4 >= 0.0) { last_kept = i + 4u; }
      if (m5 >= 0.0) { last_kept = i + 5u; }
      if (m6 >= 0.0) { last_kept = i + 6u; }
      if (m7 >= 0.0) { last_kept = i + 7u; }
    }
    for (; i < b1; i++) {
      let zi = z_of(logits[i]);
      if (key_of(zi) >= thr) { mine += exp(zi); last_kept = i; }
    }
    // inclusive scan of the per-thread masses
    rf[t] = mine;
    workgroupBarrier();
    for (var off = 1u; off < WG; off <<= 1u) {
      let add = select(0.0, rf[t - off], t >= off);
      workgroupBarrier();
      rf[t] += add;
      workgroupBarrier();
    }
    let total = workgroupUniformLoad(&rf[WG - 1u]);
    let u = f32(pcg(pcg(step) + p.seed) >> 8u) * (1.0 / 16777216.0);
    let target_cdf = u * total;
    let before = rf[t] - mine;
    // the thread whose range holds the target walks it; the last kept token catches rounding at the top
    ru[t] = 0xffffffffu;
    if (mine > 0.0 && target_cdf >= before && target_cdf < before + mine) {
      var acc = before;
      var pick = last_kept;
      // eight loads at a time, then the walk through them in id order
      for (var j0 = b0; j0 < b1 && pick == last_kept; j0 += 8u) {
        var l: array<f32, 8>;
        for (var e = 0u; e < 8u; e++) { l[e] = logits[min(j0 + e, b1 - 1u)]; }
        for (var e = 0u; e < 8u && j0 + e < b1; e++) {
          let zi = z_of(l[e]);
          if (key_of(zi) >= thr) {
            acc += exp(zi);
            if (target_cdf < acc) {
              pick = j0 + e;
              break;
            }
          }
        }
      }
      ru[t] = pick;
    }
    workgroupBarrier();
    // lowest claimed pick (one thread claims unless rounding); else the highest kept id overall
    var claimed = ru[t];
    rf[t] = select(-1.0, f32(last_kept), last_kept != 0xffffffffu);
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (t < s) {
        ru[t] = min(ru[t], ru[t + s]);
        rf[t] = max(rf[t], rf[t + s]);
      }
      workgroupBarrier();
    }
    claimed = workgroupUniformLoad(&ru[0]);
    let highest = workgroupUniformLoad(&rf[0]);
    token = select(u32(highest), claimed, claimed != 0xffffffffu);
  }
  if (t == 0u) {
    state[1] = token;
    if (step < p.capacity) { tokens[step] = token; }
    state[2] = step + 1u;
    state[0] = state[0] + 1u;
    for (var e = 0u; e < min(p.numEos, 4u); e++) {
      if (token == p.eos[e]) { state[3] = 1u; }
    }
  }
}
