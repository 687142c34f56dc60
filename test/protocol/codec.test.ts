import { describe, expect, test } from "bun:test";
import { decode as referenceDecode } from "@msgpack/msgpack";
import { Packr, RESET_BUFFER_MODE as msgpackrResetMode, Unpackr } from "msgpackr";
import { ItemEncodeError } from "../../src/errors.ts";
import {
  RESET_BUFFER_MODE,
  RecordBatchBuilder,
  byteArrayHead,
  decode,
  stringHead,
  decodeMessage,
  encode,
  encodeItem,
  encodeTransient,
} from "../../src/protocol/codec.ts";
import { RECORD_HEADER_BYTES, RecordKind, RecordReader } from "../../src/protocol/record.ts";
import { FRAME_HEADER_BYTES } from "../../src/protocol/frame.ts";
import { arrival, difference } from "../support/faithful.ts";
import { REPO } from "../support/processes.ts";
import { seededRandom } from "../support/random.ts";

/**
 * `decode` reads small items (maps, arrays, ASCII strings, 32-bit integers, floats, nil, booleans) with
 * its own short reader and leaves everything else to msgpackr. Whatever path an item takes, the result
 * must be exactly msgpackr's: the same value, or an error where msgpackr throws.
 */
const msgpackr = new Unpackr({ useRecords: false, int64AsType: "bigint", copyBuffers: true });
/** msgpackr as codec.ts configures it for writing items: what `encodeItem` must agree with. */
const msgpackrWriter = new Packr({ useRecords: false, moreTypes: true, variableMapSize: true });

function outcome(read: () => unknown): { value: unknown } | { error: true } {
  try {
    return { value: read() };
  } catch {
    return { error: true };
  }
}

const values: unknown[] = [
  0,
  1,
  127,
  128,
  255,
  256,
  65_535,
  65_536,
  2 ** 32 - 1,
  2 ** 32,
  2 ** 53 - 1,
  -1,
  -32,
  -33,
  -128,
  -129,
  -32_768,
  -32_769,
  -(2 ** 31),
  -(2 ** 31) - 1,
  0.5,
  -1.25,
  Number.MAX_VALUE,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  1e-300,
  null,
  true,
  false,
  "",
  "a",
  "x".repeat(31),
  "y".repeat(32),
  "z".repeat(200),
  "héllo",
  "日本",
  "emoji 🎉",
  [],
  [1, [2, [3, [4]]]],
  Array.from({ length: 20 }, (_, i) => i),
  {},
  { id: 1, payload: "p".repeat(64) },
  { a: { b: { c: [null, true, "s"] } } },
  { "": 1, ["k".repeat(31)]: 2 },
  { ключ: "value" },
  { constructor: 1, toString: "x" },
  { __proto__: null, polluted: false },
  JSON.parse('{"__proto__": {"polluted": true}}'),
  Uint8Array.of(1, 2, 3),
  { bin: new Uint8Array(10) },
  new Date(1_700_000_000_000),
  12345678901234,
];

