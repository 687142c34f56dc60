import { diagnostics } from "../../diagnostics.ts";
import { PclusterError } from "../../errors.ts";
import { runUntilStopped } from "../../lifetime.ts";
import type { HttpEndpoint } from "../../metrics/endpoint.ts";
import type { HostPort } from "../../protocol/address.ts";
import type { InspectOptions } from "../inspect.ts";
import { NodeWatcher } from "./node-watcher.ts";
import { serveDashboard } from "./server.ts";

export interface StandaloneDashboardOptions extends InspectOptions {
  nodes: HostPort[];
  host: string;
  port: number;
  intervalMs: number;
}

/**
 * `pcluster dashboard`: serves the dashboard of the given nodes until SIGINT or SIGTERM. It needs no
 * root: it asks the nodes for their status as `pcluster status` does. A refusal (the port in use) is
 * printed and exits with code 1.
 */
export async function runDashboard(options: StandaloneDashboardOptions): Promise<void> {
  const watcher = new NodeWatcher(options.nodes, options);
  let endpoint: HttpEndpoint;
  try {
    endpoint = serveDashboard(() => watcher.look(), options);
  } catch (error) {
    if (!(error instanceof PclusterError)) throw error;
    diagnostics().error(`pcluster dashboard: ${error.message}`);
    process.exit(1);
  }
  console.log(`pcluster dashboard on ${endpoint.url} (nodes ${options.nodes.join(", ")})`);
  await runUntilStopped(async () => {
    watcher.close();
    await endpoint.stop();
  });
  process.exit(0);
}
