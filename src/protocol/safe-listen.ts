import { AuthError } from "../errors.ts";
import { dottedIPv4FirstOctet, ipaddrLibrary } from "./address.ts";

/** Whether `host` only accepts connections from this machine: 127.0.0.0/8, ::1 (also IPv4-mapped), "localhost". */
export function isLoopback(host: string): boolean {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  if (bare.toLowerCase() === "localhost") return true;
  const firstOctet = dottedIPv4FirstOctet(bare);
  if (firstOctet !== undefined) return firstOctet === 127;
  const ipaddr = ipaddrLibrary();
  if (!ipaddr.isValid(bare)) return false;
  // process() turns ::ffff:127.0.0.1 into 127.0.0.1, so mapped loopback counts as loopback.
  return ipaddr.process(bare).range() === "loopback";
}

const exposureRisk = {
  node: "a node installs and runs the code it is sent",
  log: "anyone could write lines into the log file",
} as const;

/**
 * Refuses to listen beyond loopback without a token, unless the user said `--insecure`. Servers call
 * it before they listen, so nothing is ever exposed by mistake.
 *
 * @example
 * assertSafeListen(args.host, token !== undefined, args.insecure, "node"); // throws AuthError for 0.0.0.0 without a token
 */
export function assertSafeListen(host: string, hasToken: boolean, insecure: boolean, service: "node" | "log"): void {
  if (hasToken || insecure || isLoopback(host)) return;
  throw new AuthError(
    `refusing to listen on ${host} without a token: other machines could connect, and ${exposureRisk[service]}. ` +
      `Pass --token (or set PCLUSTER_TOKEN) so clients must prove they know it, listen on 127.0.0.1, ` +
      `or pass --insecure if this network is trusted.`,
  );
}
