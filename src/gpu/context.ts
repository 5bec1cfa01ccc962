/**
 * The one GPU context: adapter, device with the adapter's real limits, a pipeline cache keyed by variant
 * name, and the dispatch helper every op goes through.
 * @module
 */
import { type ShaderName, SHADERS } from "./shaders.generated.ts";
import { applyBackendDefault } from "./backend.ts";

/** Why the context could not be created, or a GPU error, in words a user can act on. */
export class GpuError extends Error {
  /** Error name. */
  override name = "GpuError";
}

/** A compute pipeline variant: a shader, its entry point and its `override` constants. */
export interface Variant {
  /** Embedded shader to compile (a `shaders/*.wgsl` file name without `.wgsl`). */
  shader: ShaderName;
  /** Entry point in the shader; defaults to "main". */
  entry?: string;
  /** Values of the shader's `override` constants, by constant name. */
  overrides?: Record<string, number>;
}

/** One dispatch: a pipeline variant, its bindings in binding order, and the workgroup counts. */
export interface Dispatch {
  /** Pipeline variant to run. */
  variant: Variant;
  /** Buffers bound to bindings 0, 1, 2, ... of group 0, in binding order. */
  bindings: GPUBuffer[];
  /** Workgroup counts [x, y?, z?]; y and z default to 1. */
  workgroups: [number, number?, number?];
  /** Shown by the profile switch; defaults to the shader name. */
  label?: string;
  /** Buffers made for this dispatch alone (its parameters), released with it. */
  owned?: GPUBuffer[];
}

/** A dispatch whose bind group is built: cheap to encode again every step. */
export interface Op {
  /** Compiled (cached) compute pipeline of the dispatch's variant. */
  pipeline: GPUComputePipeline;
  /** Bind group of the dispatch's bindings. */
  bindGroup: GPUBindGroup;
  /** Workgroup counts [x, y, z]. */
  workgroups: [number, number, number];
  /** Shown by the profile switch: the dispatch's label, or its shader name. */
  label: string;
  /** Buffers made for this dispatch alone (its parameters), released with it. */
  owned?: GPUBuffer[];
}

/** Options of {@link createGpuContext}. */
export interface GpuContextOptions {
  /** Prefer a low-power adapter (default "high-performance"). */
  powerPreference?: GPUPowerPreference;
}

/** Variant key: shader, entry point and overrides, all in the name. */
export function variantName(v: Variant): string {
  const o = Object.entries(v.overrides ?? {}).map(([k, x]) => `${k}${x}`).join("_");
  return [v.shader, v.entry ?? "main", o].filter((s) => s).join("_");
}

/**
 * The WGSL of a shader with its `// #include NAME` lines (indented or not) replaced by shader NAME's text (a
 * fragment several kernels share: declarations such as gemv_finish, or statements such as gemv_stage; a fragment
 * may include others), from `sources` where given, else the embedded shaders.
 */
export function shaderCode(name: ShaderName, sources: Partial<Record<ShaderName, string>> = {}): string {
  const expand = (n: ShaderName, depth: number): string => {
    if (depth > 4) throw new GpuError(`shader ${name}: includes nested too deep (a cycle?)`);
    return (sources[n] ?? SHADERS[n]).replace(/^[ \t]*\/\/ #include (\w+)$/gm, (_, inc: string) => {
      if (!(inc in SHADERS)) throw new GpuError(`shader ${n}: no shader ${inc} to include`);
      return expand(inc as ShaderName, depth + 1);
    });
  };
  return expand(name, 0);
}

/** Whether WGSL source enables the f16 extension (`enable f16;` before any declaration). */
export function needsF16(code: string): boolean {
  return /^\s*enable\s+[^;]*\bf16\b/m.test(code);
}