describe("decode", () => {
  test("map keys by the tens of thousands (a vocabulary) decode exactly, first read and again from the key caches", () => {
    // Every key starts with "w" and ends with "x": they share their length and first and last byte by
    // thousands, so all but the first few go to the second key table, and 60 000 of them outgrow both.
    const word = (i: number) => (i % 97 === 0 ? `wключ${i.toString(36)}x` : `w${i.toString(36)}x`);
    const items = Array.from({ length: 15_000 }, (_, item) =>
      Object.fromEntries(Array.from({ length: 8 }, (_, k) => [word((item * 7919 + k * 104_729) % 60_000), item + k])),
    );
    const encoded = items.map((item) => encode(item));
    for (const pass of [1, 2]) {
      for (const [index, bytes] of encoded.entries()) {
        const decoded = decode(bytes);
        if (!Bun.deepEquals(decoded, items[index])) {
          throw new Error(
            `pass ${pass}, item ${index}: decoded ${Bun.inspect(decoded)}, sent ${Bun.inspect(items[index])}`,
          );
        }
      }
    }
    expect(decode(encoded[42]!)).toEqual(msgpackr.unpack(encoded[42]!));
  });

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
      for (let j = 0; j < bytes.length; j++)
        bytes[j] =
          random() < 0.5 ? Math.floor(random() * 256) : [0x81, 0xa1, 0x61, 0x92, 0xc0, 0x01][Math.floor(random() * 6)]!;
      const ours = outcome(() => decode(bytes));
      const theirs = outcome(() => msgpackr.unpack(bytes));
      if ("error" in theirs || "error" in ours) expect("error" in ours).toBe("error" in theirs);
      else expect(ours.value).toEqual(theirs.value);
    }
  });

  test("text: UTF-8 of every width and head size reads as msgpackr reads it", () => {
    const texts = [
      "é",
      "é".repeat(15),
      "é".repeat(16),
      "é".repeat(127),
      "é".repeat(128),
      "日本語".repeat(30),
      "🎉".repeat(7),
      "🎉".repeat(8),
      "a🎉b",
      "\u0080\u07ff\u0800\uffff",
      "x".repeat(40) + "ü",
      "\ud83d\ude00",
    ];
    for (const text of texts) {
      for (const value of [text, { text }, [text, 1]]) {
        const bytes = encode(value);
        expect(decode(bytes)).toEqual(msgpackr.unpack(bytes));
        expect(decode(bytes)).toEqual(value);
        expect(referenceDecode(bytes) as unknown).toEqual(value);
      }
    }
  });

  test("malformed UTF-8 reads as msgpackr reads it (or fails as it fails)", () => {
    const malformed = [
      [0xc0, 0x80],
      [0xc1, 0xbf],
      [0xe0, 0x80, 0x80],
      [0xed, 0xa0, 0x80],
      [0xed, 0xbf, 0xbf],
      [0xf0, 0x80, 0x80, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
      [0xf5, 0x80, 0x80, 0x80],
      [0x80],
      [0xbf, 0x41],
      [0xc3],
      [0xe6, 0x97],
      [0xf0, 0x9f, 0x8e],
      [0xc3, 0x41],
      [0xff],
      [0xfe, 0x41],
    ];
    for (const sequence of malformed) {
      for (const prefix of [[], [0x61, 0x62]]) {
        const text = [...prefix, ...sequence];
        const bytes = Uint8Array.of(0xa0 | text.length, ...text);
        expect(outcome(() => decode(bytes))).toEqual(outcome(() => msgpackr.unpack(bytes)));
      }
    }
  });

  test("a binary value gets bytes of its own and keeps its class: a Uint8Array, a Buffer", () => {
    for (const pad of ["", "p".repeat(300)]) {
      const bytes = encodeItem({ pad, bin: Uint8Array.of(9, 8, 7), buffer: Buffer.from([6, 5]) });
      const value = decode(bytes) as { bin: Uint8Array; buffer: Buffer };
      expect(value.bin.constructor).toBe(Uint8Array);
      expect(value.buffer.constructor).toBe(Buffer);
      bytes.fill(0);
      expect([...value.bin, ...value.buffer]).toEqual([9, 8, 7, 6, 5]);
      expect(value.bin.buffer.byteLength).toBe(3); // not a view of anything larger
    }
  });
});

/**
 * `encodeItem` writes small values of plain data (plain objects and arrays, strings, numbers, booleans,
 * nil, undefined, 64-bit bigints) itself and leaves everything else to msgpackr, after checking it for
 * what cannot be carried (test/protocol/carried.test.ts has every kind). Its bytes may differ from
 * msgpackr's, but they must read back as the same value msgpackr would give, and as the value itself.
 */
