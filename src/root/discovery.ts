import { lookup } from "node:dns/promises";
import type IpAddr from "ipaddr.js";
import { AuthError, NameLookupError, VersionMismatchError } from "../errors.ts";
import { formatAddress } from "../protocol/address.ts";
import type { ClientTls } from "../protocol/tls.ts";
import type { NodeStatus } from "../protocol/pipeline.ts";
import { askNodeStatus } from "./node-client.ts";

/**
 * Finding nodes: every host address of a network, or every address a DNS name resolves to, is asked
 * (up to 256 at once) whether a pcluster node listens on the port (the seed's `search_nodes`).
 * Anything else answering there is skipped.
 */

/** Where to look: a CIDR network, or a DNS name (a Kubernetes headless Service, a round-robin name). */
export type ScanTarget =
  | {
      /** The network to scan, as IPv4 or IPv6 CIDR ("192.168.1.0/24", "fd00::/120"); at most 65 536 addresses. */
      network: string;
      dns?: undefined;
    }
  | {
      /** A name whose every address (A and AAAA records) is asked, e.g. "pcluster-nodes.default.svc". */
      dns: string;
      network?: undefined;
    };

export type ScanOptions = ScanTarget & {
  port: number;
  /**
   * Connect timeout per address in ms (default 300). A pcluster node greets at once: an address that
   * connects but sends no greeting within twice that (at least 500 ms) is not one. Its `status` may take
   * longer (four times, at least 1 s).
   */
  timeoutMs?: number;
  /** Addresses asked at once (default 256: a /24 in one round). */
  concurrency?: number;
  token?: string;
  tls?: ClientTls;
};

/** A node that answered. */
export interface NodeFound {
  /** "host:port" (IPv6 hosts in brackets). */
  address: string;
  host: string;
  port: number;
  status: NodeStatus;
}

export interface ScanResult {
  /** Nodes with no pipeline: free for this root. */
  idle: NodeFound[];
  /** Nodes running another root's pipeline (`status.pipeline` says which and whose). */
  busy: NodeFound[];
  /** Nodes that refused us: a token we lack or got wrong, or another protocol version. */
  refused: Array<{ address: string; reason: string }>;
}

/** More addresses than this is a scan that would take minutes and look like an attack. */
const MAX_SCAN_ADDRESSES = 65_536;
const DEFAULT_CONNECT_TIMEOUT_MS = 300;
// A /24 in one round: an address that never answers costs the connect timeout once, not once per round.
const DEFAULT_CONCURRENCY = 256;

/**
 * Asks every host address of `network`, or every address `dns` resolves to, for a pcluster node on
 * `port`, and each node found for its status. Hosts that refuse the connection, time out or are not
 * pcluster nodes are skipped; a node that refuses our token or speaks another protocol version is
 * listed under `refused`. Each list is sorted by address (for a network) or in the order the name
 * resolved. A network of more than 65 536 addresses is refused with a `RangeError` before anything is
 * contacted; a name that does not resolve, with a `NameLookupError`.
 *
 * @example
 * const { idle, busy, refused } = await scanForNodes({ network: "192.168.1.0/24", port: 6000 });
 * for (const node of busy) console.log(`${node.address} runs ${node.status.pipeline!.name}`);
 * await scanForNodes({ dns: "pcluster-nodes.default.svc.cluster.local", port: 6000 }); // every pod of a headless Service
 */
export async function scanForNodes(options: ScanOptions): Promise<ScanResult> {
  const { port } = options;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TypeError(`invalid port ${Bun.inspect(port)}: expected an integer from 1 to 65535`);
  }
  const timeoutMs = positive(options.timeoutMs, DEFAULT_CONNECT_TIMEOUT_MS, "timeoutMs");
  const concurrency = positive(options.concurrency, DEFAULT_CONCURRENCY, "concurrency");
  const hosts = await targetHosts(options);
  // A node greets as soon as it accepts, so a mute listener is given up soon; a node on a busy machine
  // may be slower with its status. A dead address costs the connect timeout only.
  const helloTimeoutMs = Math.max(500, 2 * timeoutMs);
  const answerTimeoutMs = Math.max(1000, 4 * timeoutMs);

  const answers: Array<Answer | undefined> = new Array(hosts.length);
  let next = 0;
  const scanner = async (): Promise<void> => {
    while (next < hosts.length) {
      const index = next++;
      answers[index] = await ask(hosts[index]!, port, { ...options, timeoutMs, helloTimeoutMs, answerTimeoutMs });
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, hosts.length) }, scanner));

  const result: ScanResult = { idle: [], busy: [], refused: [] };
  // `answers` is in address order, so each list comes out sorted.
  for (const answer of answers) {
    if (answer === undefined) continue;
    if ("reason" in answer) result.refused.push(answer);
    else if (answer.status.pipeline === null) result.idle.push(answer);
    // A scanner's fresh connection never owns a pipeline: any pipeline is another root's.
    else result.busy.push(answer);
  }
  return result;
}

