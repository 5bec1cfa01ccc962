// Conversion tests. The runtime's own bit tricks are checked against independent references: hand-derived bit
// patterns for the edge cases, and the engine's Float16Array (IEEE round-to-nearest-even in V8) for bulk checks.
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert";
import { bf16ToF32, f16BitsToF32, f16ToF32, f32ToF16Bit, f32ToF16Bits } from "./dtype.ts";

const hex = (n: number): string => "0x" + n.toString(16).padStart(4, "0");

/** f32 with the given bit pattern. */
function f32OfBits(u: number): number {
  return new Float32Array(new Uint32Array([u >>> 0]).buffer)[0];
}

Deno.test("f32ToF16Bit: exact edge values", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [65504, 0x7bff], // largest finite f16
    [65519, 0x7bff], // below the halfway point to 65536: stays finite
    [65520, 0x7c00], // exactly halfway, 0x7bff is odd: rounds to even = overflow to inf
    [-65520, 0xfc00],
    [1e6, 0x7c00], // beyond range
    [-1e30, 0xfc00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [-(2 ** -24), 0x8001],
    [2 ** -25, 0x0000], // halfway between 0 and the smallest subnormal: tie to even (0)
    [-(2 ** -25), 0x8000],
    [f32OfBits(0x33000001), 0x0001], // just above 2^-25: rounds up
    [3 * 2 ** -25, 0x0002], // 1.5 subnormal units: tie to even (2)
    [5 * 2 ** -25, 0x0002], // 2.5 units: tie to even (2)
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [1023.5 * 2 ** -24, 0x0400], // tie between largest subnormal (odd) and smallest normal
    [2 ** -26, 0x0000],
    [f32OfBits(0x00000001), 0x0000], // f32 subnormal underflows to zero
    [1 + 2 ** -11, 0x3c00], // tie, 0x3c00 even: down
    [1 + 3 * 2 ** -11, 0x3c02], // tie, 0x3c01 odd: up
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie: up
    [1 + 2 ** -11 - 2 ** -20, 0x3c00], // just below the tie: down
    // Halfway between 0x3bff (1 - 2^-11, odd) and 1.0: rounds up, the mantissa carry bumping the exponent.
    [1 - 2 ** -12, 0x3c00],
    [1 - 2 ** -12 - 2 ** -24, 0x3bff], // one f32 ulp below the tie: down,
  ];
  for (const [x, bits] of cases) assertEquals(hex(f32ToF16Bit(x)), hex(bits), `f32ToF16Bit(${x})`);
});

Deno.test("f32ToF16Bit: NaN stays NaN (never collapses to infinity)", () => {
  for (const u of [0x7fc00000, 0xffc00000, 0x7f800001, 0x7f802000, 0xff800001]) {
    const h = f32ToF16Bit(f32OfBits(u));
    assertEquals((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0, true, `NaN ${u.toString(16)} -> ${hex(h)}`);
    assertEquals(h >>> 15, u >>> 31, "sign kept");
  }
  assertEquals(Number.isNaN(f16BitsToF32(0x7e00)), true);
  assertEquals(Number.isNaN(f16BitsToF32(0xfc01)), true);
});

Deno.test("f16BitsToF32: exact edge values", () => {
  const cases: [number, number][] = [
    [0x0000, 0],
    [0x3c00, 1],
    [0xc000, -2],
    [0x7bff, 65504],
    [0xfbff, -65504],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14],
    [0x3555, 0.333251953125],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ];
  for (const [bits, v] of cases) assertEquals(f16BitsToF32(bits), v, hex(bits));
  assertEquals(Object.is(f16BitsToF32(0x8000), -0), true, "negative zero");
});

Deno.test("f16: all 65536 bit patterns round-trip and match Float16Array", () => {
  const all = new Uint16Array(65536);
  for (let i = 0; i < 65536; i++) all[i] = i;
  const ref = new Float16Array(all.buffer); // engine's own decoding of the same bits
  const wide = f16ToF32(all);
  const back = f32ToF16Bits(wide);
  for (let h = 0; h < 65536; h++) {
    const v = f16BitsToF32(h);
    const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaN) {
      assertEquals(Number.isNaN(v) && Number.isNaN(wide[h]), true, hex(h));
      const r = back[h];
      assertEquals((r & 0x7c00) === 0x7c00 && (r & 0x3ff) !== 0, true, `NaN ${hex(h)} -> ${hex(r)}`);
      continue;
    }
    if (!Object.is(v, ref[h]) || !Object.is(wide[h], v)) {
      throw new Error(`${hex(h)}: scalar ${v}, bulk ${wide[h]}, Float16Array ${ref[h]}`);
    }
    if (back[h] !== h || f32ToF16Bit(v) !== h) {
      throw new Error(`${hex(h)} round-trips to ${hex(back[h])} / ${hex(f32ToF16Bit(v))}`);
    }
  }
});

