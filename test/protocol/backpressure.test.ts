import { expect, test } from "bun:test";
import { serve } from "../../src/protocol/handshake.ts";
import { spawnBun } from "../support/processes.ts";

test("200 MB to a slow reader arrive whole and in order, and the sender's queue stays bounded", async () => {
  const count = 200;
  const size = 1 << 20;
  const maxQueued = 4 << 20;
  let next = 0;
  let corrupt = 0;
  let received = 0;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const server = serve({
    hostname: "127.0.0.1",
    port: 0,
    service: "node",
    onPeer(connection) {
      connection.onMessage = (message) => {
        if (message.t !== "event") return;
        const { seq, bytes } = message.data as { seq: number; bytes: Uint8Array };
        if (seq !== next++) corrupt++;
        for (let i = 0; i < size; i += 4096) if (bytes[i] !== ((seq + i) & 0xff)) corrupt++;
        received += bytes.length;
        // A deliberately slow reader: stop reading for a moment after every frame.
        connection.pause();
        setTimeout(() => connection.resume(), 8);
      };
      connection.closed.then(() => done());
    },
  });
  const sender = spawnBun([
    "test/support/bulk-sender.ts",
    String(server.port),
    String(count),
    String(size),
    String(maxQueued),
  ]);
  try {
    await Promise.race([finished, Bun.sleep(50_000)]);
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
