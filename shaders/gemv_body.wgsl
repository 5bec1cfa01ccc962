// gemv's kernel without its row arithmetic (fma_trip), which gemv.wgsl (f32) and gemv_h.wgsl (packed f16) each
// add; see gemv.wgsl for the whole.
override TPR: u32 = 16u;
override KCHUNK: u32 = 512u;
override SPARSE: bool = false;
override INPUT: u32 = 0u;
override NSS: u32 = 1u;         // INPUT 1: partial sums of squares in ss
override AUX_SPLITS: u32 = 1u;  // INPUT 2: splits of the gate|up partials
override WG: u32 = 256u;     // threads per workgroup
override UNROLL: u32 = 4u;   // rows in flight per thread: 4 or 8 (named registers; an array went to memory)
// dense: issue the first trip's weight loads before the input is staged (their rows do not depend on it), so
// their round trip overlaps the staging's instead of following the barrier
override EARLY: bool = false;
// the next trip's loads go out before the current trip's arithmetic (software pipelining; gemv_q.wgsl)
override PIPE: bool = false;
// counts each round of the compaction's prefix scan adds: 2 (Hillis-Steele), 4, 8 or 16 (GEMV_SCAN)
override SCAN_RADIX: u32 = 4u;
override KG: u32 = WG / TPR;
override TILE_N: u32 = TPR * 8u;
override PER: u32 = KCHUNK / WG;

// #include gemv_params

// #include gemv_finish

// #include gemv_workgroup


// One trip of a thread's row walk: UNROLL rows of its 8 columns (rows 4..7 only when UNROLL is 8).
struct Trip { w0: vec4<u32>, w1: vec4<u32>, w2: vec4<u32>, w3: vec4<u32>,
              w4: vec4<u32>, w5: vec4<u32>, w6: vec4<u32>, w7: vec4<u32> }

// Loads the trip of walk positions j, j + KG, ... for the thread's columns at v_col.
fn load_trip(j: u32, k_base: u32, v_stride: u32, v_col: u32, tail: bool, lim: u32) -> Trip {
  var r: Trip;
  r.w0 = wt[row(at(j, tail, lim), k_base) * v_stride + v_col];
  r.w1 = wt[row(at(j + KG, tail, lim), k_base) * v_stride + v_col];
  r.w2 = wt[row(at(j + 2u * KG, tail, lim), k_base) * v_stride + v_col];
  r.w3 = wt[row(at(j + 3u * KG, tail, lim), k_base) * v_stride + v_col];
  if (UNROLL == 8u) {
    r.w4 = wt[row(at(j + 4u * KG, tail, lim), k_base) * v_stride + v_col];
    r.w5 = wt[row(at(j + 5u * KG, tail, lim), k_base) * v_stride + v_col];
    r.w6 = wt[row(at(j + 6u * KG, tail, lim), k_base) * v_stride + v_col];
    r.w7 = wt[row(at(j + 7u * KG, tail, lim), k_base) * v_stride + v_col];
  }
  return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  // read before the staging loads but tested after them, so their round trips overlap
  let eos = state[3] != 0u;
  // #include gemv_split

  // Each group of TPR threads walks every KG-th active channel; thread c of the group owns 8 columns.
  let c = t % TPR;
  let kg = t / TPR;
  let col = (tile - seg.tile0) * TILE_N + c * 8u;
  let v_col = (seg.base + col) / 8u;
  let v_stride = seg.stride / 8u;
  let early = EARLY && !SPARSE && col < seg.len && kg + (UNROLL - 1u) * KG < n_k;
  var cur = Trip();
  if (early) { cur = load_trip(kg, k_base, v_stride, v_col, false, 0u); }

  // #include gemv_stage

  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  if (col < seg.len) {
    var j = kg;
    let step = UNROLL * KG;
    if (PIPE) {
      // the trip in `cur` (EARLY: loaded before the staging) is added while the next one is in flight
      var full = j + (UNROLL - 1u) * KG < n_act;
      if (full && !early) { cur = load_trip(j, k_base, v_stride, v_col, false, 0u); }
      while (full) {
        let more = j + step + (UNROLL - 1u) * KG < n_act;
        var next = Trip();
        if (more) { next = load_trip(j + step, k_base, v_stride, v_col, false, 0u); }
        fma_trip(&acc0, &acc1, cur, j, k_base, false, 0u);
        cur = next;
        j += step;
        full = more;
      }
    } else {
      if (early) {
        fma_trip(&acc0, &acc1, cur, j, k_base, false, 0u);
        j += step;
      }
      // the last trip, when fewer rows than a trip are left, is clamped (one copy of the trip's code)
      for (; j < n_act; j += step) {
        let tail = j + (UNROLL - 1u) * KG >= n_act;
        fma_trip(&acc0, &acc1, load_trip(j, k_base, v_stride, v_col, tail, n_act), j, k_base, tail, n_act);
      }
    }
    if (PIPE && j < n_act) {
      fma_trip(&acc0, &acc1, load_trip(j, k_base, v_stride, v_col, true, n_act), j, k_base, true, n_act);
    }
  }
  let r = kg * TILE_N + c * 8u;
  red[r] = acc0.x; red[r + 1u] = acc0.y; red[r + 2u] = acc0.z; red[r + 3u] = acc0.w;
  red[r + 4u] = acc1.x; red[r + 5u] = acc1.y; red[r + 6u] = acc1.z; red[r + 7u] = acc1.w;
  workgroupBarrier();
  for (var ct = t; ct < TILE_N; ct += WG) {
    let cl = (tile - seg.tile0) * TILE_N + ct;
    if (cl < seg.len) {
      partials[split * p.ncols + seg.out + cl] = row_groups_sum(ct, TILE_N);
    }
  }
  finish(t, tile, seg);
}
