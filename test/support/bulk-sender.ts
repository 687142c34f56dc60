// Sends `count` frames of `size` bytes to a pcluster server as fast as backpressure allows, then
// prints what it saw of its own memory: the largest write queue and the largest RSS.
import { dial } from "../../src/protocol/handshake.ts";
import { frameOf } from "../../src/protocol/frame.ts";
import { encode } from "../../src/protocol/codec.ts";

const [port, count, size, maxQueued] = process.argv.slice(2).map(Number) as [number, number, number, number];
const { connection } = await dial({ hostname: "127.0.0.1", port, maxQueuedBytes: maxQueued });
Bun.gc(true);
const rssBefore = process.memoryUsage.rss();
let maxQueuedSeen = 0;
let maxRss = rssBefore;
for (let seq = 0; seq < count; seq++) {
  await connection.writable();
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) bytes[i] = (seq + i) & 0xff;
  connection.sendFrame(frameOf(encode({ t: "event", name: "chunk", data: { seq, bytes } })));
  maxQueuedSeen = Math.max(maxQueuedSeen, connection.queuedBytes);
  // Live memory, not garbage the collector has yet to take: collect before reading RSS.
  if (seq % 20 === 0) {
    Bun.gc(true);
    maxRss = Math.max(maxRss, process.memoryUsage.rss());
  }
}
connection.close();
await connection.closed;
console.log(JSON.stringify({ maxQueuedSeen, rssGrowth: maxRss - rssBefore }));
