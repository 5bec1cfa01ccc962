// Decode attention for the one new token, fused with the two steps before it: the q|k|v GEMV's split-K partials
// are summed (+ bias) and rotated (RoPE) here, and the new k and v are stored in the KV cache at the decode
// position. A workgroup covers HG q heads that share one kv head, so that each cached key and value is loaded
// once for all of them (grouped-query attention: Llama-3 and Mistral have four q heads a kv head), and splits
// of the positions visible at the state's position, SPAN each: split s = [s*SPAN, (s+1)*SPAN). It walks them SUB
// at a time with an online softmax (running max and sum, a lane a head), so one workgroup can cover any length.
// FINAL (one split): the workgroup writes the normalised output, and no combine pass runs (short contexts).
// Otherwise it writes its unnormalised weighted sum of values with its max and sum, and attn_combine merges the
// splits (long contexts, where one workgroup per head would walk too many keys).
// The split that holds the decode position takes that position's k and v from the GEMV's sums (rounded to f16,
// as the cache holds them), not from the cache: the workgroup holding the first q head of each kv group writes
// them there, and no workgroup of this dispatch reads that cache row.
// L2 prefetch (prefetch.wgsl, which says why): PREFETCH_WG more workgroups past the attention's read a range of
// `pre` (the o projection's weights) for the o GEMV right after; with preCheck, their checksums go to out past
// the attention's output.
// bindings: 0 params (uniform), 1 partials (f32 [SPLITS][ldq], read), 2 bias (f32 [ldq], read),
//           3 turns (f32 [HEAD_DIM/2], read), 4 kcache (8 f16 a word, [numKv][maxSeq][HEAD_DIM/8], read_write),
//           5 vcache (same), 6 out (FINAL: f32 [numHeads][HEAD_DIM]; else f32 [splits][numHeads][HEAD_DIM + 2],
//           write; preCheck: checksums past those), 7 state (u32: [0] = decode position, read),
//           8 pre (vec4<u32>, read: the words to prefetch; a scratch buffer when PREFETCH_WG is 0)
override SPAN: u32 = 64u;
override FINAL: bool = false;
// the head size as a constant: the loops over a key's dims unroll, and their loads go out together
override HEAD_DIM: u32 = 128u;
override SPLITS: u32 = 1u;  // split-K partials of the q|k|v GEMV, a constant so their loads go out together
override SUB: u32 = 512u;   // keys a piece: their scores (HG a key) are held in workgroup memory at once
// q heads a workgroup, 1 to 4, all of one kv head (grouped-query attention): each cached key and value is
// loaded once for all of them
override HG: u32 = 1u;
// workgroups a head group takes in the split variant: workgroup row r takes splits r, r + ROWS, ... up to the
// position's, so that the dispatch need not cover every split of the whole context (1 when FINAL)
override ROWS: u32 = 1u;
const WG: u32 = 256u;
// values: VW threads share a key, each 8 dims (one 16-byte load); KG keys side by side
override VW: u32 = HEAD_DIM / 8u;
override KG: u32 = WG / VW;
// array sizes, set by attnDecodeOps: QS = HEAD_DIM * HG / 4 vec4s of qs, SCORES = SUB * HG floats of sc. Not
// written as those expressions: Deno 2.9.6's WGSL compiler (naga 29) panics on an override expression as an array
// size, and an override initialised from others that sizes an array seemed to go with heap corruption at exit
// (the abort was libEGL's, docs/testing.md)
override QS: u32 = 32u;
override SCORES: u32 = 512u;
// FINAL, HEAD_DIM <= 128: each thread loads its key and its first trips of values (eight keys of its lane a
// trip) before anything else. Neither depends on the new token, so their DRAM round trips overlap the
// staging's instead of following its barrier. Not in the split variant: there its registers cost more than the
// round trips they save (many workgroups: a step at position 1024 took 4.97 ms against 4.32 without).
override PRELOAD: bool = false;
// PRELOAD: value trips loaded first, 1 or 2 (positions past 8 KG and 16 KG keys: 128 and 256 at 128 dims load
// the rest where they are used)
override PRELOAD_TRIPS: u32 = 1u;
const TAU: f32 = 6.283185307179586;

