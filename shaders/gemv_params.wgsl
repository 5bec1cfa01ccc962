// The decode GEMVs' parameters and bindings 0-9 (gemv_body.wgsl, gemv_q_body.wgsl include it where they declare
// them; the f16 kernels' tune and the quantized kernels' extra bindings follow in each).
// #include segment
struct Params {
  K: u32,
  ncols: u32,      // columns of partials (all segments)
  nseg: u32,
  counter: u32,    // counters[counter + seg] counts active channels of each segment
  tickets: u32,    // EPI: counters[tickets + tile] orders the workgroups of a tile (gemv_finish.wgsl)
  eps: f32,        // INPUT 1
  outOffset: u32,  // EPI: element of column 0 in outv
  auxCols: u32,    // INPUT 2: columns of the gate|up partials; up starts at auxCols / 2
  seg: array<Seg, 3>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(0) @binding(4) var<storage, read> thresholds: array<f32>;
@group(0) @binding(5) var<storage, read> scales: array<f32>;
@group(0) @binding(6) var<storage, read_write> counters: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read> aux: array<f32>;
@group(0) @binding(8) var<storage, read_write> ss: array<f32>;  // read_write: EPI 2 writes it
@group(0) @binding(9) var<storage, read> state: array<u32>;
