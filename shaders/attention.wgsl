// Prefill attention: causal, grouped-query, with an optional sliding window, over the f16 KV cache, tiled in the
// manner of flash attention. A workgroup takes R consecutive query rows of one kv head together with HG of the q
// heads that share it (all of them unless the group is larger than a workgroup holds): QT query slots, r * HG + g
// for row r and head g (slots past R * HG, and rows past the chunk, idle). Their q vectors (scaled) stay in
// workgroup memory; the keys and values that any row of the workgroup sees are walked KT at a time, each tile
// loaded once from the cache (coalesced: consecutive threads, consecutive words of a key) into workgroup memory
// and used by every query of the workgroup. An online softmax (running max and sum per query) keeps the output
// in registers, so memory does not grow with the context.
// A tile goes in four steps, a barrier after each:
//   1. stage the tile's keys (as f32) in kv;
//   2. scores: a thread computes a block of BQ queries x BK keys, reading q and k as vec4 (each load feeds BK or
//      BQ vec4 FMAs); the scores go to sc, and each query's running max is raised (atomicMax on an order-
//      preserving u32 form of the float), so no pass of its own finds the maxima;
//   3. softmax: SPQ threads a query turn its scores into weights exp(s - max) and keep part of its sum; the
//      tile's values replace the keys in kv; the next tile's loads go out, to land while step 4 runs;
//   4. weights x values: a thread adds OQ queries x one vec4 of dims (named registers), reading each key's 4
//      dims once for its OQ queries and each query's weights 4 keys at a time.
// The row at position pos sees keys j with lo <= j <= pos, lo = pos + 1 - window with a sliding window (else
// 0). Positions are posBase + row, or (fromState) state[0] - posBase + row: the speculative verify pass, whose
// positions only the GPU knows, so a workgroup's key range comes from its first and last rows here (every
// thread computes it alike: the loop over tiles, and its barriers, are workgroup-uniform).
// Workgroup memory, in vec4s: qs QT * KSTR, kv KT * KSTR (rows padded by a vec4 so that threads reading
// different rows at one dim hit different banks), sc QT * KT / 4; plus mx, cr (QT) and lred (WG) words.
// attnPrefillTile (src/gpu/kernels.ts) picks the tile and these sizes, and counts the bytes.
// bindings: 0 params (uniform), 1 qkv (f32 [rows][ldq], q heads first, rotated, read),
//           2 kcache (u32: f16 pairs, [numKv][maxSeq][headDim / 2], read), 3 vcache (same),
//           4 out (f32 [rows][numHeads * headDim], write), 5 state (u32: [0] = decode position, read)
override HEAD_DIM: u32 = 128u;  // any even size; a constant so the loops over dims unroll
override WG: u32 = 256u;        // threads a workgroup
override QT: u32 = 32u;         // query slots a workgroup, a multiple of 8, at most WG
override HG: u32 = 4u;          // q heads a workgroup (of one kv head)
override R: u32 = 8u;           // rows a workgroup: R * HG <= QT
override KT: u32 = 8u;          // keys a tile, a multiple of 4 (and of BK)
override BQ: u32 = 2u;          // queries a score block: 2 or 4 (QT a multiple)
override BK: u32 = 4u;          // keys a score block: 2 or 4 (KT a multiple)
// array sizes, set by attentionOp: QS = QT * KSTR and KVS = KT * KSTR vec4s, SS = QT * KT / 4 vec4s. Not written
// as those expressions: Deno 2.9.6's WGSL compiler (naga 29) panics on an override expression as an array size,
// and an override initialised from others that sizes an array seemed to go with heap corruption at exit (the
// abort was libEGL's, docs/testing.md)
override QS: u32 = 1056u;
override KVS: u32 = 264u;
override SS: u32 = 64u;
override D4: u32 = (HEAD_DIM + 3u) / 4u;  // vec4s a head
override KSTR: u32 = D4 + 1u;             // vec4s a row of qs and kv (one of padding)
override HW: u32 = HEAD_DIM / 2u;         // u32 words (f16 pairs) a cached key
override KT4: u32 = KT / 4u;
override QTB: u32 = QT / BQ;              // score blocks across the query slots
override KTB: u32 = KT / BK;              // score blocks across a tile's keys
override OQ: u32 = 4u;                   // query slots a thread of step 4: 4 or 8 (QT a multiple)
override NQG: u32 = QT / OQ;             // query groups of step 4
override SPQ: u32 = WG / QT;             // threads a query in the softmax (QT <= WG)
override KPS: u32 = (KT + SPQ - 1u) / SPQ;
override NI: u32 = (KT * D4 + WG - 1u) / WG;  // tile vec4s a thread loads (at most 8: attnPrefillTile checks)
const NEG: f32 = -3.0e38;  // "minus infinity" that keeps exp(NEG - NEG) finite

