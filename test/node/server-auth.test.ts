import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AuthError } from "../../src/errors.ts";
import { NodeTestClient, type PipelineSpec } from "../support/node-client.ts";
import { type RunningNode, runCli, startNode, tearDown } from "../support/nodes.ts";
import { REPO } from "../support/processes.ts";

/** Who may use a node: the token (flag or PCLUSTER_TOKEN), the loopback rule, TLS. */

const root = mkdtempSync(join(tmpdir(), "pcluster-server-auth-"));
const TOKEN = "correct horse battery staple";
let packageDir: string;
let tokenNode: RunningNode;
const clients: NodeTestClient[] = [];
const workdirs: string[] = [];

const pipeline = (): PipelineSpec => ({
  name: "square",
  version: "1",
  packages: [packageDir],
  tasks: ["square#square"],
  workers: 1,
});

beforeAll(async () => {
  [packageDir, tokenNode] = await Promise.all([
    join(REPO, "test/fixtures/square"),
    startNode({ workers: 1, token: TOKEN }),
  ]);
  workdirs.push(tokenNode.workdir);
}, 60_000);

afterAll(() => tearDown(clients, [root, ...workdirs]), 20_000);

async function connect(options: Parameters<typeof NodeTestClient.connect>[0]): Promise<NodeTestClient> {
  const client = await NodeTestClient.connect(options);
  clients.push(client);
  return client;
}

async function expectServed(client: NodeTestClient): Promise<void> {
  await client.setup(pipeline());
  const numbers = Array.from({ length: 100 }, (_, i) => i);
  const ids = client.feed(numbers);
  await client.waitDone(ids);
  expect(client.outputsOf(ids)).toEqual(numbers.map((n) => [n * n]));
  await client.request("reset");
}

/** Forwards 127.0.0.1 TCP to `port`, keeping every byte that passes in either direction. */
function startRelay(port: number): { port: number; bytes: () => Buffer; stop: () => void } {
  const chunks: Buffer[] = [];
  type Ends = { upstream?: Socket<undefined>; pending: Buffer[] };
  const listener = Bun.listen<Ends>({
    hostname: "127.0.0.1",
    port: 0,
    data: { pending: [] },
    socket: {
      open(client) {
        client.data = { pending: [] };
        Bun.connect({
          hostname: "127.0.0.1",
          port,
          socket: {
            data(_upstream, chunk) {
              chunks.push(Buffer.from(chunk));
              client.write(chunk);
            },
            close() {
              client.end();
            },
            error() {
              client.end();
            },
          },
        }).then(
          (upstream) => {
            client.data.upstream = upstream;
            for (const chunk of client.data.pending) upstream.write(chunk);
          },
          () => {
            client.end();
          },
        );
      },
      data(client, chunk) {
        const copy = Buffer.from(chunk);
        chunks.push(copy);
        if (client.data.upstream) client.data.upstream.write(copy);
        else client.data.pending.push(copy);
      },
      close(client) {
        client.data.upstream?.end();
      },
    },
  });
  return { port: listener.port, bytes: () => Buffer.concat(chunks), stop: () => listener.stop(true) };
}

describe("a node started with --token", () => {
  test("refuses a root without the token or with a wrong one, with a clear error, and serves the right one", async () => {
    const without = await NodeTestClient.connect({ port: tokenNode.port }).catch((e: Error) => e);
    expect(without).toBeInstanceOf(AuthError);
    expect((without as Error).message).toContain(`${"127.0.0.1"} requires a token: pass one (or set PCLUSTER_TOKEN)`);
    const wrong = await NodeTestClient.connect({ port: tokenNode.port, token: "guess" }).catch((e: Error) => e);
    expect(wrong).toBeInstanceOf(AuthError);
    expect((wrong as Error).message).toContain("wrong token: the client's proof does not match this node's token");

    await expectServed(await connect({ port: tokenNode.port, token: TOKEN }));
    // The node says whom it refused and why, on its console.
    await tokenNode.proc.waitFor(/refused 127\.0\.0\.1: wrong token/, 3000);
  }, 60_000);

  test("the token itself never crosses the wire", async () => {
    const relay = startRelay(tokenNode.port);
    try {
      const client = await connect({ port: relay.port, token: TOKEN });
      expect(await client.request("ping")).toBe("pong");
      client.close();
      await client.closed;
      const wire = relay.bytes();
      expect(wire.length).toBeGreaterThan(64); // hello, auth, welcome, ping, pong went through
      expect(wire.includes(Buffer.from(TOKEN))).toBe(false);
      expect(wire.includes(Buffer.from("horse"))).toBe(false);
    } finally {
      relay.stop();
    }
  }, 60_000);

  test("pcluster status takes the token from --token or PCLUSTER_TOKEN, and says when it is missing", async () => {
    const flag = await runCli(["status", "--nodes", tokenNode.addr, "--token", TOKEN]);
    expect(flag.code).toBe(0);
    expect(flag.stdout).toMatch(
      new RegExp(`^${tokenNode.addr.replaceAll(".", "\\.")}\\s+${tokenNode.proc.pid}\\s+\\(idle\\)`, "m"),
    );
    const env = await runCli(["status", "--nodes", tokenNode.addr, "--json"], { env: { PCLUSTER_TOKEN: TOKEN } });
    expect(env.code).toBe(0);
    expect(JSON.parse(env.stdout)[0]).toMatchObject({
      address: tokenNode.addr,
      status: { listen: tokenNode.addr, pipeline: null },
    });
    const none = await runCli(["status", "--nodes", tokenNode.addr]);
    expect(none.code).toBe(1);
    expect(none.stdout).toMatch(
      new RegExp(`^${tokenNode.addr.replaceAll(".", "\\.")}\\s+unreachable: 127\\.0\\.0\\.1 requires a token`, "m"),
    );
    // A node that is down is a row of the table too, beside the ones that answer.
    const down = await runCli(["status", "--nodes", `${tokenNode.addr},127.0.0.1:1`, "--token", TOKEN]);
    expect(down.code).toBe(1);
    expect(down.stdout).toMatch(/^127\.0\.0\.1:1\s+unreachable: could not connect to 127\.0\.0\.1:1/m);
    expect(down.stdout).toMatch(/\(idle\)/);
  }, 60_000);
});

