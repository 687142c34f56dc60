import type { HttpEndpoint } from "../../metrics/endpoint.ts";
import { listenHttp } from "../../metrics/http.ts";
import { type DashboardSnapshot, DashboardModel, type Look } from "./snapshot.ts";
import page from "./dashboard.html" with { type: "text" };

export interface DashboardOptions {
  /** Default 127.0.0.1: the dashboard is not authenticated. */
  host?: string;
  /** Default 0: any free port (see the returned `url`). */
  port?: number;
  /** Milliseconds between two looks at the cluster while a page is open (default 1000). */
  intervalMs?: number;
  /**
   * Whether the dashboard keeps the process alive (default true). A Root's does not: a script that
   * is done exits, as it would without a dashboard.
   */
  keepAlive?: boolean;
}

/** Bun types every `.html` import as a bundle for its dev server; imported as text, it is the file's text. */
const PAGE = page as unknown as string;

const encoder = new TextEncoder();

/**
 * Serves the dashboard: the page at `/`, a stream of snapshots at `/events` (server-sent events, one
 * JSON snapshot per look), and the latest snapshot at `/snapshot.json`. The cluster is looked at only
 * while some page is open (and once per `/snapshot.json`), at most one look at a time.
 */
export function serveDashboard(look: () => Promise<Look>, options: DashboardOptions = {}): HttpEndpoint {
  const model = new DashboardModel();
  const streams = new Set<ReadableStreamDefaultController<Uint8Array>>();
  let latest: DashboardSnapshot | undefined;
  let looking: Promise<DashboardSnapshot> | undefined;
  let stopped = false;

  /** One look at a time: a slow node makes looks rarer, never piles them up. */
  const take = (): Promise<DashboardSnapshot> =>
    (looking ??= (async () => {
      try {
        latest = model.next(await look());
      } catch (error) {
        latest = { ...(latest ?? model.next({ nodes: [] })), time: Date.now(), problem: (error as Error).message };
      } finally {
        looking = undefined;
      }
      return latest;
    })());

  const broadcast = (snapshot: DashboardSnapshot): void => {
    const event = encoder.encode(`data: ${JSON.stringify(snapshot)}\n\n`);
    for (const stream of streams) {
      try {
        stream.enqueue(event);
      } catch {
        streams.delete(stream); // the page went away
      }
    }
  };

  const timer = setInterval(() => {
    if (streams.size > 0 && looking === undefined) void take().then((snapshot) => stopped || broadcast(snapshot));
  }, options.intervalMs ?? 1000);
  if (options.keepAlive === false) timer.unref();

  const listen = { host: options.host, port: options.port ?? 0, keepAlive: options.keepAlive };
  const endpoint = listenHttp("dashboard", listen, async (request, server) => {
    const path = new URL(request.url).pathname;
    if (path === "/") return new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8" } });
    if (path === "/snapshot.json") return Response.json(await take(), { headers: { "cache-control": "no-store" } });
    if (path !== "/events") return new Response("not found\n", { status: 404 });
    server.timeout(request, 0); // an event stream is quiet between looks: no idle timeout
    let controller: ReadableStreamDefaultController<Uint8Array>;
    const stream = new ReadableStream<Uint8Array>({
      start(opened) {
        controller = opened;
        streams.add(opened);
        // Show something at once: the latest look, then a fresh one.
        if (latest !== undefined) opened.enqueue(encoder.encode(`data: ${JSON.stringify(latest)}\n\n`));
        void take().then((snapshot) => stopped || broadcast(snapshot));
      },
      cancel() {
        streams.delete(controller);
      },
    });
    request.signal.addEventListener("abort", () => streams.delete(controller));
    return new Response(stream, {
      headers: { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" },
    });
  });

  return {
    ...endpoint,
    stop: () => {
      stopped = true;
      clearInterval(timer);
      for (const stream of streams) {
        try {
          stream.close();
        } catch {
          // already closed by the page
        }
      }
      streams.clear();
      return endpoint.stop();
    },
  };
}
