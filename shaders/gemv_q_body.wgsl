// gemv_q's kernel without its row arithmetic (fma_trip, place_scaled), which gemv_q.wgsl (f32) and
// gemv_qh.wgsl (packed f16) each add; see gemv_q.wgsl for the whole.
override NSS: u32 = 1u;         // INPUT 1: partial sums of squares in ss
override AUX_SPLITS: u32 = 1u;  // INPUT 2: splits of the gate|up partials
override TPR: u32 = 8u;
override KCHUNK: u32 = 512u;
override SPARSE: bool = false;
override INPUT: u32 = 0u;
override BITS: u32 = 8u;     // 8 or 4
override GROUP: u32 = 128u;  // outputs per scale: 32, 64 or 128 (a multiple of COLS)
override WG: u32 = 256u;     // threads per workgroup (KCHUNK a multiple, TPR * 8 at most)
override UNROLL: u32 = 4u;   // rows in flight per thread: 4 or 8
override EARLY: bool = false;  // dense: the first trip's loads go out before the input is staged (gemv.wgsl)
override VEC: u32 = 4u;      // u32 words of codes a thread loads a row: 4 or 2
// the next trip's loads go out before the current trip's arithmetic: with few workgroups an SM (int4 at 8B
// shapes: under two), a thread's decode and FMAs otherwise leave its memory pipe idle for the whole trip
override PIPE: bool = false;
// counts each round of the compaction's prefix scan adds: 2 (Hillis-Steele), 4, 8 or 16 (GEMV_SCAN)
override SCAN_RADIX: u32 = 4u;
override KG: u32 = WG / TPR;
override COLS: u32 = VEC * 32u / BITS;
override TILE_N: u32 = TPR * COLS;
override PER: u32 = KCHUNK / WG;

// #include gemv_params
@group(0) @binding(11) var<storage, read> wt2: array<vec2<u32>>;
@group(0) @binding(12) var<storage, read> wt1: array<u32>;


// #include gemv_finish

// #include gemv_workgroup

// Row k's codes for this thread (vc: its first word in row 0, in units of VEC words; vs: units a row). VEC 2
// leaves z and w zero, and the row arithmetic never reads them.
fn codes(k: u32, vs: u32, vc: u32) -> vec4<u32> {
  if (VEC == 2u) { return vec4<u32>(wt2[k * vs + vc], 0u, 0u); }
  return wt[k * vs + vc];
}

// Row k's group metadata word for this thread (mo: its word in row 0).
fn meta_word(k: u32, stride: u32, mo: u32) -> u32 {
  return wt1[k * stride + mo];
}

// One trip of a thread's row walk: UNROLL rows' codes and metadata words (rows 4..7 only when UNROLL is 8).
struct Trip {
  q0: vec4<u32>, q1: vec4<u32>, q2: vec4<u32>, q3: vec4<u32>,
  q4: vec4<u32>, q5: vec4<u32>, q6: vec4<u32>, q7: vec4<u32>,
  m0: u32, m1: u32, m2: u32, m3: u32, m4: u32, m5: u32, m6: u32, m7: u32,
}

// x * scale (the place factors of bytes4 / nibbles4 are divided out at the end: place_scaled), and x * offset,
// from one metadata word.
fn coef(mw: u32, hsel: u32, v: f32) -> vec2<f32> {
  // int8: the group's half of the word alone (one conversion, no select)
  if (BITS == 8u) { return vec2<f32>(v * unpack2x16float(mw >> (16u * hsel)).x, 0.0); }
  return v * unpack2x16float(mw);
}

// The thread's accumulators: eight vec4 columns (int8 uses four), in f32 in both kernels (gemv_q.wgsl keeps
// its codes' place factors in them until place_scaled).
struct Acc {
  a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
  a4: vec4<f32>, a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>,
  b: f32,  // int4: sum of x * offset, added to every column at the end
}

fn acc_zero() -> Acc {
  return Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0),
             vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), 0.0);
}

// Loads the trip of walk positions j, j + KG, ...: the rows' codes (at vc) then their metadata words (at mo);
// in the walk's last, partial trip (`tail`) the positions past `lim` re-read the last row (at()).
fn load_trip(j: u32, k_base: u32, vs: u32, vc: u32, mo: u32, stride: u32, tail: bool, lim: u32) -> Trip {
  var r: Trip;
  let k0 = row(at(j, tail, lim), k_base);
  let k1 = row(at(j + KG, tail, lim), k_base);
  let k2 = row(at(j + 2u * KG, tail, lim), k_base);
  let k3 = row(at(j + 3u * KG, tail, lim), k_base);
  r.q0 = codes(k0, vs, vc);
  r.q1 = codes(k1, vs, vc);
  r.q2 = codes(k2, vs, vc);
  r.q3 = codes(k3, vs, vc);
  r.m0 = meta_word(k0, stride, mo);
  r.m1 = meta_word(k1, stride, mo);
  r.m2 = meta_word(k2, stride, mo);
  r.m3 = meta_word(k3, stride, mo);
  if (UNROLL == 8u) {
    let k4 = row(at(j + 4u * KG, tail, lim), k_base);
    let k5 = row(at(j + 5u * KG, tail, lim), k_base);
    let k6 = row(at(j + 6u * KG, tail, lim), k_base);
    let k7 = row(at(j + 7u * KG, tail, lim), k_base);
    r.q4 = codes(k4, vs, vc);
    r.q5 = codes(k5, vs, vc);
    r.q6 = codes(k6, vs, vc);
    r.q7 = codes(k7, vs, vc);
    r.m4 = meta_word(k4, stride, mo);
    r.m5 = meta_word(k5, stride, mo);
    r.m6 = meta_word(k6, stride, mo);
    r.m7 = meta_word(k7, stride, mo);
  }
  return r;
}