struct Params {
  numHeads: u32,
  numKv: u32,
  maxSeq: u32,
  window: u32,  // 0: no sliding window
  scale: f32,
  ldq: u32,
  hasBias: u32,
  preStart: u32,  // L2 prefetch: first vec4 of `pre`
  preCount: u32,  // vec4s to prefetch, split evenly over the PREFETCH_WG workgroups
  preCheck: u32,  // 0; else the out index of the prefetch checksums
  preRanges: u32,  // ranges of preCount vec4s, preStride apart (0 or 1: one)
  preStride: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> turns: array<f32>;
@group(0) @binding(4) var<storage, read_write> kcache: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> vcache: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read_write> outv: array<f32>;
@group(0) @binding(7) var<storage, read> state: array<u32>;
@group(0) @binding(8) var<storage, read> pre: array<vec4<u32>>;

// head h's q (rotated, scaled) at vec4 h * HEAD_DIM / 4: a key's 8 dims meet two 16-byte loads, not eight
var<workgroup> qs: array<vec4<f32>, QS>;
var<workgroup> kc: array<f32, HEAD_DIM>;
var<workgroup> vc: array<f32, HEAD_DIM>;
var<workgroup> sc: array<f32, SCORES>;  // key i's score (then weight) for head h at i * HG + h
// the reductions' first level (WG entries), and the value lanes' sums of one head (KG * HEAD_DIM floats)
var<workgroup> red: array<vec4<f32>, WG * 2u>;
var<workgroup> red2: array<vec4<f32>, 16>;
var<workgroup> red3: array<vec4<f32>, 16>;

// A thread's weighted sums of values, dims [8w, 8w + 8) of its key lane, for head h of the workgroup in
// (a_h, b_h): named registers, as an array indexed by head could go to memory.
var<private> a0: vec4<f32>;
var<private> b0: vec4<f32>;
var<private> a1: vec4<f32>;
var<private> b1: vec4<f32>;
var<private> a2: vec4<f32>;
var<private> b2: vec4<f32>;
var<private> a3: vec4<f32>;
var<private> b3: vec4<f32>;

// A key's row (up to 16 words of 8 dims: HEAD_DIM <= 128) and a trip of eight values of a key lane, held in named
// registers (PRELOAD).
struct KeyRow { k0: vec4<u32>, k1: vec4<u32>, k2: vec4<u32>, k3: vec4<u32>,
                k4: vec4<u32>, k5: vec4<u32>, k6: vec4<u32>, k7: vec4<u32>,
                k8: vec4<u32>, k9: vec4<u32>, k10: vec4<u32>, k11: vec4<u32>,
                k12: vec4<u32>, k13: vec4<u32>, k14: vec4<u32>, k15: vec4<u32> }
struct ValueTrip { v0: vec4<u32>, v1: vec4<u32>, v2: vec4<u32>, v3: vec4<u32>,
                   v4: vec4<u32>, v5: vec4<u32>, v6: vec4<u32>, v7: vec4<u32> }

// RoPE (rotate-half) of the pair (a, b) = dims (i, i + HEAD_DIM/2) at position pos, turn = turns[i]; the angle
// as in rope.wgsl.
fn rotate(a: f32, b: f32, turn: f32, pos: u32) -> vec2<f32> {
  let ang = fract(f32(pos) * turn) * TAU;
  let c = cos(ang);
  let s = sin(ang);
  return vec2<f32>(a * c - b * s, b * c + a * s);
}

fn f16_round(v: vec2<f32>) -> vec2<f32> { return unpack2x16float(pack2x16float(v)); }

// Reductions over the workgroup (WG = 256) in two levels, 16 sums of 16, then every thread reads the 16: two
// barriers where a tree takes nine. One lane a head. Max and sum keep their second level apart (red2, red3), so
// a sum may follow a max with no barrier between.
// The reads of each level in straight-line code, combined in order: as a loop of one read a trip, NVIDIA's
// compiler left them one workgroup-memory round trip apart (split_sums.wgsl).
fn max4(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> vec4<f32> {
  return max(max(max(a, b), c), d);
}

fn reduce_max(t: u32, v: vec4<f32>) -> vec4<f32> {
  red[t] = v;
  workgroupBarrier();
  if (t < 16u) {
    let b = 16u * t;
    var m = max4(red[b], red[b + 1u], red[b + 2u], red[b + 3u]);
    m = max4(m, red[b + 4u], red[b + 5u], red[b + 6u]);
    m = max4(m, red[b + 7u], red[b + 8u], red[b + 9u]);
    m = max4(m, red[b + 10u], red[b + 11u], red[b + 12u]);
    m = max4(m, red[b + 13u], red[b + 14u], red[b + 15u]);
    red2[t] = m;
  }
  workgroupBarrier();
  var m = max4(red2[0], red2[1u], red2[2u], red2[3u]);
  m = max4(m, red2[4u], red2[5u], red2[6u]);
  m = max4(m, red2[7u], red2[8u], red2[9u]);
  m = max4(m, red2[10u], red2[11u], red2[12u]);
  m = max4(m, red2[13u], red2[14u], red2[15u]);
  return m;
}

fn reduce_sum(t: u32, v: vec4<f32>) -> vec4<f32> {
  red[t] = v;
  workgroupBarrier();
  if (t < 16u) {
    let b = 16u * t;
    red3[t] = red[b] + red[b + 1u] + red[b + 2u] + red[b + 3u] +
      red[b + 4u] + red[b + 5u] + red[b + 6u] + red[b + 7u] +
      red[b + 8u] + red[b + 9u] + red[b + 10u] + red[b + 11u] +
      red[b + 12u] + red[b + 13u] + red[b + 14u] + red[b + 15u];
  }
  workgroupBarrier();
  return red3[0] + red3[1u] + red3[2u] + red3[3u] +
    red3[4u] + red3[5u] + red3[6u] + red3[7u] +
    red3[8u] + red3[9u] + red3[10u] + red3[11u] +
    red3[12u] + red3[13u] + red3[14u] + red3[15u];
}

fn lo4(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn hi4(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)); }

// Head h's q at dims [o, o + 8) dotted with a key's (lo, hi).
fn qdot(h: u32, o: u32, lo: vec4<f32>, hi: vec4<f32>) -> f32 {
  let b = (h * HEAD_DIM + o) / 4u;
  return dot(qs[b], lo) + dot(qs[b + 1u], hi);
}

// The workgroup's heads' q at dims [o, o + 8) dotted with a key's: a lane a head, lanes past HG zero.
fn qdots(o: u32, lo: vec4<f32>, hi: vec4<f32>) -> vec4<f32> {
  var s = vec4<f32>(qdot(0u, o, lo, hi), 0.0, 0.0, 0.0);
  if (HG > 1u) { s.y = qdot(1u, o, lo, hi); }
  if (HG > 2u) { s.z = qdot(2u, o, lo, hi); }
  if (HG > 3u) { s.w = qdot(3u, o, lo, hi); }
  return s;
}

// Scores of key j (a lane a head): q . k, from the cache, or for the decode position from kc (8 dims a step
// either way).
fn score(j: u32, pos: u32, cur: bool, kvh: u32) -> vec4<f32> {
  var s = vec4<f32>(0.0);
  if (cur && j == pos) {
    for (var d = 0u; d < HEAD_DIM; d += 8u) {
      s += qdots(d, vec4<f32>(kc[d], kc[d + 1u], kc[d + 2u], kc[d + 3u]), vec4<f32>(kc[d + 4u], kc[d + 5u], kc[d + 6u], kc[d + 7u]));
    }
    return s;
  }
  let kr = (kvh * p.maxSeq + j) * VW;
  for (var u = 0u; u < VW; u++) {
    let k4 = kcache[kr + u];
    s += qdots(8u * u, lo4(k4), hi4(k4));
  }
  return s;
}

// Key j's row from the cache (its first VW words; VW <= 16).
fn load_key(j: u32, kvh: u32) -> KeyRow {
  let kr = (kvh * p.maxSeq + j) * VW;
  var r: KeyRow;
  r.k0 = kcache[kr];
  if (VW > 1u) { r.k1 = kcache[kr + 1u]; }
  if (VW > 2u) { r.k2 = kcache[kr + 2u]; }
  if (VW > 3u) { r.k3 = kcache[kr + 3u]; }
  if (VW > 4u) { r.k4 = kcache[kr + 4u]; }
  if (VW > 5u) { r.k5 = kcache[kr + 5u]; }
  if (VW > 6u) { r.k6 = kcache[kr + 6u]; }
  if (VW > 7u) { r.k7 = kcache[kr + 7u]; }
  if (VW > 8u) { r.k8 = kcache[kr + 8u]; }
  if (VW > 9u) { r.k9 = kcache[kr + 9u]; }
  if (VW > 10u) { r.k10 = kcache[kr + 10u]; }
  if (VW > 11u) { r.k11 = kcache[kr + 11u]; }
  if (VW > 12u) { r.k12 = kcache[kr + 12u]; }
  if (VW > 13u) { r.k13 = kcache[kr + 13u]; }
  if (VW > 14u) { r.k14 = kcache[kr + 14u]; }
  if (VW > 15u) { r.k15 = kcache[kr + 15u]; }
  return r;
}

// Scores of a preloaded key (as score() of a cached key).
fn score_row(r: KeyRow) -> vec4<f32> {
  var s = qdots(0u, lo4(r.k0), hi4(r.k0));
  if (VW > 1u) { s += qdots(8u, lo4(r.k1), hi4(r.k1)); }
  if (VW > 2u) { s += qdots(16u, lo4(r.k2), hi4(r.k2)); }
  if (VW > 3u) { s += qdots(24u, lo4(r.k3), hi4(r.k3)); }
  if (VW > 4u) { s += qdots(32u, lo4(r.k4), hi4(r.k4)); }
  if (VW > 5u) { s += qdots(40u, lo4(r.k5), hi4(r.k5)); }
  if (VW > 6u) { s += qdots(48u, lo4(r.k6), hi4(r.k6)); }
  if (VW > 7u) { s += qdots(56u, lo4(r.k7), hi4(r.k7)); }
  if (VW > 8u) { s += qdots(64u, lo4(r.k8), hi4(r.k8)); }
  if (VW > 9u) { s += qdots(72u, lo4(r.k9), hi4(r.k9)); }
  if (VW > 10u) { s += qdots(80u, lo4(r.k10), hi4(r.k10)); }
  if (VW > 11u) { s += qdots(88u, lo4(r.k11), hi4(r.k11)); }
  if (VW > 12u) { s += qdots(96u, lo4(r.k12), hi4(r.k12)); }
  if (VW > 13u) { s += qdots(104u, lo4(r.k13), hi4(r.k13)); }
  if (VW > 14u) { s += qdots(112u, lo4(r.k14), hi4(r.k14)); }
  if (VW > 15u) { s += qdots(120u, lo4(r.k15), hi4(r.k15)); }
  return s;
}

// Values i0, i0 + KG, ..., i0 + 7 KG of a key lane (dims of word w), each position clamped below `lim`.
fn load_values(kvh: u32, c0: u32, w: u32, i0: u32, lim: u32) -> ValueTrip {
  let vr = (kvh * p.maxSeq + c0) * VW + w;
  let last = lim - 1u;
  return ValueTrip(
    vcache[vr + min(i0, last) * VW],
    vcache[vr + min(i0 + KG, last) * VW],
    vcache[vr + min(i0 + 2u * KG, last) * VW],
    vcache[vr + min(i0 + 3u * KG, last) * VW],
    vcache[vr + min(i0 + 4u * KG, last) * VW],
    vcache[vr + min(i0 + 5u * KG, last) * VW],
    vcache[vr + min(i0 + 6u * KG, last) * VW],
    vcache[vr + min(i0 + 7u * KG, last) * VW],
  );
}

// PRELOAD: a thread's key (key t) and its lane's first value trips, from key 0, loaded before the q|k|v
// staging. Positions are clamped to the cache; the walks use only those of the context.
struct Preloaded { k: KeyRow, v: ValueTrip, v2: ValueTrip }

fn preload(t: u32, kvh: u32) -> Preloaded {
  var r: Preloaded;
  r.k = load_key(min(t, p.maxSeq - 1u), kvh);
  if (t / VW < KG) {
    r.v = load_values(kvh, 0u, t % VW, t / VW, p.maxSeq);
    if (PRELOAD_TRIPS > 1u) { r.v2 = load_values(kvh, 0u, t % VW, t / VW + 8u * KG, p.maxSeq); }
  }
  return r;
}

// Key i's scores (or weights) of the piece in sc, a lane a head; lanes past HG zero.
fn sc_get(i: u32) -> vec4<f32> {
  var e = vec4<f32>(sc[i * HG], 0.0, 0.0, 0.0);
  if (HG > 1u) { e.y = sc[i * HG + 1u]; }
  if (HG > 2u) { e.z = sc[i * HG + 2u]; }
  if (HG > 3u) { e.w = sc[i * HG + 3u]; }
  return e;
}

fn sc_put(i: u32, e: vec4<f32>) {
  sc[i * HG] = e.x;
  if (HG > 1u) { sc[i * HG + 1u] = e.y; }
  if (HG > 2u) { sc[i * HG + 2u] = e.z; }
  if (HG > 3u) { sc[i * HG + 3u] = e.w; }
}

// Adds a value's 8 dims (lo, hi) with each head's weight (a lane a head) to the thread's sums.
fn accum(lo: vec4<f32>, hi: vec4<f32>, e: vec4<f32>) {
  a0 += e.x * lo;
  b0 += e.x * hi;
  if (HG > 1u) {
    a1 += e.y * lo;
    b1 += e.y * hi;
  }
  if (HG > 2u) {
    a2 += e.z * lo;
    b2 += e.z * hi;
  }
  if (HG > 3u) {
    a3 += e.w * lo;
    b3 += e.w * hi;
  }
}

// Key i's value (8 dims) with its weights, when i is one of the piece's cached keys (below nc): a trip's
// positions past them hold clamped or preloaded rows that are not the piece's.
fn add_value(v: vec4<u32>, i: u32, nc: u32) {
  if (i < nc) { accum(lo4(v), hi4(v), sc_get(i)); }
}

// Scales every head's sums (the online softmax's rescale when the running max moves).
fn rescale(alpha: vec4<f32>) {
  a0 *= alpha.x;
  b0 *= alpha.x;
  a1 *= alpha.y;
  b1 *= alpha.y;
  a2 *= alpha.z;
  b2 *= alpha.z;
  a3 *= alpha.w;
  b3 *= alpha.w;
}

// This thread's share of the token's q|k|v row, each summed over the GEMV's splits (+ bias): q pairs e = t
// and e = t + WG of the HG * HEAD_DIM/2 (head e / (HEAD_DIM/2), dims (d, d + HEAD_DIM/2), d = e % (HEAD_DIM/2)),
// and k and v at dims (t, t + HEAD_DIM/2). Past the last pair a thread loads a copy, unused. One loop, so that
// all of its loads are in flight together.
struct Staged {
  q: vec2<f32>,
  q2: vec2<f32>,
  k: vec2<f32>,
  v: vec2<f32>,
}

fn q_at(head0: u32, e: u32) -> u32 {
  let half = HEAD_DIM / 2u;
  return (head0 + e / half) * HEAD_DIM + e % half;
}

fn stage(head0: u32, kvh: u32, t: u32) -> Staged {
  let half = HEAD_DIM / 2u;
  let pairs = HG * half;
  let qa = q_at(head0, min(t, pairs - 1u));
  let qb = q_at(head0, min(t + WG, pairs - 1u));
  let d = min(t, half - 1u);
  let ka = (p.numHeads + kvh) * HEAD_DIM + d;
  let va = (p.numHeads + p.numKv + kvh) * HEAD_DIM + d;
  var q = vec2<f32>(0.0);
  var q2 = vec2<f32>(0.0);
  var k = vec2<f32>(0.0);
  var v = vec2<f32>(0.0);
  if (p.hasBias != 0u) {
    q = vec2<f32>(bias[qa], bias[qa + half]);
    if (pairs > WG) { q2 = vec2<f32>(bias[qb], bias[qb + half]); }
    k = vec2<f32>(bias[ka], bias[ka + half]);
    v = vec2<f32>(bias[va], bias[va + half]);
  }
  for (var s = 0u; s < SPLITS; s++) {
    let r = s * p.ldq;
    q += vec2<f32>(partials[r + qa], partials[r + qa + half]);
    if (pairs > WG) { q2 += vec2<f32>(partials[r + qb], partials[r + qb + half]); }
    k += vec2<f32>(partials[r + ka], partials[r + ka + half]);
    v += vec2<f32>(partials[r + va], partials[r + va + half]);
  }
  return Staged(q, q2, k, v);
}

// q pair e rotated and scaled into qs.
fn put_q(e: u32, q: vec2<f32>, pos: u32, turn: f32) {
  let half = HEAD_DIM / 2u;
  let d = e % half;
  let at = (e / half) * HEAD_DIM + d;
  let qr = rotate(q.x, q.y, turn, pos);
  qs[at / 4u][at % 4u] = qr.x * p.scale;
  qs[(at + half) / 4u][(at + half) % 4u] = qr.y * p.scale;
}

// #include prefetch


// Keys [j0, j1) of `split` for the workgroup's heads (their q in qs; the position's k and v in kc and vc):
// FINAL, the normalised output; else the split's partial (weighted sum of values, max, sum) for attn_combine.
// PRELOAD (FINAL): pl holds key t's row and the first value trips of the thread's lane, from key 0 on.
fn attend(t: u32, head0: u32, kvh: u32, split: u32, j0: u32, j1: u32, pos: u32, pl: Preloaded) {
  let cur = j1 == pos + 1u;  // this split holds the decode position
  let kg = t / VW;  // this thread's key lane (values)
  let w = t % VW;   // and its 8 dims
  a0 = vec4<f32>(0.0);
  b0 = vec4<f32>(0.0);
  a1 = vec4<f32>(0.0);
  b1 = vec4<f32>(0.0);
  a2 = vec4<f32>(0.0);
  b2 = vec4<f32>(0.0);
  a3 = vec4<f32>(0.0);
  b3 = vec4<f32>(0.0);
  var m_run = vec4<f32>(-3.0e38);
  var l_run = vec4<f32>(0.0);
  for (var c0 = j0; c0 < j1; c0 += SUB) {
    let n = min(SUB, j1 - c0);
    let pre = FINAL && PRELOAD && VW <= 16u && c0 == 0u;  // pl holds this piece's first keys and values
    // scores: a key a thread, two keys a trip (32 loads of 16 bytes in flight); the second clamped, not
    // guarded, so that its loads go out with the first's
    var m = vec4<f32>(-3.0e38);
    for (var i = t; i < n; i += 2u * WG) {
      let i2 = min(i + WG, n - 1u);
      var s: vec4<f32>;
      if (pre && i == t && !(cur && c0 + i == pos)) {
        s = score_row(pl.k);
      } else {
        s = score(c0 + i, pos, cur, kvh);
      }
      let s2 = score(c0 + i2, pos, cur, kvh);
      sc_put(i, s);
      m = max(m, s);
      if (i + WG < n) {
        sc_put(i + WG, s2);
        m = max(m, s2);
      }
    }
    let mx = max(m_run, reduce_max(t, m));
    let alpha = exp(m_run - mx);
    var l = vec4<f32>(0.0);
    for (var i = t; i < n; i += WG) {
      let e = exp(sc_get(i) - mx);
      sc_put(i, e);
      l += e;
    }
    l_run = l_run * alpha + reduce_sum(t, l);  // its barriers also publish sc
    m_run = mx;
    rescale(alpha);
    // values of the cached keys, eight a lane in flight, the last trip's positions past the keys clamped
    // (loaded, not added); the decode position's, the last key, from vc
    let nc = select(n, n - 1u, cur && c0 + n == j1);
    if (kg < KG && nc > 0u) {
      for (var i = kg; i < nc; i += 8u * KG) {
        var tr: ValueTrip;
        if (pre && i == kg) {
          tr = pl.v;
        } else if (pre && PRELOAD_TRIPS > 1u && i == kg + 8u * KG) {
          tr = pl.v2;
        } else {
          tr = load_values(kvh, c0, w, i, nc);
        }
        add_value(tr.v0, i, nc);
        add_value(tr.v1, i + KG, nc);
        add_value(tr.v2, i + 2u * KG, nc);
        add_value(tr.v3, i + 3u * KG, nc);
        add_value(tr.v4, i + 4u * KG, nc);
        add_value(tr.v5, i + 5u * KG, nc);
        add_value(tr.v6, i + 6u * KG, nc);
        add_value(tr.v7, i + 7u * KG, nc);
      }
    }
    if (nc < n && kg == 0u) {
      let d = 8u * w;
      accum(
        vec4<f32>(vc[d], vc[d + 1u], vc[d + 2u], vc[d + 3u]),
        vec4<f32>(vc[d + 4u], vc[d + 5u], vc[d + 6u], vc[d + 7u]),
        sc_get(n - 1u),
      );
    }
    workgroupBarrier();  // the next piece rewrites sc
  }

  // each head's KG lanes' sums meet in workgroup memory, a head at a time
  for (var h = 0u; h < HG; h++) {
    if (kg < KG) {
      var a = a0;
      var b = b0;
      if (h == 1u) {
        a = a1;
        b = b1;
      } else if (h == 2u) {
        a = a2;
        b = b2;
      } else if (h == 3u) {
        a = a3;
        b = b3;
      }
      let r = (kg * HEAD_DIM + 8u * w) / 4u;
      red[r] = a;
      red[r + 1u] = b;
    }
    workgroupBarrier();
    let head = head0 + h;
    let out = (split * p.numHeads + head) * (HEAD_DIM + 2u);
    for (var d = t; d < HEAD_DIM; d += WG) {
      var sum = 0.0;
      for (var g = 0u; g < KG; g += 8u) {
        let r0 = red[(g * HEAD_DIM + d) / 4u][(g * HEAD_DIM + d) % 4u];
        let r1 = red[(min(g + 1u, KG - 1u) * HEAD_DIM + d) / 4u][(min(g + 1u, KG - 1u) * HEAD_DIM + d) % 4u];
        let r2 = red[(min(g + 2u, KG - 1u) * HEAD_DIM + d) / 4u][(min(g + 2u, KG - 1u) * HEAD_DIM + d) % 4u];
        let r3 = red[(min(g + 3u, KG - 1u) * HEAD_DIM + d) / 4u][(min(g + 3u, KG - 1u) * HEAD_DIM + d) % 4u];
        let r4 = red[(min(g + 4u, KG - 1u) * HEAD_DIM + d) / 4u][(min(g + 4u, KG - 1u) * HEAD_DIM + d) % 4u];
        let r5 = red[(min(g + 5u, KG - 1u) * HEAD_DIM + d) / 4u][(min(g + 5u, KG - 1u) * HEAD_DIM + d) % 4u];
        let r6 = red[(min(g + 6u, KG - 1u) * HEAD_DIM + d) / 4u][(min(g + 6u, KG - 1u) * HEAD_DIM + d) % 4u];
        let r7 = red[(min(g + 7u, KG - 1u) * HEAD_DIM + d) / 4u][(min(g + 7u, KG - 1u) * HEAD_DIM + d) % 4u];
        sum += r0;
        if (g + 1u < KG) { sum += r1; }
        if (g + 2u < KG) { sum += r2; }
        if (g + 3u < KG) { sum += r3; }
        if (g + 4u < KG) { sum += r4; }
        if (g + 5u < KG) { sum += r5; }
        if (g + 6u < KG) { sum += r6; }
        if (g + 7u < KG) { sum += r7; }
      }
      if (FINAL) {
        outv[head * HEAD_DIM + d] = sum / l_run[h];
      } else {
        outv[out + d] = sum;
      }
    }
    if (!FINAL && t == 0u) {
      outv[out + HEAD_DIM] = m_run[h];
      outv[out + HEAD_DIM + 1u] = l_run[h];
    }
    workgroupBarrier();  // the next head (or split) rewrites red
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let groups = p.numHeads / HG;  // head groups
  // prefetch workgroups (past the attention's) first, before any barrier of the attention path (the branch is
  // workgroup-uniform)
  if (PREFETCH_WG > 0u && wid.x >= groups * ROWS) {
    prefetch(t, wid.x - groups * ROWS);
    return;
  }
  let head0 = (wid.x % groups) * HG;  // the workgroup's first head
  let row = wid.x / groups;           // its first split; then every ROWS-th
  let half = HEAD_DIM / 2u;
  let group = p.numHeads / p.numKv;
  let kvh = head0 / group;
  // the preload goes out first of all
  var pl: Preloaded;
  if (FINAL && PRELOAD && VW <= 16u) { pl = preload(t, kvh); }
  // the position and this thread's RoPE turns (of q pairs t and t + WG, and of k pair t) before the q|k|v
  // loop: after it, their loads waited for its loads
  let pos = state[0];
  let turn0 = turns[t % half];
  let turn1 = turns[(t + WG) % half];
  // the q|k|v loads go out with the state's, not behind a branch on it (the split variant's workgroups that
  // return below load them for nothing: a few reads of L2)
  let st = stage(head0, kvh, t);
  var lo = 0u;
  if (p.window > 0u && pos + 1u > p.window) { lo = pos + 1u - p.window; }
  var split = row;
  if (!FINAL) {
    // splits before the one holding the window's first key see nothing: an empty partial each, as
    // attn_combine reads every split up to the position's (those past the position get nothing)
    for (; split < lo / SPAN; split += ROWS) {
      for (var h = 0u; h < HG; h++) {
        let out = (split * p.numHeads + head0 + h) * (HEAD_DIM + 2u);
        for (var d = t; d < HEAD_DIM; d += WG) { outv[out + d] = 0.0; }
        if (t == 0u) {
          outv[out + HEAD_DIM] = -3.0e38;
          outv[out + HEAD_DIM + 1u] = 0.0;
        }
      }
    }
    if (split * SPAN > pos) { return; }
  }

  // q rotated and scaled; the new k (rotated) and v, rounded to f16 as the cache holds them
  if (t < HG * half) { put_q(t, st.q, pos, turn0); }
  if (HG * half > WG && t + WG < HG * half) { put_q(t + WG, st.q2, pos, turn1); }
  if (t < half) {
    let kr = f16_round(rotate(st.k.x, st.k.y, turn0, pos));
    kc[t] = kr.x;
    kc[t + half] = kr.y;
    let vr = f16_round(st.v);
    vc[t] = vr.x;
    vc[t + half] = vr.y;
  }
  workgroupBarrier();
  // the workgroup that takes the position's split, of the first q head of a kv group, stores k and v
  let at_split = pos / SPAN;
  let takes = FINAL || (at_split >= row && (at_split - row) % ROWS == 0u);
  if (takes && head0 % group == 0u) {
    let at = (kvh * p.maxSeq + pos) * VW;
    for (var w = t; w < VW; w += WG) {
      let d = 8u * w;
      kcache[at + w] = vec4<u32>(
        pack2x16float(vec2<f32>(kc[d], kc[d + 1u])),
        pack2x16float(vec2<f32>(kc[d + 2u], kc[d + 3u])),
        pack2x16float(vec2<f32>(kc[d + 4u], kc[d + 5u])),
        pack2x16float(vec2<f32>(kc[d + 6u], kc[d + 7u])),
      );
      vcache[at + w] = vec4<u32>(
        pack2x16float(vec2<f32>(vc[d], vc[d + 1u])),
        pack2x16float(vec2<f32>(vc[d + 2u], vc[d + 3u])),
        pack2x16float(vec2<f32>(vc[d + 4u], vc[d + 5u])),
        pack2x16float(vec2<f32>(vc[d + 6u], vc[d + 7u])),
      );
    }
  }
  if (FINAL) {
    attend(t, head0, kvh, 0u, lo, pos + 1u, pos, pl);
    return;
  }
  for (; split * SPAN <= pos; split += ROWS) {
    attend(t, head0, kvh, split, max(lo, split * SPAN), min(pos + 1u, (split + 1u) * SPAN), pos, pl);
  }
}
