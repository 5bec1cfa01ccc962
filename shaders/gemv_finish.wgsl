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

// #include split_sums

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
        let gu = split_sum2(p.seg[0].out + cl, p.seg[1].out + cl, p.ncols);
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
      var v = split_sum(seg.out + cl, p.ncols);
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
