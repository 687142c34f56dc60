import type { Server } from "bun";
import { StateError } from "../errors.ts";
import { formatAddress } from "../protocol/address.ts";
import type { HttpEndpoint, ListenOptions } from "./endpoint.ts";
import { PROMETHEUS_CONTENT_TYPE } from "./prometheus.ts";

export type { HttpEndpoint, ListenOptions };

/**
 * Serves `fetch` with Bun.serve on host:port. A port in use, or a bad port, is a `StateError` naming
 * the address and what was to be served there, not Bun's bare "Failed to start server".
 */
export function listenHttp(
  what: string,
  options: ListenOptions,
  fetch: (request: Request, server: Server<undefined>) => Response | Promise<Response>,
): HttpEndpoint {
  const host = options.host ?? "127.0.0.1";
  const port = options.port;
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new RangeError(`the ${what} port must be a whole number from 0 to 65535, got ${port}`);
  }
  let server: Server<undefined>;
  try {
    server = Bun.serve({ hostname: host, port, fetch });
  } catch (error) {
    const code = (error as { code?: string }).code;
    const why = code === "EADDRINUSE" ? "the port is in use" : (error as Error).message;
    throw new StateError(`cannot serve the ${what} on ${formatAddress(host, port)}: ${why}`);
  }
  if (options.keepAlive === false) server.unref();
  const address = formatAddress(host, server.port!);
  let stopped: Promise<void> | undefined;
  return {
    url: `http://${address}/`,
    host,
    port: server.port!,
    stop: () => (stopped ??= server.stop(true).then(() => {})),
  };
}

/** Serves `GET /metrics`: the Prometheus text `render` gives, fresh on every scrape. */
export function serveMetricsText(what: string, render: () => string, options: ListenOptions): HttpEndpoint {
  return listenHttp(`${what} metrics`, options, (request) => {
    const path = new URL(request.url).pathname;
    if (path !== "/metrics") {
      return new Response(`pcluster ${what}: metrics are at /metrics\n`, { status: path === "/" ? 200 : 404 });
    }
    return new Response(render(), { headers: { "content-type": PROMETHEUS_CONTENT_TYPE } });
  });
}