struct Params {
  rows: u32,
  numHeads: u32,
  numKv: u32,
  headDim: u32,
  maxSeq: u32,
  posBase: u32,
  fromState: u32,
  ldq: u32,
  window: u32,  // 0: no sliding window
  scale: f32,   // 1 / sqrt(headDim)
  _pad0: u32,
  _pad1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> kcache: array<u32>;
@group(0) @binding(3) var<storage, read> vcache: array<u32>;
@group(0) @binding(4) var<storage, read_write> outv: array<f32>;
@group(0) @binding(5) var<storage, read> state: array<u32>;

var<workgroup> qs: array<vec4<f32>, QS>;   // query slot q's dims [4c, 4c + 4) at q * KSTR + c, scaled
var<workgroup> kv: array<vec4<f32>, KVS>;  // the tile's keys, then its values: key k's at k * KSTR + c
var<workgroup> sc: array<vec4<f32>, SS>;   // scores, then weights: query q, key k at [q * KT4 + k / 4][k % 4]
var<workgroup> mx: array<atomic<u32>, QT>; // running max of each query's scores, as ord() of the float
var<workgroup> cr: array<f32, QT>;         // the tile's rescaling of each query's sums: exp(old max - new)
var<workgroup> lred: array<f32, WG>;       // the softmax threads' parts of the sums, at the end

// the workgroup's rows and heads (the same in every thread)
var<private> r0: u32;     // first row
var<private> nrows: u32;  // rows it has: 1..R
var<private> nheads: u32; // q heads it has: 1..HG
var<private> pos0: u32;   // position of row r0
var<private> kbase: u32;  // cache row of key 0 of its kv head
var<private> k_last: u32; // last key any of its rows sees

// Order-preserving map of floats to u32 (negative: all bits flipped; else the sign bit set), for atomicMax.
fn ord(f: f32) -> u32 {
  let b = bitcast<u32>(f);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
fn unord(u: u32) -> f32 { return bitcast<f32>(select(~u, u & 0x7fffffffu, (u & 0x80000000u) != 0u)); }

// Keys [lo, end) that query slot q sees; empty for a slot past the rows or heads.
fn keys_of(q: u32) -> vec2<u32> {
  let r = q / HG;
  if (r >= nrows || q % HG >= nheads) { return vec2<u32>(1u, 0u); }
  let pos = pos0 + r;
  var lo = 0u;
  if (p.window > 0u && pos + 1u > p.window) { lo = pos + 1u - p.window; }
  return vec2<u32>(lo, pos + 1u);
}

// Vec4 `item` of the tile at key j0 (key item / D4, dims chunk item % D4) from both caches: k words in xy, v
// words in zw; zeros past the tile or the keys any row sees (a value never written could be NaN, and a weight
// of 0 times NaN is NaN).
fn load_item(item: u32, j0: u32) -> vec4<u32> {
  let k = item / D4;
  let c = item % D4;
  let j = j0 + k;
  var w = vec4<u32>(0u);
  if (item < KT * D4 && j <= k_last) {
    let at = (kbase + j) * HW + 2u * c;
    w.x = kcache[at];
    w.z = vcache[at];
    if (2u * c + 1u < HW) {  // a head of 4n + 2 dims: its last vec4 has one word
      w.y = kcache[at + 1u];
      w.w = vcache[at + 1u];
    }
  }
  return w;
}

fn unpack4(a: u32, b: u32) -> vec4<f32> { return vec4<f32>(unpack2x16float(a), unpack2x16float(b)); }

fn hsum(v: vec4<f32>) -> f32 { return (v.x + v.y) + (v.z + v.w); }

// Weights of 4 keys for one query times those keys' dims (one vec4 of each), added to o.
fn pv(o: vec4<f32>, w: vec4<f32>, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) -> vec4<f32> {
  return fma(vec4<f32>(w.w), v3, fma(vec4<f32>(w.z), v2, fma(vec4<f32>(w.y), v1, fma(vec4<f32>(w.x), v0, o))));
}

// One query's sums with the BK keys of a score block, a vec4 of products a key (summed at the end).
struct Blk {
  a: vec4<f32>,
  b: vec4<f32>,
  c: vec4<f32>,
  d: vec4<f32>,
}

fn blk_fma(s: Blk, q: vec4<f32>, k0: vec4<f32>, k1: vec4<f32>, k2: vec4<f32>, k3: vec4<f32>) -> Blk {
  var r = s;
  r.a = fma(q, k0, s.a);
  r.b = fma(q, k1, s.b);
  if (BK == 4u) {
    r.c = fma(q, k2, s.c);
    r.d = fma(q, k3, s.d);
  }
  return r;
}

// Scores of query slot q with keys kb, kb + KTB, ... of the tile at j0: written to sc, and the slot's running
// max raised to those it sees.
fn put_scores(q: u32, kb: u32, s: Blk, j0: u32) {
  let rg = keys_of(q);
  var m = NEG;
  m = put_score(q, kb, hsum(s.a), j0, rg, m);
  m = put_score(q, kb + KTB, hsum(s.b), j0, rg, m);
  if (BK == 4u) {
    m = put_score(q, kb + 2u * KTB, hsum(s.c), j0, rg, m);
    m = put_score(q, kb + 3u * KTB, hsum(s.d), j0, rg, m);
  }
  if (m > NEG) { atomicMax(&mx[q], ord(m)); }
}

// Score s of query slot q with key k of the tile at j0, written to sc; returns m raised to it when the query
// sees the key.
fn put_score(q: u32, k: u32, s: f32, j0: u32, rg: vec2<u32>, m: f32) -> f32 {
  sc[q * KT4 + k / 4u][k % 4u] = s;
  let j = j0 + k;
  return select(m, max(m, s), j >= rg.x && j < rg.y);
}

// Step 4's accumulators: query slot qg + NQG * i in o_i, o4..o7 with OQ = 8 (named registers: an array indexed
// by query could go to memory)
var<private> o0: vec4<f32>;
var<private> o1: vec4<f32>;
var<private> o2: vec4<f32>;
var<private> o3: vec4<f32>;
var<private> o4: vec4<f32>;
var<private> o5: vec4<f32>;
var<private> o6: vec4<f32>;
var<private> o7: vec4<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let group = p.numHeads / p.numKv;
  let chunks = (group + HG - 1u) / HG;  // workgroups a kv head's q heads take (1 unless HG < group)
  let kvh = wid.x / chunks;
  let head0 = kvh * group + (wid.x % chunks) * HG;  // the workgroup's first q head
  nheads = min(HG, group - (wid.x % chunks) * HG);
  r0 = wid.y * R;
  nrows = min(R, p.rows - r0);
  // fromState: rows at state[0] - posBase + row (the speculative verify pass, queued without the host)
  pos0 = select(p.posBase, state[0] - p.posBase, p.fromState != 0u) + r0;
  kbase = kvh * p.maxSeq;
  k_last = pos0 + nrows - 1u;
  var k_first = 0u;
  if (p.window > 0u && pos0 + 1u > p.window) { k_first = pos0 + 1u - p.window; }

  // q of every slot, scaled; zeros in idle slots and past the head's dims
  for (var i = t; i < QT * D4; i += WG) {
    let q = i / D4;
    let c = i % D4;
    var v = vec4<f32>(0.0);
    if (q / HG < nrows && q % HG < nheads) {
      let at = (r0 + q / HG) * p.ldq + (head0 + q % HG) * HEAD_DIM + 4u * c;
      for (var e = 0u; e < 4u; e++) {
        if (4u * c + e < HEAD_DIM) { v[e] = qkv[at + e] * p.scale; }
      }
    }
    qs[q * KSTR + c] = v;
  }
  if (t < QT) { atomicStore(&mx[t], ord(NEG)); }

  // step 3's query and keys: keys seg, seg + SPQ, ... of query slot sq (threads past QT * SPQ idle)
  let sq = t / SPQ;
  let seg = t % SPQ;
  let soft = t < QT * SPQ;
  var m_run = NEG;
  var l_part = 0.0;
  // step 4's query group and dims: slots qg + NQG * i, dims [4c, 4c + 4)
  let qg = t / D4;
  let c = t % D4;
  let pvs = t < NQG * D4;
  o0 = vec4<f32>(0.0);
  o1 = vec4<f32>(0.0);
  o2 = vec4<f32>(0.0);
  o3 = vec4<f32>(0.0);
  o4 = vec4<f32>(0.0);
  o5 = vec4<f32>(0.0);
  o6 = vec4<f32>(0.0);
  o7 = vec4<f32>(0.0);

  // the first tile's loads; thereafter each tile's go out during the tile before
  var pf: array<vec4<u32>, 8>;
  for (var i = 0u; i < NI; i++) { pf[i] = load_item(t + i * WG, k_first); }

  for (var j0 = k_first; j0 <= k_last; j0 += KT) {
    // 1. the tile's keys
    for (var i = 0u; i < NI; i++) {
      let item = t + i * WG;
      if (item < KT * D4) { kv[(item / D4) * KSTR + item % D4] = unpack4(pf[i].x, pf[i].y); }
    }
    workgroupBarrier();

    // 2. scores, BQ queries (qa, qa + QTB, ...) x BK keys (kb, kb + KTB, ...) a block: rows of qs and kv next
    // to each other in a warp, so their loads do not share banks
    for (var b = t; b < QTB * KTB; b += WG) {
      let kb = b % KTB;
      let qa = b / KTB;
      var s0 = Blk();
      var s1 = Blk();
      var s2 = Blk();
      var s3 = Blk();
      for (var d = 0u; d < D4; d++) {
        let k0 = kv[kb * KSTR + d];
        let k1 = kv[(kb + KTB) * KSTR + d];
        var k2 = k0;
        var k3 = k1;
        if (BK == 4u) {
          k2 = kv[(kb + 2u * KTB) * KSTR + d];
          k3 = kv[(kb + 3u * KTB) * KSTR + d];
        }
        s0 = blk_fma(s0, qs[qa * KSTR + d], k0, k1, k2, k3);
        s1 = blk_fma(s1, qs[(qa + QTB) * KSTR + d], k0, k1, k2, k3);
        if (BQ == 4u) {
          s2 = blk_fma(s2, qs[(qa + 2u * QTB) * KSTR + d], k0, k1, k2, k3);
          s3 = blk_fma(s3, qs[(qa + 3u * QTB) * KSTR + d], k0, k1, k2, k3);
        }
      }
      put_scores(qa, kb, s0, j0);
      put_scores(qa + QTB, kb, s1, j0);
      if (BQ == 4u) {
        put_scores(qa + 2u * QTB, kb, s2, j0);
        put_scores(qa + 3u * QTB, kb, s3, j0);
      }
    }
    workgroupBarrier();

    // 3. the tile's values over its keys; the next tile's loads; weights, and the query's rescaling
    for (var i = 0u; i < NI; i++) {
      let item = t + i * WG;
      if (item < KT * D4) { kv[(item / D4) * KSTR + item % D4] = unpack4(pf[i].z, pf[i].w); }
    }
    if (j0 + KT <= k_last) {
      for (var i = 0u; i < NI; i++) { pf[i] = load_item(t + i * WG, j0 + KT); }
    }
    if (soft) {
      let m_new = unord(atomicLoad(&mx[sq]));
      let corr = exp(m_run - m_new);
      let rg = keys_of(sq);
      var l = l_part * corr;
      for (var i = 0u; i < KPS; i++) {
        let k = seg + i * SPQ;
        if (k < KT) {
          let j = j0 + k;
          var e = 0.0;
          if (j >= rg.x && j < rg.y) { e = exp(sc[sq * KT4 + k / 4u][k % 4u] - m_new); }
          sc[sq * KT4 + k / 4u][k % 4u] = e;
          l += e;
        }
      }
      l_part = l;
      m_run = m_new;
      if (seg == 0u) { cr[sq] = corr; }
    }
    workgroupBarrier();

    // 4. weights x values: 4 keys a trip, one vec4 of weights a query
    if (pvs) {
      o0 *= cr[qg];
      o1 *= cr[qg + NQG];
      o2 *= cr[qg + 2u * NQG];
      o3 *= cr[qg + 3u * NQG];
      if (OQ == 8u) {
        o4 *= cr[qg + 4u * NQG];
        o5 *= cr[qg + 5u * NQG];
        o6 *= cr[qg + 6u * NQG];
        o7 *= cr[qg + 7u * NQG];
      }
      for (var k4 = 0u; k4 < KT4; k4++) {
        let y = 4u * k4 * KSTR + c;
        let v0 = kv[y];
        let v1 = kv[y + KSTR];
        let v2 = kv[y + 2u * KSTR];
        let v3 = kv[y + 3u * KSTR];
        let w = qg * KT4 + k4;
        o0 = pv(o0, sc[w], v0, v1, v2, v3);
        o1 = pv(o1, sc[w + NQG * KT4], v0, v1, v2, v3);
        o2 = pv(o2, sc[w + 2u * NQG * KT4], v0, v1, v2, v3);
        o3 = pv(o3, sc[w + 3u * NQG * KT4], v0, v1, v2, v3);
        if (OQ == 8u) {
          o4 = pv(o4, sc[w + 4u * NQG * KT4], v0, v1, v2, v3);
          o5 = pv(o5, sc[w + 5u * NQG * KT4], v0, v1, v2, v3);
          o6 = pv(o6, sc[w + 6u * NQG * KT4], v0, v1, v2, v3);
          o7 = pv(o7, sc[w + 7u * NQG * KT4], v0, v1, v2, v3);
        }
      }
    }
    workgroupBarrier();  // the next tile rewrites kv and sc
  }

  // the sums, from the softmax threads' parts; then out = o / sum
  if (soft) { lred[t] = l_part; }
  workgroupBarrier();
  if (pvs) {
    store(qg, o0, c, head0);
    store(qg + NQG, o1, c, head0);
    store(qg + 2u * NQG, o2, c, head0);
    store(qg + 3u * NQG, o3, c, head0);
    if (OQ == 8u) {
      store(qg + 4u * NQG, o4, c, head0);
      store(qg + 5u * NQG, o5, c, head0);
      store(qg + 6u * NQG, o6, c, head0);
      store(qg + 7u * NQG, o7, c, head0);
    }
  }
}

// Writes query slot q's dims [4c, 4c + 4), normalised (head0: the workgroup's first q head); nothing for an
// idle slot.
fn store(q: u32, o: vec4<f32>, c: u32, head0: u32) {
  let r = q / HG;
  if (r >= nrows || q % HG >= nheads) { return; }
  var l = 0.0;
  for (var s = 0u; s < SPQ; s++) { l += lred[q * SPQ + s]; }
  let at = ((r0 + r) * p.numHeads + head0 + q % HG) * HEAD_DIM + 4u * c;
  for (var e = 0u; e < 4u; e++) {
    if (4u * c + e < HEAD_DIM) { outv[at + e] = o[e] / l; }
  }
}
