import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Root } from "../../src/index.ts";
import { PROTOCOL_VERSION } from "../../src/protocol/messages.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, runCli, startNode, tearDown } from "../support/nodes.ts";
import { REPO } from "../support/processes.ts";
import { RawClient } from "../support/raw-client.ts";

/**
 * No memory before trust, on a real node while a root's run goes on: peers that have not passed the
 * handshake may send only small frames, and only so many of them may be open; a flood of them costs
 * the node neither memory nor a worker.
 */

const TASKS = join(REPO, "test/fixtures/tasks");
const MB = 1024 * 1024;
const MAX_CONNECTIONS = 24;
const MAX_UNAUTHENTICATED = 12;
const ITEMS = 1500;

let node: RunningNode;
let root: Root;
const clients: RawClient[] = [];

beforeAll(async () => {
  node = await startNode({
    workers: 2,
    args: [
      "--memory-limit",
      "400",
      "--max-connections",
      String(MAX_CONNECTIONS),
      "--max-unauthenticated",
      String(MAX_UNAUTHENTICATED),
    ],
  });
}, 30_000);

afterAll(async () => {
  await root?.close().catch(() => {});
  await tearDown(clients, [node?.workdir]);
}, 20_000);

/** The node process's resident bytes, as the kernel counts them. */
function rssOf(pid: number): number {
  const match = readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/);
  if (match === null) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) * 1024;
}

async function open(): Promise<RawClient> {
  const client = await RawClient.connect(node.port);
  clients.push(client);
  return client;
}

/** A frame header announcing `length` body bytes, then `sent` of them. */
function announce(length: number, sent: number): Uint8Array {
  const bytes = new Uint8Array(4 + sent).fill(0x2a);
  new DataView(bytes.buffer).setUint32(0, length);
  return bytes;
}

/** The err message a raw client gets, once the node has also closed the connection. */
async function refusal(client: RawClient): Promise<{ code: string; message: string }> {
  const message = await client.waitFor((m) => m.t === "err");
  await client.waitClosed();
  return message as { code: string; message: string };
}

/**
 * Opens `count` connections and waits for the node's hello on each. Connections refused or closed a
 * moment ago may still count until the node has seen them close, so a refusal for a cap is retried
 * (bounded).
 */
async function openAdmitted(count: number): Promise<RawClient[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const opened = await Promise.all(Array.from({ length: count }, open));
    const answers = await Promise.all(opened.map((client) => client.waitFor((m) => m.t === "hello" || m.t === "err")));
    if (answers.every((message) => message.t === "hello")) return opened;
    for (const client of opened) client.close();
    if (Date.now() > deadline)
      throw new Error(`the node did not admit ${count} connections: ${JSON.stringify(answers)}`);
    await Bun.sleep(100);
  }
}

test("a flood before the handshake costs no memory and no worker; connections past a cap are refused, the run completes", async () => {
  const outputs: number[] = [];
  root = new Root([["127.0.0.1", node.port]]);
  await root.setup("untrusted", "1", [{ function: tasks.sleepy }], {
    localPackages: [TASKS],
    outputHandler: (output) => void outputs.push((output as { id: number }).id),
  });
  const before = rssOf(node.proc.pid);
  let peak = before;
  const sample = setInterval(() => (peak = Math.max(peak, rssOf(node.proc.pid))), 50);
  try {
    root.feed(...Array.from({ length: ITEMS }, (_, id) => ({ ms: 5, id })));
    const done = root.waitEmpty();
    done.catch(() => {}); // awaited below; a failure before then must not surface as unhandled

    // 12 peers announce 60 MiB frames before the handshake: each is refused at its header, naming the limit.
    const announcers = await Promise.all(Array.from({ length: 12 }, open));
    for (const client of announcers) client.write(announce(60 * MB, 1000));
    for (const client of announcers) {
      const error = await refusal(client);
      expect(error.code).toBe("protocol");
      expect(error.message).toContain(
        "frame length 62914560 exceeds the maximum of 4096 bytes a peer may send before the handshake",
      );
    }

    // As many as the cap may wait in the handshake; one more is refused before it gets a hello.
    const waiting = await openAdmitted(MAX_UNAUTHENTICATED);
    for (const client of waiting) client.write(announce(4000, 100)); // small partial frames: allowed, held
    const extra = await open();
    const capped = await refusal(extra);
    expect(capped.code).toBe("connection-limit");
    expect(capped.message).toBe(
      `this node already has ${MAX_UNAUTHENTICATED} connections waiting for the handshake, its limit (--max-unauthenticated); try again in a few seconds`,
    );
    expect(extra.messages.map((m) => m.t)).toEqual(["err"]);
    for (const client of waiting) client.close();

    // Peers past the handshake fill --max-connections (the root holds one), a cap's worth at a time; each
    // announces 60 MiB and sends 256 KiB, which is all the node holds for it. One more is refused.
    const trusted: RawClient[] = [];
    while (trusted.length < MAX_CONNECTIONS - 1) {
      const batch = await openAdmitted(Math.min(MAX_UNAUTHENTICATED, MAX_CONNECTIONS - 1 - trusted.length));
      for (const client of batch) {
        client.send({ t: "auth", protocol: PROTOCOL_VERSION, nonce: new Uint8Array(32), client: "raw" });
        await client.waitFor((m) => m.t === "welcome");
        client.write(announce(60 * MB, 256 * 1024));
        trusted.push(client);
      }
    }
    const overCap = await open();
    const full = await refusal(overCap);
    expect(full.code).toBe("connection-limit");
    expect(full.message).toBe(
      `this node already has ${MAX_CONNECTIONS} connections open, its limit (--max-connections); close some, or raise the limit`,
    );

    await done;
    expect(outputs.length).toBe(ITEMS);
    expect(new Set(outputs).size).toBe(ITEMS);
    const [report] = await root.status();
    expect(report!.pipeline!.workersReplaced).toBe(0);
    expect(node.proc.proc.exitCode).toBeNull();
    for (const client of trusted) expect(client.isClosed).toBe(false); // held, not failed
  } finally {
    clearInterval(sample);
  }
  peak = Math.max(peak, rssOf(node.proc.pid));
  expect(peak - before).toBeLessThan(100 * MB);
}, 60_000);

test("the caps are checked at the command line", async () => {
  for (const flag of ["--max-connections", "--max-unauthenticated", "--max-handshake-frame"]) {
    const result = await runCli(["node", "--port", "0", flag, "0"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`${flag} must be a whole number of at least 1, got "0"`);
  }
}, 30_000);
