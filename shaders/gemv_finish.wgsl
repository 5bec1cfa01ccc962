// The split-K epilogue of gemv.wgsl and gemv_q.wgsl, included by both (context.ts shaderCode); it uses their
// p, Seg, partials, counters, ss, red, TILE_N and WG. The last workgroup of a column tile to write its partial
// sums adds the tile's splits and applies the projection's epilogue, so no reduce pass (a dispatch and a
// barrier, ~9 us a layer each at 8B shapes) follows the GEMV:
//   EPI 0: none (reduce.wgsl sums the splits);  EPI 1: out[outOffset + col] = sum;
//   EPI 2: out[outOffset + col] += sum (residual add), and ss[tile] = the sum of squares of the tile's new
//          values (the next fused RMSNorm adds up the tiles'; the GEMV's own input then has no RMSNorm);
//   EPI 3: out[outOffset + col] = silu(gate sum) * up sum: segment 0 is gate, segment 1 up, of equal length;
//          tile t of each shares one ticket.
// "Last" comes from a ticket: each workgroup ends its partial-sum writes with a storageBarrier before it takes
// a ticket (atomicAdd on counters[p.tickets + ticket]); the workgroup that takes the last one reads the splits
// after a second barrier and sets the ticket back to 0 for the next dispatch. WGSL does not promise that those
// writes are visible to another workgroup by then (Forward.gemvEpilogue: check each GPU with
// bench/finish_check.ts). The splits are added in split order, as reduce.wgsl does: the sums are the same bits
// whichever workgroup finishes last.
// bindings: 10 outv (f32, read_write); the including shader's 8 ss is read_write for EPI 2.
override EPI: u32 = 0u;
override SPLITS: u32 = 1u;  // workgroups along y: a constant, so a column's split loads are all in flight
@group(0) @binding(10) var<storage, read_write> outv: array<f32>;
var<workgroup> fin_last: u32;

// The splits added in split order, their loads sixteen at a time (past the last split clamped, not added): as a
// loop of one load a trip, NVIDIA's compiler left them one L2 round trip apart (reduce.wgsl total()).
fn split_sum(col: u32) -> f32 {
  let last = SPLITS - 1u;
  var sum = 0.0;
  for (var s = 0u; s < SPLITS; s += 16u) {
    let v0 = partials[min(s, last) * p.ncols + col];
    let v1 = partials[min(s + 1u, last) * p.ncols + col];
    let v2 = partials[min(s + 2u, last) * p.ncols + col];
    let v3 = partials[min(s + 3u, last) * p.ncols + col];
    let v4 = partials[min(s + 4u, last) * p.ncols + col];
    let v5 = partials[min(s + 5u, last) * p.ncols + col];
    let v6 = partials[min(s + 6u, last) * p.ncols + col];
    let v7 = partials[min(s + 7u, last) * p.ncols + col];
    let v8 = partials[min(s + 8u, last) * p.ncols + col];
    let v9 = partials[min(s + 9u, last) * p.ncols + col];
    let v10 = partials[min(s + 10u, last) * p.ncols + col];
    let v11 = partials[min(s + 11u, last) * p.ncols + col];
    let v12 = partials[min(s + 12u, last) * p.ncols + col];
    let v13 = partials[min(s + 13u, last) * p.ncols + col];
    let v14 = partials[min(s + 14u, last) * p.ncols + col];
    let v15 = partials[min(s + 15u, last) * p.ncols + col];
    sum += v0;
    if (s + 1u < SPLITS) { sum += v1; }
    if (s + 2u < SPLITS) { sum += v2; }
    if (s + 3u < SPLITS) { sum += v3; }
    if (s + 4u < SPLITS) { sum += v4; }
    if (s + 5u < SPLITS) { sum += v5; }
    if (s + 6u < SPLITS) { sum += v6; }
    if (s + 7u < SPLITS) { sum += v7; }
    if (s + 8u < SPLITS) { sum += v8; }
    if (s + 9u < SPLITS) { sum += v9; }
    if (s + 10u < SPLITS) { sum += v10; }
    if (s + 11u < SPLITS) { sum += v11; }
    if (s + 12u < SPLITS) { sum += v12; }
    if (s + 13u < SPLITS) { sum += v13; }
    if (s + 14u < SPLITS) { sum += v14; }
    if (s + 15u < SPLITS) { sum += v15; }
  }
  return sum;
}

