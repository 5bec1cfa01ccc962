// Decode attention for the one new token, fused with the two steps before it: the q|k|v GEMV's split-K partials
// are summed (+ bias) and rotated (RoPE) here, and the new k and v are stored in the KV cache at the decode
// position. Workgroup (head, split) covers the positions [split*SPAN, (split+1)*SPAN) visible at the state's
// position; it walks them SUB at a time with an online softmax (running max and sum), so one workgroup can cover
// any length. FINAL (one split): the workgroup writes the normalised output, and no combine pass runs (short
// contexts). Otherwise it writes its unnormalised weighted sum of values with its max and sum, and attn_combine
// merges the splits (long contexts, where one workgroup per head would walk too many keys).
// The split that holds the decode position takes that position's k and v from the GEMV's sums (rounded to f16,
// as the cache holds them), not from the cache: the workgroup of the first q head of each kv group writes them
// there, and no workgroup of this dispatch reads that cache row.
// L2 prefetch (prefetch.wgsl, which says why): PREFETCH_WG more workgroups along x (x >= numHeads, row y = 0
// only) read a range of `pre` (the o projection's weights) for the o GEMV right after; with preCheck, their
// checksums go to out past the attention's output.
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
override SUB: u32 = 512u;   // scores held in workgroup memory at once
const WG: u32 = 256u;
// values: VW threads share a key, each 8 dims (one 16-byte load); KG keys side by side
override VW: u32 = HEAD_DIM / 8u;
override KG: u32 = WG / VW;
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

var<workgroup> qs: array<f32, HEAD_DIM>;
var<workgroup> kc: array<f32, HEAD_DIM>;
var<workgroup> vc: array<f32, HEAD_DIM>;
var<workgroup> sc: array<f32, SUB>;
var<workgroup> red: array<f32, WG * 8u>;  // KG * HEAD_DIM
var<workgroup> red2: array<f32, 16>;
var<workgroup> red3: array<f32, 16>;

// RoPE (rotate-half) of the pair (a, b) = dims (i, i + HEAD_DIM/2) at position pos; the angle as in rope.wgsl.
fn rotate(a: f32, b: f32, i: u32, pos: u32) -> vec2<f32> {
  let ang = fract(f32(pos) * turns[i]) * TAU;
  let c = cos(ang);
  let s = sin(ang);
  return vec2<f32>(a * c - b * s, b * c + a * s);
}

fn f16_round(v: vec2<f32>) -> vec2<f32> { return unpack2x16float(pack2x16float(v)); }

// Reductions over the workgroup (WG = 256) in two levels, 16 sums of 16, then every thread reads the 16: two
// barriers where a tree takes nine. Max and sum keep their second level apart (red2, red3), so a sum may
// follow a max with no barrier between.
fn reduce_max(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  if (t < 16u) {
    var m = red[16u * t];
    for (var i = 1u; i < 16u; i++) { m = max(m, red[16u * t + i]); }
    red2[t] = m;
  }
  workgroupBarrier();
  var r = red2[0];
  for (var i = 1u; i < 16u; i++) { r = max(r, red2[i]); }
  return r;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  if (t < 16u) {
    var m = red[16u * t];
    for (var i = 1u; i < 16u; i++) { m += red[16u * t + i]; }
    red3[t] = m;
  }
  workgroupBarrier();
  var r = red3[0];
  for (var i = 1u; i < 16u; i++) { r += red3[i]; }
  return r;
}

fn lo4(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn hi4(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)); }

// Score of key j: q . k, from the cache, or for the decode position from kc (8 dims a step either way).
fn score(j: u32, pos: u32, cur: bool, kvh: u32) -> f32 {
  var s = 0.0;
  if (cur && j == pos) {
    for (var d = 0u; d < HEAD_DIM; d += 8u) {
      s += dot(vec4<f32>(qs[d], qs[d + 1u], qs[d + 2u], qs[d + 3u]), vec4<f32>(kc[d], kc[d + 1u], kc[d + 2u], kc[d + 3u])) +
        dot(vec4<f32>(qs[d + 4u], qs[d + 5u], qs[d + 6u], qs[d + 7u]), vec4<f32>(kc[d + 4u], kc[d + 5u], kc[d + 6u], kc[d + 7u]));
    }
    return s;
  }
  let kr = (kvh * p.maxSeq + j) * VW;
  for (var u = 0u; u < VW; u++) {
    let k4 = kcache[kr + u];
    let o = 8u * u;
    s += dot(vec4<f32>(qs[o], qs[o + 1u], qs[o + 2u], qs[o + 3u]), lo4(k4)) +
      dot(vec4<f32>(qs[o + 4u], qs[o + 5u], qs[o + 6u], qs[o + 7u]), hi4(k4));
  }
  return s;
}

