/**
 * Small items without msgpackr: a reader and a writer for the subset of MessagePack that most items are
 * made of — maps with string keys, arrays, strings, numbers, booleans, nil and undefined. Both
 * give up on anything else (the reader returns NOT_SMALL, the writer -1), and codec.ts then hands the
 * item to msgpackr, so every item still encodes and decodes exactly as msgpackr would have it.
 *
 * Why: msgpackr costs ~450 ns to encode and ~700 ns to decode an 80-byte item here, much of it in
 * native calls per string, and its large reader and writer cost every fresh worker thread tens of
 * milliseconds of JIT compilation. These short loops do the same items in a fraction of that (see
 * `bun run bench framing`). Each thread has its own buffers: this module is instantiated per thread.
 */

// ---- reading ------------------------------------------------------------------------------------
//
// The reader reads an item where it lies (a ring slot, a frame). It gives up (NOT_SMALL) on any other
// type, malformed UTF-8, the key "__proto__" (msgpackr renames it), bytes cut short or left over. What
// it does decode, it decodes as msgpackr does.

/** Items up to this long are tried by the reader first (the writer's longest output). */
export const SMALL_READ_BYTES = 8192;

/** What `decodeSmall` returns when it leaves an item to msgpackr. */
export const NOT_SMALL = Symbol("not a small item");
/** Buffer's native slices (in Bun and Node, untyped), which work on any Uint8Array. */
type NativeSlice = (this: Uint8Array, start: number, end: number) => string;
const { latin1Slice, utf8Slice } = Buffer.prototype as unknown as { latin1Slice: NativeSlice; utf8Slice: NativeSlice };
/** Big-endian float64 bytes are turned around here to be read as a number. */
const float = new Float64Array(1);
const floatBytes = new Uint8Array(float.buffer);
let src: Uint8Array = floatBytes;
let smallAt = 0;
let smallEnd = 0;

/** Decodes `bytes[start, end)` if it is a small item; NOT_SMALL if msgpackr must. */
export function decodeSmall(bytes: Uint8Array, start: number, end: number): unknown {
  src = bytes;
  smallAt = start;
  smallEnd = end;
  const value = readSmall();
  return smallAt === smallEnd ? value : NOT_SMALL;
}

function readSmall(): unknown {
  if (smallAt >= smallEnd) return NOT_SMALL;
  const token = src[smallAt++]!;
  if (token < 0x80) return token; // positive fixint
  if (token < 0x90) return readSmallMap(token & 0x0f);
  if (token < 0xa0) return readSmallArray(token & 0x0f);
  if (token < 0xc0) return readString(token & 0x1f);
  if (token >= 0xe0) return token - 0x100; // negative fixint
  const at = smallAt;
  switch (token) {
    case 0xc0:
      return null;
    case 0xc2:
      return false;
    case 0xc3:
      return true;
    case 0xcb:
      return take(8) ? readFloat(at) : NOT_SMALL;
    case 0xcc:
      return take(1) ? src[at]! : NOT_SMALL;
    case 0xcd:
      return take(2) ? readUint16(at) : NOT_SMALL;
    case 0xce:
      return take(4) ? readInt32(at) >>> 0 : NOT_SMALL;
    case 0xd0:
      return take(1) ? (src[at]! << 24) >> 24 : NOT_SMALL;
    case 0xd1:
      return take(2) ? (readUint16(at) << 16) >> 16 : NOT_SMALL;
    case 0xd2:
      return take(4) ? readInt32(at) : NOT_SMALL;
    case 0xd9:
      return take(1) ? readString(src[at]!) : NOT_SMALL;
    case 0xda:
      return take(2) ? readString(readUint16(at)) : NOT_SMALL;
    case 0xd4: // fixext 1: msgpackr's undefined is type 0, data 0; other extensions are msgpackr's
      return take(2) && src[at] === 0 && src[at + 1] === 0 ? undefined : NOT_SMALL;
    case 0xdc:
      return take(2) ? readSmallArray(readUint16(at)) : NOT_SMALL;
    case 0xde:
      return take(2) ? readSmallMap(readUint16(at)) : NOT_SMALL;
    default:
      return NOT_SMALL;
  }
}