type Answer = NodeFound | { address: string; reason: string };

async function ask(
  host: string,
  port: number,
  options: { token?: string; tls?: ClientTls; timeoutMs: number; helloTimeoutMs: number; answerTimeoutMs: number },
): Promise<Answer | undefined> {
  const address = formatAddress(host, port);
  const { token, tls, timeoutMs, helloTimeoutMs, answerTimeoutMs } = options;
  try {
    const status = await askNodeStatus(host, port, {
      token,
      tls,
      connectTimeoutMs: timeoutMs,
      helloTimeoutMs,
      answerTimeoutMs,
    });
    return { address, host, port, status };
  } catch (error) {
    // Only the handshake refuses us; anything else means nothing there, or not a pcluster node.
    if (error instanceof AuthError || error instanceof VersionMismatchError) return { address, reason: error.message };
    return undefined;
  }
}

/** The addresses to ask: the hosts of the network, or those the name resolves to. */
async function targetHosts(target: ScanTarget): Promise<string[]> {
  if (typeof target.network === "string") return hostsOf(target.network);
  if (typeof target.dns === "string" && target.dns.trim() !== "") return resolveName(target.dns.trim());
  throw new TypeError(
    `nothing to scan: give { network: "192.168.1.0/24" } or { dns: "pcluster-nodes.default.svc" }, got ${Bun.inspect(target)}`,
  );
}

/**
 * Every address (IPv4 and IPv6) a name resolves to, as the system resolver gives them (/etc/hosts,
 * then DNS): a Kubernetes headless Service resolves to one address per ready pod.
 */
export async function resolveName(name: string): Promise<string[]> {
  let records: Array<{ address: string }>;
  try {
    records = await lookup(name, { all: true });
  } catch (error) {
    const code = (error as { code?: string }).code ?? (error as Error).message;
    throw new NameLookupError(
      `could not resolve ${name} (${code}): is the name right? (a headless Service without ready pods has no addresses)`,
      { cause: error },
    );
  }
  return [...new Set(records.map((record) => record.address))];
}

/**
 * Every host address of a CIDR network, in numeric order. For IPv4 prefixes below /31 the network and
 * broadcast addresses are left out (RFC 3021 makes both addresses of a /31 hosts); the unspecified
 * address (0.0.0.0, ::) is never a host, though connecting to it reaches this machine.
 */
function hostsOf(network: string): string[] {
  // Loaded on first use: a task's import of "pcluster" loads this module in every Worker thread.
  const ipaddr = require("ipaddr.js") as typeof IpAddr;
  let base: IpAddr.IPv4 | IpAddr.IPv6;
  let prefix: number;
  try {
    [base, prefix] = ipaddr.parseCIDR(network.trim());
  } catch {
    throw new TypeError(
      `invalid network ${Bun.inspect(network)}: expected CIDR notation, e.g. "192.168.1.0/24" or "fd00::/120"`,
    );
  }
  const bits = base.kind() === "ipv4" ? 32 : 128;
  const hostBits = bits - prefix;
  if (hostBits > 16) {
    throw new RangeError(
      `network ${network} has 2^${hostBits} addresses, more than the ${MAX_SCAN_ADDRESSES} a scan may cover; ` +
        `narrow the network (a prefix of /${bits - 16} or longer), e.g. to the subnet your nodes are on`,
    );
  }
  const size = 1 << hostBits;
  const bytes = base.toByteArray();
  const first = bytes.slice(0, -2);
  // Host bits live in the last two bytes at most (hostBits ≤ 16); clear them to get the network address.
  const low = ((bytes.at(-2)! << 8) | bytes.at(-1)!) & ~(size - 1) & 0xffff;
  const skipEnds = base.kind() === "ipv4" && prefix < 31;
  const zoneId = base instanceof ipaddr.IPv6 ? base.zoneId : undefined;
  const hosts: string[] = [];
  for (let offset = skipEnds ? 1 : 0; offset < (skipEnds ? size - 1 : size); offset++) {
    const value = low + offset;
    const address = ipaddr.fromByteArray([...first, value >> 8, value & 0xff]);
    if (address.range() === "unspecified") continue;
    if (zoneId !== undefined) (address as IpAddr.IPv6).zoneId = zoneId;
    hosts.push(address.toString());
  }
  return hosts;
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0)
    throw new TypeError(`${name} must be a positive number, got ${Bun.inspect(value)}`);
  return value;
}
