/**
 * Safetensors reading: header parsing with full validation (so a corrupt or truncated file is reported before
 * any weight is uploaded) and per-tensor reads, so that peak host memory is one tensor rather than one file.
 *
 * Format: u64 little-endian header length N, N bytes of JSON `{name: {dtype, shape, data_offsets}}` (plus an
 * optional `__metadata__`), then the data region; offsets are relative to the start of the data region.
 * @module
 */
import { CheckpointError } from "./config.ts";
import { bf16ToF32, f16ToF32 } from "./dtype.ts";

/** Stored element types the runtime reads. */
export type DType = "F32" | "F16" | "BF16";

/** Bytes per element of each supported dtype. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = { F32: 4, F16: 2, BF16: 2 };

/** Same bound as the reference safetensors implementation: larger headers are corrupt or hostile. */
export const MAX_HEADER_BYTES = 100_000_000;

/** One tensor's entry in a safetensors header, with its absolute position in the file. */
export interface SafetensorsEntry {
  /** Tensor name. */
  name: string;
  /** Stored element type. */
  dtype: DType;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Absolute byte offset of the data in the file. */
  offset: number;
  /** Byte length of the data. */
  bytes: number;
}

/** A validated safetensors header. */
export interface SafetensorsFile {
  /** Path of the file. */
  path: string;
  /** File size in bytes. */
  size: number;
  /** Absolute offset of the data region (8 + header length). */
  dataStart: number;
  /** Tensors sorted by offset (file order, for sequential reads). */
  tensors: SafetensorsEntry[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/**
 * Validates the JSON header `json` of the file `path` of `fileSize` bytes: every tensor's dtype supported,
 * shape consistent with its byte span, spans inside the data region and not overlapping.
 */
export function parseSafetensorsHeader(json: Uint8Array, path: string, fileSize: number): SafetensorsFile {
  const fail = (what: string): never => {
    throw new CheckpointError(`${path}: ${what}`);
  };
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(json));
  } catch (e) {
    fail(`invalid safetensors JSON header (${e instanceof Error ? e.message : e})`);
  }
  if (!isObject(header)) return fail("safetensors header is not a JSON object");
  const dataStart = 8 + json.length;
  const dataLen = fileSize - dataStart;
  const tensors: SafetensorsEntry[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const t = `tensor "${name}"`;
    if (!isObject(info)) fail(`${t}: entry is not an object`);
    const { dtype, shape, data_offsets: span } = info as Record<string, unknown>;
    // hasOwn rather than `in`: inherited keys such as "toString" must not pass for a dtype.
    if (typeof dtype !== "string" || !Object.hasOwn(DTYPE_BYTES, dtype)) {
      fail(`${t} has dtype ${JSON.stringify(dtype)}; only F32, F16 and BF16 are supported`);
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) fail(`${t}: invalid shape ${JSON.stringify(shape)}`);
    if (
      !Array.isArray(span) || span.length !== 2 || !isCount(span[0]) || !isCount(span[1]) || span[0] > span[1]
    ) {
      fail(`${t}: invalid data_offsets ${JSON.stringify(span)}`);
    }
    const [begin, end] = span as [number, number];
    const dims = shape as number[];
    const bytes = dims.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype as DType];
    if (bytes !== end - begin) {
      fail(
        `${t}: shape [${dims.join(", ")}] of ${dtype} needs ${bytes} bytes but data_offsets span ${
          end - begin
        }`,
      );
    }
    if (end > dataLen) {
      fail(
        `file is truncated: ${t} needs data bytes [${begin}, ${end}) but the file holds only ${
          Math.max(0, dataLen)
        }`,
      );
    }
    tensors.push({ name, dtype: dtype as DType, shape: dims, offset: dataStart + begin, bytes });
  }
  tensors.sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < tensors.length; i++) {
    const prev = tensors[i - 1];
    if (prev.offset + prev.bytes > tensors[i].offset) {
      fail(`tensors "${prev.name}" and "${tensors[i].name}" overlap`);
    }
  }
  return { path, size: fileSize, dataStart, tensors };
}