/** Steps over the `bytes` of a value's fixed-size part if they are all there. */
function take(bytes: number): boolean {
  if (smallAt + bytes > smallEnd) return false;
  smallAt += bytes;
  return true;
}

function readUint16(at: number): number {
  return (src[at]! << 8) | src[at + 1]!;
}

function readInt32(at: number): number {
  return (src[at]! << 24) | (src[at + 1]! << 16) | (src[at + 2]! << 8) | src[at + 3]!;
}

function readFloat(at: number): number {
  for (let i = 0; i < 8; i++) floatBytes[7 - i] = src[at + i]!;
  return float[0]!;
}

function readSmallArray(length: number): unknown {
  if (length > smallEnd - smallAt) return NOT_SMALL; // each element takes a byte at least
  const array = new Array(length);
  for (let i = 0; i < length; i++) {
    const value = readSmall();
    if (value === NOT_SMALL) return NOT_SMALL;
    array[i] = value;
  }
  return array;
}

function readSmallMap(length: number): unknown {
  const object: Record<string, unknown> = {};
  for (let i = 0; i < length; i++) {
    if (smallAt >= smallEnd) return NOT_SMALL;
    const token = src[smallAt]!;
    if (token < 0xa0 || token >= 0xc0) return NOT_SMALL; // keys other than short strings: msgpackr's rules
    smallAt++;
    const key = readKey(token & 0x1f);
    if (key === undefined || key === "__proto__") return NOT_SMALL;
    const value = readSmall();
    if (value === NOT_SMALL) return NOT_SMALL;
    object[key] = value;
  }
  return object;
}

/**
 * Keys seen before: most items repeat the same few keys, and a key string that already exists is both
 * cheaper to get and cheaper to store under than a new one. Two tables:
 *   - `keyCache`, by length and first and last byte, its keys' bytes kept beside them: the few keys of
 *     most items, each found with a byte compare. A slot, once taken, is kept: keys that come and go
 *     must not copy their bytes again and again;
 *   - `moreKeys`, for outputs keyed by data (a word count's: a vocabulary of tens of thousands), by a
 *     hash of every byte, ASCII keys only: their characters are their bytes, so a key is checked against
 *     the bytes without a copy of them, and a miss costs little more than the string itself.
 */
const keyCache: Array<{ bytes: Uint8Array; key: string } | undefined> = new Array(4096);
const MORE_KEY_SLOTS = 1 << 14;
const moreKeys: Array<string | undefined> = new Array(MORE_KEY_SLOTS);

/** A map key of `length` bytes at `smallAt`, or undefined where `readString` gives up. */
function readKey(length: number): string | undefined {
  const start = smallAt;
  const end = start + length;
  if (end > smallEnd) return undefined;
  const slot = ((length << 7) ^ (src[start]! << 4) ^ src[end - 1]!) & 4095;
  const cached = keyCache[slot];
  if (cached !== undefined) {
    const bytes = cached.bytes;
    if (bytes.length === length) {
      let same = true;
      for (let i = 0; i < length; i++) {
        if (bytes[i] !== src[start + i]) {
          same = false;
          break;
        }
      }
      if (same) {
        smallAt = end;
        return cached.key;
      }
    }
    return readMoreKey(start, end);
  }
  const key = readString(length);
  if (key === NOT_SMALL) return undefined;
  keyCache[slot] = { bytes: src.slice(start, end), key: key as string };
  return key as string;
}

/** A key whose `keyCache` slot holds another: looked up in `moreKeys` (see above). */
function readMoreKey(start: number, end: number): string | undefined {
  let hash = 0x811c9dc5;
  for (let i = start; i < end; i++) hash = Math.imul(hash ^ src[i]!, 0x01000193);
  const slot = (hash ^ (hash >>> 14)) & (MORE_KEY_SLOTS - 1);
  const length = end - start;
  const cached = moreKeys[slot];
  if (cached !== undefined && cached.length === length) {
    let same = true;
    for (let i = 0; i < length; i++) {
      if (cached.charCodeAt(i) !== src[start + i]) {
        same = false;
        break;
      }
    }
    if (same) {
      smallAt = end;
      return cached;
    }
  }
  const key = readString(length);
  if (key === NOT_SMALL) return undefined;
  if ((key as string).length === length) moreKeys[slot] = key as string; // ASCII: a character per byte
  return key as string;
}

