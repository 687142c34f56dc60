import { describe, expect, test } from "bun:test";
import { ItemEncodeError, errorFromWire, errorToWire } from "../../src/errors.ts";
import { RecordBatchBuilder, decode, encodeItem, encodeTransient } from "../../src/protocol/codec.ts";
import { RecordKind, RecordReader } from "../../src/protocol/record.ts";
import { arrival, difference } from "../support/faithful.ts";

/**
 * What an item may be (README: "What an item may be"): every kind of value either arrives as itself
 * or is refused with an ItemEncodeError naming the path to it — never turned into something else.
 * Each case is tried small (the small-item writer's path) and inside an item over 8 KiB (the check
 * before msgpackr), through every way an item is encoded.
 */

/** A value that is too large for the small-item writer, with `value` at `.v`. */
const large = (value: unknown) => ({ pad: "p".repeat(9000), v: value });

/** Every way an item is encoded, each read back by `decode`. */
const encoders: Record<string, (value: unknown, name: string | number) => unknown> = {
  encodeItem: (value, name) => decode(encodeItem(value, name)),
  encodeTransient: (value, name) => decode(encodeTransient(value, name)),
  "RecordBatchBuilder.appendValue": (value, name) => {
    const batch = new RecordBatchBuilder(1024);
    batch.appendValue(RecordKind.Output, 0, 0, 1, value, name);
    const records = batch.takeRecords();
    const reader = new RecordReader(records);
    reader.next();
    return decode(records, reader.payloadStart, reader.payloadEnd);
  },
};

function expectCarried(value: unknown): void {
  for (const [how, roundTrip] of Object.entries(encoders)) {
    for (const [size, item] of [
      ["small", value],
      ["large", large(value)],
    ] as const) {
      const found = difference(roundTrip(item, 3), arrival(item));
      if (found !== undefined) throw new Error(`${how} (${size}): ${found}`);
    }
  }
}

const cycle: Record<string, unknown> = { a: 1 };
cycle.self = cycle;
const deepCycle: { a: { b: unknown[] } } = { a: { b: [] } };
deepCycle.a.b.push(1, deepCycle.a);
const setCycle = new Set<unknown>();
setCycle.add({ back: setCycle });
class Point {
  constructor(
    public x = 1,
    public y = 2,
  ) {}
}
class Stack extends Array<number> {}
const nested = (depth: number): unknown => {
  let value: unknown = "leaf";
  for (let i = 0; i < depth; i++) value = [value];
  return value;
};

