/**
 * How long `searchNodes` takes over a /24 that holds no node: 127.0.0.0/24 only (Linux routes all of
 * 127/8 to loopback, so nothing leaves the machine). Two kinds of empty:
 *   - refusing: nothing listens on the port, every address refuses at once;
 *   - mute: something listens on every address and never speaks (a firewall that accepts, another
 *     program on the port) — the slow case, where each address costs the greeting timeout.
 * A real network's absent hosts answer nothing at all: they cost the connect timeout (300 ms), once,
 * since all 254 addresses are asked in one round. Baseline: the same scans in rounds of 64 (the old
 * default concurrency).
 *
 *   bun run bench discovery
 */
import { scanForNodes } from "../src/root/discovery.ts";
import { median, table } from "./support/report.ts";

const ROUNDS = 3;

function freePort(): number {
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = listener.port;
  listener.stop(true);
  return port;
}

async function timeScan(port: number, concurrency?: number): Promise<number> {
  const times: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const started = performance.now();
    const result = await scanForNodes({ network: "127.0.0.0/24", port, concurrency });
    times.push(performance.now() - started);
    if (result.idle.length + result.busy.length + result.refused.length > 0) throw new Error("found a node: not empty");
  }
  return median(times);
}

const ms = (value: number) => `${Math.round(value)} ms`;
const port = freePort();
const refusing = [await timeScan(port), await timeScan(port, 64)];
const mute = Array.from({ length: 254 }, (_, i) =>
  Bun.listen({ hostname: `127.0.0.${i + 1}`, port, socket: { data() {} } }),
);
const silent = [await timeScan(port), await timeScan(port, 64)];
for (const listener of mute) listener.stop(true);

console.log(`searchNodes over 127.0.0.0/24, no node on the port (median of ${ROUNDS})\n`);
console.log(
  table(
    ["empty /24", "default (256 at once)", "baseline: 64 at once"],
    [
      ["refusing", ms(refusing[0]!), ms(refusing[1]!)],
      ["mute listeners", ms(silent[0]!), ms(silent[1]!)],
    ],
  ),
);
