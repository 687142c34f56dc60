import { afterAll, expect, test } from "bun:test";
import { TimeoutError } from "../../src/errors.ts";
import { parseAddress } from "../../src/protocol/address.ts";
import { NodeClient } from "../../src/root/node-client.ts";
import { runCli } from "../support/nodes.ts";

/**
 * A node address where something accepts TCP but never speaks (a black hole behind a firewall, another
 * program on the port) is, to a user, a node that could not be reached: the error says so, with the port.
 */

const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
const address = `127.0.0.1:${silent.port}`;

afterAll(() => silent.stop(true));

test("the root: could not connect to host:port within the connect timeout", async () => {
  const connecting = NodeClient.connect(parseAddress(address), { connectTimeoutMs: 1000 });
  await expect(connecting).rejects.toBeInstanceOf(TimeoutError);
  await expect(connecting).rejects.toThrow(`could not connect to ${address} within 1000 ms`);
  await expect(connecting).rejects.toThrow("no pcluster server answered");
  await expect(connecting).rejects.not.toThrow(/hello/);
}, 10_000);

test("pcluster status: the same words in the node's row", async () => {
  const result = await runCli(["status", "--nodes", address]);
  expect(result.code).toBe(1);
  // No pid: the node never answered.
  expect(result.stdout).toMatch(
    new RegExp(
      `^${address.replaceAll(".", "\\.")}\\s+unreachable: could not connect to ${address} within 3000 ms`,
      "m",
    ),
  );
}, 15_000);
