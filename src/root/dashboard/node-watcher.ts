import { type HostPort, parseAddress } from "../../protocol/address.ts";
import { dial } from "../../protocol/auth.ts";
import type { Connection } from "../../protocol/connection.ts";
import type { NodeStatus } from "../../protocol/pipeline.ts";
import type { InspectOptions } from "../inspect.ts";
import type { Look } from "./snapshot.ts";

interface Watched {
  address: string;
  host: string;
  port: number;
  connection: Connection | undefined;
}

/**
 * Asks nodes for their status, for `pcluster dashboard`: one connection per node, kept between looks
 * (a look a second should not cost a handshake each), dialled again after it fails. The time a status
 * request takes is the node's round trip.
 */
export class NodeWatcher {
  readonly #nodes: Watched[];
  readonly #options: InspectOptions;

  constructor(nodes: HostPort[], options: InspectOptions = {}) {
    this.#options = options;
    this.#nodes = nodes.map((node) => {
      const { host, port, key } = parseAddress(node, "node address");
      return { address: key, host, port, connection: undefined };
    });
  }

  async look(): Promise<Look> {
    return { nodes: await Promise.all(this.#nodes.map((node) => this.#ask(node))) };
  }

  close(): void {
    for (const node of this.#nodes) node.connection?.close();
  }

  async #ask(node: Watched): Promise<Look["nodes"][number]> {
    const timeoutMs = this.#options.timeoutMs ?? 3000;
    try {
      if (node.connection === undefined || node.connection.isClosed) {
        node.connection = undefined;
        const { connection } = await dial({
          hostname: node.host,
          port: node.port,
          service: "node",
          token: this.#options.token,
          tls: this.#options.tls,
          connectTimeoutMs: timeoutMs,
          timeoutMs,
          client: "pcluster dashboard",
        });
        node.connection = connection;
      }
      const started = performance.now();
      const status = await node.connection.request<NodeStatus>("status", undefined, timeoutMs);
      return { address: node.address, status, roundTripMs: performance.now() - started };
    } catch (error) {
      node.connection?.close();
      node.connection = undefined;
      return { address: node.address, error: (error as Error).message };
    }
  }
}