function randomValue(random: () => number, depth: number): unknown {
  const pick = Math.floor(random() * (depth >= 4 ? 9 : 12));
  const ascii = (max: number) =>
    Array.from({ length: Math.floor(random() * max) }, () => String.fromCharCode(32 + Math.floor(random() * 95))).join(
      "",
    );
  switch (pick) {
    case 0: {
      const bounds = [0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1];
      const sign = random() < 0.5 ? -1 : 1;
      return sign * (bounds[Math.floor(random() * bounds.length)]! + Math.floor(random() * 3) - 1);
    }
    case 1:
      return Math.floor(random() * 200) - 100;
    case 2:
      return [random() * 1e6 - 5e5, -0, Number.NaN, Number.NEGATIVE_INFINITY, 1e300, 5e-324][Math.floor(random() * 6)];
    case 3:
      return ascii(random() < 0.8 ? 40 : 400);
    case 4:
      return ascii(20) + ["é", "日本", "🎉", "\ud800", "\u0080"][Math.floor(random() * 5)] + ascii(20);
    case 5:
      return [true, false, null, undefined][Math.floor(random() * 4)];
    case 6:
      return [
        new Date(Math.floor(random() * 2e12)),
        Uint8Array.of(1, 2, 3),
        new Map([["k", 1]]),
        10n ** 20n,
        new Set([1]),
      ][Math.floor(random() * 5)];
    case 7:
      return random() < 0.5 ? "x".repeat(70_000) : Array.from({ length: 3000 }, (_, i) => i);
    case 8:
      return ascii(8);
    case 9:
    case 10: {
      const object: Record<string, unknown> = {};
      const keys = Math.floor(random() * (random() < 0.2 ? 40 : 6));
      for (let i = 0; i < keys; i++) object[random() < 0.05 ? `ключ${i}` : ascii(12)] = randomValue(random, depth + 1);
      return object;
    }
    default:
      return Array.from({ length: Math.floor(random() * (random() < 0.2 ? 40 : 6)) }, () =>
        randomValue(random, depth + 1),
      );
  }
}

/** The value msgpackr's own bytes decode to, or "throws" when msgpackr cannot encode it. */
function expected(value: unknown): unknown {
  try {
    return msgpackr.unpack(msgpackrWriter.pack(value));
  } catch {
    return "throws";
  }
}

function ours(value: unknown): Uint8Array | "refused" {
  try {
    return encodeItem(value);
  } catch (error) {
    if (error instanceof ItemEncodeError) return "refused";
    throw error;
  }
}

/**
 * We refuse `value` (an ItemEncodeError) wherever msgpackr does, and maybe more often; where both
 * accept it, our bytes decode (by msgpackr and by `decode`) to what msgpackr's own bytes decode to, and
 * to the value itself (as the README says it arrives). Returns whether we refused.
 */
function expectAgreement(value: unknown): boolean {
  const bytes = ours(value);
  const wanted = expected(value);
  if (wanted === "throws") expect(bytes).toBe("refused");
  if (bytes === "refused" || wanted === "throws") return bytes === "refused";
  expect(msgpackr.unpack(bytes)).toEqual(wanted);
  const decoded = decode(bytes);
  expect(difference(decoded, wanted)).toBeUndefined();
  expect(difference(decoded, arrival(value))).toBeUndefined();
  return false;
}

