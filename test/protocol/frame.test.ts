import { describe, expect, test } from "bun:test";
import { decode as decodeStd } from "@msgpack/msgpack";
import { ProtocolError } from "../../src/errors.ts";
import { encode } from "../../src/protocol/codec.ts";
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameDecoder,
  MAX_BLOB_HEAD_BYTES,
  blobFrameHead,
  frameOf,
} from "../../src/protocol/frame.ts";
import { KeptBuffers, ownMemory } from "../../src/protocol/kept-buffers.ts";
import { parseMessage } from "../../src/protocol/messages.ts";
import { seededRandom } from "../support/random.ts";

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

describe("FrameDecoder", () => {
  test("reassembles frames cut at random points (5000 seeded cases)", () => {
    const random = seededRandom(42);
    for (let round = 0; round < 5000; round++) {
      const count = 1 + Math.floor(random() * 8);
      const bodies: Uint8Array[] = [];
      for (let i = 0; i < count; i++) {
        const size = 1 + Math.floor(random() ** 3 * 3000);
        const body = new Uint8Array(size);
        for (let j = 0; j < size; j++) body[j] = (round * 31 + i * 7 + j) & 0xff;
        bodies.push(body);
      }
      const stream = concat(bodies.map(frameOf));
      const decoder = new FrameDecoder();
      const got: Uint8Array[] = [];
      let offset = 0;
      while (offset < stream.length) {
        // Mix of tiny cuts (inside headers) and large ones (many frames per chunk).
        const step = random() < 0.3 ? 1 + Math.floor(random() * 5) : 1 + Math.floor(random() * 4000);
        decoder.push(stream.subarray(offset, offset + step), (body) => void got.push(body));
        offset += step;
      }
      expect(got.length).toBe(count);
      for (let i = 0; i < count; i++) expect(got[i]).toEqual(bodies[i]!);
      expect(decoder.bufferedBytes).toBe(0);
    }
  });

  test("a frame split into one-byte chunks arrives whole", () => {
    const body = new Uint8Array(10_000).map((_, i) => i & 0xff);
    const frame = frameOf(body);
    const decoder = new FrameDecoder();
    const got: Uint8Array[] = [];
    for (let i = 0; i < frame.length; i++) decoder.push(frame.subarray(i, i + 1), (b) => void got.push(b));
    expect(got).toEqual([body]);
  });

  test("bodies handed out stay intact while later chunks arrive", () => {
    const decoder = new FrameDecoder();
    const kept: Uint8Array[] = [];
    const frames = [frameOf(new Uint8Array(100).fill(1)), frameOf(new Uint8Array(100).fill(2))];
    const stream = concat(frames);
    decoder.push(stream.subarray(0, 50), (b) => void kept.push(b));
    decoder.push(stream.subarray(50, 150), (b) => void kept.push(b));
    decoder.push(stream.subarray(150), (b) => void kept.push(b));
    expect(kept[0]).toEqual(new Uint8Array(100).fill(1));
    expect(kept[1]).toEqual(new Uint8Array(100).fill(2));
  });

  test("a body given back takes the next body that spans chunks; a body kept is never written over", () => {
    const decoder = new FrameDecoder();
    /** Pushes a frame of `length` bytes of `fill` in two chunks; returns the body handed out. */
    const pushSplit = (length: number, fill: number, giveBack: boolean): Uint8Array => {
      const frame = frameOf(new Uint8Array(length).fill(fill));
      let body: Uint8Array | undefined;
      const onFrame = (b: Uint8Array) => {
        body = b;
        return giveBack;
      };
      decoder.push(frame.subarray(0, 1000), onFrame);
      decoder.push(frame.subarray(1000), onFrame);
      return body!;
    };
    const first = pushSplit(300_000, 1, true);
    const firstMemory = first.buffer;
    const second = pushSplit(200_000, 2, false); // fits in the first's memory: assembled there
    expect(second.buffer === firstMemory).toBe(true);
    expect(second).toEqual(new Uint8Array(200_000).fill(2));
    const third = pushSplit(250_000, 3, false); // the second was kept: fresh memory
    expect(third.buffer === firstMemory).toBe(false);
    expect(second).toEqual(new Uint8Array(200_000).fill(2));
    expect(third).toEqual(new Uint8Array(250_000).fill(3));
  });

  test("with memory of its own, bodies are assembled there and taken again once their receiver releases them", () => {
    const memory = new KeptBuffers(ownMemory);
    const taken: ArrayBufferLike[] = [];
    const decoder = new FrameDecoder(DEFAULT_MAX_FRAME_BYTES, undefined, {
      take(size) {
        const bytes = memory.take(size);
        taken.push(bytes.buffer);
        return bytes;
      },
      release: (bytes) => memory.release(bytes),
    });
    /** Pushes a frame of `length` bytes of `fill` in chunks of 64 KiB; returns the body handed out. */
    const push = (length: number, fill: number): Uint8Array => {
      const frame = frameOf(new Uint8Array(length).fill(fill));
      const bodies: Uint8Array[] = [];
      for (let at = 0; at < frame.length; at += 65_536)
        decoder.push(frame.subarray(at, at + 65_536), (b) => void bodies.push(b));
      expect(bodies.length).toBe(1);
      return bodies[0]!;
    };
    // The first body grows through buffers of 256 KiB, 512 KiB, 1 MiB: each outgrown one goes back.
    const first = push(1_000_000, 1);
    expect(Buffer.compare(first, new Uint8Array(1_000_000).fill(1))).toBe(0);
    expect(taken.length).toBeGreaterThan(1);
    expect(memory.spareBytes).toBeGreaterThan(0); // the outgrown buffers, kept
    const held = push(1_000_000, 2); // the first is still held: its memory is not written over
    expect(held.buffer === first.buffer).toBe(false);
    expect(Buffer.compare(first, new Uint8Array(1_000_000).fill(1))).toBe(0);
    // Released, the next body of its size is assembled in its memory, and no buffer is new.
    memory.release(first);
    memory.release(held);
    const before = new Set(taken);
    const count = taken.length;
    const third = push(1_000_000, 3);
    expect(third.buffer === first.buffer || third.buffer === held.buffer).toBe(true);
    expect(taken.length).toBeGreaterThan(count);
    expect(taken.slice(count).every((buffer) => before.has(buffer))).toBe(true);
    expect(Buffer.compare(third, new Uint8Array(1_000_000).fill(3))).toBe(0);
  });

  test("a length above the maximum is a ProtocolError before any body byte arrives", () => {
    const decoder = new FrameDecoder(1024);
    const header = Uint8Array.of(0, 0, 4, 1); // 1025
    expect(() => decoder.push(header, () => {})).toThrow(ProtocolError);
    expect(() => new FrameDecoder(1024).push(header, () => {})).toThrow(/exceeds the maximum of 1024 bytes/);
    // The default maximum is 64 MiB; a 4 GiB claim is refused without allocating.
    expect(() => new FrameDecoder().push(Uint8Array.of(0xff, 0xff, 0xff, 0xff), () => {})).toThrow(/exceeds/);
  });

  test("an oversize header cut across chunks is refused as soon as it is complete", () => {
    const decoder = new FrameDecoder(100);
    decoder.push(Uint8Array.of(0, 0), () => {});
    expect(() => decoder.push(Uint8Array.of(1, 0), () => {})).toThrow(/exceeds the maximum of 100/);
  });

  test("memory follows the bytes received, not the length announced", () => {
    const announced = 60 * 1024 * 1024;
    const decoder = new FrameDecoder(64 * 1024 * 1024);
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, announced);
    decoder.push(header, () => {});
    decoder.push(new Uint8Array(100), () => {});
    expect(decoder.bufferedBytes).toBe(100);
    expect(decoder.heldBytes).toBeLessThanOrEqual(256 * 1024);
    // A megabyte later it holds at most twice what came.
    const chunk = new Uint8Array(64 * 1024).fill(7);
    for (let i = 0; i < 16; i++) decoder.push(chunk, () => {});
    expect(decoder.bufferedBytes).toBe(100 + 1024 * 1024);
    expect(decoder.heldBytes).toBeLessThanOrEqual(2 * decoder.bufferedBytes);
  });

  test("a large body growing over many chunks arrives intact, in a buffer of exactly its size", () => {
    const body = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 7) & 0xff);
    const frame = frameOf(body);
    const decoder = new FrameDecoder();
    const got: Uint8Array[] = [];
    for (let at = 0; at < frame.length; at += 100_003)
      decoder.push(frame.subarray(at, at + 100_003), (b) => void got.push(b));
    expect(got.length).toBe(1);
    expect(got[0]!.length).toBe(body.length);
    expect(got[0]!.buffer.byteLength).toBe(body.length);
    expect(Buffer.compare(got[0]!, body)).toBe(0); // toEqual on megabytes is slow
    expect(decoder.heldBytes).toBe(0);
  });

  test("before trust() only small frames pass; the refusal names the limit", () => {
    const small = frameOf(new Uint8Array(4096).fill(1));
    const large = frameOf(new Uint8Array(4097).fill(2));
    const got: Uint8Array[] = [];
    const decoder = new FrameDecoder(1 << 20, 4096);
    decoder.push(small, (b) => void got.push(b));
    expect(got.length).toBe(1);
    expect(() => new FrameDecoder(1 << 20, 4096).push(large.subarray(0, 4), () => {})).toThrow(
      /frame length 4097 exceeds the maximum of 4096 bytes a peer may send before the handshake completes/,
    );
    decoder.trust();
    decoder.push(large, (b) => void got.push(b));
    expect(got[1]).toEqual(new Uint8Array(4097).fill(2));
    expect(() => decoder.push(Uint8Array.of(0, 0x10, 0, 1), () => {})).toThrow(
      /exceeds the maximum of 1048576 bytes \(/,
    );
  });

  test("a truncated frame never emits", () => {
    const frame = frameOf(encode({ t: "credit", bytes: 5 }));
    const decoder = new FrameDecoder();
    let calls = 0;
    decoder.push(frame.subarray(0, frame.length - 1), () => {
      calls++;
    });
    expect(calls).toBe(0);
    expect(decoder.bufferedBytes).toBe(frame.length - 1 - 4);
  });

  test("a zero-length frame is refused", () => {
    expect(() => new FrameDecoder().push(Uint8Array.of(0, 0, 0, 0), () => {})).toThrow(/empty frame/);
  });
});

