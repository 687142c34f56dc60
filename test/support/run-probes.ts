import type { Root } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import type { RunningNode } from "./nodes.ts";
import { REPO } from "./processes.ts";
import { waitFor } from "./wait.ts";

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

/** The nodes `cluster` runs its pipeline on now (its lanes), not only those it knows. */
export function lanesOf(cluster: Root): string[] {
  return cluster.observe().nodes.map((node) => node.address);
}

/** Waits until `node` is in `cluster`'s run (a lane of its own): joined, not only added or installing. */
export async function waitInRun(cluster: Root, node: RunningNode): Promise<void> {
  await waitFor(() => lanesOf(cluster), {
    what: `${node.addr} in the run`,
    until: (lanes) => lanes.includes(node.addr),
  });
}

/**
 * Waits until `cluster`'s nodes have exactly `items` in their engines, by their own count: a signal sent
 * to a node after this finds them there. (The root counts an item in flight once it is sent: a node
 * signalled then may not have read it yet, and stops at once with nothing to finish.)
 */
export async function waitInFlight(cluster: Root, items: number): Promise<void> {
  await waitFor(async () => (await cluster.status()).reduce((sum, node) => sum + (node.pipeline?.inFlight ?? 0), 0), {
    what: `${items} items in the nodes' engines`,
    until: (n) => n === items,
  });
}
