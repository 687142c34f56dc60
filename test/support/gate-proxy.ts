import type { Socket, TCPSocketListener } from "bun";

/**
 * A loopback TCP proxy whose way back can be shut: shut, it stops reading from the target, whose
 * writes then back up as they do behind a peer that stops reading — first in the kernel's buffers, then
 * in the target's own queue. The way there stays open. Chunks keep their order; what one side's
 * socket does not take at once waits here, and the way back stops reading while it does.
 *
 * @example
 * const proxy = GateProxy.start(node.port);
 * proxy.shut(); // the node's results stay in its queue
 * proxy.open();
 */
export class GateProxy {
  readonly #listener: TCPSocketListener<Side>;
  readonly #targets = new Set<Socket<Side>>();
  #shut = false;

  private constructor(targetPort: number) {
    const targets = this.#targets;
    const isShut = () => this.#shut;
    this.#listener = Bun.listen<Side>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(client) {
          const there: Side = { peer: undefined, queue: [], early: [] };
          client.data = there;
          void Bun.connect<Side>({
            hostname: "127.0.0.1",
            port: targetPort,
            socket: {
              open(target) {
                target.data = { peer: client, queue: [], early: [] };
                targets.add(target);
                if (isShut()) target.pause();
                there.peer = target;
                for (const chunk of there.early) send(there, chunk);
                there.early = [];
              },
              data(target, chunk) {
                send(target.data, chunk);
                // The client is slow: read no more from the target until it has taken what waits.
                if (target.data.queue.length > 0) target.pause();
              },
              drain() {
                flush(there);
              },
              close(target) {
                targets.delete(target);
                client.end();
              },
              error() {},
            },
          }).catch(() => client.end());
        },
        data(client, chunk) {
          const there = client.data;
          if (there.peer === undefined) there.early.push(new Uint8Array(chunk));
          else send(there, chunk);
        },
        drain(client) {
          const target = client.data.peer;
          if (target === undefined) return;
          if (flush(target.data) && !isShut()) target.resume();
        },
        close(client) {
          client.data.peer?.end();
        },
        error() {},
      },
    });
  }

  /** A proxy on a free port of 127.0.0.1 to `targetPort` there, open both ways. */
  static start(targetPort: number): GateProxy {
    return new GateProxy(targetPort);
  }

  get port(): number {
    return this.#listener.port;
  }

  /** Stops reading from the target, on every connection (and on those that open while it is shut). */
  shut(): void {
    this.#shut = true;
    for (const target of this.#targets) target.pause();
  }

  /** Reads from the target again. */
  open(): void {
    this.#shut = false;
    for (const target of this.#targets) if (flush(target.data)) target.resume();
  }

  /** Stops listening and closes every proxied connection. */
  stop(): void {
    this.#listener.stop(true);
    for (const target of this.#targets) target.end();
  }
}

/** One direction of a proxied connection: the socket its chunks go to, and what waits to be written there. */
interface Side {
  peer: Socket<Side> | undefined;
  queue: Uint8Array[];
  /** Chunks from the client that came before the target's connection opened. */
  early: Uint8Array[];
}

function send(side: Side, chunk: Uint8Array): void {
  if (side.queue.length === 0) {
    const written = side.peer!.write(chunk);
    if (written >= chunk.length) return;
    chunk = chunk.subarray(Math.max(0, written));
  }
  side.queue.push(new Uint8Array(chunk)); // a copy: Bun reuses a chunk's buffer once its handler returns
}

/** Writes what waits, in order, as far as the socket takes it; returns whether all of it went. */
function flush(side: Side): boolean {
  const queue = side.queue;
  while (queue.length > 0) {
    const chunk = queue[0]!;
    const written = side.peer!.write(chunk);
    if (written < chunk.length) {
      queue[0] = chunk.subarray(Math.max(0, written));
      return false;
    }
    queue.shift();
  }
  return true;
}
