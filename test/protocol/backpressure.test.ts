import { expect, test } from "bun:test";
import { encode } from "../../src/protocol/codec.ts";
import type { Connection } from "../../src/protocol/connection.ts";
import { frameOf } from "../../src/protocol/frame.ts";
import { dial, serve } from "../../src/protocol/handshake.ts";
import { spawnBun } from "../support/processes.ts";
import { waitFor, within } from "../support/wait.ts";

/**
 * A node-service server on a free port of 127.0.0.1 that hands each "chunk" event's `seq` and `bytes` to
 * `onChunk`, with the connection they came on; `onClosed` when that connection closes.
 */
function serveChunks(
  onChunk: (seq: number, bytes: Uint8Array, connection: Connection) => void,
  onClosed?: () => void,
): ReturnType<typeof serve> {
  return serve({
    hostname: "127.0.0.1",
    port: 0,
    service: "node",
    onPeer(connection) {
      connection.onMessage = (message) => {
        if (message.t !== "event") return;
        const { seq, bytes } = message.data as { seq: number; bytes: Uint8Array };
        onChunk(seq, bytes, connection);
      };
      if (onClosed !== undefined) connection.closed.then(onClosed);
    },
  });
}

test("200 MB to a slow reader arrive whole and in order, and the sender's queue stays bounded", async () => {
  const count = 200;
  const size = 1 << 20;
  const maxQueued = 4 << 20;
  let next = 0;
  let corrupt = 0;
  let received = 0;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const server = serveChunks(
    (seq, bytes, connection) => {
      if (seq !== next++) corrupt++;
      for (let i = 0; i < size; i += 4096) if (bytes[i] !== ((seq + i) & 0xff)) corrupt++;
      received += bytes.length;
      // A deliberately slow reader: stop reading for a moment after every frame.
      connection.pause();
      setTimeout(() => connection.resume(), 8);
    },
    () => done(),
  );
  const sender = spawnBun([
    "test/support/bulk-sender.ts",
    String(server.port),
    String(count),
    String(size),
    String(maxQueued),
  ]);
  try {
    await within(finished, 50_000, "the slow reader to get every frame");
    const report = JSON.parse((await sender.stdoutText()).trim()) as { maxQueuedSeen: number; rssGrowth: number };
    expect(corrupt).toBe(0);
    expect(next).toBe(count);
    expect(received).toBe(count * size);
    // The queue never holds more than its bound plus the one frame that crossed it.
    expect(report.maxQueuedSeen).toBeLessThanOrEqual(maxQueued + size + 64);
    expect(report.rssGrowth).toBeLessThan(100 * 1024 * 1024);
  } finally {
    sender.kill();
    server.stop();
  }
}, 60_000);

test("frames sent from memory the sender reuses at once (sendFrameCopy) arrive as they were sent, whole and in order", async () => {
  // Large frames are written at once while nothing is queued, their rest copied when the socket takes
  // only part, and copied whole behind others; small ones are copied. The sender scribbles over its
  // buffer right after each send: whatever the path, the reader must see the bytes as they were sent.
  // The reader holds off reading from the first frame until a write was cut short (the socket full).
  const count = 96;
  const sizeOf = (seq: number) => (seq % 3 === 2 ? 3000 : (1 << 20) + seq);
  const seen: number[] = [];
  let corrupt = 0;
  let reader: Connection | undefined;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const server = serveChunks((seq, bytes, connection) => {
    seen.push(seq);
    if (bytes.length !== sizeOf(seq)) corrupt++;
    for (let i = 0; i < bytes.length; i += 997) if (bytes[i] !== ((seq * 7 + i) & 0xff)) corrupt++;
    if (seq === 0) {
      connection.pause();
      reader = connection;
    }
    if (seq === count - 1) done();
  });
  const { connection } = await dial({ hostname: "127.0.0.1", port: server.port });
  try {
    const reused = new Uint8Array(2 << 20);
    let writtenWhole = 0;
    let cutShort = 0;
    let queuedBehind = 0;
    for (let seq = 0; seq < count; seq++) {
      const bytes = new Uint8Array(sizeOf(seq));
      for (let i = 0; i < bytes.length; i++) bytes[i] = (seq * 7 + i) & 0xff;
      const frame = frameOf(encode({ t: "event", name: "chunk", data: { seq, bytes } }));
      reused.set(frame);
      const queuedBefore = connection.queuedBytes;
      connection.sendFrameCopy(reused.subarray(0, frame.length));
      reused.fill(0xee, 0, frame.length); // the sender's next use of its memory
      const large = frame.length >= 16 * 1024;
      if (large && queuedBefore === 0) connection.queuedBytes === 0 ? writtenWhole++ : cutShort++;
      else if (connection.queuedBytes > queuedBefore) queuedBehind++;
      await null; // a turn of microtasks: the queue's flush runs, as between a node's result frames
      if (cutShort > 0 || seq === count - 1) reader?.resume();
      if (seq % 16 === 15) {
        if (connection.queuedBytes > 0) await waitFor(() => reader, { what: "the reader to hold off" });
        reader?.resume();
        await connection.writable(); // bounded, as a node's results are by credit
      }
    }
    await within(finished, 30_000, "the reader to get every frame");
    expect(corrupt).toBe(0);
    expect(seen).toEqual(Array.from({ length: count }, (_, seq) => seq));
    // Every way was taken: frames written whole at once, cut short by a full socket, queued behind others.
    expect({ writtenWhole: writtenWhole > 0, cutShort: cutShort > 0, queuedBehind: queuedBehind > 0 }).toEqual({
      writtenWhole: true,
      cutShort: true,
      queuedBehind: true,
    });
  } finally {
    connection.close();
    server.stop();
  }
}, 60_000);