describe("carried as themselves", () => {
  const carried: Array<[string, unknown]> = [
    ["strings", ["", "a", "x".repeat(300), "héllo", "日本", "emoji 🎉"]],
    ["numbers", [0, 1, -1, 127, 128, 65_536, 2 ** 31, -(2 ** 31) - 1, 2 ** 32, 2 ** 53 - 1, -(2 ** 53), 0.5, 1e-300]],
    ["NaN, infinities, the largest", [Number.NaN, Number.POSITIVE_INFINITY, -Infinity, Number.MAX_VALUE]],
    ["booleans and null", [true, false, null]],
    ["undefined alone", undefined],
    ["undefined in an array", [1, undefined, 3]],
    ["undefined in an object", { a: 1, u: undefined, b: [undefined] }],
    ["bigints within 64 bits", [0n, 10n, -10n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 63n, 2n ** 64n - 1n]],
    ["bigints past 64 bits", [2n ** 64n, -(2n ** 63n) - 1n, 10n ** 40n, -(10n ** 40n), 2n ** 1000n]],
    ["a number next to a bigint stays a number", { n: 2 ** 40, b: 2n ** 40n }],
    [
      "plain objects and arrays",
      { id: 7, list: [1, [2, [3]], { deep: { er: "s" } }], "a key with spaces": 1, ключ: "v" },
    ],
    ["keys that shadow Object.prototype", { constructor: 1, toString: "x", hasOwnProperty: null }],
    ["a null-prototype object", Object.assign(Object.create(null), { a: 1, b: { c: 2 } })],
    ["Dates", [new Date(1_700_000_000_123), new Date(0), new Date(-1e14), new Date(8.64e15), new Date(Number.NaN)]],
    ["Sets", new Set([1, "a", { b: [2] }, new Set([3n]), undefined])],
    ["RegExps", [/a+b/gi, /^x$/msuy]],
    [
      "Uint8Array and Buffer",
      [Uint8Array.of(1, 2, 3), Buffer.from("hi"), new Uint8Array(0), Uint8Array.of(1, 2, 3, 4).subarray(1, 3)],
    ],
    [
      "typed arrays",
      [
        Int8Array.of(-1),
        Uint8ClampedArray.of(255),
        Int16Array.of(-2),
        Uint16Array.of(2),
        Int32Array.of(-3),
        Uint32Array.of(3),
        Float32Array.of(1.5),
        Float64Array.of(2.5, -0, Number.MAX_VALUE),
        BigInt64Array.of(-5n),
        BigUint64Array.of(5n),
      ],
    ],
    ["a typed array over part of a buffer", new Float64Array(new ArrayBuffer(64), 16, 2).fill(7)],
    ["ArrayBuffer and DataView", [Uint8Array.of(9, 8).buffer, new DataView(Uint8Array.of(1, 2, 3).buffer, 1)]],
    [
      "a shared (not circular) reference, as two copies",
      (() => {
        const o = { x: 1 };
        return [o, o, { o }];
      })(),
    ],
    ["nesting deeper than the small writer goes", nested(100)],
    ["-0, which arrives as 0", [-0, { z: -0 }]],
    // biome-ignore lint/suspicious/noSparseArray: the hole is what is tried
    ["a hole, which arrives as undefined", [1, , 3]],
    ["a lone surrogate, which arrives as U+FFFD", ["\ud800", "a\udc00b"]],
  ];
  for (const [name, value] of carried) test(name, () => expectCarried(value));

  test("an object of 65 536 keys and more (once: property access on one is slow)", () => {
    const wide = Object.fromEntries(Array.from({ length: 66_000 }, (_, i) => [`k${i}`, i]));
    expect(difference(decode(encodeItem(wide, 0)), wide)).toBeUndefined();
  }, 60_000);
});