// This thread's share of the token's q|k|v row: dims (d, d + HEAD_DIM/2) of q, k and v, each summed over the
// GEMV's splits (+ bias). One loop, so that all of its loads are in flight together.
struct Staged {
  q: vec2<f32>,
  k: vec2<f32>,
  v: vec2<f32>,
}

fn stage(head: u32, kvh: u32, d: u32) -> Staged {
  let half = HEAD_DIM / 2u;
  let qa = head * HEAD_DIM + d;
  let ka = (p.numHeads + kvh) * HEAD_DIM + d;
  let va = (p.numHeads + p.numKv + kvh) * HEAD_DIM + d;
  var q = vec2<f32>(0.0);
  var k = vec2<f32>(0.0);
  var v = vec2<f32>(0.0);
  if (p.hasBias != 0u) {
    q = vec2<f32>(bias[qa], bias[qa + half]);
    k = vec2<f32>(bias[ka], bias[ka + half]);
    v = vec2<f32>(bias[va], bias[va + half]);
  }
  for (var s = 0u; s < SPLITS; s++) {
    let r = s * p.ldq;
    q += vec2<f32>(partials[r + qa], partials[r + qa + half]);
    k += vec2<f32>(partials[r + ka], partials[r + ka + half]);
    v += vec2<f32>(partials[r + va], partials[r + va + half]);
  }
  return Staged(q, k, v);
}

