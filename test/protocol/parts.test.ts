import { afterEach, describe, expect, test } from "bun:test";
import { ProtocolError } from "../../src/errors.ts";
import { encode } from "../../src/protocol/codec.ts";
import { type Connection, connect, listen } from "../../src/protocol/connection.ts";
import { MAX_BLOB_HEAD_BYTES, blobFrameHead, frameOf } from "../../src/protocol/frame.ts";
import { dial, serve } from "../../src/protocol/handshake.ts";
import { DEFAULT_MAX_ITEM_BYTES, messageLimitFor } from "../../src/protocol/limits.ts";
import { type Message, parseMessage } from "../../src/protocol/messages.ts";
import { PART_BYTES, PART_FROM_BYTES, PartJoiner, partFrames } from "../../src/protocol/parts.ts";

/**
 * Messages larger than the peer's frame limit travel as part frames the receiver joins: frames stay
 * small, the joined size is bounded by what the receiver accepts (a frame before the handshake, the
 * largest item plus a batch's overhead after it), and a claim over it is refused before anything of
 * it is held.
 */

const stops: Array<() => void> = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});

/** Bytes that tell their own position, so a part out of place shows. */
function pattern(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

/** A part frame made by hand: `blob`, and `left` bytes said to follow. */
function partFrame(blob: Uint8Array, left: number): Uint8Array {
  const head = new Uint8Array(MAX_BLOB_HEAD_BYTES + blob.length);
  const start = blobFrameHead(head, MAX_BLOB_HEAD_BYTES, "part", { left }, blob.length);
  head.set(blob, MAX_BLOB_HEAD_BYTES);
  return head.subarray(start);
}

/** Resolves with the next message on `connection` that is not a request or an answer. */
function nextMessage(connection: Connection): Promise<Message> {
  return new Promise((resolve) => (connection.onMessage = resolve));
}

/**
 * A node-service server that keeps the last message a peer sent (it answers nothing itself), and a client
 * dialled to it with the default frame limit; both stopped after the test.
 */
async function serverKeepingLast(limits: {
  maxFrameBytes?: number;
  maxMessageBytes: number;
}): Promise<{ connection: Connection; last: () => Message | undefined }> {
  let last: Message | undefined;
  const server = serve({
    hostname: "127.0.0.1",
    port: 0,
    service: "node",
    ...limits,
    onPeer(connection) {
      connection.onMessage = (message) => (last = message);
    },
  });
  stops.push(() => server.stop());
  const { connection } = await dial({ hostname: "127.0.0.1", port: server.port });
  stops.push(() => connection.destroy());
  return { connection, last: () => last };
}

describe("splitting and joining, in memory", () => {
  test("a body split into parts within a frame limit is joined back byte for byte", () => {
    const body = encode({ t: "event", name: "big", data: pattern(300_000, 7) });
    const frame = frameOf(body);
    const pieces = partFrames([frame], 16 * 1024);
    const joiner = new PartJoiner(1 << 20);
    let joined: Uint8Array | undefined;
    let frames = 0;
    // Heads and views alternate; each head + view is one frame within the limit.
    for (let i = 0; i < pieces.length; i += 2) {
      const partFrameBytes = pieces[i]!.length + pieces[i + 1]!.length;
      expect(partFrameBytes - 4).toBeLessThanOrEqual(16 * 1024);
      // Read as the receiver reads it: one frame body, one message.
      const part = parseMessage(Buffer.concat([pieces[i]!, pieces[i + 1]!]).subarray(4));
      if (part.t !== "part") throw new Error(`expected a part, got "${part.t}"`);
      expect(joined).toBeUndefined();
      joined = joiner.add(part.blob, part.left);
      frames++;
    }
    expect(frames).toBe(Math.ceil(body.length / (16 * 1024 - 64)));
    expect(joined).toEqual(body);
    expect(joiner.joining).toBe(false);
  });

  test("a frame given as pieces splits into the same part frames as the frame in one piece", () => {
    const body = encode({ t: "event", name: "big", data: pattern(100_000, 9) });
    const frame = frameOf(body);
    const joined = Buffer.concat(partFrames([frame], 16 * 1024));
    // Pieces cut across the frame header, the parts' bounds and each other.
    for (const cuts of [[2], [4, 16_379], [1000, 16_384, 16_390, 50_000], [99_990]]) {
      const pieces: Uint8Array[] = [];
      let from = 0;
      for (const cut of [...cuts, frame.length]) {
        pieces.push(frame.subarray(from, cut));
        from = cut;
      }
      expect(Buffer.concat(partFrames(pieces, 16 * 1024)).equals(joined)).toBe(true);
    }
  });

  test("parts hold PART_BYTES at most, whatever the frame limit; each is copied, so its frame may be reused", () => {
    const body = encode({ t: "event", name: "big", data: pattern(3 * PART_BYTES + 5, 2) });
    const pieces = partFrames([frameOf(body)], 64 * 1024 * 1024);
    expect(pieces.length).toBe(2 * 4);
    for (let i = 1; i < pieces.length; i += 2) expect(pieces[i]!.length).toBeLessThanOrEqual(PART_BYTES);
    const joiner = new PartJoiner(1 << 24);
    let joined: Uint8Array | undefined;
    for (let i = 0; i < pieces.length; i += 2) {
      const frameBody = Buffer.concat([pieces[i]!, pieces[i + 1]!]).subarray(4);
      const part = parseMessage(frameBody);
      if (part.t !== "part") throw new Error(`expected a part, got "${part.t}"`);
      joined = joiner.add(part.blob, part.left);
      frameBody.fill(0xee); // the receiver assembles its next frame here
    }
    expect(Buffer.from(joined!).equals(Buffer.from(body))).toBe(true);
  });

  test("a message is joined in the memory the joiner is given", () => {
    const joiner = new PartJoiner(1 << 20, (size) => new Uint8Array(new SharedArrayBuffer(size)));
    expect(joiner.add(pattern(100, 1), 50)).toBeUndefined();
    const body = joiner.add(pattern(50, 2), 0)!;
    expect(body.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect([...body]).toEqual([...pattern(100, 1), ...pattern(50, 2)]);
  });

  test("a claim of 2 GiB is refused at its first part, before anything of it is held", () => {
    const joiner = new PartJoiner(messageLimitFor(DEFAULT_MAX_ITEM_BYTES));
    const heapBefore = process.memoryUsage().rss;
    const claim = 2 * 1024 ** 3;
    const first = pattern(1024, 1);
    expect(() => joiner.add(first, claim - first.length)).toThrow(ProtocolError);
    expect(() => joiner.add(first, claim - first.length)).toThrow(`a message of ${claim} bytes`);
    expect(joiner.bufferedBytes).toBe(0);
    expect(joiner.joining).toBe(false);
    expect(process.memoryUsage().rss - heapBefore).toBeLessThan(256 * 1024 * 1024);
  });

  test("a part that does not continue the message is refused", () => {
    const joiner = new PartJoiner(1 << 20);
    expect(joiner.add(pattern(100, 1), 200)).toBeUndefined();
    expect(() => joiner.add(pattern(100, 2), 50)).toThrow("does not continue a message that lacks 200 bytes");
  });
});

describe("over real sockets", () => {
  test("5 MB each way between peers that take 64 KiB frames, in order with small messages", async () => {
    const maxFrameBytes = 64 * 1024;
    const maxMessageBytes = 8 * 1024 * 1024;
    const serverGot: Message[] = [];
    const server = serve({
      hostname: "127.0.0.1",
      port: 0,
      service: "node",
      maxFrameBytes,
      maxMessageBytes,
      onPeer(connection) {
        connection.onMessage = (message) => {
          serverGot.push(message);
          // Echo the large one back: the server splits for the client's announced frame limit.
          if (message.t === "event" && message.name === "big") connection.send(message);
        };
      },
    });
    stops.push(() => server.stop());
    const { connection } = await dial({ hostname: "127.0.0.1", port: server.port, maxFrameBytes, maxMessageBytes });
    stops.push(() => connection.destroy());
    expect(connection.peerMaxFrameBytes).toBe(maxFrameBytes);
    const big = pattern(5_000_000, 3);
    const echoed = nextMessage(connection);
    connection.send({ t: "event", name: "before" });
    connection.send({ t: "event", name: "big", data: big });
    connection.send({ t: "event", name: "after" });
    const back = await Promise.race([echoed, Bun.sleep(20_000).then(() => undefined)]);
    expect(back?.t).toBe("event");
    expect((back as { data: Uint8Array }).data).toEqual(big);
    expect(serverGot.map((m) => (m as { name: string }).name)).toEqual(["before", "big", "after"]);
    expect(connection.isClosed).toBe(false);
  }, 30_000);

  test("a message over PART_FROM_BYTES goes in parts though the peer takes frames of 64 MiB", async () => {
    const { connection, last } = await serverKeepingLast({ maxMessageBytes: 16 * 1024 * 1024 });
    expect(connection.peerMaxFrameBytes).toBe(64 * 1024 * 1024);
    const before = connection.receivedBytes;
    const big = pattern(PART_FROM_BYTES + 3 * PART_BYTES, 5);
    connection.send({ t: "event", name: "big", data: big });
    for (let waited = 0; last() === undefined && waited < 10_000; waited += 20) await Bun.sleep(20);
    expect((last() as { data?: Uint8Array } | undefined)?.data).toEqual(big);
    // One acknowledgement per part but the last: 7 parts of 1 MiB and one of a few bytes.
    const ack = frameOf(encode({ t: "part-ack", left: 1 << 20 })).length;
    for (let waited = 0; connection.receivedBytes - before < 7 * (ack - 4) && waited < 5000; waited += 20)
      await Bun.sleep(20);
    expect(connection.receivedBytes - before).toBeGreaterThanOrEqual(7 * (ack - 4));
    expect(connection.receivedBytes - before).toBeLessThanOrEqual(7 * ack);
  }, 20_000);

  test("the receiver acknowledges each part but the last, so the sender sees it alive meanwhile", async () => {
    const { connection, last } = await serverKeepingLast({
      maxFrameBytes: 64 * 1024,
      maxMessageBytes: 4 * 1024 * 1024,
    });
    const before = connection.receivedBytes;
    const parts =
      partFrames([frameOf(encode({ t: "event", name: "big", data: pattern(1_000_000, 4) }))], 64 * 1024).length / 2;
    let seen = false;
    connection.onMessage = () => (seen = true); // acknowledgements are the connection's own business
    connection.send({ t: "event", name: "big", data: pattern(1_000_000, 4) });
    for (let waited = 0; last() === undefined && waited < 10_000; waited += 20) await Bun.sleep(20);
    expect(last()?.t).toBe("event");
    // Each acknowledgement is one small frame: { t: "part-ack", left }.
    const ack = frameOf(encode({ t: "part-ack", left: 1 << 20 })).length;
    for (let waited = 0; connection.receivedBytes - before < (parts - 1) * (ack - 4) && waited < 5000; waited += 20)
      await Bun.sleep(20);
    expect(connection.receivedBytes - before).toBeGreaterThanOrEqual((parts - 1) * (ack - 4));
    expect(connection.receivedBytes - before).toBeLessThanOrEqual((parts - 1) * ack);
    expect(seen).toBe(false);
  }, 20_000);

  test("before the handshake, no message larger than a frame is joined", async () => {
    let failure: Promise<unknown> | undefined;
    const listener = listen({ hostname: "127.0.0.1", port: 0, maxFrameBytes: 64 * 1024 }, (connection) => {
      failure = connection.closed;
    });
    stops.push(() => listener.stop(true));
    const client = await connect({ hostname: "127.0.0.1", port: listener.port });
    stops.push(() => client.destroy());
    const refused = nextMessage(client);
    client.peerMaxFrameBytes = 16 * 1024; // parts of 16 KiB, each well within the listener's frames
    client.send({ t: "event", name: "big", data: pattern(100_000, 5) });
    const answer = await Promise.race([refused, Bun.sleep(10_000).then(() => undefined)]);
    expect(answer?.t).toBe("err");
    expect((answer as { message: string }).message).toContain("over the 65536 bytes this connection accepts");
    expect(await failure).toBeInstanceOf(ProtocolError);
  }, 20_000);

  test("after the handshake, a 2 GiB claim fails only that connection, and nothing of it is held", async () => {
    const server = serve({
      hostname: "127.0.0.1",
      port: 0,
      service: "node",
      maxMessageBytes: messageLimitFor(DEFAULT_MAX_ITEM_BYTES),
      onPeer(connection) {
        connection.onMessage = () => {};
      },
    });
    stops.push(() => server.stop());
    const rssBefore = process.memoryUsage().rss;
    const { connection } = await dial({ hostname: "127.0.0.1", port: server.port });
    stops.push(() => connection.destroy());
    const refused = nextMessage(connection);
    connection.sendFrame(partFrame(pattern(4096, 9), 2 * 1024 ** 3));
    const answer = await Promise.race([refused, Bun.sleep(10_000).then(() => undefined)]);
    expect(answer?.t).toBe("err");
    expect((answer as { message: string }).message).toContain(`a message of ${2 * 1024 ** 3 + 4096} bytes`);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(256 * 1024 * 1024);
    // The server still serves others.
    const { connection: other } = await dial({ hostname: "127.0.0.1", port: server.port });
    stops.push(() => other.destroy());
    expect(other.isClosed).toBe(false);
  }, 20_000);

  test("a message between the parts of another is refused", async () => {
    const server = serve({
      hostname: "127.0.0.1",
      port: 0,
      service: "node",
      maxMessageBytes: 1 << 20,
      onPeer(connection) {
        connection.onMessage = () => {};
      },
    });
    stops.push(() => server.stop());
    const { connection } = await dial({ hostname: "127.0.0.1", port: server.port });
    stops.push(() => connection.destroy());
    const refused = nextMessage(connection);
    connection.sendFrame(partFrame(pattern(1000, 1), 1000));
    connection.send({ t: "credit", bytes: 5 });
    const answer = await Promise.race([refused, Bun.sleep(10_000).then(() => undefined)]);
    expect((answer as { message: string }).message).toContain('a "credit" message came between the parts of a message');
  }, 20_000);
});