/**
 * A string of `length` bytes at `smallAt`: ASCII by the native latin1 slice, other text by the native
 * UTF-8 slice if it is well-formed UTF-8 (which every decoder reads alike), else NOT_SMALL — msgpackr
 * then decides what malformed text reads as.
 */
function readString(length: number): unknown {
  const start = smallAt;
  const end = start + length;
  if (end > smallEnd) return NOT_SMALL;
  let i = start;
  while (i < end && src[i]! < 0x80) i++;
  if (i === end) {
    smallAt = end;
    return latin1Slice.call(src, start, end);
  }
  if (!wellFormedUtf8(i, end)) return NOT_SMALL;
  smallAt = end;
  return utf8Slice.call(src, start, end);
}

/** Whether `src[from, end)` is well-formed UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
function wellFormedUtf8(from: number, end: number): boolean {
  let i = from;
  while (i < end) {
    const byte = src[i]!;
    if (byte < 0x80) {
      i++;
    } else if (byte >= 0xc2 && byte <= 0xdf) {
      if (i + 1 >= end || (src[i + 1]! & 0xc0) !== 0x80) return false;
      i += 2;
    } else if (byte >= 0xe0 && byte <= 0xef) {
      if (i + 2 >= end) return false;
      const second = src[i + 1]!;
      if ((second & 0xc0) !== 0x80 || (src[i + 2]! & 0xc0) !== 0x80) return false;
      if ((byte === 0xe0 && second < 0xa0) || (byte === 0xed && second >= 0xa0)) return false;
      i += 3;
    } else if (byte >= 0xf0 && byte <= 0xf4) {
      if (i + 3 >= end) return false;
      const second = src[i + 1]!;
      if ((second & 0xc0) !== 0x80 || (src[i + 2]! & 0xc0) !== 0x80 || (src[i + 3]! & 0xc0) !== 0x80) return false;
      if ((byte === 0xf0 && second < 0x90) || (byte === 0xf4 && second >= 0x90)) return false;
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

// ---- writing ------------------------------------------------------------------------------------
//
// The writer writes into a target (a slab of its own, see `encodeSmall`; a worker's output ring; a
// record batch) and returns the length, or -1 to leave the value to codec.ts: any object that is not a
// plain object (prototype Object.prototype or null) or array (Date, Set, typed arrays, class instances,
// Maps…), a bigint past 64 bits, a symbol or function, the key "__proto__", more than SMALL_OUTPUT_BYTES
// of output, or nesting deeper than MAX_DEPTH (a cycle). codec.ts then checks what it declined for what
// cannot be carried (carried.ts) and gives the rest to msgpackr: what the writer writes needs no check.
// Where it writes, it follows msgpackr's choices: a plain object's own enumerable keys in for-in order;
// an integer that is not 32-bit and every other number is a float64; -0 is 0; undefined is msgpackr's
// undefined (fixext 0); a bigint is an int64 (or a uint64 past 2^63); a lone surrogate is U+FFFD. The
// bytes may differ from msgpackr's (maps of fewer than 16 keys are fixmaps here, where msgpackr always
// writes map16), but both are MessagePack that reads back as the same value.

/** Longest output the writer produces; larger items go to msgpackr, whose cost per item is then small. */
export const SMALL_OUTPUT_BYTES = 8192;
const MAX_DEPTH = 32;

/** Bytes the writer can write into: the array, and views of it for numbers and for native UTF-8. */
export class SmallTarget {
  readonly view: DataView;
  /** Buffer's `utf8Write` (in Bun and Node, untyped): a string's UTF-8 at an offset, returning the bytes written. */
  readonly text: { utf8Write(text: string, offset: number): number };

  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) as unknown as SmallTarget["text"];
  }
}

// The target being written, where the writer is in it, and the most it may write.
let out: Uint8Array = new Uint8Array(0);
let outView: DataView = new DataView(out.buffer);
let outText: SmallTarget["text"] = Buffer.alloc(0) as unknown as SmallTarget["text"];
let outAt = 0;
let outLimit = 0;

