import {
  deepStrictEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert";
import { CheckpointError } from "./config.ts";
import {
  decodeTensor,
  encodeSafetensors,
  openFile,
  parseSafetensorsHeader,
  type RawTensor,
  readEntry,
  readSafetensorsHeader,
} from "./safetensors.ts";

const bytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const F32 = Float32Array.from([1.5, -2, 0.25, 1e-30, 3e38, -0]);
// 1, -2, 0.5, 65504 as f16 and as bf16 bit patterns.
const F16 = Uint16Array.from([0x3c00, 0xc000, 0x3800, 0x7bff]);
const BF16 = Uint16Array.from([0x3f80, 0xc000, 0x3f00, 0x477f]);
const TENSORS: RawTensor[] = [
  { name: "a.f32", dtype: "F32", shape: [2, 3], data: bytes(F32) },
  { name: "b.f16", dtype: "F16", shape: [4], data: bytes(F16) },
  { name: "c.bf16", dtype: "BF16", shape: [2, 2], data: bytes(BF16) },
  { name: "d.scalar", dtype: "F32", shape: [], data: bytes(Float32Array.of(7)) },
  { name: "e.empty", dtype: "F16", shape: [0, 5], data: new Uint8Array(0) },
];

/** Writes `data` to a fresh temp file; returns its path. */
async function temp(data: Uint8Array): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  await Deno.writeFile(path, data);
  return path;
}

/** Asserts a CheckpointError whose message contains every part. */
function named(...parts: string[]): (e: unknown) => boolean {
  return (e) => {
    assert(e instanceof CheckpointError, `not a CheckpointError: ${e}`);
    for (const p of parts) assert(e.message.includes(p), `"${e.message}" lacks "${p}"`);
    return true;
  };
}

/** Header JSON bytes of an encoded file, for hand-editing. */
function headerOf(file: Uint8Array): Record<string, Record<string, unknown>> {
  const n = Number(new DataView(file.buffer).getBigUint64(0, true));
  return JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n)));
}

/** Re-encodes `file` with a replaced header (data region kept). */
function withHeader(file: Uint8Array, header: unknown): Uint8Array {
  const n = Number(new DataView(file.buffer).getBigUint64(0, true));
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + file.length - 8 - n);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(file.subarray(8 + n), 8 + json.length);
  return out;
}

Deno.test("safetensors: encode, parse and read back every dtype", async () => {
  const file = encodeSafetensors(TENSORS, { format: "pt" });
  assertEquals(new DataView(file.buffer).getBigUint64(0, true) % 8n, 0n, "header padded to 8 bytes");
  const path = await temp(file);
  const h = await readSafetensorsHeader(path);
  assertEquals(h.size, file.length);
  assertEquals(h.tensors.map((t) => [t.name, t.dtype, t.shape, t.offset - h.dataStart, t.bytes]), [
    ["a.f32", "F32", [2, 3], 0, 24],
    ["b.f16", "F16", [4], 24, 8],
    ["c.bf16", "BF16", [2, 2], 32, 8],
    ["d.scalar", "F32", [], 40, 4],
    ["e.empty", "F16", [0, 5], 44, 0],
  ]);
  const f = await openFile(path);
  try {
    const read = async (i: number) => [...await readEntry(f, path, h.tensors[i])];
    assertEquals(await read(0), [...F32]);
    assertEquals(await read(1), [1, -2, 0.5, 65504]);
    assertEquals(await read(2), [1, -2, 0.5, 65280]);
    assertEquals(await read(3), [7]);
    assertEquals(await read(4), []);
    // Reads are positioned, not sequential: going backwards works.
    assertEquals(await read(1), [1, -2, 0.5, 65504]);
  } finally {
    f.close();
    await Deno.remove(path);
  }
});

Deno.test("safetensors: header entries are sorted by offset whatever the JSON order", () => {
  const file = encodeSafetensors(TENSORS);
  const header = headerOf(file);
  const reversed = Object.fromEntries(Object.entries(header).reverse());
  const h = parseSafetensorsHeader(new TextEncoder().encode(JSON.stringify(reversed)), "x", 1000);
  assertEquals(h.tensors.map((t) => t.name), TENSORS.map((t) => t.name));
});

Deno.test("safetensors: decodeTensor copes with unaligned views", () => {
  const raw = new Uint8Array(9);
  raw.set(bytes(Float32Array.of(3, -1)), 1);
  assertEquals([...decodeTensor(raw.subarray(1), "F32")], [3, -1]);
  raw.set(bytes(Uint16Array.of(0x3c00, 0x4000)), 1);
  assertEquals([...decodeTensor(raw.subarray(1, 5), "F16")], [1, 2]);
});

Deno.test("safetensors: invalid headers are rejected naming the file and tensor", async () => {
  const file = encodeSafetensors(TENSORS);
  const header = headerOf(file);
  const bad = async (data: Uint8Array, ...parts: string[]) => {
    const path = await temp(data);
    try {
      await assertRejects(readSafetensorsHeader(path), named(path, ...parts));
    } finally {
      await Deno.remove(path);
    }
  };
  await bad(withHeader(file, { ...header, "b.f16": { ...header["b.f16"], dtype: "I32" } }), '"b.f16"', "I32");
  await bad(withHeader(file, { ...header, "b.f16": { ...header["b.f16"], shape: [5] } }), '"b.f16"', "[5]");
  await bad(
    withHeader(file, { ...header, "b.f16": { ...header["b.f16"], shape: [-4] } }),
    '"b.f16"',
    "shape",
  );
  await bad(
    withHeader(file, { ...header, "b.f16": { ...header["b.f16"], data_offsets: [32, 24] } }),
    "data_offsets",
  );
  await bad(
    withHeader(file, { ...header, "c.bf16": { ...header["c.bf16"], data_offsets: [28, 36] } }),
    "overlap",
  );
  await bad(withHeader(file, { ...header, "a.f32": 5 }), '"a.f32"');
  await bad(withHeader(file, [1, 2]), "not a JSON object");
  // Truncation: the last non-empty tensor is cut.
  await bad(file.subarray(0, file.length - 2), "truncated", '"d.scalar"');
  // Broken JSON and implausible lengths.
  const broken = file.slice();
  broken[9] = 0x7b; // a second "{"
  await bad(broken, "invalid safetensors JSON header");
  const huge = file.slice();
  new DataView(huge.buffer).setBigUint64(0, 1n << 40n, true);
  await bad(huge, "header length");
  const long = file.slice();
  new DataView(long.buffer).setBigUint64(0, BigInt(file.length), true);
  await bad(long, "truncated");
  await bad(new Uint8Array(5), "too short");
  await assertRejects(
    readSafetensorsHeader("/nonexistent/model.safetensors"),
    named("/nonexistent/model.safetensors"),
  );
  assertThrows(
    () => parseSafetensorsHeader(new Uint8Array([0xff, 0xfe]), "f.st", 100),
    named("f.st", "JSON"),
  );
});

Deno.test("safetensors: a file shrunk after the header was read fails the read, naming the tensor", async () => {
  const file = encodeSafetensors(TENSORS);
  const path = await temp(file);
  const h = await readSafetensorsHeader(path);
  await Deno.truncate(path, h.dataStart + 4);
  const f = await openFile(path);
  try {
    await assertRejects(readEntry(f, path, h.tensors[0]), named(path, '"a.f32"', "truncated"));
  } finally {
    f.close();
    await Deno.remove(path);
  }
});