describe("parseMessage", () => {
  test("garbage bodies are ProtocolErrors that say what was wrong", () => {
    expect(() => parseMessage(Uint8Array.of(0xc1))).toThrow(/not valid MessagePack/);
    expect(() => parseMessage(encode([1, 2, 3]))).toThrow(/must be a map with a "t" field, got an array of 3/);
    expect(() => parseMessage(encode({ t: "dance" }))).toThrow(/unknown message type "dance"/);
    expect(() => parseMessage(encode({ t: "req", id: -1, cmd: "x" }))).toThrow(
      /message "req": field "id" must be a non-negative integer, got -1/,
    );
    expect(() => parseMessage(encode({ t: "feed", blob: "text" }))).toThrow(/field "blob" must be binary/);
    expect(() => parseMessage(encode({ t: "log", lines: [{ ts: 1, host: "h", pid: 1, msg: 5 }] }))).toThrow(
      /field "lines\[0\].msg" must be a string, got 5/,
    );
  });

  test("random byte soup never crashes the parser: it parses or throws a ProtocolError", () => {
    const random = seededRandom(7);
    for (let i = 0; i < 3000; i++) {
      const body = new Uint8Array(1 + Math.floor(random() * 40)).map(() => Math.floor(random() * 256));
      try {
        parseMessage(body);
      } catch (error) {
        expect(error).toBeInstanceOf(ProtocolError);
      }
    }
  });
});

describe("blob frames", () => {
  test("a hand-written blob envelope is standard MessagePack, read alike by both libraries", () => {
    const blob = new Uint8Array(300).map((_, i) => i & 0xff);
    const buffer = new Uint8Array(MAX_BLOB_HEAD_BYTES + blob.length);
    buffer.set(blob, MAX_BLOB_HEAD_BYTES);
    const start = blobFrameHead(buffer, MAX_BLOB_HEAD_BYTES, "results", { idle: 3, big: 70_000 }, blob.length);
    const frame = buffer.subarray(start);
    const decoder = new FrameDecoder();
    let body!: Uint8Array;
    decoder.push(frame, (b) => {
      body = b;
    });
    expect(parseMessage(body)).toMatchObject({ t: "results", idle: 3, blob });
    expect(decodeStd(body)).toEqual({ t: "results", idle: 3, big: 70_000, blob });
  });
});