/**
 * Writes `value` as MessagePack into `target` from `start`, no further than `limit`; returns its length
 * in bytes, or -1 when msgpackr must encode it (or it does not fit). Bytes past `start` may have been
 * written either way.
 */
export function encodeSmallInto(value: unknown, target: SmallTarget, start: number, limit: number): number {
  out = target.bytes;
  outView = target.view;
  outText = target.text;
  outAt = start;
  outLimit = Math.min(limit, start + SMALL_OUTPUT_BYTES);
  return writeSmall(value, 0) ? outAt - start : -1;
}

/**
 * `encodeSmall` writes into a slab, each value after the last one kept (`keepOutput`), and starts a new
 * slab when the rest of this one could not hold a largest value. Kept values are views of the slab, which
 * is never written over: like msgpackr's own output, they may be kept as long as needed, and cost a view
 * instead of a buffer of their own. A kept value keeps its whole slab alive, as msgpackr's do their
 * shared output buffer: slabs are 32 KiB, large enough that a new one is rare (every ~300 items of 80
 * bytes; 64 KiB measured no faster) and small enough that an item kept long pins little.
 */
const SLAB_BYTES = 32 * 1024;
let slab = new SmallTarget(new Uint8Array(SLAB_BYTES));
let slabStart = 0;

/**
 * Writes `value` as MessagePack; returns its length in bytes, or -1 when msgpackr must encode it. The
 * bytes are then `keepOutput(length)` (a view to keep) or `peekOutput(length)` (valid until the next call).
 */
export function encodeSmall(value: unknown): number {
  if (slabStart + SMALL_OUTPUT_BYTES > SLAB_BYTES) {
    slab = new SmallTarget(new Uint8Array(SLAB_BYTES));
    slabStart = 0;
  }
  return encodeSmallInto(value, slab, slabStart, SLAB_BYTES);
}

/** The value `encodeSmall` just wrote, as bytes that are never written over. */
export function keepOutput(length: number): Uint8Array {
  const bytes = slab.bytes.subarray(slabStart, slabStart + length);
  slabStart = (slabStart + length + 7) & ~7;
  return bytes;
}

/** The value `encodeSmall` just wrote, valid until its next call: for bytes copied at once. */
export function peekOutput(length: number): Uint8Array {
  return slab.bytes.subarray(slabStart, slabStart + length);
}

function writeSmall(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case "string":
      return writeString(value);
    case "number":
      return writeNumber(value);
    case "boolean":
      return writeByte(value ? 0xc3 : 0xc2);
    case "undefined":
      return writeUndefined();
    case "object": {
      if (value === null) return writeByte(0xc0);
      if (depth === MAX_DEPTH) return false;
      // By prototype, not by `constructor`: an object that inherits from another (or has a key named
      // "constructor") is not plain data, and a null-prototype object is.
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto === Object.prototype || proto === null) return writeMap(value as Record<string, unknown>, depth + 1);
      if (proto === Array.prototype && Array.isArray(value)) return writeArray(value, depth + 1);
      return false;
    }
    case "bigint":
      return writeBigInt(value);
    default:
      return false;
  }
}

/** msgpackr's undefined: fixext 1 of type 0, data 0 (nil would read back as null). */
function writeUndefined(): boolean {
  if (outAt + 3 > outLimit) return false;
  out[outAt++] = 0xd4;
  out[outAt++] = 0;
  out[outAt++] = 0;
  return true;
}

/** An int64, or a uint64 from 2^63 on, as msgpackr writes them; a larger bigint is msgpackr's. */
function writeBigInt(value: bigint): boolean {
  if (outAt + 9 > outLimit || value >= 0x10000000000000000n || value < -0x8000000000000000n) return false;
  if (value < 0x8000000000000000n) {
    out[outAt++] = 0xd3;
    outView.setBigInt64(outAt, value);
  } else {
    out[outAt++] = 0xcf;
    outView.setBigUint64(outAt, value);
  }
  outAt += 8;
  return true;
}

function writeByte(byte: number): boolean {
  if (outAt >= outLimit) return false;
  out[outAt++] = byte;
  return true;
}