/** Opens `path`, turning "not found" into a {@link CheckpointError} that names the file. */
export async function openFile(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CheckpointError(`${path}: file not found`);
    throw e;
  }
}

/** Reads exactly `length` bytes at `offset` into a fresh (hence aligned) buffer; a short file is an error. */
export async function readAt(
  file: Deno.FsFile,
  offset: number,
  length: number,
  path: string,
  what: string,
): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  await file.seek(offset, Deno.SeekMode.Start);
  let done = 0;
  while (done < length) {
    const n = await file.read(buf.subarray(done));
    if (n === null) {
      throw new CheckpointError(`${path}: file is truncated: ${what} ends past the end of the file`);
    }
    done += n;
  }
  return buf;
}

/** Reads and validates the header of the safetensors file `path` (without reading any tensor data). */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsFile> {
  const file = await openFile(path);
  try {
    const size = (await file.stat()).size;
    if (size < 8) throw new CheckpointError(`${path}: ${size} bytes is too short for a safetensors file`);
    const n = new DataView((await readAt(file, 0, 8, path, "header length")).buffer).getBigUint64(0, true);
    if (n < 2n || n > BigInt(MAX_HEADER_BYTES)) {
      throw new CheckpointError(
        `${path}: implausible safetensors header length ${n} (not a safetensors file?)`,
      );
    }
    if (8n + n > BigInt(size)) {
      throw new CheckpointError(
        `${path}: file is truncated: header of ${n} bytes but the file has ${size} bytes`,
      );
    }
    return parseSafetensorsHeader(await readAt(file, 8, Number(n), path, "header"), path, size);
  } finally {
    file.close();
  }
}

/** Converts raw little-endian tensor bytes (in a buffer starting at offset 0) to f32. */
export function decodeTensor(raw: Uint8Array, dtype: DType): Float32Array {
  const n = raw.byteLength / DTYPE_BYTES[dtype];
  if (dtype === "F32") {
    // A fresh buffer from readAt is 4-aligned: view it instead of copying.
    return raw.byteOffset % 4 === 0
      ? new Float32Array(raw.buffer, raw.byteOffset, n)
      : new Float32Array(raw.slice().buffer);
  }
  const halves = raw.byteOffset % 2 === 0
    ? new Uint16Array(raw.buffer, raw.byteOffset, n)
    : new Uint16Array(raw.slice().buffer);
  return dtype === "BF16" ? bf16ToF32(halves) : f16ToF32(halves);
}

/** Reads one tensor of an open safetensors file and converts it to f32. */
export async function readEntry(
  file: Deno.FsFile,
  path: string,
  entry: SafetensorsEntry,
): Promise<Float32Array> {
  return decodeTensor(
    await readAt(file, entry.offset, entry.bytes, path, `tensor "${entry.name}"`),
    entry.dtype,
  );
}

/** A tensor to serialize: raw little-endian element bytes; dtype is free-form so tests can write any. */
export interface RawTensor {
  /** Tensor name. */
  name: string;
  /** Safetensors dtype tag (F32, BF16, ...). */
  dtype: string;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Raw element bytes. */
  data: Uint8Array;
}

/** Serializes tensors to safetensors bytes (tests, tools), header padded to 8 bytes like the reference writer. */
export function encodeSafetensors(tensors: RawTensor[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let pos = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [pos, pos + t.data.byteLength] };
    pos += t.data.byteLength;
  }
  const json = JSON.stringify(header);
  const pad = (8 - (new TextEncoder().encode(json).length % 8)) % 8;
  const head = new TextEncoder().encode(json + " ".repeat(pad));
  const out = new Uint8Array(8 + head.length + pos);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const t of tensors) {
    out.set(t.data, at);
    at += t.data.byteLength;
  }
  return out;
}
