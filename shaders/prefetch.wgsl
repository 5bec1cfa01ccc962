// L2 prefetch, included by attn_decode.wgsl and reduce.wgsl (context.ts shaderCode); it uses their p (fields
// preStart, preCount, preCheck, preRanges, preStride), pre (vec4<u32>, read: the words to prefetch; a scratch buffer when PREFETCH_WG
// is 0), outv (f32) and WG, which each declares with its own binding numbers.
// A decode step's attention and reduce passes are latency-bound on a few workgroups and leave DRAM idle, and
// the GEMV right after each reads its weights from DRAM. PREFETCH_WG more workgroups of the pass's own dispatch
// read the vec4 range [preStart, preStart + preCount) of `pre` (the start of the next GEMV's weights) and do
// nothing with it, so that the GEMV finds it in L2. preRanges > 1: as many ranges of preCount vec4s, preStride
// apart (the first rows of each of the GEMV's K chunks: every workgroup of it starts on rows in L2), the
// workgroups shared out among them (preRanges <= PREFETCH_WG). In the pass's dispatch, not one of its own, which wgpu's
// barrier before a dispatch that binds a read_write buffer would serialise after the pass. The including
// shader sends its workgroups past its own (a workgroup-uniform branch, before any of its barriers) here.
// preCheck != 0: prefetch workgroup i writes the XOR of its slice's words as two exact f32 halves (low, high
// 16 bits) at outv[preCheck + 2i], outv[preCheck + 2i + 1], past the pass's output. Forward always asks for
// them: a store the loads feed keeps a compiler from dropping (or sinking into a branch not taken) the loads.
override PREFETCH_WG: u32 = 0u;  // L2 prefetch workgroups past the pass's own (0: none)
const PRE_UNROLL: u32 = 8u;       // prefetch loads a thread has in flight per trip
var<workgroup> pre_x: atomic<u32>;  // a prefetch workgroup's checksum

// Prefetch workgroup i: reads its contiguous share of its range, PRE_UNROLL independent 16-byte loads a thread
// in flight per trip (32 KiB a workgroup), then a tail a load at a time.
fn prefetch(t: u32, i: u32) {
  // range r gets workgroups [ceil(r W / R), ceil((r + 1) W / R)) of the W = PREFETCH_WG
  let nr = max(p.preRanges, 1u);
  let r = i * nr / PREFETCH_WG;
  let w0 = (r * PREFETCH_WG + nr - 1u) / nr;
  let nw = ((r + 1u) * PREFETCH_WG + nr - 1u) / nr - w0;
  let per = (p.preCount + nw - 1u) / nw;
  let start = p.preStart + r * p.preStride;
  let lo = start + min((i - w0) * per, p.preCount);
  let hi = start + min((i - w0 + 1u) * per, p.preCount);
  var x = vec4<u32>(0u);
  var k = lo + t;
  for (; k + (PRE_UNROLL - 1u) * WG < hi; k += PRE_UNROLL * WG) {
    let w0 = pre[k];
    let w1 = pre[k + WG];
    let w2 = pre[k + 2u * WG];
    let w3 = pre[k + 3u * WG];
    let w4 = pre[k + 4u * WG];
    let w5 = pre[k + 5u * WG];
    let w6 = pre[k + 6u * WG];
    let w7 = pre[k + 7u * WG];
    x ^= ((w0 ^ w1) ^ (w2 ^ w3)) ^ ((w4 ^ w5) ^ (w6 ^ w7));
  }
  for (; k < hi; k += WG) { x ^= pre[k]; }
  if (p.preCheck != 0u) {
    if (t == 0u) { atomicStore(&pre_x, 0u); }
    workgroupBarrier();
    atomicXor(&pre_x, x.x ^ x.y ^ x.z ^ x.w);
    workgroupBarrier();
    if (t == 0u) {
      let s = atomicLoad(&pre_x);
      outv[p.preCheck + 2u * i] = f32(s & 0xffffu);
      outv[p.preCheck + 2u * i + 1u] = f32(s >> 16u);
    }
  }
}
