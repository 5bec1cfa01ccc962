/**
 * GGUF reading on the CPU: dequantizers against hand-built blocks and against the test writer's quantizers,
 * header parsing, metadata -> config, the llama q/k un-permutation, Llama 3 rope_freqs, tokenizer metadata,
 * and every malformed file refused with a message naming the problem.
 */
import {
  deepStrictEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert";
import { join } from "node:path";
import { CheckpointError, ropeInvFreq } from "./config.ts";
import { dequantize, type GgmlType } from "./ggml_quants.ts";
import {
  findGgufFile,
  ggufConfig,
  GgufMetadata,
  llama3ScalingFromFactors,
  openGguf,
  parseGgufHeader,
  unpermuteRows,
} from "./gguf.ts";
import { ggufTokenizer } from "./gguf_tokenizer.ts";
import { TextTokenizer } from "./tokenizer.ts";
import {
  BLOCK,
  configMetadata,
  encodeGguf,
  ggmlRopeRowSource,
  type GgufTensorSpec,
  gpt2TokenizerMetadata,
  gv,
  type MetaValue,
  quantize,
  TYPE_ID,
  type WriteType,
} from "../../tests/_gguf_writer.ts";
import type { ModelConfig } from "./config.ts";

const TINY = new URL("../../models/tiny-llama-16m", import.meta.url).pathname;

function named(...parts: string[]): (e: unknown) => boolean {
  return (e) => {
    assert(e instanceof CheckpointError, `not a CheckpointError: ${e}`);
    for (const p of parts) assert(e.message.includes(p), `"${e.message}" lacks "${p}"`);
    return true;
  };
}

/** Seeded uniform values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

// ---- Dequantizers: hand-built blocks -----------------------------------------------------------------------

Deno.test("dequantize Q8_0: d * int8", () => {
  const b = new Uint8Array(34 * 2);
  b.set([0x00, 0x38], 0); // d = 0.5
  b.set([0x80, 0xff, 0x00, 0x01, 0x7f], 2); // -128, -1, 0, 1, 127
  b.set([0x00, 0xc0], 34); // second block d = -2
  b[34 + 2 + 31] = 3;
  const y = dequantize(b, "Q8_0");
  assertEquals(y.length, 64);
  assertEquals([...y.subarray(0, 5)], [-64, -0.5, 0, 0.5, 63.5]);
  assertEquals(y[63], -6);
  assert(y[32] === 0);
});

Deno.test("dequantize Q4_0: low nibbles first half, high nibbles second half, minus 8", () => {
  const b = new Uint8Array(18);
  b.set([0x00, 0x40], 0); // d = 2
  b[2] = 0x0f; // element 0 = (15 - 8) * 2, element 16 = (0 - 8) * 2
  b[3] = 0x98; // element 1 = (8 - 8) * 2, element 17 = (9 - 8) * 2
  const y = dequantize(b, "Q4_0");
  assertEquals([y[0], y[16], y[1], y[17], y[2]], [14, -16, 0, 2, -16]);
});

Deno.test("dequantize Q5_0: Q4_0 nibbles plus fifth bits from a u32, minus 16", () => {
  const b = new Uint8Array(22);
  b.set([0x00, 0x3c], 0); // d = 1
  new DataView(b.buffer).setUint32(2, (1 << 0) | (1 << 17) | (1 << 31), true);
  b[6] = 0x21; // element 0 low nibble 1 (+16: fifth bit 0), element 16 high nibble 2
  b[7] = 0x0f; // element 1 = 15, element 17 = 0 (+16: fifth bit 17)
  b[6 + 15] = 0xf0; // element 31 = 15 + 16
  const y = dequantize(b, "Q5_0");
  assertEquals([y[0], y[16], y[1], y[17], y[31], y[30]], [1, -14, -1, 0, 15, -16]);
});

Deno.test("dequantize Q4_1 and Q5_1: d * q + m", () => {
  const b = new Uint8Array(20);
  b.set([0x00, 0x40, 0x00, 0xbc], 0); // d = 2, m = -1
  b[4] = 0x3f; // element 0 = 15, element 16 = 3
  const y = dequantize(b, "Q4_1");
  assertEquals([y[0], y[16], y[1]], [29, 5, -1]);
  const c = new Uint8Array(24);
  c.set([0x00, 0x40, 0x00, 0xbc], 0);
  new DataView(c.buffer).setUint32(4, (1 << 0) | (1 << 16), true);
  c[8] = 0x3f; // element 0 = 15 + 16, element 16 = 3 + 16
  const z = dequantize(c, "Q5_1");
  assertEquals([z[0], z[16], z[1], z[17]], [61, 37, -1, -1]);
});

Deno.test("dequantize Q5_K: Q4_K plus a fifth bit per sub-block in qh", () => {
  const b = new Uint8Array(176);
  b.set([0x00, 0x3c, 0x00, 0x00], 0); // d = 1, dmin = 0
  b[4 + 0] = 2; // sub-block 0: sc = 2
  b[4 + 3] = 1; // sub-block 3: sc = 1
  b[16 + 3] = 1 << 0; // fifth bit of element 3 (sub-block 0)
  b[16 + 0] = 1 << 3; // fifth bit of element 96 (sub-block 3)
  b[48 + 3] = 5; // element 3: low nibble 5
  b[48 + 32] = 1 << 4; // element 96: high nibble of qs[32]
  const y = dequantize(b, "Q5_K");
  assertEquals([y[3], y[2], y[96], y[64], y[97]], [2 * (5 + 16), 0, 17, 0, 0]);
});

Deno.test("dequantize Q4_K: 6-bit scales and mins, the packed upper sub-blocks", () => {
  const b = new Uint8Array(144);
  b.set([0x00, 0x3c, 0x00, 0x38], 0); // d = 1, dmin = 0.5
  const s = 4; // scales[12]
  b[s + 0] = 3; // sub-block 0: sc = 3
  b[s + 4] = 2; // sub-block 0: m = 2
  // sub-block 5: sc = 37 = 0b10_0101, m = 50 = 0b11_0010 -> low nibbles in scales[9], top bits in [1] and [5]
  b[s + 9] = 5 | (2 << 4);
  b[s + 1] = 2 << 6; // sub-block 1 sc = 0 (low 6 bits), top bits belong to sub-block 5
  b[s + 5] = (3 << 6) | 10; // sub-block 1 m = 10
  const qs = 16;
  b[qs + 0] = 7 | (9 << 4); // element 0 (sub 0) = 7, element 32 (sub 1) = 9
  b[qs + 64 + 1] = 4 << 4; // element 161 (sub 5, high nibble of chunk 2)
  const y = dequantize(b, "Q4_K");
  assertEquals(y[0], 1 * 3 * 7 - 0.5 * 2);
  assertEquals(y[1], -1); // q = 0
  assertEquals(y[32], -5); // sc = 0: only the min
  assertEquals(y[63], -5);
  assertEquals(y[161], 37 * 4 - 0.5 * 50);
  assertEquals(y[160], -25);
  assertEquals(y[255], 0); // sub-block 7: sc = m = 0
});

Deno.test("dequantize Q6_K: 4 + 2 bit quants, signed int8 scales, d at the end", () => {
  const b = new Uint8Array(210);
  b.set([0x00, 0x34], 208); // d = 0.25
  b[192 + 0] = 0xfe; // scales[0] = -2
  b[192 + 11] = 5; // scales[11]
  b[0] = 0x03; // element 0: low 4 bits 3
  b[128] = 0x02; // element 0: high 2 bits 2 -> q = 35 - 32 = 3
  b[64 + 32 + 20] = 0x0a; // element 180 (half 1, group 1, l 20): low bits 10
  b[128 + 32 + 20] = 0x0c; // its high bits (bits 2-3) = 3 -> q = 58 - 32 = 26
  const y = dequantize(b, "Q6_K");
  assertEquals(y[0], 0.25 * -2 * 3);
  assertEquals(y[1], 0.25 * -2 * -32);
  assertEquals(y[180], 0.25 * 5 * 26);
  assert(y[244] === 0); // scales[15] = 0
  assertEquals(y.length, 256);
});

Deno.test("dequantize F16 and BF16 from odd offsets", () => {
  const b = new Uint8Array(5);
  b.set([0x00, 0x3c, 0x00, 0xc0], 1);
  assertEquals([...dequantize(b.subarray(1), "F16")], [1, -2]);
  b.set([0x80, 0x3f, 0x00, 0xc0], 1);
  assertEquals([...dequantize(b.subarray(1), "BF16")], [1, -2]);
});

Deno.test("dequantizers agree with llama.cpp's gguf-py on random blocks of every block type", async () => {
  // tests/fixtures/ggml_reference.py: random blocks and gguf-py's dequantization (numpy, f32 arithmetic)
  const fx = JSON.parse(
    await Deno.readTextFile(new URL("../../tests/fixtures/ggml_blocks.json", import.meta.url)),
  );
  const types = Object.keys(fx);
  assertEquals(types.sort(), ["Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0"]);
  for (const type of types) {
    const { hex, values } = fx[type] as { hex: string; values: number[] };
    const bytes = Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));
    const y = dequantize(bytes, type as GgmlType);
    assertEquals(y.length, values.length, type);
    // numpy rounds each f32 product; the dequantizers round once: a few f32 ulps of the block's range
    const tol = 1e-6 * Math.max(...values.map(Math.abs));
    values.forEach((v, i) => assert(Math.abs(y[i] - v) <= tol, `${type}[${i}]: ${y[i]} vs gguf-py ${v}`));
  }
});

// ---- Dequantizers against the writer's quantizers ------------------------------------------------------------

const ROUND_TRIP: [WriteType, number][] = [
  ["F32", 0],
  ["F16", 1e-3],
  ["BF16", 8e-3],
  ["Q8_0", 0.01],
  ["Q4_0", 0.15],
  ["Q4_1", 0.1],
  ["Q5_0", 0.07],
  ["Q5_1", 0.05],
  ["Q4_K", 0.1],
  ["Q5_K", 0.05],
  ["Q6_K", 0.035],
];

for (const [type, bound] of ROUND_TRIP) {
  Deno.test(`${type}: dequantize reproduces the quantizer's values; error within ${bound} of the range`, () => {
    // 2 blocks of the type plus the awkward sizes: one block, and a ramp with zeros and a constant block
    for (const n of [BLOCK[type] * 2, Math.max(BLOCK[type], 32), 512]) {
      const x = values(n, n + type.length);
      if (n === 512) x.fill(0, 0, 256).fill(0.3, 256, 288);
      const q = quantize(x, type);
      const y = dequantize(q.bytes, type);
      assertEquals(y.length, n);
      for (let i = 0; i < n; i++) {
        const tol = 1e-6 * Math.max(1, Math.abs(q.values[i]));
        assert(Math.abs(y[i] - q.values[i]) <= tol, `${type}[${i}]: ${y[i]} vs ${q.values[i]}`);
        assert(Math.abs(y[i] - x[i]) <= bound * 2, `${type}[${i}]: ${y[i]} vs original ${x[i]}`);
      }
      let se = 0;
      for (let i = 0; i < n; i++) se += (y[i] - x[i]) ** 2;
      assert(Math.sqrt(se / n) <= bound, `${type} rms error ${Math.sqrt(se / n)}`);
    }
  });
}

// ---- q/k row order ---------------------------------------------------------------------------------------

Deno.test("unpermuteRows inverts llama.cpp's q/k permutation (per head, GQA)", () => {
  const heads = 3, d = 8, cols = 5;
  const hf = values(heads * d * cols, 3);
  const src = ggmlRopeRowSource(heads * d, heads);
  assertEquals(src.slice(0, 8), [0, 4, 1, 5, 2, 6, 3, 7]);
  const gguf = new Float32Array(hf.length);
  src.forEach((r, g) => gguf.set(hf.subarray(r * cols, (r + 1) * cols), g * cols));
  assertEquals(unpermuteRows(gguf, heads, cols), hf);
});

// ---- Header parsing --------------------------------------------------------------------------------------

const F32_4 = (name: string): GgufTensorSpec => ({
  name,
  ne: [4],
  type: 0,
  data: new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer),
});

/** Byte position of the first occurrence of `text` in `b`. */
function indexOf(b: Uint8Array, text: string): number {
  const t = new TextEncoder().encode(text);
  for (let i = 0; i + t.length <= b.length; i++) if (t.every((x, j) => b[i + j] === x)) return i;
  return -1;
}

const parse = (b: Uint8Array) => parseGgufHeader(b, "x.gguf", b.length);

Deno.test("parse: metadata of every type, tensors in offset order, aligned data start", () => {
  const meta: [string, MetaValue][] = [
    ["a.u32", gv.u32(7)],
    ["a.i32", gv.i32(-3)],
    ["a.u64", gv.u64(2 ** 40)],
    ["a.f32", gv.f32(0.5)],
    ["a.bool", gv.bool(true)],
    ["a.str", gv.str("héllo")],
    ["a.strs", gv.strs(["x", "", "yz"])],
    ["a.f32s", gv.f32s([1.5, -2])],
    ["general.alignment", gv.u32(64)],
  ];
  const b = encodeGguf(meta, [F32_4("b"), { ...F32_4("a"), offset: 128 }], { alignment: 64 });
  const h = parse(b);
  assertEquals(h.version, 3);
  assertEquals(
    [...h.metadata.entries()].slice(0, 8),
    [["a.u32", 7], ["a.i32", -3], ["a.u64", 2 ** 40], ["a.f32", 0.5], ["a.bool", true], ["a.str", "héllo"], [
      "a.strs",
      ["x", "", "yz"],
    ], ["a.f32s", [1.5, -2]]],
  );
  assertEquals(h.dataStart % 64, 0);
  assertEquals(h.tensors.map((t) => [t.name, t.offset - h.dataStart, t.bytes, t.type.name]), [
    ["b", 0, 16, "F32"],
    ["a", 128, 16, "F32"],
  ]);
  assertEquals(parse(encodeGguf(meta, [F32_4("b")], { version: 2, alignment: 64 })).version, 2);
});

Deno.test("parse: bad magic, versions, big-endian", () => {
  const b = encodeGguf([], [F32_4("w")]);
  const bad = b.slice();
  bad[0] = 0x48;
  assertThrows(() => parse(bad), named("x.gguf", "not a GGUF file", "bad magic"));
  assertThrows(
    () => parse(encodeGguf([], [], { version: 1 })),
    named("x.gguf", "unsupported GGUF version 1"),
  );
  assertThrows(() => parse(encodeGguf([], [], { version: 4 })), named("unsupported GGUF version 4"));
  assertThrows(() => parse(encodeGguf([], [], { version: 0x03000000 })), named("big-endian"));
  assertThrows(() => parse(new Uint8Array([0x47, 0x47])), named("x.gguf", "truncated", "magic"));
});

Deno.test("parse: truncated at every part of the file names what was cut", () => {
  const b = encodeGguf([["general.name", gv.str("abcdef")], ["k.arr", gv.strs(["a", "b"])]], [
    F32_4("first"),
    F32_4("second"),
  ]);
  parse(b); // the untruncated file parses
  const secondInfo = indexOf(b, "second") - 8;
  const cuts: [number, string][] = [
    [6, "version"],
    [20, "counts"],
    [30, "2 metadata entries"],
    [24 + 8 + 12 + 4 + 8 + 3, `metadata key "general.name"`],
    [secondInfo + 8 + 6 + 4 + 8 + 2, `tensor info "second"`], // inside its type field
    [b.length - 8, `"second"`],
  ];
  for (const [at, what] of cuts) {
    assertThrows(() => parse(b.subarray(0, at)), named("x.gguf", "truncated", what));
  }
});

Deno.test("parse: counts larger than the file are refused without allocating", () => {
  const b = encodeGguf([["k", gv.strs(["a"])]], []);
  const view = new DataView(b.buffer);
  const at = 24 + 8 + 1 + 4 + 4; // the array's u64 length
  view.setUint32(at, 0xffffffff, true);
  view.setUint32(at + 4, 0x0000ffff, true);
  assertThrows(() => parse(b), named("truncated", `metadata key "k"`, "array elements"));
  const c = encodeGguf([], []);
  new DataView(c.buffer).setUint32(8, 1e9, true);
  assertThrows(() => parse(c), named("truncated", "tensor infos"));
});

Deno.test("parse: tensor past EOF, misaligned, overlapping, duplicate, empty, partial block", () => {
  assertThrows(
    () => parse(encodeGguf([], [F32_4("a"), { ...F32_4("big"), ne: [4000] }]).subarray(0, 200)),
    named("x.gguf", "truncated"),
  );
  const far = encodeGguf([], [F32_4("a"), { ...F32_4("far"), offset: 3200 }]);
  const farStart = parse(far).dataStart;
  assertThrows(
    () => parseGgufHeader(far.subarray(0, farStart + 64), "x.gguf", farStart + 64),
    named(`tensor "far"`, "truncated", "[3200, 3216)"),
  );
  assertThrows(
    () => parse(encodeGguf([], [{ ...F32_4("m"), offset: 8 }])),
    named(`tensor "m"`, "not aligned"),
  );
  assertThrows(
    () =>
      parse(
        encodeGguf([], [{ ...F32_4("a"), ne: [16], data: new Uint8Array(64) }, {
          ...F32_4("b"),
          offset: 32,
        }]),
      ),
    named(`"a" and "b" overlap`),
  );
  assertThrows(() => parse(encodeGguf([], [F32_4("a"), F32_4("a")])), named(`tensor "a" appears twice`));
  assertThrows(() => parse(encodeGguf([], [{ ...F32_4("z"), ne: [4, 0] }])), named(`tensor "z"`, "empty"));
  assertThrows(
    () => parse(encodeGguf([], [{ name: "q", ne: [16], type: TYPE_ID.Q8_0, data: new Uint8Array(34) }])),
    named(`tensor "q"`, "not a multiple of the Q8_0 block size 32"),
  );
  assertThrows(
    () => parse(encodeGguf([], [{ ...F32_4("d"), ne: [1, 1, 1, 1, 4] }])),
    named(`tensor "d" has 5 dimensions`),
  );
});

Deno.test("parse: unknown and unsupported ggml types name the tensor and the type", () => {
  assertThrows(
    () => parse(encodeGguf([], [{ ...F32_4("blk.0.ffn_up.weight"), type: 11 }])),
    named(`tensor "blk.0.ffn_up.weight"`, "Q3_K (11)", "not supported"),
  );
  assertThrows(
    () => parse(encodeGguf([], [{ ...F32_4("t"), type: 99 }])),
    named(`tensor "t"`, "unknown ggml type 99"),
  );
});

// ---- Metadata -> config ------------------------------------------------------------------------------------

const CONFIG: ModelConfig = {
  architecture: "llama",
  hiddenSize: 64,
  intermediateSize: 96,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  vocabSize: 50,
  maxPositionEmbeddings: 256,
  rmsNormEps: 1e-5,
  ropeTheta: 500000,
  ropeScaling: null,
  tieWordEmbeddings: true,
  qkvBias: false,
  slidingWindow: null,
  bosTokenId: 3,
  eosTokenIds: [4],
};

const metaOf = (m: [string, MetaValue][]) => new GgufMetadata(parse(encodeGguf(m, [])).metadata, "m.gguf");
const cfg = (m: [string, MetaValue][], tied = true) =>
  ggufConfig(metaOf(m), { embedRows: null, tied, ropeFactors: null });

Deno.test("config from llama and qwen2 metadata; vocab from the token list; eot stops too", () => {
  // rms eps travels as f32 and comes back as the decimal that was written
  assertEquals(cfg(configMetadata(CONFIG)), CONFIG);
  const qwen = cfg(configMetadata({ ...CONFIG, architecture: "qwen2" }), false);
  assertEquals([qwen.architecture, qwen.qkvBias, qwen.tieWordEmbeddings], ["qwen2", true, false]);
  const noVocab = configMetadata(CONFIG).filter(([k]) => k !== "llama.vocab_size");
  assertEquals(cfg([...noVocab, ["tokenizer.ggml.tokens", gv.strs(["a", "b", "c"])]]).vocabSize, 3);
  assertEquals(ggufConfig(metaOf(noVocab), { embedRows: 77, tied: true, ropeFactors: null }).vocabSize, 77);
  const eot = cfg([...configMetadata(CONFIG), ["tokenizer.ggml.eot_token_id", gv.u32(9)]]);
  assertEquals(eot.eosTokenIds, [4, 9]);
  const noBos = cfg([...configMetadata(CONFIG), ["tokenizer.ggml.add_bos_token", gv.bool(false)]]);
  assertEquals(noBos.bosTokenId, null);
});

Deno.test("config: missing keys, unknown architecture, unsupported features are named", () => {
  const base = configMetadata(CONFIG);
  for (
    const key of ["llama.embedding_length", "llama.block_count", "llama.attention.layer_norm_rms_epsilon"]
  ) {
    assertThrows(
      () => cfg(base.filter(([k]) => k !== key)),
      named("m.gguf", `missing required metadata key "${key}"`),
    );
  }
  assertThrows(
    () => cfg(base.filter(([k]) => k !== "general.architecture")),
    named(`"general.architecture"`),
  );
  const arch = (a: string) =>
    base.map(([k, v]): [string, MetaValue] => [k, k === "general.architecture" ? gv.str(a) : v]);
  assertThrows(() => cfg(arch("gemma")), named("m.gguf", `unknown architecture "gemma"`));
  assertThrows(() => cfg([...base, ["llama.expert_count", gv.u32(8)]]), named("mixture-of-experts"));
  assertThrows(
    () => cfg([...base, ["llama.rope.scaling.type", gv.str("yarn")]]),
    named(`"yarn" is not supported`),
  );
  const partial = base.map((
    [k, v],
  ): [string, MetaValue] => [k, k === "llama.rope.dimension_count" ? gv.u32(8) : v]);
  assertThrows(() => cfg(partial), named("partial RoPE"));
  const bad = base.map(([k, v]): [string, MetaValue] => [k, k === "llama.block_count" ? gv.str("two") : v]);
  assertThrows(() => cfg(bad), named(`"llama.block_count" must be a non-negative integer`));
});

Deno.test("Llama 3 rope_freqs are recovered as llama3 rope scaling", () => {
  const c = { ...CONFIG, headDim: 128, hiddenSize: 512, numHeads: 4 };
  // convert_hf_to_gguf.py's rope_factors for Llama 3.1 (factor 8, low 1, high 4, original context 8192)
  const plain = ropeInvFreq(c);
  const factors = new Float32Array(plain.map((freq) => {
    const wavelen = 2 * Math.PI / freq;
    if (wavelen < 8192 / 4) return 1;
    if (wavelen > 8192 / 1) return 8;
    const smooth = (8192 / wavelen - 1) / (4 - 1);
    return 1 / ((1 - smooth) / 8 + smooth);
  }));
  const meta = metaOf(configMetadata(c));
  const s = llama3ScalingFromFactors(factors, c, meta)!;
  assertEquals(s.type, "llama3");
  assertEquals(s.factor, 8);
  assert(
    Math.abs(s.highFreqFactor - 4) < 1e-3 && Math.abs(s.originalMaxPositionEmbeddings - 8192) < 2,
    JSON.stringify(s),
  );
  const scaled = ropeInvFreq({ ...c, ropeScaling: s });
  const want = ropeInvFreq({
    ...c,
    ropeScaling: {
      type: "llama3",
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    },
  });
  for (let i = 0; i < want.length; i++) assert(Math.abs(scaled[i] / want[i] - 1) < 1e-5, `freq ${i}`);
  const withOrig = metaOf([...configMetadata(c), [
    "llama.rope.scaling.original_context_length",
    gv.u32(8192),
  ]]);
  const s2 = llama3ScalingFromFactors(factors, c, withOrig)!;
  assertEquals(s2.originalMaxPositionEmbeddings, 8192);
  assert(Math.abs(s2.lowFreqFactor - 1) < 1e-3 && Math.abs(s2.highFreqFactor - 4) < 1e-3);
  assertEquals(llama3ScalingFromFactors(new Float32Array(64).fill(1), c, meta), null);
  const noise = factors.map((f, i) => (i === 40 ? f * 1.5 : f));
  assertThrows(() => llama3ScalingFromFactors(noise, c, meta), named("rope_freqs.weight", "not a Llama 3"));
});

// ---- Files -------------------------------------------------------------------------------------------------

async function withFile(bytes: Uint8Array, fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tealgpu-gguf-" });
  try {
    const path = join(dir, "m.gguf");
    await Deno.writeFile(path, bytes);
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Tensors of CONFIG, each value = its index (so placement errors show). */
function tensorsOf(c: ModelConfig, drop = ""): GgufTensorSpec[] {
  const f32 = (name: string, ne: number[]): GgufTensorSpec => {
    const n = ne.reduce((a, b) => a * b, 1);
    return { name, ne, type: 0, data: new Uint8Array(Float32Array.from({ length: n }, (_, i) => i).buffer) };
  };
  const h = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
  const out = [f32("token_embd.weight", [h, c.vocabSize]), f32("output_norm.weight", [h])];
  for (let l = 0; l < c.numLayers; l++) {
    out.push(
      f32(`blk.${l}.attn_norm.weight`, [h]),
      f32(`blk.${l}.ffn_norm.weight`, [h]),
      f32(`blk.${l}.attn_q.weight`, [h, q]),
      f32(`blk.${l}.attn_k.weight`, [h, kv]),
      f32(`blk.${l}.attn_v.weight`, [h, kv]),
      f32(`blk.${l}.attn_output.weight`, [q, h]),
      f32(`blk.${l}.ffn_gate.weight`, [h, c.intermediateSize]),
      f32(`blk.${l}.ffn_up.weight`, [h, c.intermediateSize]),
      f32(`blk.${l}.ffn_down.weight`, [c.intermediateSize, h]),
    );
  }
  return out.filter((t) => t.name !== drop);
}

Deno.test("openGguf: streams HF names and shapes, un-permutes llama q/k, reports progress", async () => {
  await withFile(encodeGguf(configMetadata(CONFIG), tensorsOf(CONFIG)), async (path) => {
    const ck = await openGguf(path);
    assertEquals(ck.config.tieWordEmbeddings, true);
    const progress: number[] = [];
    const seen = new Map<string, number[]>();
    for await (const t of ck.readTensors((d) => progress.push(d))) seen.set(t.name, t.shape);
    assertEquals(seen.size, 2 + 2 * 9);
    assertEquals(seen.get("model.layers.1.self_attn.k_proj.weight"), [32, 64]);
    assertEquals(seen.get("model.layers.0.mlp.down_proj.weight"), [64, 96]);
    assertEquals(progress.at(-1), ck.totalBytes);
    const k = await ck.readTensor("model.layers.0.self_attn.k_proj.weight");
    // HF row 1 of head 0 is GGUF row 2 (rows 0, 8 | 1, 9 | ... interleaved per 16-row head)
    assertEquals(k.data[1 * 64], 2 * 64);
    assertEquals(k.data[8 * 64], 1 * 64);
    assertEquals(k.data[16 * 64], 16 * 64); // head 1 starts where it did
    const v = await ck.readTensor("model.layers.0.self_attn.v_proj.weight");
    assertEquals(v.data[1 * 64], 1 * 64); // v is not permuted
  });
  const qwen = { ...CONFIG, architecture: "qwen2" as const, qkvBias: true };
  const bias = (l: number, p: string, n: number): GgufTensorSpec => ({
    name: `blk.${l}.attn_${p}.bias`,
    ne: [n],
    type: 0,
    data: new Uint8Array(n * 4),
  });
  const withBias = [
    ...tensorsOf(qwen),
    ...[0, 1].flatMap((l) => [bias(l, "q", 64), bias(l, "k", 32), bias(l, "v", 32)]),
  ];
  await withFile(encodeGguf(configMetadata(qwen), withBias), async (path) => {
    const ck = await openGguf(path);
    const k = await ck.readTensor("model.layers.0.self_attn.k_proj.weight");
    assertEquals(k.data[1 * 64], 1 * 64); // qwen2: NEOX order kept
    assert((await ck.readTensor("model.layers.1.self_attn.v_proj.bias")).data.length === 32);
  });
});

Deno.test("openGguf reads a file written by llama.cpp's gguf-py, q/k rows permuted as convert_hf_to_gguf does", async () => {
  // tests/fixtures/ggml_reference.py: GGUFWriter output (F16, F32, Q8_0, Q4_K, Q6_K) and the HF-ordered values
  const path = new URL("../../tests/fixtures/tiny_ref.gguf", import.meta.url).pathname;
  const want = JSON.parse(await Deno.readTextFile(path.replace(/\.gguf$/, ".json")));
  const ck = await openGguf(path);
  const c = ck.config;
  assertEquals([c.architecture, c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads], [
    "llama",
    256,
    256,
    1,
    4,
    2,
  ]);
  assertEquals([c.headDim, c.vocabSize, c.maxPositionEmbeddings, c.rmsNormEps, c.ropeTheta], [
    64,
    48,
    128,
    1e-5,
    10000,
  ]);
  assertEquals([c.tieWordEmbeddings, c.bosTokenId, c.eosTokenIds], [false, 1, [2]]);
  const seen = new Set<string>();
  for await (const t of ck.readTensors()) {
    const w = want[t.name] as { shape: number[]; sample: [number, number][] };
    assert(w, `unexpected ${t.name}`);
    assertEquals(t.shape, w.shape, t.name);
    const tol = 1e-6 * Math.max(...w.sample.map(([, v]) => Math.abs(v)));
    for (const [i, v] of w.sample) {
      assert(Math.abs(t.data[i] - v) <= tol, `${t.name}[${i}]: ${t.data[i]} vs ${v}`);
    }
    seen.add(t.name);
  }
  assertEquals(seen, new Set(Object.keys(want)));
});

Deno.test("openGguf: a Llama 3 rope_freqs tensor becomes llama3 rope scaling and is not streamed", async () => {
  const c = { ...CONFIG, ropeTheta: 10000 };
  const plain = ropeInvFreq(c);
  // factor 8, low 1, high 4, original context 64: head dim 16 wavelengths 6.3, 20, 63, 199, ... span all three
  const factors = Float32Array.from(plain, (freq) => {
    const wavelen = 2 * Math.PI / freq;
    if (wavelen < 64 / 4) return 1;
    if (wavelen > 64) return 8;
    const smooth = (64 / wavelen - 1) / 3;
    return 1 / ((1 - smooth) / 8 + smooth);
  });
  const rope: GgufTensorSpec = {
    name: "rope_freqs.weight",
    ne: [8],
    type: 0,
    data: new Uint8Array(factors.buffer),
  };
  await withFile(encodeGguf(configMetadata(c), [...tensorsOf(c), rope]), async (path) => {
    const ck = await openGguf(path);
    const s = ck.config.ropeScaling!;
    assertEquals([s.type, s.factor], ["llama3", 8]);
    const want = ropeInvFreq({
      ...c,
      ropeScaling: { ...s, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
    });
    ropeInvFreq(ck.config).forEach((f, i) => assert(Math.abs(f / want[i] - 1) < 1e-5, `freq ${i}`));
    const names: string[] = [];
    for await (const t of ck.readTensors()) names.push(t.name);
    assert(!names.some((n) => n.includes("rope")));
  });
  const f16Rope = { ...rope, type: 1, data: new Uint8Array(16) };
  await withFile(encodeGguf(configMetadata(c), [...tensorsOf(c), f16Rope]), async (path) => {
    await assertRejects(openGguf(path), named(path, `"rope_freqs.weight" must be a 1-D F32 tensor`));
  });
});

Deno.test("openGguf: missing, unexpected and mis-shaped tensors, missing key, name the file and tensor", async () => {
  const meta = configMetadata(CONFIG);
  await withFile(encodeGguf(meta, tensorsOf(CONFIG, "blk.1.ffn_up.weight")), async (path) => {
    await assertRejects(
      openGguf(path),
      named(path, `"blk.1.ffn_up.weight"`, "model.layers.1.mlp.up_proj.weight", "missing"),
    );
  });
  await withFile(encodeGguf(meta, [...tensorsOf(CONFIG), F32_4("blk.0.attn_sinks.weight")]), async (path) => {
    await assertRejects(openGguf(path), named(path, "unexpected", `"blk.0.attn_sinks.weight"`));
  });
  const t = tensorsOf(CONFIG);
  t.find((x) => x.name === "blk.0.attn_k.weight")!.ne = [32, 64];
  await withFile(encodeGguf(meta, t), async (path) => {
    await assertRejects(
      openGguf(path),
      named(path, `"blk.0.attn_k.weight"`, "[64, 32]", "expected [32, 64]"),
    );
  });
  await withFile(
    encodeGguf(meta.filter(([k]) => k !== "llama.feed_forward_length"), tensorsOf(CONFIG)),
    async (path) => {
      await assertRejects(
        openGguf(path),
        named(path, `missing required metadata key "llama.feed_forward_length"`),
      );
    },
  );
  await withFile(encodeGguf(meta, tensorsOf(CONFIG)).subarray(0, 3000), async (path) => {
    await assertRejects(openGguf(path), named(path, "truncated"));
  });
});

Deno.test("findGgufFile: a file, a folder's only .gguf, HF folders and ambiguous folders", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tealgpu-gguf-" });
  try {
    assertEquals(await findGgufFile(dir), null);
    await Deno.writeFile(join(dir, "a.gguf"), new Uint8Array(4));
    assertEquals(await findGgufFile(dir), join(dir, "a.gguf"));
    assertEquals(await findGgufFile(join(dir, "a.gguf")), join(dir, "a.gguf"));
    await Deno.writeFile(join(dir, "b.gguf"), new Uint8Array(4));
    await assertRejects(findGgufFile(dir), named(dir, "2 GGUF files", "a.gguf, b.gguf"));
    await Deno.writeFile(join(dir, "model.safetensors"), new Uint8Array(4));
    assertEquals(await findGgufFile(dir), null);
    assertEquals(await findGgufFile(join(dir, "nope")), null);
    await assertRejects(findGgufFile(join(dir, "nope.gguf")), named("nope.gguf: file not found"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---- Tokenizer -------------------------------------------------------------------------------------------

const TEXTS = [
  "The jury said that the city's 1234567 voters   were\n\nhappy!",
  " leading space, tabs\tand ünïcödé — 漢字 🙂",
  "<|begin_of_text|>special tokens<|end_of_text|> inline",
  "",
];

Deno.test("gpt2 GGUF tokenizer encodes and decodes like tokenizer.json (tiny-llama-16m)", async () => {
  const json = JSON.parse(await Deno.readTextFile(join(TINY, "tokenizer.json")));
  const ref = (await TextTokenizer.load(TINY))!;
  const template = JSON.parse(await Deno.readTextFile(join(TINY, "tokenizer_config.json"))).chat_template;
  const meta = metaOf([
    ...gpt2TokenizerMetadata(json, "gpt-2"),
    ["tokenizer.ggml.bos_token_id", gv.u32(0)],
    ["tokenizer.ggml.eos_token_id", gv.u32(1)],
    ["tokenizer.chat_template", gv.str(template)],
  ]);
  const { tokenizer, reason } = ggufTokenizer(meta, [1]);
  assertEquals(reason, null);
  const tok = tokenizer!;
  assertEquals([tok.bosTokenId, tok.eosTokenIds, tok.vocabSize], [
    ref.bosTokenId,
    ref.eosTokenIds,
    ref.vocabSize,
  ]);
  for (const text of TEXTS) {
    const ids = ref.encode(text, { addBos: true });
    assertEquals(tok.encode(text, { addBos: true }), ids, text);
    assertEquals(tok.decode(ids), ref.decode(ids));
  }
  const msgs = [{ role: "user", content: "hi" }];
  assertEquals(tok.applyChatTemplate(msgs), ref.applyChatTemplate(msgs));
});

Deno.test("llama-bpe and qwen2 pre-tokenizers split digits as Llama 3 and Qwen2 do", () => {
  // A byte-level vocabulary of single bytes plus "12" and "123": only the split decides what merges.
  const bytes: string[] = [];
  const map = new Map<number, string>();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    map.set(b, String.fromCodePoint(printable ? b : 256 + n++));
  }
  for (let b = 0; b < 256; b++) bytes.push(map.get(b)!);
  const tokens = [...bytes, "12", "123", "45"];
  const merges = ["1 2", "12 3", "4 5"];
  const build = (pre: string) =>
    ggufTokenizer(
      metaOf([
        ["tokenizer.ggml.model", gv.str("gpt2")],
        ["tokenizer.ggml.pre", gv.str(pre)],
        ["tokenizer.ggml.tokens", gv.strs(tokens)],
        ["tokenizer.ggml.merges", gv.strs(merges)],
      ]),
      [],
    ).tokenizer!;
  const id = (t: string) => tokens.indexOf(t);
  assertEquals(build("llama-bpe").encode("12345"), [id("123"), id("45")]); // \p{N}{1,3}
  assertEquals(build("qwen2").encode("12345"), ["1", "2", "3", "4", "5"].map(id)); // \p{N} one by one
  assertEquals(build("gpt-2").encode("12345"), [id("123"), id("45")]);
  assertEquals(build("llama-bpe").decode([id("123"), id("45")]), "12345");
  // Qwen2 normalizes to NFC first: "e" + combining acute becomes the one byte pair of "é"
  const e = [...new TextEncoder().encode("é")].map((b) => id(map.get(b)!));
  assertEquals(build("qwen2").encode("e\u0301"), e);
  assertEquals(build("gpt-2").encode("e\u0301").length, 3);
});

Deno.test("SentencePiece GGUF tokenizer encodes like SentencePiece (llama.cpp fragments) and decodes like it", async () => {
  // tests/fixtures/spm_tiny.py: a BPE SentencePiece model with byte fallback, and its own encodings
  const fx = JSON.parse(
    await Deno.readTextFile(new URL("../../tests/fixtures/spm_tiny.json", import.meta.url)),
  );
  const meta = metaOf([
    ["tokenizer.ggml.model", gv.str("llama")],
    ["tokenizer.ggml.tokens", gv.strs(fx.tokens)],
    ["tokenizer.ggml.scores", gv.f32s(fx.scores)],
    ["tokenizer.ggml.token_type", gv.i32s(fx.types)],
    ["tokenizer.ggml.bos_token_id", gv.u32(1)],
    ["tokenizer.ggml.eos_token_id", gv.u32(2)],
    ["tokenizer.ggml.unknown_token_id", gv.u32(0)],
  ]);
  const { tokenizer, reason } = ggufTokenizer(meta, [2]);
  assertEquals(reason, null);
  const tok = tokenizer!;
  assertEquals([tok.bosTokenId, tok.eosTokenIds], [1, [2]]);
  for (const c of fx.cases as { text: string; ids: number[]; decoded: string }[]) {
    assertEquals(tok.encode(c.text), c.ids, c.text);
    assertEquals(tok.encode(c.text, { addBos: true }), c.ids.length ? [1, ...c.ids] : [1], c.text);
    if (!c.text.includes("<|user|>")) assertEquals(tok.decode(c.ids), c.decoded);
  }
  assert(
    fx.cases.some((c: { ids: number[] }) => c.ids.some((id) => fx.types[id] === 6)),
    "byte fallback exercised",
  );
});

Deno.test("unsupported GGUF tokenizers load as token ids only, saying why", () => {
  const other = ggufTokenizer(metaOf([["tokenizer.ggml.model", gv.str("bert")]]), []);
  assertEquals(other.tokenizer, null);
  assert(other.reason!.includes(`"bert" is not supported`), other.reason!);
  const pre = ggufTokenizer(
    metaOf([["tokenizer.ggml.model", gv.str("gpt2")], ["tokenizer.ggml.pre", gv.str("falcon")]]),
    [],
  );
  assert(pre.reason!.includes(`"falcon" is not supported`), pre.reason!);
  assertEquals(ggufTokenizer(metaOf([]), []), { tokenizer: null, reason: null });
  assertThrows(
    () =>
      ggufTokenizer(
        metaOf([["tokenizer.ggml.model", gv.str("gpt2")], ["tokenizer.ggml.pre", gv.str("gpt-2")]]),
        [],
      ),
    named("m.gguf", `"tokenizer.ggml.tokens"`),
  );
});
