import { type HostPort, parseAddress } from "../../protocol/address.ts";
import { dial } from "../../protocol/handshake.ts";
import type { Connection } from "../../protocol/connection.ts";
import type { NodeStatus } from "../../protocol/pipeline.ts";
import type { InspectOptions } from "../inspect.ts";
import type { Look } from "./snapshot.ts";

type Answer = Look["nodes"][number];

interface Watched {
  address: string;
  host: string;
  port: number;
  connection: Connection | undefined;
  /** The question being asked now, and the last answer. */
  asking: Promise<Answer> | undefined;
  last: Answer | undefined;
}

/** A look waits this long for a node at most; a slower one shows its last answer (a dead one: its dial). */
const LOOK_WAIT_MS = 1000;

/**
 * Asks nodes for their status, for `pcluster dashboard`: one connection per node, kept between looks
 * (a look a second should not cost a handshake each), dialled again after it fails. The time a status
 * request takes is the node's round trip. Nodes are asked independently: one that hangs does not hold
 * up the look at the others.
 */
export class NodeWatcher {
  readonly #nodes: Watched[];
  readonly #options: InspectOptions;

  constructor(nodes: HostPort[], options: InspectOptions = {}) {
    this.#options = options;
    this.#nodes = nodes.map((node) => {
      const { host, port, key } = parseAddress(node, "node address");
      return { address: key, host, port, connection: undefined, asking: undefined, last: undefined };
    });
  }

  async look(): Promise<Look> {
    const answers = this.#nodes.map(async (node): Promise<Answer> => {
      node.asking ??= this.#ask(node).then((answer) => {
        node.asking = undefined;
        return (node.last = answer);
      });
      await Promise.race([node.asking, Bun.sleep(LOOK_WAIT_MS)]);
      return node.last ?? { address: node.address, error: "no answer yet" };
    });
    return { nodes: await Promise.all(answers) };
  }

  close(): void {
    for (const node of this.#nodes) node.connection?.close();
  }

  async #ask(node: Watched): Promise<Answer> {
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
