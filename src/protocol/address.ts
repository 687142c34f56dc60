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