/** Owns the device; builds and caches pipelines; turns dispatches into ops. */
export class GpuContext {
  /** The WebGPU device. */
  readonly device: GPUDevice;
  /** The adapter's description (e.g. "NVIDIA H100 80GB HBM3" or "llvmpipe"). */
  readonly adapterName: string;
  /** Largest storage binding this device accepts, in bytes. */
  readonly maxBinding: number;
  /** Whether timestamp queries are available (kernel profiling). */
  readonly hasTimestamps: boolean;
  /** Whether the adapter runs on the CPU (lavapipe, SwiftShader): some tunables differ there. */
  readonly isCpu: boolean;
  /**
   * Whether the device has the "shader-f16" feature, so that shaders beginning with `enable f16;` (the
   * f16-arithmetic kernels: gemv_qh.wgsl, by default on GPUs, and the opt-in gemv_h.wgsl, matmul_wide_h.wgsl)
   * compile on it.
   */
  readonly hasF16: boolean;
  #pipelines = new Map<string, GPUComputePipeline>();
  #modules = new Map<string, GPUShaderModule>();
  #lost: string | null = null;
  #scratch = new Map<string, GPUBuffer>();
  #sources: Partial<Record<ShaderName, string>> = {};

  /**
   * Wraps a device; use {@link createGpuContext} to request one.
   * @param device The WebGPU device.
   * @param adapterName The adapter's description.
   * @param hasTimestamps Whether the device has the "timestamp-query" feature.
   * @param isCpu Whether the adapter is a CPU implementation.
   */
  constructor(device: GPUDevice, adapterName: string, hasTimestamps: boolean, isCpu = false) {
    this.device = device;
    this.adapterName = adapterName;
    this.isCpu = isCpu;
    this.maxBinding = device.limits.maxStorageBufferBindingSize;
    this.hasTimestamps = hasTimestamps;
    this.hasF16 = device.features.has("shader-f16");
    device.lost.then((info) => {
      this.#lost = `${info.reason}: ${info.message}`;
    });
  }

  /**
   * A context on the same device whose pipelines build from `sources` where given, in place of the embedded
   * WGSL: for benchmarks that time edited copies of a kernel (src/bench/probe.ts). Its caches are its own.
   */
  withSources(sources: Partial<Record<ShaderName, string>>): GpuContext {
    const c = new GpuContext(this.device, this.adapterName, this.hasTimestamps, this.isCpu);
    c.#sources = sources;
    return c;
  }

