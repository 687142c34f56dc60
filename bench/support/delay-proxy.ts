import type { Socket, TCPSocketListener } from "bun";

/**
 * A loopback TCP proxy that delays every chunk by `delayMs` in each direction (a round trip of twice
 * that), as a link between hosts would. Chunks keep their order: each waits its own `delayMs` from
 * its arrival, and timers of one delay fire in the order they were set. No flow control of its own:
 * what the far side does not take at once waits in memory (fine for a bench).
 *
 * A bench runs it in a process of its own (`startProxyProcess`): in the root's process, its copies and
 * timers took the root's own thread, which a link between hosts does not.
 *
 *   bun bench/support/delay-proxy.ts <target host> <target port> <delay ms>   prints "port N"; ends with stdin
 */
export class DelayProxy {
  readonly #listener: TCPSocketListener<Pipe>;

  constructor(
    targetHost: string,
    targetPort: number,
    readonly delayMs: number,
  ) {
    const delay = delayMs;
    this.#listener = Bun.listen<Pipe>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(client) {
          const pipe: Pipe = { peer: undefined, pending: [], closed: false, queue: [], head: 0 };
          client.data = pipe;
          void Bun.connect<Pipe>({
            hostname: targetHost,
            port: targetPort,
            socket: {
              open(server) {
                const back: Pipe = { peer: client, pending: [], closed: false, queue: [], head: 0 };
                server.data = back;
                pipe.peer = server;
                for (const chunk of pipe.pending) forward(pipe, chunk, delay);
                pipe.pending = [];
              },
              data(server, chunk) {
                forward(server.data, chunk, delay);
              },
              drain(server) {
                flush(server.data.peer === undefined ? undefined : pipe);
              },
              close(server) {
                server.data.closed = true;
                setTimeout(() => client.end(), delay);
              },
              error() {},
            },
          }).catch(() => client.end());
        },
        data(client, chunk) {
          const pipe = client.data;
          if (pipe.peer === undefined) pipe.pending.push(new Uint8Array(chunk));
          else forward(pipe, chunk, delay);
        },
        drain(client) {
          const server = client.data.peer;
          if (server !== undefined) flush(server.data);
        },
        close(client) {
          client.data.closed = true;
          const server = client.data.peer;
          if (server !== undefined) setTimeout(() => server.end(), delay);
        },
        error() {},
      },
    });
  }

  get port(): number {
    return this.#listener.port;
  }

  stop(): void {
    this.#listener.stop(true);
  }
}

/** One direction of a proxied connection: where its chunks go, and what waits to be written there. */
interface Pipe {
  peer: Socket<Pipe> | undefined;
  /** Chunks that came before the far side was connected. */
  pending: Uint8Array[];
  closed: boolean;
  /** Chunks due but not yet taken by the far side's socket, from `head` on. */
  queue: Uint8Array[];
  head: number;
}

function forward(pipe: Pipe, chunk: Uint8Array, delayMs: number): void {
  const copy = new Uint8Array(chunk); // Bun reuses the chunk's buffer after the handler returns
  setTimeout(() => {
    pipe.queue.push(copy);
    flush(pipe);
  }, delayMs);
}

/** Writes what is due, in order, as far as the far side's socket takes it. */
function flush(pipe: Pipe | undefined): void {
  if (pipe === undefined || pipe.peer === undefined) return;
  const queue = pipe.queue;
  while (pipe.head < queue.length) {
    const chunk = queue[pipe.head]!;
    const written = pipe.peer.write(chunk);
    if (written < chunk.length) {
      queue[pipe.head] = chunk.subarray(Math.max(0, written));
      return;
    }
    pipe.head++; // not shift(): that moves every chunk still waiting, each time
  }
  pipe.queue = [];
  pipe.head = 0;
}

/** A proxy in a process of its own, started by `bun <this file>`; `stop()` ends it. */
export interface ProxyProcess {
  port: number;
  stop(): Promise<void>;
}

export async function startProxyProcess(
  targetHost: string,
  targetPort: number,
  delayMs: number,
): Promise<ProxyProcess> {
  const child = Bun.spawn([process.execPath, import.meta.path, targetHost, String(targetPort), String(delayMs)], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of child.stdout) {
    text += decoder.decode(chunk, { stream: true });
    const port = /port (\d+)/.exec(text);
    if (port !== null) {
      return {
        port: Number(port[1]),
        stop: async () => {
          child.stdin.end();
          await child.exited;
        },
      };
    }
  }
  throw new Error(`the delay proxy ended before it listened: ${JSON.stringify(text)}`);
}

if (import.meta.main) {
  const [host, port, delay] = process.argv.slice(2);
  const proxy = new DelayProxy(host!, Number(port), Number(delay));
  console.log(`port ${proxy.port}`);
  for await (const _ of Bun.stdin.stream()) {
    // held until the bench closes stdin
  }
  proxy.stop();
  process.exit(0);
}
