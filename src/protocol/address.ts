/** A host and port, as `[host, port]` or `"host:port"` (`"[::1]:6000"` for IPv6). */
export type HostPort = readonly [host: string, port: number] | string;

/** A parsed address; `key` is its canonical "host:port" text (IPv6 hosts in brackets). */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
  readonly key: string;
}

/** Parses an address; throws a `TypeError` that names `what` it is and what is expected. */
export function parseAddress(addr: HostPort, what = "address"): Endpoint {
  let host: unknown;
  let port: unknown;
  if (typeof addr === "string") {
    const match = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d+)$/.exec(addr.trim());
    host = match?.[1] ?? match?.[2];
    port = match === null ? undefined : Number(match[3]);
  } else if (Array.isArray(addr)) {
    [host, port] = addr;
  }
  if (
    typeof host !== "string" ||
    host === "" ||
    typeof port !== "number" ||
    !Number.isInteger(port) ||
    port < 1 ||
    port > 65535
  ) {
    throw new TypeError(
      `invalid ${what} ${Bun.inspect(addr)}: expected "host:port" (e.g. "127.0.0.1:6000" or "[::1]:6000") or [host, port] with a port from 1 to 65535`,
    );
  }
  return { host, port, key: formatAddress(host, port) };
}

/** "host:port", with an IPv6 host in brackets. */
export function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

const DOTTED_IPV4 =
  /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/**
 * The first octet of a plain dotted-quad IPv4 address ("127.0.0.1", no leading zeros), or undefined
 * for any other text. The common address is checked without ipaddr.js, whose loading costs each
 * starting process about 15 ms of CPU; every other form still goes to ipaddr.js.
 */
export function dottedIPv4FirstOctet(text: string): number | undefined {
  const match = DOTTED_IPV4.exec(text);
  return match === null ? undefined : Number(match[1]);
}

/** What we use of ipaddr.js (typed here, so that users' declarations never reach ipaddr.js's). */
interface AddressChecks {
  isValid(text: string): boolean;
  process(text: string): { range(): string };
}

/** ipaddr.js, loaded when an address is not a plain dotted quad (see `dottedIPv4FirstOctet`). */
export function ipaddrLibrary(): AddressChecks {
  return require("ipaddr.js") as typeof import("ipaddr.js");
}
