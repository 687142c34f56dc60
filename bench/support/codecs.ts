/**
 * The framing bench's items and codec candidates: items `{ id, payload: <64-char string> }`, each
 * codec pcluster could use to turn them into record payloads and back, and the feed-frame and blob
 * helpers built on them.
 */
import { Decoder, Encoder } from "@msgpack/msgpack";
import type { Packr } from "msgpackr";
import { RecordBatchBuilder, decode, encode, encodeTransient } from "../../src/protocol/codec.ts";
import { RecordKind, RecordReader } from "../../src/protocol/record.ts";

export const PAYLOAD_CHARS = 64;

export interface Item {
  id: number;
  payload: string;
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** A deterministic 64-char ASCII payload, different for every id (so no cache sees repeats). */
export function payloadOf(id: number): string {
  let x = Math.imul(id + 1, 2654435761) >>> 0;
  let text = "";
  for (let i = 0; i < PAYLOAD_CHARS; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    text += ALPHABET[(x >>> 16) % ALPHABET.length];
  }
  return text;
}

export function itemsFrom(firstId: number, count: number): Item[] {
  return Array.from({ length: count }, (_, i) => ({ id: firstId + i, payload: payloadOf(firstId + i) }));
}

export interface ItemCodec {
  name: string;
  /** Bytes the caller may keep. */
  encode(item: Item): Uint8Array;
  /** Bytes valid until the next call; the batch builder copies them at once. */
  encodeForBatch(item: Item): Uint8Array;
  decode(bytes: Uint8Array, start: number, end: number): unknown;
}

/** src/protocol/codec.ts: its small-item reader and writer, msgpackr for anything else. */
export const msgpackr: ItemCodec = { name: "codec.ts", encode, encodeForBatch: encodeTransient, decode };

// Tuned: one Encoder and one Decoder reused for every value (the top-level `encode`/`decode` build new
// ones per call), `encodeSharedRef` where the bytes are copied at once. The other knobs of 3.1.3 do not
// help: `maxStrLength` and friends are only limits; the length above which strings go through
// TextDecoder is a module constant (200 bytes, so a 64-char payload is decoded in JS); `keyDecoder:
// null` measured slower than the default key cache; `rawStrings` changes what a decoded item is.
const msgpackEncoder = new Encoder();
const msgpackDecoder = new Decoder();
export const msgpackTuned: ItemCodec = {
  name: "@msgpack/msgpack",
  encode: (item) => msgpackEncoder.encode(item),
  encodeForBatch: (item) => msgpackEncoder.encodeSharedRef(item),
  decode: (bytes, start, end) => msgpackDecoder.decode(bytes.subarray(start, end)),
};

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();
export const json: ItemCodec = {
  name: "JSON",
  encode: (item) => textEncoder.encode(JSON.stringify(item)),
  encodeForBatch: (item) => textEncoder.encode(JSON.stringify(item)),
  decode: (bytes, start, end) => JSON.parse(textDecoder.decode(bytes.subarray(start, end))),
};

export const CODECS = [json, msgpackr, msgpackTuned];

/** A finished feed frame of `items`, as the root sends it. */
export function feedFrame(codec: ItemCodec, builder: RecordBatchBuilder, items: readonly Item[]): Uint8Array {
  for (const item of items) builder.append(RecordKind.Input, 0, 0, item.id, codec.encodeForBatch(item));
  return builder.finishFrame("feed");
}

/** The blob (records only) of a feed frame. */
export function blobOf(codec: ItemCodec, items: readonly Item[]): Uint8Array {
  const builder = new RecordBatchBuilder();
  for (const item of items) builder.append(RecordKind.Input, 0, 0, item.id, codec.encode(item));
  const length = builder.byteLength;
  const frame = builder.finishFrame("feed");
  return frame.subarray(frame.length - length);
}

/**
 * Outputs keyed by data, as a word count's per-line counts are: `count` maps of 8 keys each, drawn from
 * a vocabulary of `vocabulary` words with a log-uniform (roughly Zipf) frequency, as words in text are.
 */
export function keyedOutputs(count: number, vocabulary = 60_000): Record<string, number>[] {
  let x = 7;
  const next = () => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x / 2 ** 32;
  };
  const word = () => `w${Math.floor(Math.exp(next() * Math.log(vocabulary))).toString(36)}`;
  return Array.from({ length: count }, (_, i) => {
    const counts: Record<string, number> = {};
    while (Object.keys(counts).length < 8) counts[word()] = (i % 3) + 1;
    return counts;
  });
}

/** The blob (records only) of a results frame of `outputs`, each encoded by `codec`. */
export function keyedBlobOf(codec: ItemCodec, outputs: readonly Record<string, number>[]): Uint8Array {
  const builder = new RecordBatchBuilder();
  for (const [index, output] of outputs.entries()) {
    builder.append(RecordKind.Output, 0, 0, index, codec.encode(output as unknown as Item));
  }
  const length = builder.byteLength;
  const frame = builder.finishFrame("results");
  return frame.subarray(frame.length - length);
}

/** How a worker reads a blob: record by record, each payload decoded in place. */
export function decodeBlob(codec: ItemCodec, blob: Uint8Array, onItem: (item: unknown) => void): void {
  const reader = new RecordReader(blob);
  while (reader.next()) onItem(codec.decode(blob, reader.payloadStart, reader.payloadEnd));
}

export function sameItem(a: unknown, b: Item): boolean {
  const x = a as Item;
  return typeof x === "object" && x !== null && x.id === b.id && x.payload === b.payload && Object.keys(x).length === 2;
}

/** Fails the bench (rather than timing nonsense) if a candidate does not round-trip. */
export function checkRoundTrips(items: readonly Item[], packr: Packr): void {
  for (const codec of CODECS) {
    const bytes = codec.encode(items[0]!);
    if (!sameItem(codec.decode(bytes, 0, bytes.length), items[0]!))
      throw new Error(`${codec.name}: an item does not round-trip`);
    const decoded: unknown[] = [];
    decodeBlob(codec, blobOf(codec, items), (item) => decoded.push(item));
    if (decoded.length !== items.length || !decoded.every((item, i) => sameItem(item, items[i]!))) {
      throw new Error(`${codec.name}: a blob of ${items.length} items does not round-trip`);
    }
  }
  const array = packr.unpack(packr.pack(items)) as unknown[];
  if (!array.every((item, i) => sameItem(item, items[i]!))) throw new Error("msgpackr: the array does not round-trip");
}