// #include prefetch

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  // prefetch workgroups first, before any barrier of the attention path (the branch is workgroup-uniform)
  if (PREFETCH_WG > 0u && wid.x >= p.numHeads) {
    if (wid.y == 0u) { prefetch(t, wid.x - p.numHeads); }
    return;
  }
  let head = wid.x;
  let split = wid.y;
  let half = HEAD_DIM / 2u;
  let group = p.numHeads / p.numKv;
  let kvh = head / group;
  let d_own = min(t, half - 1u);  // the dims this thread stages (threads past half load a copy, unused)
  var st: Staged;
  // one workgroup per head: the q|k|v loads go out with the state's, not behind a branch on it
  if (FINAL) { st = stage(head, kvh, d_own); }
  let pos = state[0];
  var lo = 0u;
  if (p.window > 0u && pos + 1u > p.window) { lo = pos + 1u - p.window; }
  var j0 = lo;
  var j1 = pos + 1u;
  if (!FINAL) {
    j0 = max(lo, split * SPAN);
    j1 = min(pos + 1u, (split + 1u) * SPAN);
  }
  let out = (split * p.numHeads + head) * (HEAD_DIM + 2u);
  if (j0 >= j1) {
    // nothing visible in this split (never the one holding the position). attn_combine reads the splits up
    // to the position's: those before the window get an empty partial, those past the position nothing.
    if (split * SPAN <= pos) {
      for (var d = t; d < HEAD_DIM; d += WG) { outv[out + d] = 0.0; }
      if (t == 0u) {
        outv[out + HEAD_DIM] = -3.0e38;
        outv[out + HEAD_DIM + 1u] = 0.0;
      }
    }
    return;
  }
  let cur = j1 == pos + 1u;  // this split holds the decode position
  if (!FINAL) { st = stage(head, kvh, d_own); }

  // q rotated and scaled; in the split holding the position, the new k (rotated) and v, rounded to f16 as
  // the cache holds them
  if (t < half) {
    let qr = rotate(st.q.x, st.q.y, t, pos);
    qs[t] = qr.x * p.scale;
    qs[t + half] = qr.y * p.scale;
    if (cur) {
      let kr = f16_round(rotate(st.k.x, st.k.y, t, pos));
      kc[t] = kr.x;
      kc[t + half] = kr.y;
      let vr = f16_round(st.v);
      vc[t] = vr.x;
      vc[t + half] = vr.y;
    }
  }
  workgroupBarrier();
  if (cur && head % group == 0u) {
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

  let kg = t / VW;  // this thread's key lane (values)
  let w = t % VW;   // and its 8 dims
  var m_run = -3.0e38;
  var l_run = 0.0;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  for (var c0 = j0; c0 < j1; c0 += SUB) {
    let n = min(SUB, j1 - c0);
    // scores: a key a thread, two keys a trip (32 loads of 16 bytes in flight); the second clamped, not
    // guarded, so that its loads go out with the first's
    var m = -3.0e38;
    for (var i = t; i < n; i += 2u * WG) {
      let i2 = min(i + WG, n - 1u);
      let s = score(c0 + i, pos, cur, kvh);
      let s2 = score(c0 + i2, pos, cur, kvh);
      sc[i] = s;
      m = max(m, s);
      if (i + WG < n) {
        sc[i + WG] = s2;
        m = max(m, s2);
      }
    }
    let mx = max(m_run, reduce_max(t, m));
    let alpha = exp(m_run - mx);
    var l = 0.0;
    for (var i = t; i < n; i += WG) {
      let e = exp(sc[i] - mx);
      sc[i] = e;
      l += e;
    }
    l_run = l_run * alpha + reduce_sum(t, l);  // its barriers also publish sc
    m_run = mx;
    acc0 *= alpha;
    acc1 *= alpha;
    // values of the cached keys, eight a lane in flight, the last trip masked (clamped loads, zero weights);
    // the decode position's, the last key, from vc
    let nc = select(n, n - 1u, cur && c0 + n == j1);
    if (kg < KG && nc > 0u) {
      let vr = (kvh * p.maxSeq + c0) * VW + w;
      for (var i = kg; i < nc; i += 8u * KG) {
        let i1 = min(i + KG, nc - 1u);
        let i2 = min(i + 2u * KG, nc - 1u);
        let i3 = min(i + 3u * KG, nc - 1u);
        let i4 = min(i + 4u * KG, nc - 1u);
        let i5 = min(i + 5u * KG, nc - 1u);
        let i6 = min(i + 6u * KG, nc - 1u);
        let i7 = min(i + 7u * KG, nc - 1u);
        let v0 = vcache[vr + i * VW];
        let v1 = vcache[vr + i1 * VW];
        let v2 = vcache[vr + i2 * VW];
        let v3 = vcache[vr + i3 * VW];
        let v4 = vcache[vr + i4 * VW];
        let v5 = vcache[vr + i5 * VW];
        let v6 = vcache[vr + i6 * VW];
        let v7 = vcache[vr + i7 * VW];
        let e0 = sc[i];
        let e1 = select(0.0, sc[i1], i + KG < nc);
        let e2 = select(0.0, sc[i2], i + 2u * KG < nc);
        let e3 = select(0.0, sc[i3], i + 3u * KG < nc);
        let e4 = select(0.0, sc[i4], i + 4u * KG < nc);
        let e5 = select(0.0, sc[i5], i + 5u * KG < nc);
        let e6 = select(0.0, sc[i6], i + 6u * KG < nc);
        let e7 = select(0.0, sc[i7], i + 7u * KG < nc);
        acc0 += e0 * lo4(v0) + e1 * lo4(v1) + e2 * lo4(v2) + e3 * lo4(v3) + e4 * lo4(v4) + e5 * lo4(v5) +
          e6 * lo4(v6) + e7 * lo4(v7);
        acc1 += e0 * hi4(v0) + e1 * hi4(v1) + e2 * hi4(v2) + e3 * hi4(v3) + e4 * hi4(v4) + e5 * hi4(v5) +
          e6 * hi4(v6) + e7 * hi4(v7);
      }
    }
    if (nc < n && kg == 0u) {
      let e = sc[n - 1u];
      let d = 8u * w;
      acc0 += e * vec4<f32>(vc[d], vc[d + 1u], vc[d + 2u], vc[d + 3u]);
      acc1 += e * vec4<f32>(vc[d + 4u], vc[d + 5u], vc[d + 6u], vc[d + 7u]);
    }
    workgroupBarrier();  // the next piece rewrites sc
  }

  // the KG lanes' sums meet in workgroup memory
  if (kg < KG) {
    let r = kg * HEAD_DIM + 8u * w;
    red[r] = acc0.x;
    red[r + 1u] = acc0.y;
    red[r + 2u] = acc0.z;
    red[r + 3u] = acc0.w;
    red[r + 4u] = acc1.x;
    red[r + 5u] = acc1.y;
    red[r + 6u] = acc1.z;
    red[r + 7u] = acc1.w;
  }
  workgroupBarrier();
  for (var d = t; d < HEAD_DIM; d += WG) {
    var sum = 0.0;
    for (var g = 0u; g < KG; g++) { sum += red[g * HEAD_DIM + d]; }
    if (FINAL) {
      outv[head * HEAD_DIM + d] = sum / l_run;
    } else {
      outv[out + d] = sum;
    }
  }
  if (!FINAL && t == 0u) {
    outv[out + HEAD_DIM] = m_run;
    outv[out + HEAD_DIM + 1u] = l_run;
  }
}