function writeNumber(value: number): boolean {
  if (outAt + 9 > outLimit) return false;
  if (value >>> 0 === value) {
    if (value < 0x80) out[outAt++] = value;
    else if (value < 0x100) {
      out[outAt++] = 0xcc;
      out[outAt++] = value;
    } else if (value < 0x10000) {
      out[outAt++] = 0xcd;
      outView.setUint16(outAt, value);
      outAt += 2;
    } else {
      out[outAt++] = 0xce;
      outView.setUint32(outAt, value);
      outAt += 4;
    }
  } else if (value >> 0 === value) {
    if (value >= -0x20) out[outAt++] = value + 0x100;
    else if (value >= -0x80) {
      out[outAt++] = 0xd0;
      out[outAt++] = value + 0x100;
    } else if (value >= -0x8000) {
      out[outAt++] = 0xd1;
      outView.setInt16(outAt, value);
      outAt += 2;
    } else {
      out[outAt++] = 0xd2;
      outView.setInt32(outAt, value);
      outAt += 4;
    }
  } else {
    out[outAt++] = 0xcb;
    outView.setFloat64(outAt, value);
    outAt += 8;
  }
  return true;
}

/** Strings longer than this are written by Buffer's native UTF-8 writer; shorter ones by a loop. */
const NATIVE_WRITE_FROM = 16;

/**
 * A string as fixstr, str8 or str16. ASCII (one byte per character, the common case) is written by a
 * loop when short and by Buffer's native UTF-8 writer when longer; other text by the native writer,
 * which, like msgpackr, writes U+FFFD for a lone surrogate. The head is sized for the character count
 * first; when the UTF-8 bytes need a longer one, they move up to make room.
 */
function writeString(value: string): boolean {
  const length = value.length;
  const at = outAt;
  // Room for the longest head and for 3 bytes per character, what the native writer may write.
  if (at + 3 * length + 3 > outLimit) return false;
  const head = length < 0x20 ? 1 : length < 0x100 ? 2 : 3;
  let bytes = length;
  if (length < NATIVE_WRITE_FROM) {
    for (let i = 0; i < length; i++) {
      const code = value.charCodeAt(i);
      if (code >= 0x80) {
        bytes = outText.utf8Write(value, at + head);
        break;
      }
      out[at + head + i] = code;
    }
  } else {
    bytes = outText.utf8Write(value, at + head);
  }
  if (bytes >= 0x10000) return false; // str32: msgpackr's
  const needed = bytes < 0x20 ? 1 : bytes < 0x100 ? 2 : 3;
  if (needed !== head) out.copyWithin(at + needed, at + head, at + head + bytes);
  if (needed === 1) out[at] = 0xa0 | bytes;
  else if (needed === 2) {
    out[at] = 0xd9;
    out[at + 1] = bytes;
  } else {
    out[at] = 0xda;
    out[at + 1] = bytes >> 8;
    out[at + 2] = bytes & 0xff;
  }
  outAt = at + needed + bytes;
  return true;
}

function writeArray(array: unknown[], depth: number): boolean {
  const length = array.length;
  if (!writeHead(length, 0x90, 0xdc)) return false;
  for (let i = 0; i < length; i++) if (!writeSmall(array[i], depth)) return false;
  return true;
}

/** A plain object's own enumerable keys and their values. */
function writeMap(object: Record<string, unknown>, depth: number): boolean {
  const keys = Object.keys(object); // msgpackr's for-in with hasOwnProperty: the same keys, in the same order
  const size = keys.length;
  if (!writeHead(size, 0x80, 0xde)) return false;
  for (let i = 0; i < size; i++) {
    const key = keys[i]!;
    if (key === "__proto__" || !writeString(key) || !writeSmall(object[key], depth)) return false;
  }
  return true;
}

/** An array's or map's head: the fix form (`fix | size`) under 16 entries, else the 16-bit form `wide`. */
function writeHead(size: number, fix: number, wide: number): boolean {
  if (size < 0x10) return writeByte(fix | size);
  if (size >= 0x10000 || outAt + 3 > outLimit) return false;
  out[outAt++] = wide;
  outView.setUint16(outAt, size);
  outAt += 2;
  return true;
}
