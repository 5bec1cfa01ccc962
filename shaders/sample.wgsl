// Picks the next token on the GPU and advances the decode state, so no host round trip sits between steps.
// Greedy (temperature 0): argmax, lowest id on ties. Otherwise z = (logit - max) / temperature; top-k keeps
// tokens whose z is at least the k-th largest (found by bisection over order-preserving u32 keys), top-p then
// keeps the most likely tokens whose mass reaches top_p of that (bisection again), and the token is drawn by
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
    // top-k: the largest key t_k with count(key >= t_k) >= topK
    var thr = 0u;
    if (p.topK > 0u && p.topK < p.vocab) {
      var lo = 0u;
      var hi = 0xffffffffu;
      for (var it = 0u; it < 32u; it++) {
        let d = hi - lo;
        let mid = lo + (d >> 1u) + (d & 1u);
        var c = 0u;
        for (var i = t; i < p.vocab; i += WG) { c += select(0u, 1u, key_of((logits[i] - zmax) * inv_t) >= mid); }
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
        let zi = (logits[i] - zmax) * inv_t;
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
          let zi = (logits[i] - zmax) * inv_t;
          m += select(0.0, exp(zi), key_of(zi) >= mid);
        }
        let ok = sum_f(t, m) >= target_mass;
        lo = select(lo, mid, ok);
        hi = select(mid - 1u, hi, ok);
      }
      thr = lo;
    }
    // inverse CDF in id order over contiguous per-thread ranges
    let chunk = (p.vocab + WG - 1u) / WG;
    let b0 = min(t * chunk, p.vocab);
    let b1 = min(b0 + chunk, p.vocab);
    var mine = 0.0;
    var last_kept = 0xffffffffu;
    for (var i = b0; i < b1; i++) {
      let zi = (logits[i] - zmax) * inv_t;
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
      for (var i = b0; i < b1; i++) {
        let zi = (logits[i] - zmax) * inv_t;
        if (key_of(zi) >= thr) {
          acc += exp(zi);
          if (target_cdf < acc) { pick = i; break; }
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
