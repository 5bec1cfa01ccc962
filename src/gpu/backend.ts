/**
 * Which of wgpu's backends Deno's WebGPU starts. Deno reads DENO_WEBGPU_BACKEND when a process (or worker) first
 * asks for an adapter and otherwise starts every backend it was built with. On Linux that includes OpenGL
 * through EGL (libglvnd), whose per-thread state gets freed twice when a thread that touched WebGPU exits while
 * the process exits: glibc then aborts ("double free or corruption", "corrupted size vs. prev_size"). `deno
 * test` runs each module on a thread of its own, so its test runs hit this now and then on lavapipe; with
 * Vulkan alone, libEGL is never loaded and the aborts stopped (docs/testing.md). TealGPU's kernels run on
 * Vulkan there, so Vulkan alone is asked for.
 * @module
 */

/** The variable Deno's WebGPU reads for its backends (a comma-separated list: vulkan, gl, metal, dx12). */
export const BACKEND_VAR = "DENO_WEBGPU_BACKEND";

/**
 * The DENO_WEBGPU_BACKEND value to set, or null to leave the variable as it is: "vulkan" on Linux when it is
 * unset; a value the user gave is kept, and other systems keep Deno's default.
 */
export function backendDefault(os: string, current: string | undefined): string | null {
  return os === "linux" && current === undefined ? "vulkan" : null;
}

/**
 * Sets DENO_WEBGPU_BACKEND as {@link backendDefault} says, before the first adapter request; nothing without
 * permission to read and write it (the default backends stay). Returns the value it set, or null.
 */
export function applyBackendDefault(): string | null {
  try {
    const state = Deno.permissions.querySync({ name: "env", variable: BACKEND_VAR }).state;
    if (state !== "granted") return null;
    const value = backendDefault(Deno.build.os, Deno.env.get(BACKEND_VAR));
    if (value !== null) Deno.env.set(BACKEND_VAR, value);
    return value;
  } catch {
    // a runtime without these APIs, or one that refuses them: Deno's default backends stay
    return null;
  }
}