// One reduction pass over the KG channel groups: eight columns (lo, hi) of every thread, from column `part`*8
// of its COLS on; writes the sums of the tile's columns to partials.
fn reduce_pass(t: u32, part: u32, lo: vec4<f32>, hi: vec4<f32>, tile_col0: u32, seg: Seg, split: u32) {
  let c = t % TPR;
  let kg = t / TPR;
  let r = kg * TPR * 8u + c * 8u;
  red[r] = lo.x; red[r + 1u] = lo.y; red[r + 2u] = lo.z; red[r + 3u] = lo.w;
  red[r + 4u] = hi.x; red[r + 5u] = hi.y; red[r + 6u] = hi.z; red[r + 7u] = hi.w;
  workgroupBarrier();
  for (var i = t; i < TPR * 8u; i += WG) {
    let cl = tile_col0 + (i / 8u) * COLS + part * 8u + i % 8u;
    if (cl < seg.len) {
      partials[split * p.ncols + seg.out + cl] = row_groups_sum(i, TPR * 8u);
    }
  }
  workgroupBarrier();
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  // read before the staging loads but tested after them, so their round trips overlap
  let eos = state[3] != 0u;
  // #include gemv_split

  // Each group of TPR threads walks every KG-th active channel; thread c of the group owns COLS columns.
  let c = t % TPR;
  let kg = t / TPR;
  let tile_col0 = (tile - seg.tile0) * TILE_N;
  let col = tile_col0 + c * COLS;
  let vs = seg.stride / VEC;                     // VEC-word units per row
  let vc = (seg.base + col * BITS / 32u) / VEC;  // this thread's codes in row 0
  let g = col / GROUP;
  var mo = seg.base + seg.scale0 + g;            // this thread's metadata word in row 0
  if (BITS == 8u) { mo = seg.base + seg.scale0 + g / 2u; }
  let hsel = g & 1u;
  let early = EARLY && !SPARSE && col < seg.len && kg + (UNROLL - 1u) * KG < n_k;
  var cur = Trip();
  if (early) { cur = load_trip(kg, k_base, vs, vc, mo, seg.stride, false, 0u); }

  // #include gemv_stage

  var acc = acc_zero();
  if (col < seg.len) {
    var j = kg;
    let step = UNROLL * KG;
    if (PIPE) {
      // the trip in `cur` (EARLY: loaded before the staging) is added while the next one is in flight
      var full = j + (UNROLL - 1u) * KG < n_act;
      if (full && !early) { cur = load_trip(j, k_base, vs, vc, mo, seg.stride, false, 0u); }
      while (full) {
        let more = j + step + (UNROLL - 1u) * KG < n_act;
        var next = Trip();
        if (more) { next = load_trip(j + step, k_base, vs, vc, mo, seg.stride, false, 0u); }
        fma_trip(&acc, cur, j, k_base, hsel, false, 0u);
        cur = next;
        j += step;
        full = more;
      }
    } else {
      if (early) {
        fma_trip(&acc, cur, j, k_base, hsel, false, 0u);
        j += step;
      }
      for (; j + (UNROLL - 1u) * KG < n_act; j += step) {
        fma_trip(&acc, load_trip(j, k_base, vs, vc, mo, seg.stride, false, 0u), j, k_base, hsel, false, 0u);
      }
    }
    // the rows left (fewer than a trip) in one clamped trip: one round trip, where a row at a time took one a
    // row (up to UNROLL - 1 in every sparse chunk, as the f16 kernel had found)
    if (j < n_act) {
      fma_trip(&acc, load_trip(j, k_base, vs, vc, mo, seg.stride, true, n_act), j, k_base, hsel, true, n_act);
    }
  }
  // Reduce over the KG channel groups in passes of eight columns per thread (bounded workgroup memory).
  acc = place_scaled(acc);
  let b = vec4<f32>(acc.b);
  if (BITS == 8u) {
    reduce_pass(t, 0u, acc.a0, acc.a1, tile_col0, seg, split);
    if (VEC == 4u) { reduce_pass(t, 1u, acc.a2, acc.a3, tile_col0, seg, split); }
  } else {
    reduce_pass(t, 0u, acc.a0 + b, acc.a1 + b, tile_col0, seg, split);
    reduce_pass(t, 1u, acc.a2 + b, acc.a3 + b, tile_col0, seg, split);
    if (VEC == 4u) {
      reduce_pass(t, 2u, acc.a4 + b, acc.a5 + b, tile_col0, seg, split);
      reduce_pass(t, 3u, acc.a6 + b, acc.a7 + b, tile_col0, seg, split);
    }
  }
  finish(t, tile, seg);
}