// split_sum(a) and split_sum(b) in one walk, so that both columns' loads go out together (reduce.wgsl total2()).
fn split_sum2(a: u32, b: u32) -> vec2<f32> {
  let last = SPLITS - 1u;
  var sum = vec2<f32>(0.0);
  for (var s = 0u; s < SPLITS; s += 8u) {
    let r0 = min(s, last) * p.ncols;
    let r1 = min(s + 1u, last) * p.ncols;
    let r2 = min(s + 2u, last) * p.ncols;
    let r3 = min(s + 3u, last) * p.ncols;
    let r4 = min(s + 4u, last) * p.ncols;
    let r5 = min(s + 5u, last) * p.ncols;
    let r6 = min(s + 6u, last) * p.ncols;
    let r7 = min(s + 7u, last) * p.ncols;
    let v0 = vec2<f32>(partials[r0 + a], partials[r0 + b]);
    let v1 = vec2<f32>(partials[r1 + a], partials[r1 + b]);
    let v2 = vec2<f32>(partials[r2 + a], partials[r2 + b]);
    let v3 = vec2<f32>(partials[r3 + a], partials[r3 + b]);
    let v4 = vec2<f32>(partials[r4 + a], partials[r4 + b]);
    let v5 = vec2<f32>(partials[r5 + a], partials[r5 + b]);
    let v6 = vec2<f32>(partials[r6 + a], partials[r6 + b]);
    let v7 = vec2<f32>(partials[r7 + a], partials[r7 + b]);
    sum += v0;
    if (s + 1u < SPLITS) { sum += v1; }
    if (s + 2u < SPLITS) { sum += v2; }
    if (s + 3u < SPLITS) { sum += v3; }
    if (s + 4u < SPLITS) { sum += v4; }
    if (s + 5u < SPLITS) { sum += v5; }
    if (s + 6u < SPLITS) { sum += v6; }
    if (s + 7u < SPLITS) { sum += v7; }
  }
  return sum;
}

// Sixteen consecutive entries of red from i, added in order, read in one expression (a loop of one read a trip
// left them one round trip apart).
fn red16(i: u32) -> f32 {
  return red[i] + red[i + 1u] + red[i + 2u] + red[i + 3u] + red[i + 4u] + red[i + 5u] + red[i + 6u] +
    red[i + 7u] + red[i + 8u] + red[i + 9u] + red[i + 10u] + red[i + 11u] + red[i + 12u] + red[i + 13u] +
    red[i + 14u] + red[i + 15u];
}

fn finish(t: u32, tile: u32, seg: Seg) {
  if (EPI == 0u) { return; }
  let local = tile - seg.tile0;
  var ticket = tile;
  var need = SPLITS;
  if (EPI == 3u) {
    ticket = local;
    need = 2u * SPLITS;
  }
  storageBarrier();
  if (t == 0u) {
    fin_last = select(0u, 1u, atomicAdd(&counters[p.tickets + ticket], 1u) == need - 1u);
  }
  if (workgroupUniformLoad(&fin_last) == 0u) { return; }
  storageBarrier();
  if (t == 0u) { atomicStore(&counters[p.tickets + ticket], 0u); }
  let c0 = local * TILE_N;
  if (EPI == 3u) {
    for (var ct = t; ct < TILE_N; ct += WG) {
      let cl = c0 + ct;
      if (cl < seg.len) {
        let gu = split_sum2(p.seg[0].out + cl, p.seg[1].out + cl);
        outv[p.outOffset + cl] = gu.x / (1.0 + exp(-gu.x)) * gu.y;
      }
    }
    return;
  }
  var sq = 0.0;
  for (var ct = t; ct < TILE_N; ct += WG) {
    let cl = c0 + ct;
    if (cl < seg.len) {
      let o = p.outOffset + seg.out + cl;
      // the residual read before the splits, so that its load goes out with theirs
      var resid = 0.0;
      if (EPI == 2u) { resid = outv[o]; }
      var v = split_sum(seg.out + cl);
      if (EPI == 2u) {
        v = resid + v;
        sq += v * v;
      }
      outv[o] = v;
    }
  }
  if (EPI == 2u) {
    // two levels (WG / 16 sums of 16, then one), as reduce.wgsl, in the GEMV's reduction memory (WG * 8
    // floats): every thread last read it before the barrier of workgroupUniformLoad above
    red[t] = sq;
    workgroupBarrier();
    if (t < WG / 16u) { red[WG + t] = red16(16u * t); }
    workgroupBarrier();
    if (t == 0u) {
      // the WG / 16 sums in order, four reads a trip where WG allows
      var sum = 0.0;
      if (WG % 64u == 0u) {
        for (var i = 0u; i < WG / 16u; i += 4u) {
          sum = sum + red[WG + i] + red[WG + i + 1u] + red[WG + i + 2u] + red[WG + i + 3u];
        }
      } else {
        for (var i = 0u; i < WG / 16u; i++) { sum += red[WG + i]; }
      }
      ss[tile] = sum;
    }
  }
}
