import type { Root } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import type { RunningNode } from "./nodes.ts";
import { REPO } from "./processes.ts";

/**
 * Sets `cluster` up with the fixture task `block` ({ id, ms } → { id } after ms) under `name`, and
 * counts how often each id's output arrives: every id once is what a run that lost nothing gives.
 */
export async function setupCountingBlocks(cluster: Root, name: string): Promise<Map<number, number>> {
  const seen = new Map<number, number>();
  await cluster.setup(name, "1", [{ function: tasks.block }], {
    localPackages: [`${REPO}/test/fixtures/tasks`],
    outputHandler: ({ id }) => void seen.set(id, (seen.get(id) ?? 0) + 1),
  });
  return seen;
}

/** How many items `node` finished, as the root's `status()` says. */
export async function processedOn(cluster: Root, node: RunningNode): Promise<number> {
  const report = (await cluster.status()).find((status) => status.address === node.addr);
  return report?.pipeline?.tasks[0]?.processed ?? 0;
}