describe("encode", () => {
  test("every kind of value decodes to what msgpackr's encoding of it decodes to", () => {
    const ownProto = (value: unknown) =>
      typeof value === "object" && value !== null && Object.hasOwn(value, "__proto__");
    const carried = values.filter((value) => !ownProto(value)); // an own key "__proto__" is refused
    for (const value of [
      ...carried,
      { list: carried },
      -0,
      { big: 2 ** 40, neg: -(2 ** 40) },
      undefined,
      { u: undefined },
      [1, undefined],
      10n,
      [2n ** 64n - 1n, -(2n ** 63n)],
    ]) {
      const bytes = ours(value);
      if (bytes === "refused") throw new Error(`encodeItem refused ${Bun.inspect(value)}`);
      expect(msgpackr.unpack(bytes)).toEqual(expected(value));
      expect(decode(bytes)).toEqual(expected(value));
    }
  });

  test("small plain values are standard MessagePack that @msgpack/msgpack reads alike", () => {
    for (const value of [
      { id: 7, payload: "q".repeat(64) },
      [1, -2, 3.5, "s", null, true],
      "t".repeat(300),
      { nested: { a: [1, { b: "c" }] } },
      4_000_000_000,
      -70_000,
    ]) {
      expect(referenceDecode(encode(value)) as unknown).toEqual(referenceDecode(msgpackrWriter.pack(value)) as unknown);
    }
  });

  test("maps of 16 keys and more, and the 8 KiB limit of the small writer", () => {
    const keys = (count: number) => Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}`, i]));
    for (const count of [15, 16, 17]) expect(decode(encode(keys(count)))).toEqual(keys(count));
    const wide = keys(300);
    const large = { text: "a".repeat(10_000), list: Array.from({ length: 100 }, (_, i) => ({ i })) };
    for (const value of [wide, large, { a: wide }, [wide, wide]])
      expect(decode(encode(value))).toEqual(expected(value));
  });

  test("random values: the same value as msgpackr and as itself where both accept; refused where msgpackr refuses (5000 seeded cases)", () => {
    const random = seededRandom(20261128);
    let refused = 0;
    for (let i = 0; i < 5000; i++) {
      if (expectAgreement(randomValue(random, 0))) refused++;
    }
    // Maps are among the random values, and refused; most values are not.
    expect(refused).toBeGreaterThan(0);
    expect(refused).toBeLessThan(2500);
  }, 60_000);

  test("encoded bytes are never written over by later encodes; transient bytes are right until the next", () => {
    const random = seededRandom(7);
    const kept = Array.from({ length: 20_000 }, (_, i) => {
      const value = { i, text: "v".repeat(Math.floor(random() * 200)) };
      return { value, bytes: encode(value) };
    });
    for (const { value, bytes } of kept) expect(decode(bytes)).toEqual(value);
    for (let i = 0; i < 2000; i++) {
      const value = [i, "w".repeat(i % 300)];
      expect(decode(encodeTransient(value))).toEqual(value);
    }
  });

  test("large values (msgpackr's): transient ones share a buffer; kept ones stay right between them", () => {
    const random = seededRandom(11);
    const value = (i: number) => ({ i, text: "x".repeat(9000 + Math.floor(random() * 30_000)) });
    // 300 values of 9–39 KB one after another, each written where the last one was: the buffer grows
    // to the largest and serves the rest, instead of being used up and replaced.
    const places = new Set<string>();
    const buffers = new Map<ArrayBufferLike, number>();
    for (let i = 0; i < 300; i++) {
      const item = value(i);
      const bytes = encodeTransient(item);
      expect(decode(bytes)).toEqual(item);
      if (!buffers.has(bytes.buffer)) buffers.set(bytes.buffer, buffers.size);
      places.add(`${buffers.get(bytes.buffer)}@${bytes.byteOffset}`);
    }
    expect(places.size).toBeLessThanOrEqual(3);
    const kept: { item: unknown; bytes: Uint8Array }[] = [];
    for (let i = 0; i < 300; i++) {
      const item = value(i);
      if (i % 3 === 0) kept.push({ item, bytes: encodeItem(item) });
      else expect(decode(encodeTransient(item))).toEqual(item);
    }
    for (const { item, bytes } of kept) expect(decode(bytes)).toEqual(item);
  });

  test("after a value of megabytes, small kept values do not each pin a buffer of its size", () => {
    const large = encodeItem({ text: "y".repeat(8 << 20) });
    expect(large.buffer.byteLength).toBeGreaterThan(8 << 20);
    const transient = encodeTransient({ text: "z".repeat(6 << 20) });
    expect(transient.length).toBeGreaterThan(6 << 20);
    // Past the small writer (over 8 KiB), so msgpackr's own buffer holds them.
    for (let i = 0; i < 10; i++) {
      const bytes = encodeItem({ i, text: "s".repeat(10_000) });
      expect(decode(bytes)).toEqual({ i, text: "s".repeat(10_000) });
      expect(bytes.buffer.byteLength).toBeLessThan(1 << 20);
    }
  });

  test("the transient encode's flag is msgpackr's RESET_BUFFER_MODE", () => {
    expect(RESET_BUFFER_MODE).toBe(msgpackrResetMode);
  });

  test("a thread that meets only small plain values never loads msgpackr; the first other value loads it", () => {
    // A fresh process: this test file's own thread has long loaded it.
    const script = `
      import { decode, encodeItem, encodeTransient, msgpackrLoaded } from "./src/protocol/codec.ts";
      const small = [1, -7, 1.5, "two", "ü🎉", { three: [3, null, true], four: undefined }, undefined];
      for (const value of small) decode(encodeItem(value)), decode(encodeTransient(value));
      const before = msgpackrLoaded();
      const set = decode(encodeItem(new Set([1, 2])));
      console.log(JSON.stringify({ before, after: msgpackrLoaded(), set: [...set] }));
    `;
    const run = Bun.spawnSync([process.execPath, "-e", script], { cwd: REPO, stderr: "pipe" });
    expect(run.stderr.toString()).toBe("");
    expect(JSON.parse(run.stdout.toString())).toEqual({ before: false, after: true, set: [1, 2] });
  });

  test("a cycle, a function or a symbol is refused (msgpackr would throw, or write nil)", () => {
    const cycle: Record<string, unknown> = { a: 1 };
    cycle.self = cycle;
    for (const value of [cycle, { f: () => 1 }, Symbol("s"), { s: Symbol("t") }, [() => 2]])
      expect(ours(value)).toBe("refused");
    expect(() => encodeItem([0, { s: Symbol("t") }], 7)).toThrow("items[7][1].s: a symbol cannot be sent");
  });
});

describe("byteArrayHead", () => {
  test("is the head msgpackr writes before a Buffer's or a Uint8Array's bytes, at every width; none for others", () => {
    for (const size of [0, 1, 253, 254, 255, 256, 65_533, 65_534, 65_535, 65_536, 70_000]) {
      for (const bytes of [new Uint8Array(size).fill(7), Buffer.alloc(size, 7)]) {
        const head = byteArrayHead(bytes)!;
        const encoded = encodeItem(bytes);
        expect([bytes.constructor.name, size, [...encoded.subarray(0, head.length)]]).toEqual([
          bytes.constructor.name,
          size,
          [...head],
        ]);
        expect(encoded.length).toBe(head.length + size);
      }
    }
    expect(byteArrayHead(new Uint16Array(4))).toBeUndefined();
    expect(byteArrayHead(new DataView(new ArrayBuffer(4)))).toBeUndefined();
  });
});

describe("stringHead", () => {
  test("is the head msgpackr writes before a string's UTF-8, at every width", () => {
    const { Packr } = require("msgpackr") as typeof import("msgpackr");
    const reference = new Packr({ useRecords: false, moreTypes: true, variableMapSize: true });
    for (const size of [32, 254, 255, 256, 65_534, 65_535, 65_536, 70_000]) {
      const text = `é${"x".repeat(size - 2)}`; // size bytes of UTF-8
      const head = stringHead(size);
      const encoded = reference.pack(text);
      expect([size, [...encoded.subarray(0, head.length)]]).toEqual([size, [...head]]);
      expect(encoded.length).toBe(head.length + size);
    }
  });
});

describe("RecordBatchBuilder", () => {
  /** Every record of `blob` as [kind, stage, flags, id, decoded payload]. */
  function readAll(blob: Uint8Array): unknown[][] {
    const records: unknown[][] = [];
    const reader = new RecordReader(blob);
    while (reader.next())
      records.push([
        reader.kind,
        reader.stage,
        reader.flags,
        reader.id,
        decode(blob, reader.payloadStart, reader.payloadEnd),
      ]);
    return records;
  }

  test("appendValue writes what append(encodeItem(value)) writes, small or not, past the buffer's first size", () => {
    const values = [
      { id: 1, payload: "p".repeat(64) },
      "x".repeat(20_000),
      new Date(5),
      [1, 2, 3],
      null,
      { big: "y".repeat(9000) },
    ];
    const viaValue = new RecordBatchBuilder(64); // tiny, so that it grows
    const viaBytes = new RecordBatchBuilder(64);
    for (let i = 0; i < 300; i++) {
      const value = values[i % values.length];
      viaValue.appendValue(RecordKind.Input, i % 3, 0, i, value);
      viaBytes.append(RecordKind.Input, i % 3, 0, i, encodeItem(value));
    }
    expect(viaValue.count).toBe(300);
    expect(readAll(viaValue.takeRecords())).toEqual(readAll(viaBytes.takeRecords()));
  });

  test("appendValue of a value that cannot be carried throws an ItemEncodeError and appends nothing", () => {
    const batch = new RecordBatchBuilder();
    batch.appendValue(RecordKind.Input, 0, 0, 1, "kept");
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    expect(() => batch.appendValue(RecordKind.Input, 0, 0, 2, cycle, 4)).toThrow(
      "items[4].self: a circular reference (back to items[4]) cannot be sent",
    );
    expect(batch.count).toBe(1);
    expect(readAll(batch.takeRecords())).toEqual([[RecordKind.Input, 0, 0, 1, "kept"]]);
  });

  test("taken records and finished frames stay as they were while the builder goes on", () => {
    const batch = new RecordBatchBuilder(1024);
    batch.appendValue(RecordKind.Output, 0, 0, 1, { n: 1 });
    const taken = batch.takeRecords();
    batch.appendValue(RecordKind.Output, 0, 0, 2, { n: 2 });
    const frame = batch.finishFrame("results", { idle: 1 });
    for (let i = 0; i < 1000; i++)
      batch.appendValue(RecordKind.Output, 0, 0, 3 + i, { n: 3 + i, pad: "z".repeat(100) });
    expect(readAll(taken)).toEqual([[RecordKind.Output, 0, 0, 1, { n: 1 }]]);
    const message = decodeMessage(frame.subarray(FRAME_HEADER_BYTES)) as { t: string; idle: number; blob: Uint8Array };
    expect(message.t).toBe("results");
    expect(readAll(message.blob)).toEqual([[RecordKind.Output, 0, 0, 2, { n: 2 }]]);
    expect(batch.count).toBe(1000);
  });

  test("a copied frame is the finished frame's bytes, and stays as it was while the builder reuses its buffer", () => {
    const finished = new RecordBatchBuilder(1024);
    const copied = new RecordBatchBuilder(1024);
    for (const batch of [finished, copied]) batch.appendValue(RecordKind.Input, 0, 0, 7, { n: 7 });
    const frame = copied.copyFrame("feed");
    expect(frame).toEqual(finished.finishFrame("feed"));
    expect(copied.count).toBe(0);
    for (let i = 0; i < 50; i++) copied.appendValue(RecordKind.Input, 0, 0, 8 + i, { n: 8 + i, pad: "z".repeat(40) });
    const message = decodeMessage(frame.subarray(FRAME_HEADER_BYTES)) as { t: string; blob: Uint8Array };
    expect(message.t).toBe("feed");
    expect(readAll(message.blob)).toEqual([[RecordKind.Input, 0, 0, 7, { n: 7 }]]);
    const next = decodeMessage(copied.copyFrame("feed").subarray(FRAME_HEADER_BYTES)) as { blob: Uint8Array };
    expect(readAll(next.blob)).toHaveLength(50);
  });

  test("records appended by reference come out as pieces, equal to the frame of the same records copied", () => {
    const records = (seed: number, count: number) => {
      const batch = new RecordBatchBuilder();
      for (let i = 0; i < count; i++)
        batch.append(RecordKind.Input, 0, 0, seed + i, encode({ seed, i, pad: "s".repeat(90) }));
      return { bytes: batch.takeRecords(), count };
    };
    const spans = [records(0, 1), records(100, 60), records(200, 2), records(300, 80)]; // small ones are copied
    const copied = new RecordBatchBuilder(256);
    const referenced = new RecordBatchBuilder(256);
    for (const batch of [copied, referenced]) batch.append(RecordKind.Input, 0, 0, 7, encode("first, copied"));
    for (const { bytes, count } of spans) {
      copied.appendRecords(bytes, count);
      referenced.appendRecordsByReference(bytes, count);
    }
    expect(referenced.hasReferences).toBe(true);
    expect(referenced.count).toBe(copied.count);
    expect(referenced.byteLength).toBe(copied.byteLength);
    const pieces = referenced.finishFramePieces("feed", { n: 3 });
    expect(pieces).toContain(spans[1]!.bytes); // the large spans go as they are
    expect(pieces).toContain(spans[3]!.bytes);
    expect(Buffer.concat(pieces)).toEqual(Buffer.from(copied.finishFrame("feed", { n: 3 })));
    // The builder starts over; its head bytes were copied out, so a next frame does not change them.
    const before = Buffer.concat(pieces);
    referenced.append(RecordKind.Input, 0, 0, 9, encode("next"));
    referenced.finishFramePieces("feed");
    expect(Buffer.concat(pieces)).toEqual(before);
    // Any way out that gives one buffer copies the referenced records in.
    const taken = new RecordBatchBuilder(256);
    taken.appendRecordsByReference(spans[1]!.bytes, 60);
    taken.append(RecordKind.Input, 0, 0, 1, encode("after"));
    const all = taken.takeRecords();
    expect(all.subarray(0, spans[1]!.bytes.length)).toEqual(spans[1]!.bytes);
    expect(all.length).toBe(spans[1]!.bytes.length + RECORD_HEADER_BYTES + encode("after").length);
  });

  test("records() reads in place and clear() empties the batch", () => {
    const batch = new RecordBatchBuilder();
    batch.appendValue(RecordKind.Output, 1, 0, 9, [1, "a"]);
    expect(readAll(batch.records())).toEqual([[RecordKind.Output, 1, 0, 9, [1, "a"]]]);
    batch.clear();
    expect(batch.count).toBe(0);
    expect(batch.records().length).toBe(0);
    batch.appendValue(RecordKind.Output, 0, 0, 10, "b");
    expect(readAll(batch.records())).toEqual([[RecordKind.Output, 0, 0, 10, "b"]]);
  });
});

describe("decodeMessage", () => {
  const reference = new Unpackr({ useRecords: false, int64AsType: "number" });
  const blob = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);

  test("batch envelopes read without msgpackr are what msgpackr reads, their blobs views of the bytes", () => {
    const messages: unknown[] = [
      { t: "feed", blob },
      { t: "results", idle: 0, blob: blob.subarray(0, 0) },
      { t: "results", idle: 200, blob },
      { t: "credit", bytes: 70_000 },
      { t: "credit", bytes: 4_000_000_000 },
      { t: "part", left: 3, blob: new Uint8Array(70_000) },
      {},
    ];
    for (const message of messages) {
      const bytes = encode(message);
      const decoded = decodeMessage(bytes) as Record<string, unknown>;
      expect(decoded).toEqual(reference.unpack(bytes));
      expect(Object.getPrototypeOf(decoded)).toBe(Object.prototype);
      const field = decoded.blob as Uint8Array | undefined;
      if (field !== undefined && field.length > 0) expect(field.buffer).toBe(bytes.buffer);
    }
  });

  test("anything else is left to msgpackr, with the same result", () => {
    const messages: unknown[] = [
      { t: "req", id: 1, cmd: "setup", args: { name: "x", tasks: ["a#b"] } },
      { t: "event", name: "réinit", data: null },
      { t: "err", code: "setup", message: "no", id: -1 },
      { t: "res", id: 2, result: 1.5 },
      { __proto__: "x", t: "feed" },
      [1, 2],
      "text",
    ];
    for (const message of messages) {
      const bytes = encode(message);
      expect(decodeMessage(bytes)).toEqual(reference.unpack(bytes));
    }
    // A map cut short is not read as a shorter one.
    const cut = encode({ t: "credit", bytes: 70_000 }).subarray(0, 12);
    expect(() => decodeMessage(cut)).toThrow();
  });
});
