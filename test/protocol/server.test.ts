import { afterAll, beforeAll, expect, test } from "bun:test";
import { AuthError, ProtocolError } from "../../src/errors.ts";
import { type Server, dial, serve } from "../../src/protocol/handshake.ts";
import type { Connection } from "../../src/protocol/connection.ts";
import { RawClient } from "../support/raw-client.ts";

let server: Server;
const refused: string[] = [];
const peers: Connection[] = [];

beforeAll(() => {
  server = serve({
    hostname: "127.0.0.1",
    port: 0,
    service: "node",
    token: "s3cret",
    maxFrameBytes: 1 << 20,
    onPeer(connection) {
      peers.push(connection);
      connection.onRequest = async (cmd, args) => {
        if (cmd === "echo") return args;
        if (cmd === "slow-echo") return Bun.sleep(5).then(() => args);
        throw new ProtocolError(`unknown command "${cmd}"`);
      };
    },
    onRefused: (_address, error) => refused.push((error as Error).message),
  });
});
afterAll(() => server.stop());

async function errorOf(client: RawClient) {
  const message = await client.waitFor((m) => m.t === "err");
  await client.waitClosed();
  return message as { code: string; message: string };
}

test("four bad clients get clear errors while a fifth is served", async () => {
  const good = await dial({ hostname: "127.0.0.1", port: server.port, token: "s3cret", service: "node" });
  const answers: Promise<unknown>[] = [];
  for (let i = 0; i < 500; i++) answers.push(good.connection.request(i % 2 ? "echo" : "slow-echo", { i }));

  const garbage = await RawClient.connect(server.port);
  garbage.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  const oversize = await RawClient.connect(server.port);
  oversize.write(Uint8Array.of(0x7f, 0xff, 0xff, 0xff, 1, 2, 3));
  const oldVersion = await RawClient.connect(server.port);
  await oldVersion.waitFor((m) => m.t === "hello");
  oldVersion.send({ t: "auth", protocol: 99, nonce: new Uint8Array(32) });
  const wrongToken = dial({ hostname: "127.0.0.1", port: server.port, token: "guess", service: "node" });

  const garbageError = await errorOf(garbage);
  expect(garbageError.code).toBe("protocol");
  expect(garbageError.message).toMatch(/frame length \d+ exceeds the maximum of 1048576 bytes/);
  const oversizeError = await errorOf(oversize);
  expect(oversizeError.message).toContain("frame length 2147483647 exceeds the maximum");
  const versionError = await errorOf(oldVersion);
  expect(versionError.code).toBe("version");
  expect(versionError.message).toContain("the client speaks v99");
  await expect(wrongToken).rejects.toBeInstanceOf(AuthError);
  await expect(wrongToken).rejects.toThrow(/wrong token/);

  const results = await Promise.all(answers);
  expect(results).toEqual(Array.from({ length: 500 }, (_, i) => ({ i })));
  await expect(good.connection.request("dance")).rejects.toThrow(/unknown command "dance"/);
  expect(refused.length).toBeGreaterThanOrEqual(4);
  good.connection.close();
});

test("a client without a token is told the node needs one", async () => {
  await expect(dial({ hostname: "127.0.0.1", port: server.port })).rejects.toThrow(/requires a token/);
});

test("a message before the handshake is refused", async () => {
  const early = await RawClient.connect(server.port);
  early.send({ t: "req", id: 1, cmd: "echo", args: 1 });
  const error = await errorOf(early);
  expect(error.message).toContain('expected an "auth" message to open the connection, got "req"');
});

test("a client that reaches the wrong kind of server says so", async () => {
  await expect(dial({ hostname: "127.0.0.1", port: server.port, token: "s3cret", service: "log" })).rejects.toThrow(
    /is a pcluster node server, not a log/,
  );
});

test("the client refuses a server that cannot prove the token", async () => {
  // A fake node that claims auth but answers with a bogus proof.
  const fake = serve({
    hostname: "127.0.0.1",
    port: 0,
    service: "node",
    onPeer() {},
  });
  try {
    // Without a token on the server, a client with a token still connects (nothing to prove),
    const ok = await dial({ hostname: "127.0.0.1", port: fake.port, token: "x" });
    ok.connection.close();
  } finally {
    fake.stop();
  }
  const impostor = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        const { encode } = require("../../src/protocol/codec.ts");
        const { frameOf } = require("../../src/protocol/frame.ts");
        socket.write(
          frameOf(
            encode({ t: "hello", protocol: 1, service: "node", version: "x", auth: true, nonce: new Uint8Array(32) }),
          ),
        );
        setTimeout(() => socket.write(frameOf(encode({ t: "welcome", mac: new Uint8Array(32) }))), 20);
      },
      data() {},
    },
  });
  try {
    await expect(dial({ hostname: "127.0.0.1", port: impostor.port, token: "x" })).rejects.toThrow(
      /could not prove it knows the token/,
    );
  } finally {
    impostor.stop(true);
  }
});
