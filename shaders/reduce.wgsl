// Adds the split-K partial sums of gemv.wgsl and applies the projection's epilogue.
// MODE 0: out[o] = sum (+ bias[o]); MODE 1: out[o] += sum (residual add), and each workgroup writes the sum of
// squares of its 256 new values to ss[workgroup] (the next RMSNorm, fused into the next GEMV, adds them up);
// MODE 2: out[o] = silu(sum_a) * sum_b (SwiGLU of fused gate|up, b at column offB);
// MODE 3: out[o] = sum as MODE 0 (lm_head's logits), and each workgroup writes its 256 values' largest and the
// lowest output index holding it (-1 if none is above -3.4e38) to ss[2 (blockOffset + workgroup)] and the float
// after it, so that greedy sampling (sample.wgsl BLOCKS) reads ~500 pairs instead of a 128k vocabulary.
// L2 prefetch (prefetch.wgsl, which says why): PREFETCH_WG more workgroups past the ceil(n / 256) that reduce
// read a range of `pre` (the start of the next GEMV's weights); with preCheck, their checksums go to out past
// the pass's output.
// bindings: 0 params (uniform), 1 partials (f32 [splits][np], read), 2 bias (f32, read),
//           3 out (f32, read_write; preCheck: checksums past the output), 4 ss (f32 [ceil(n / 256)], write;
//           MODE 3: 2 floats a workgroup from element 2 blockOffset),
//           5 pre (vec4<u32>, read: the words to prefetch; a scratch buffer when PREFETCH_WG is 0)
override MODE: u32 = 0u;
// a constant, so that each thread's loads of its column's splits are all in flight at once (a loop bound from
// the uniform kept them one L2 round trip apart)
override SPLITS: u32 = 1u;
const WG: u32 = 256u;
struct Params {
  n: u32,          // outputs
  splits: u32,
  np: u32,         // columns per split
  srcOffset: u32,  // column of output 0 in partials
  offB: u32,       // column of the up half (MODE 2)
  outOffset: u32,  // element of output 0 in out
  hasBias: u32,
  preStart: u32,  // L2 prefetch: first vec4 of `pre`
  preCount: u32,  // vec4s to prefetch, split evenly over the PREFETCH_WG workgroups
  preCheck: u32,  // 0; else the out index of the prefetch checksums
  blockOffset: u32,  // MODE 3: the first workgroup's pair in ss (earlier column parts of lm_head hold those before)
  preRanges: u32,  // ranges of preCount vec4s, preStride apart (0 or 1: one)
  preStride: u32,
  _pad0: u32,
  _pad1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> outv: array<f32>;
@group(0) @binding(4) var<storage, read_write> ss: array<f32>;
@group(0) @binding(5) var<storage, read> pre: array<vec4<u32>>;
var<workgroup> part: array<f32, WG>;
var<workgroup> part2: array<f32, 16>;
var<workgroup> part_i: array<i32, 16>;

// #include split_sums

// #include prefetch

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) t: u32,
        @builtin(workgroup_id) wid: vec3<u32>) {
  // prefetch workgroups first, before MODE 1's barriers (the branch is workgroup-uniform)
  let nwg = (p.n + WG - 1u) / WG;
  if (PREFETCH_WG > 0u && wid.x >= nwg) {
    prefetch(t, wid.x - nwg);
    return;
  }
  let o = gid.x;
  let live = o < p.n;
  if (MODE == 2u) {
    if (live) {
      let gu = split_sum2(p.srcOffset + o, p.offB + o, p.np);
      outv[p.outOffset + o] = gu.x / (1.0 + exp(-gu.x)) * gu.y;
    }
    return;
  }
  // MODE 1's residual, read before the splits so that its load goes out with theirs (after their walk, it
  // waited for them)
  var resid = 0.0;
  if (MODE == 1u && live) { resid = outv[p.outOffset + o]; }
  var v = 0.0;
  if (live) {
    v = split_sum(p.srcOffset + o, p.np);
    if (p.hasBias != 0u) { v += bias[o]; }
  }
  if (MODE == 1u) {
    var nv = 0.0;
    if (live) {
      nv = resid + v;
      outv[p.outOffset + o] = nv;
    }
    // two levels (16 sums of 16, then one of 16): two barriers where a tree takes nine
    part[t] = nv * nv;
    workgroupBarrier();
    // the reads in one expression each, added in order: a loop of one read a trip was not unrolled (split_sums.wgsl)
    if (t < 16u) {
      let b = 16u * t;
      part2[t] = part[b] + part[b + 1u] + part[b + 2u] + part[b + 3u] +
        part[b + 4u] + part[b + 5u] + part[b + 6u] + part[b + 7u] +
        part[b + 8u] + part[b + 9u] + part[b + 10u] + part[b + 11u] +
        part[b + 12u] + part[b + 13u] + part[b + 14u] + part[b + 15u];
    }
    workgroupBarrier();
    if (t == 0u) {
      ss[wid.x] = part2[0] + part2[1u] + part2[2u] + part2[3u] +
        part2[4u] + part2[5u] + part2[6u] + part2[7u] +
        part2[8u] + part2[9u] + part2[10u] + part2[11u] +
        part2[12u] + part2[13u] + part2[14u] + part2[15u];
    }
  } else if (MODE == 3u) {
    if (live) { outv[p.outOffset + o] = v; }
    // the largest value and its lowest index, as sample.wgsl's argmax compares (strictly greater, in index
    // order, from -3.4e38): 16 runs of 16 in order, then the 16 results in order
    part[t] = select(-3.4e38, v, live);
    workgroupBarrier();
    if (t < 16u) {
      var best = -3.4e38;
      var at = -1;
      for (var i = 0u; i < 16u; i++) {
        let x = part[16u * t + i];
        if (x > best) {
          best = x;
          at = i32(o - t + 16u * t + i);
        }
      }
      part2[t] = best;
      part_i[t] = at;
    }
    workgroupBarrier();
    if (t == 0u) {
      var best = -3.4e38;
      var at = -1;
      for (var i = 0u; i < 16u; i++) {
        if (part2[i] > best) {
          best = part2[i];
          at = part_i[i];
        }
      }
      let b = 2u * (p.blockOffset + wid.x);
      ss[b] = best;
      // the vocabulary's index (column part's output o + its first column), exact in f32 below 2^24
      ss[b + 1u] = select(-1.0, f32(u32(at) + p.outOffset), at >= 0);
    }
  } else if (live) {
    outv[p.outOffset + o] = v;
  }
}
