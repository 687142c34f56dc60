import { describe, expect, test } from "bun:test";
import { decode as referenceDecode } from "@msgpack/msgpack";
import { Unpackr } from "msgpackr";
import { decode, encode } from "../../src/protocol/codec.ts";
import { seededRandom } from "../support/random.ts";

/**
 * `decode` reads small items (maps, arrays, ASCII strings, 32-bit integers, floats, nil, booleans) with
 * its own short reader and leaves everything else to msgpackr. Whatever path an item takes, the result
 * must be exactly msgpackr's: the same value, or an error where msgpackr throws.
 */
const msgpackr = new Unpackr({ useRecords: false, int64AsType: "number", copyBuffers: true });

function outcome(read: () => unknown): { value: unknown } | { error: true } {
  try {
    return { value: read() };
  } catch {
    return { error: true };
  }
}

const values: unknown[] = [
  0, 1, 127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1,
  -1, -32, -33, -128, -129, -32_768, -32_769, -(2 ** 31), -(2 ** 31) - 1,
  0.5, -1.25, Number.MAX_VALUE, Number.NaN, Number.POSITIVE_INFINITY, 1e-300,
  null, true, false, "", "a", "x".repeat(31), "y".repeat(32), "z".repeat(200), "héllo", "日本", "emoji 🎉",
  [], [1, [2, [3, [4]]]], Array.from({ length: 20 }, (_, i) => i),
  {}, { id: 1, payload: "p".repeat(64) }, { a: { b: { c: [null, true, "s"] } } },
  { "": 1, ["k".repeat(31)]: 2 }, { ключ: "value" }, { constructor: 1, toString: "x" },
  { __proto__: null, polluted: false }, JSON.parse('{"__proto__": {"polluted": true}}'),
  Uint8Array.of(1, 2, 3), { bin: new Uint8Array(10) }, new Date(1_700_000_000_000), 12345678901234,
];

describe("decode", () => {
  test("gives exactly what msgpackr gives for every kind of small and large value", () => {
    for (const value of [...values, { list: values }]) {
      const bytes = encode(value);
      const ours = decode(bytes);
      expect(ours).toEqual(msgpackr.unpack(bytes));
      if (value !== null && typeof value === "object" && !(value instanceof Date) && !(value instanceof Uint8Array)) {
        expect(Object.getPrototypeOf(ours)).toBe(Object.getPrototypeOf(msgpackr.unpack(bytes)));
      }
    }
  });

  test("reads the bytes as standard MessagePack, as @msgpack/msgpack does", () => {
    for (const value of [{ id: 7, payload: "q".repeat(64) }, [1, -2, 3.5, "s", null, true], "text", 4_000_000_000]) {
      const bytes = encode(value);
      expect(decode(bytes)).toEqual(referenceDecode(bytes) as never);
    }
  });

  test("an item cut short or with bytes left over is an error, not a value", () => {
    for (const value of values) {
      const bytes = encode(value);
      if (bytes.length > 1) expect(() => decode(bytes, 0, bytes.length - 1)).toThrow();
      const longer = new Uint8Array(bytes.length + 1);
      longer.set(bytes);
      expect(outcome(() => decode(longer))).toEqual(outcome(() => msgpackr.unpack(longer)));
    }
  });

  test("random byte strings: the same value or the same refusal as msgpackr (20 000 seeded cases)", () => {
    const random = seededRandom(20261128);
    for (let i = 0; i < 20_000; i++) {
      const bytes = new Uint8Array(1 + Math.floor(random() * 40));
      for (let j = 0; j < bytes.length; j++) bytes[j] = random() < 0.5 ? Math.floor(random() * 256) : [0x81, 0xa1, 0x61, 0x92, 0xc0, 0x01][Math.floor(random() * 6)]!;
      const ours = outcome(() => decode(bytes));
      const theirs = outcome(() => msgpackr.unpack(bytes));
      if ("error" in theirs || "error" in ours) expect("error" in ours).toBe("error" in theirs);
      else expect(ours.value).toEqual(theirs.value);
    }
  });

  test("a binary value gets bytes of its own, a plain Uint8Array", () => {
    const bytes = encode({ bin: Uint8Array.of(9, 8, 7) });
    const value = decode(bytes) as { bin: Uint8Array };
    expect(value.bin.constructor).toBe(Uint8Array);
    bytes.fill(0);
    expect([...value.bin]).toEqual([9, 8, 7]);
  });
});