test("a node started with PCLUSTER_TOKEN in its environment requires that token", async () => {
  const node = await startNode({ workers: 1, env: { PCLUSTER_TOKEN: TOKEN } });
  workdirs.push(node.workdir);
  await expect(NodeTestClient.connect({ port: node.port })).rejects.toThrow(/requires a token/);
  await expect(NodeTestClient.connect({ port: node.port, token: "guess" })).rejects.toBeInstanceOf(AuthError);
  const client = await connect({ port: node.port, token: TOKEN });
  expect(await client.request("ping")).toBe("pong");
  node.proc.kill("SIGTERM");
  expect(await node.proc.waitExit()).toBe(0);
}, 60_000);

test("a node refuses to listen beyond loopback without a token, and says why", async () => {
  const refused = await runCli(["node", "--host", "0.0.0.0", "--port", "0", "--workdir", join(root, "exposed")]);
  expect(refused.code).toBe(1);
  const output = refused.stdout + refused.stderr;
  expect(output).toContain("refusing to listen on 0.0.0.0 without a token");
  expect(output).toContain("a node installs and runs the code it is sent");
  expect(output).toMatch(/--token.*--insecure/s);
  expect(output).not.toContain("listening on");
}, 60_000);

// A self-signed certificate for 127.0.0.1, valid for 100 years, made once with
// `openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1`
// and committed, so that this test runs on machines without openssl.
const TLS_FIXTURES = join(import.meta.dir, "../fixtures/tls");

describe("a node started with --tls-cert and --tls-key", () => {
  let tlsNode: RunningNode;
  let cert: string;

  beforeAll(async () => {
    const certFile = join(TLS_FIXTURES, "cert.pem");
    cert = readFileSync(certFile, "utf8");
    tlsNode = await startNode({ workers: 1, tls: { cert: certFile, key: join(TLS_FIXTURES, "key.pem") } });
    workdirs.push(tlsNode.workdir);
  }, 60_000);

  test("serves a root that skips verification, and one that verifies with the certificate as its CA", async () => {
    await expectServed(await connect({ port: tlsNode.port, tls: { rejectUnauthorized: false } }));
    const verified = await connect({ port: tlsNode.port, tls: { ca: cert } });
    expect(verified.hello.service).toBe("node");
    await expectServed(verified);
  }, 60_000);

  test("a root that trusts only the system CAs refuses the self-signed node, saying why; a plain TCP root gets no answer", async () => {
    const address = `127\\.0\\.0\\.1:${tlsNode.port}`;
    await expect(NodeTestClient.connect({ port: tlsNode.port, tls: true, timeoutMs: 3000 })).rejects.toThrow(
      new RegExp(`TLS: the certificate of ${address} is not trusted here: .*self[- ]signed`, "i"),
    );
    // A certificate for 127.0.0.1, reached by another name: the name is not in it.
    await expect(
      NodeTestClient.connect({ host: "localhost", port: tlsNode.port, tls: { ca: cert }, timeoutMs: 3000 }),
    ).rejects.toThrow(/TLS: the certificate of localhost:\d+ is not trusted here: .*localhost/);
    await expect(NodeTestClient.connect({ port: tlsNode.port, timeoutMs: 1000 })).rejects.toThrow();
    // And the node still serves.
    const client = await connect({ port: tlsNode.port, tls: { ca: cert } });
    expect(await client.request("ping")).toBe("pong");
  }, 60_000);

  test("pcluster status over TLS: --tls-ca trusts the node's certificate; --tls alone refuses it", async () => {
    const trusted = await runCli([
      "status",
      "--nodes",
      `127.0.0.1:${tlsNode.port}`,
      "--tls-ca",
      join(TLS_FIXTURES, "cert.pem"),
      "--json",
    ]);
    expect(trusted.code).toBe(0);
    const [report] = JSON.parse(trusted.stdout) as Array<{ address: string; status?: { cores: number } }>;
    expect(report!.address).toBe(`127.0.0.1:${tlsNode.port}`);
    expect(report!.status!.cores).toBeGreaterThan(0);
    const untrusted = await runCli(["status", "--nodes", `127.0.0.1:${tlsNode.port}`, "--tls"]);
    expect(untrusted.code).toBe(1);
    expect(untrusted.stdout).toContain("unreachable");
    expect(untrusted.stdout).toContain("is not trusted here");
  }, 60_000);
});
