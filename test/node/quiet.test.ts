import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NodeBusyError } from "../../src/errors.ts";
import { waitForFile } from "../support/log-server.ts";
import { NodeTestClient } from "../support/node-client.ts";
import { startLogServer, startNode } from "../support/nodes.ts";
import { REPO, killAll } from "../support/processes.ts";

/** `pcluster node --quiet` (what `Root.local` starts): notes go to the log server only, warnings still print. */
const temp = mkdtempSync(join(tmpdir(), "pcluster-quiet-"));
const clients: NodeTestClient[] = [];

afterAll(async () => {
  for (const client of clients) client.close();
  await killAll();
  rmSync(temp, { recursive: true, force: true });
});

test("a quiet node's setup notes reach the log server but not its console; a refusal still prints", async () => {
  const logFile = join(temp, "cluster.log");
  const log = await startLogServer(logFile);
  const node = await startNode({ logPort: log.port, workers: 1, args: ["--quiet"] });
  const owner = await NodeTestClient.connect({ port: node.port, client: "quiet-owner" });
  const intruder = await NodeTestClient.connect({ port: node.port, client: "quiet-intruder" });
  clients.push(owner, intruder);
  const spec = {
    name: "squares",
    version: "1.0",
    packages: [join(REPO, "test/fixtures/square")],
    tasks: ["square#square"],
  };
  await owner.setup(spec);
  await expect(intruder.setup(spec)).rejects.toBeInstanceOf(NodeBusyError);
  const tag = `[node ${node.addr}]`;
  await waitForFile(logFile, (text) => text.includes(`${tag} "squares" 1.0 ready on 1 workers`));
  // The warning is printed: by then the info notes before it would have been too.
  await node.proc.waitFor(/refused setup of "squares" 1\.0 for root quiet-intruder/, 10_000);
  expect(node.proc.output).not.toContain("setting up");
  expect(node.proc.output).not.toContain("ready on");
  expect(node.proc.output).toContain(`pcluster node listening on ${node.addr}`);
}, 60_000);
