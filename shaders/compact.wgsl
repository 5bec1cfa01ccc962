// The count prefix of the sparse GEMVs' compaction (gemv.wgsl, gemv_q.wgsl include it; context.ts shaderCode):
// thread t holds the number of active channels among its own, and needs how many the threads before it hold
// (where its indices go) and the workgroup's total. Two barriers: 16 threads each add up a sixteenth of the
// counts, then every thread adds the sums of the sixteenths before its own and the counts before it in its own
// (independent workgroup-memory loads, in flight together). A Hillis-Steele scan took 2 log2(WG) + 1 barriers,
// 17 at WG 256, in front of every sparse workgroup's first weight load. Uses the includer's WG (a multiple of 16).
var<workgroup> scan: array<u32, WG>;
var<workgroup> scan_part: array<u32, 16>;

// (exclusive prefix of cnt over threads 0..t, total over the workgroup); every thread of the workgroup calls it.
fn count_prefix(t: u32, cnt: u32) -> vec2<u32> {
  let part = WG / 16u;
  scan[t] = cnt;
  workgroupBarrier();
  if (t < 16u) {
    var sum = 0u;
    for (var i = 0u; i < part; i++) { sum += scan[t * part + i]; }
    scan_part[t] = sum;
  }
  workgroupBarrier();
  let mine = t / part;
  var before = 0u;
  var total = 0u;
  for (var g = 0u; g < 16u; g++) {
    let v = scan_part[g];
    total += v;
    before += select(0u, v, g < mine);
  }
  for (var i = 0u; i < part; i++) {
    let u = mine * part + i;
    before += select(0u, scan[u], u < t);
  }
  return vec2<u32>(before, total);
}