  /** Throws if the device was lost (every later GPU call would fail silently). */
  checkAlive(): void {
    if (this.#lost !== null) throw new GpuError(`GPU device lost (${this.#lost})`);
  }

  /** Builds (once) the pipeline for a variant. Compile errors name the variant and the WGSL line. */
  pipeline(v: Variant): GPUComputePipeline {
    const key = variantName(v);
    let p = this.#pipelines.get(key);
    if (p) return p;
    let module = this.#modules.get(v.shader);
    if (!module) {
      const code = shaderCode(v.shader, this.#sources);
      if (!this.hasF16 && needsF16(code)) {
        throw new GpuError(
          `shader ${v.shader} needs the shader-f16 feature, which ${this.adapterName} lacks`,
        );
      }
      module = this.device.createShaderModule({ code, label: v.shader });
      this.#modules.set(v.shader, module);
    }
    this.device.pushErrorScope("validation");
    p = this.device.createComputePipeline({
      layout: "auto",
      label: key,
      compute: { module, entryPoint: v.entry ?? "main", constants: v.overrides ?? {} },
    });
    // Validation errors arrive asynchronously; report them with the variant name when they do.
    this.device.popErrorScope().then((e) => {
      if (e) console.error(`tealgpu: pipeline ${key} failed to build: ${e.message}`);
    });
    this.#pipelines.set(key, p);
    return p;
  }

  /** Builds an op (pipeline + bind group) for a dispatch; bindings are numbered 0..n-1 in group 0. */
  op(d: Dispatch): Op {
    const pipeline = this.pipeline(d.variant);
    const bindGroup = this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: d.bindings.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const [x, y = 1, z = 1] = d.workgroups;
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new GpuError(`dispatch ${variantName(d.variant)}: ${x}x${y}x${z} workgroups exceeds ${max}`);
    }
    return { pipeline, bindGroup, workgroups: [x, y, z], label: d.label ?? d.variant.shader, owned: d.owned };
  }

  /**
   * A small placeholder buffer for a binding a variant does not use. WebGPU forbids one buffer bound both
   * read-only and read-write in a dispatch, so there is one of each kind.
   */
  scratch(access: "read" | "write"): GPUBuffer {
    let b = this.#scratch.get(access);
    if (!b) this.#scratch.set(access, b = this.buffer(256, `scratch_${access}`));
    return b;
  }

  /** Creates a storage buffer (optionally filled). Size is rounded up to 4 bytes. */
  buffer(size: number, label: string, data?: ArrayBufferView, extraUsage = 0): GPUBuffer {
    const b = this.device.createBuffer({
      size: Math.max(16, Math.ceil(size / 4) * 4),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC | extraUsage,
      label,
    });
    if (data) this.write(b, data);
    return b;
  }

  /** Creates a uniform buffer holding `words` (u32 or f32 values written as raw 32-bit words). */
  uniform(words: ArrayLike<number>, label: string, asFloat: boolean[] = []): GPUBuffer {
    const data = new ArrayBuffer(Math.max(16, Math.ceil(words.length / 4) * 16));
    const u = new Uint32Array(data);
    const f = new Float32Array(data);
    for (let i = 0; i < words.length; i++) {
      if (asFloat[i]) f[i] = words[i];
      else u[i] = words[i];
    }
    const b = this.device.createBuffer({
      size: data.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label,
    });
    this.device.queue.writeBuffer(b, 0, data);
    return b;
  }

  /** Writes host data into a buffer, padding the tail to 4 bytes. */
  write(buffer: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    if (data.byteLength % 4 === 0) {
      this.device.queue.writeBuffer(
        buffer,
        offset,
        data.buffer as ArrayBuffer,
        data.byteOffset,
        data.byteLength,
      );
    } else {
      const padded = new Uint8Array(Math.ceil(data.byteLength / 4) * 4);
      padded.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      this.device.queue.writeBuffer(buffer, offset, padded);
    }
  }

  /** Encodes ops into one compute pass. */
  encode(encoder: GPUCommandEncoder, ops: readonly Op[]): void {
    const pass = encoder.beginComputePass();
    for (const op of ops) {
      pass.setPipeline(op.pipeline);
      pass.setBindGroup(0, op.bindGroup);
      pass.dispatchWorkgroups(op.workgroups[0], op.workgroups[1], op.workgroups[2]);
    }
    pass.end();
  }

  /** Runs ops in one submit (no wait). */
  run(ops: readonly Op[]): void {
    this.checkAlive();
    const enc = this.device.createCommandEncoder();
    this.encode(enc, ops);
    this.device.queue.submit([enc.finish()]);
  }

  /**
   * Copies a buffer range back to the host. Each read-back costs at least 10 ms in Deno (its poll loop
   * sleeps), so callers batch: the decode loop reads many tokens per call.
   */
  async read(buffer: GPUBuffer, byteLength = buffer.size, offset = 0): Promise<ArrayBuffer> {
    this.checkAlive();
    const size = Math.ceil(byteLength / 4) * 4;
    const staging = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(buffer, offset, staging, 0, size);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange().slice(0, byteLength);
    staging.unmap();
    staging.destroy();
    this.checkAlive();
    return out;
  }

  /** Reads f32 values back. */
  async readF32(buffer: GPUBuffer, count?: number, offset = 0): Promise<Float32Array> {
    return new Float32Array(await this.read(buffer, (count ?? buffer.size / 4) * 4, offset));
  }

  /** Reads u32 values back. */
  async readU32(buffer: GPUBuffer, count?: number, offset = 0): Promise<Uint32Array> {
    return new Uint32Array(await this.read(buffer, (count ?? buffer.size / 4) * 4, offset));
  }

  /**
   * GPU time of each group of ops, each group encoded as its own compute pass between two timestamp queries
   * (a profile switch: separate passes add barriers, so sums run a little above a fused pass). Milliseconds.
   */
  async timePasses(groups: readonly (readonly Op[])[]): Promise<number[]> {
    if (!this.hasTimestamps) throw new GpuError("this adapter has no timestamp-query feature");
    const out: number[] = [];
    const maxPerSet = 2048; // passes per query set (4096 queries)
    for (let g0 = 0; g0 < groups.length; g0 += maxPerSet) {
      const chunk = groups.slice(g0, g0 + maxPerSet);
      const n = chunk.length * 2;
      const qs = this.device.createQuerySet({ type: "timestamp", count: n });
      const resolve = this.device.createBuffer({
        size: n * 8,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      const enc = this.device.createCommandEncoder();
      chunk.forEach((ops, i) => {
        const pass = enc.beginComputePass({
          timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
        });
        for (const op of ops) {
          pass.setPipeline(op.pipeline);
          pass.setBindGroup(0, op.bindGroup);
          pass.dispatchWorkgroups(op.workgroups[0], op.workgroups[1], op.workgroups[2]);
        }
        pass.end();
      });
      enc.resolveQuerySet(qs, 0, n, resolve, 0);
      this.device.queue.submit([enc.finish()]);
      const t = new BigUint64Array(await this.read(resolve, n * 8));
      for (let i = 0; i < chunk.length; i++) out.push(Number(t[2 * i + 1] - t[2 * i]) / 1e6);
      qs.destroy();
      resolve.destroy();
    }
    return out;
  }

  /** Releases the device. */
  destroy(): void {
    this.device.destroy();
  }
}

/**
 * The most storage buffers one kernel binds (gemv_q.wgsl: the input, three views of the weights, partials,
 * thresholds, scales, counters, aux, sums of squares, state and the epilogue's output). A test counts them.
 */
export const STORAGE_BUFFERS_PER_KERNEL: number = 12;

/** Throws a GpuError naming the limit when an adapter cannot bind as many storage buffers as a kernel does. */
export function checkAdapterLimits(l: { maxStorageBuffersPerShaderStage: number }): void {
  if (l.maxStorageBuffersPerShaderStage < STORAGE_BUFFERS_PER_KERNEL) {
    throw new GpuError(
      `the WebGPU adapter binds at most ${l.maxStorageBuffersPerShaderStage} storage buffers per shader stage ` +
        `(maxStorageBuffersPerShaderStage); TealGPU's kernels need ${STORAGE_BUFFERS_PER_KERNEL}`,
    );
  }
}

/**
 * Requests the adapter and a device with the adapter's own buffer limits (WebGPU's defaults, 128/256 MiB,
 * are far too small for model weights), and timestamp-query and shader-f16 when offered. shader-f16 serves only
 * the f16-arithmetic kernels (the shaders that `enable f16`: gemv_qh.wgsl for int8/int4 decode on GPUs,
 * GEMV_HALF; the opt-in gemv_h.wgsl and matmul_wide_h.wgsl); every other kernel reads f16 as packed u32 words,
 * and a device without the feature runs their f32 counterparts.
 *
 * On Linux, when DENO_WEBGPU_BACKEND is unset (and env access is granted), it is set to "vulkan" first: Deno's
 * other backend there, OpenGL through EGL, can abort the process at exit (src/gpu/backend.ts says why). A value
 * already set is kept.
 */
export async function createGpuContext(options: GpuContextOptions = {}): Promise<GpuContext> {
  if (!("gpu" in navigator) || !navigator.gpu) {
    throw new GpuError("WebGPU is not available in this runtime (Deno 2.9+ exposes navigator.gpu)");
  }
  applyBackendDefault();
  const adapter = await navigator.gpu.requestAdapter({
    powerPreference: options.powerPreference ?? "high-performance",
  });
  if (!adapter) {
    throw new GpuError(
      "no WebGPU adapter found: install a Vulkan driver (without a GPU: apt-get install libvulkan1 " +
        "mesa-vulkan-drivers for Mesa's lavapipe)",
    );
  }
  const l = adapter.limits;
  checkAdapterLimits(l);
  const features: GPUFeatureName[] = [];
  const hasTimestamps = adapter.features.has("timestamp-query");
  if (hasTimestamps) features.push("timestamp-query");
  if (adapter.features.has("shader-f16")) features.push("shader-f16");
  const device = await adapter.requestDevice({
    requiredFeatures: features,
    requiredLimits: {
      maxBufferSize: l.maxBufferSize,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxStorageBuffersPerShaderStage: Math.min(l.maxStorageBuffersPerShaderStage, 16),
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: Math.min(l.maxComputeInvocationsPerWorkgroup, 1024),
      maxComputeWorkgroupSizeX: Math.min(l.maxComputeWorkgroupSizeX, 1024),
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
    },
  });
  device.addEventListener("uncapturederror", (e) => {
    console.error(`tealgpu: GPU error: ${(e as GPUUncapturedErrorEvent).error.message}`);
  });
  const info = adapter.info;
  const name = info.description || info.device || info.vendor || "unknown";
  const isCpu = (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
    /llvmpipe|lavapipe|swiftshader|softpipe/i.test(`${name} ${info.device} ${info.architecture}`);
  return new GpuContext(device, name, hasTimestamps, isCpu);
}