Deno.test("f32ToF16Bits: random f32 values round exactly as Float16Array does", () => {
  // Random bit patterns cover every exponent (subnormal, normal, overflow); extra near-tie values stress rounding.
  let seed = 12345;
  const rand = (): number => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed;
  };
  const n = 200_000;
  const src = new Float32Array(n);
  const bits = new Uint32Array(src.buffer);
  for (let i = 0; i < n; i++) {
    if (i % 2 === 0) bits[i] = rand();
    else {
      // Within the f16 range, with the 13 dropped mantissa bits forced to (near-)halfway.
      const exp = 100 + (rand() % 45); // 2^-27 .. 2^17
      const tail = [0x1000, 0x0fff, 0x1001, 0x0000, 0x1fff][rand() % 5];
      bits[i] = ((rand() & 1) << 31) | (exp << 23) | (rand() & 0x7fe000) | tail;
    }
  }
  const ours = f32ToF16Bits(src);
  const ref = new Uint16Array(new Float16Array(src).buffer);
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(src[i])) continue; // NaN payload choice is implementation-defined
    if (ours[i] !== ref[i]) {
      throw new Error(`${src[i]} (0x${bits[i].toString(16)}): ${hex(ours[i])} vs ${hex(ref[i])}`);
    }
  }
});

Deno.test("f32ToF16Bits: writes into a given buffer, refuses a short one, honours subarray offsets", () => {
  const src = new Float32Array([9, 1, 2, 3]).subarray(1);
  const out = new Uint16Array(5);
  const r = f32ToF16Bits(src, out);
  assertEquals(r, out);
  assertEquals([...out], [0x3c00, 0x4000, 0x4200, 0, 0]);
  assertThrows(() => f32ToF16Bits(new Float32Array(4), new Uint16Array(3)));
});

Deno.test("bf16ToF32: exact widening, specials and NaN payload", () => {
  const src = new Uint16Array([0x3f80, 0xc000, 0x7f80, 0xff80, 0x0001, 0x8000, 0x7f7f, 0x3e20, 0x7fc1]);
  const out = bf16ToF32(src);
  assertEquals([...out.subarray(0, 8)], [
    1,
    -2,
    Infinity,
    -Infinity,
    2 ** -133,
    -0,
    3.3895313892515355e38,
    0.15625,
  ]);
  assertEquals(Object.is(out[5], -0), true);
  assertEquals(new Uint32Array(out.buffer)[8], 0x7fc10000, "NaN payload copied bit-exactly");
  // Against an independent decode: bf16 bits are the high half of the f32 bits.
  const all = new Uint16Array(65536);
  for (let i = 0; i < 65536; i++) all[i] = i;
  const wide = new Uint32Array(bf16ToF32(all).buffer);
  for (let i = 0; i < 65536; i++) if (wide[i] !== (i << 16) >>> 0) throw new Error(`bf16 ${hex(i)}`);
});

Deno.test("f32ToF16Bit: every midpoint between adjacent finite f16 values ties to even", () => {
  // Independent decode from the IEEE definition, so the expected values share no code with dtype.ts.
  const value = (h: number): number => {
    const e = h >> 10, m = h & 0x3ff;
    return e === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (e - 15);
  };
  const bits = new Uint32Array(1);
  const f = new Float32Array(bits.buffer);
  const step = (x: number, d: number): number => { // neighbouring f32 (x > 0)
    f[0] = x;
    bits[0] += d;
    return f[0];
  };
  for (let h = 0; h < 0x7bff; h++) {
    const mid = (value(h) + value(h + 1)) / 2; // at most 12 significant bits: exact in f32
    const even = h % 2 === 0 ? h : h + 1;
    if (f32ToF16Bit(mid) !== even || f32ToF16Bit(-mid) !== (even | 0x8000)) {
      throw new Error(`tie after ${hex(h)}`);
    }
    if (f32ToF16Bit(step(mid, 1)) !== h + 1) throw new Error(`just above the tie after ${hex(h)}`);
    if (mid > 0 && f32ToF16Bit(step(mid, -1)) !== h) throw new Error(`just below the tie after ${hex(h)}`);
  }
});