describe("refused with the path to what cannot be sent", () => {
  const fn = () => 1;
  /** [case, item, path from the item's root (a function of it), reason]. */
  const refused: Array<[string, unknown, (root: string) => string, string | RegExp]> = [
    ["a function", { meta: { cb: fn } }, (r) => `${r}.meta.cb`, "a function cannot be sent"],
    ["a method", { meta: { cb() {} } }, (r) => `${r}.meta.cb`, "a function cannot be sent"],
    ["a function alone", fn, (r) => r, "a function cannot be sent"],
    ["a class (a function)", [Point], (r) => `${r}[0]`, "a function cannot be sent"],
    ["a symbol", [1, Symbol("s")], (r) => `${r}[1]`, "a symbol cannot be sent"],
    [
      "a circular reference",
      cycle,
      (r) => `${r}.self`,
      /^a circular reference \(back to items\[3\](\.v)?\) cannot be sent$/,
    ],
    [
      "a deeper cycle",
      deepCycle,
      (r) => `${r}.a.b[1]`,
      /^a circular reference \(back to items\[3\](\.v)?\.a\) cannot be sent$/,
    ],
    [
      "a cycle through a Set",
      setCycle,
      (r) => `[...${r}][0].back`,
      /^a circular reference \(back to items\[3\](\.v)?\) cannot be sent$/,
    ],
    [
      "a Map",
      { m: new Map([["k", 1]]) },
      (r) => `${r}.m`,
      "a Map cannot be sent (it would arrive as an object); send Object.fromEntries(map) or [...map]",
    ],
    [
      "a class instance",
      { p: new Point() },
      (r) => `${r}.p`,
      "a Point (an instance of a class) cannot be sent: " +
        "it would arrive as a plain object, without its class; send a plain object",
    ],
    [
      "an Array subclass",
      { s: Stack.from([1]) },
      (r) => `${r}.s`,
      /^a Stack \(an instance of a class\) cannot be sent/,
    ],
    [
      "an object with a prototype of its own",
      [Object.create({ inherited: 1 })],
      (r) => `${r}[0]`,
      "an object with a prototype of its own cannot be sent (what it inherits would be lost); send a plain object",
    ],
    [
      "an own key __proto__",
      { a: JSON.parse('{"__proto__": 1}') },
      (r) => `${r}.a["__proto__"]`,
      /^a key named "__proto__" cannot be sent/,
    ],
    [
      "an Error",
      { e: new TypeError("x") },
      (r) => `${r}.e`,
      "a TypeError cannot be sent; send its fields as a plain object, e.g. { name, message }",
    ],
    ["a Promise", [Promise.resolve(1)], (r) => `${r}[0]`, "a Promise cannot be sent"],
    ["a WeakMap", { w: new WeakMap() }, (r) => `${r}.w`, "a WeakMap cannot be sent"],
    ["a boxed string", { s: new String("x") }, (r) => `${r}.s`, "a String cannot be sent"],
    ["a SharedArrayBuffer", { b: new SharedArrayBuffer(4) }, (r) => `${r}.b`, "a SharedArrayBuffer cannot be sent"],
    ["a key that is no identifier", { "a b": [fn] }, (r) => `${r}["a b"][0]`, "a function cannot be sent"],
    ["a Set member", { s: new Set([1, Symbol("t")]) }, (r) => `[...${r}.s][1]`, "a symbol cannot be sent"],
    ["a Set in a Set", new Set([new Set([fn])]), (r) => `[...[...${r}][0]][0]`, "a function cannot be sent"],
    ["the first of several", [{ ok: 1 }, { f: fn }, Symbol("later")], (r) => `${r}[1].f`, "a function cannot be sent"],
  ];

  function refusal(encode: () => unknown): ItemEncodeError {
    try {
      encode();
    } catch (error) {
      if (error instanceof ItemEncodeError) return error;
      throw error;
    }
    throw new Error("was not refused");
  }

  for (const [name, value, pathFrom, reason] of refused) {
    test(name, () => {
      for (const [how, encode] of Object.entries(encoders)) {
        const sizes = [
          ["small", value, "items[3]"],
          ["large", large(value), "items[3].v"],
        ] as const;
        for (const [size, item, root] of sizes) {
          const error = refusal(() => encode(item, 3));
          const where = `${how} (${size})`;
          expect([where, error.path]).toEqual([where, pathFrom(root)]);
          if (typeof reason === "string") expect([where, error.reason]).toEqual([where, reason]);
          else expect(error.reason).toMatch(reason);
          expect(error.message).toBe(`${error.path}: ${error.reason}`);
          expect(error.index).toBe(3);
          expect(error.code).toBe("item-encode");
        }
      }
    });
  }

  test("an output is named by the name it is given, without an index", () => {
    const error = refusal(() => encodeItem({ cb: fn }, "outputs[2]"));
    expect(error.message).toBe("outputs[2].cb: a function cannot be sent");
    expect(error.index).toBeUndefined();
  });

  test("the error survives the wire as itself", () => {
    const sent = refusal(() => encodeItem({ meta: { cb: fn } }, 3));
    const wire = errorToWire(sent);
    expect(wire).toEqual({ code: "item-encode", message: "items[3].meta.cb: a function cannot be sent" });
    const received = errorFromWire(wire.code, wire.message);
    expect(received).toBeInstanceOf(ItemEncodeError);
    expect([received.message, received.code, received.name]).toEqual([sent.message, "item-encode", "ItemEncodeError"]);
  });

  test("nesting deeper than the stack goes is refused, not a crash", () => {
    const error = refusal(() => encodeItem(nested(1_000_000), 3));
    expect(error.path).toBe("items[3]");
    expect(error.reason).toMatch(/nested too deeply|MessagePack cannot hold it/);
  });

  test("a batch appends nothing for an item it refuses", () => {
    const batch = new RecordBatchBuilder(1024);
    batch.appendValue(RecordKind.Input, 0, 0, 1, "kept", 0);
    expect(() => batch.appendValue(RecordKind.Input, 0, 0, 2, { m: new Map() }, 1)).toThrow(ItemEncodeError);
    const refused = () => batch.appendValue(RecordKind.Input, 0, 0, 3, large(fn), 2);
    expect(refused).toThrow("items[2].v: a function cannot be sent");
    expect(batch.count).toBe(1);
  });
});
