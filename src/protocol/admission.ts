import { ConnectionLimitError } from "../errors.ts";
import type { Connection } from "./connection.ts";

export interface AdmissionLimits {
  /** Connections open at once, at most (default: no cap). */
  maxConnections?: number;
  /** Connections that have not passed the handshake yet, at most (default: no cap). */
  maxUnauthenticated?: number;
}

/**
 * A server's count of its open connections and of those still in the handshake, and the caps on both.
 * A peer that has not proved who it is costs a socket and a few KiB (see `FrameDecoder.trust`); the
 * caps bound how many of those a flood can make a server hold. The handshake's timeout frees them.
 */
export class Admission {
  #open = 0;
  /** When a refusal for a cap was last told to the server's owner (see `shouldTell`). */
  #lastTold = Number.NEGATIVE_INFINITY;
  /** Admitted connections that have not passed the handshake yet. */
  readonly #unauthenticated = new Set<Connection>();

  constructor(
    readonly service: string,
    readonly limits: AdmissionLimits,
  ) {
    for (const name of ["maxConnections", "maxUnauthenticated"] as const) {
      const value = limits[name];
      if (value !== undefined && !(Number.isInteger(value) && value > 0)) {
        throw new RangeError(`${name} must be a positive integer, got ${value}`);
      }
    }
  }

  get open(): number {
    return this.#open;
  }

  get unauthenticated(): number {
    return this.#unauthenticated.size;
  }

  /** Counts `connection` in until it closes; or, over a cap, returns the error to refuse it with. */
  admit(connection: Connection): ConnectionLimitError | undefined {
    const { maxConnections, maxUnauthenticated } = this.limits;
    if (maxConnections !== undefined && this.#open >= maxConnections) {
      return new ConnectionLimitError(
        `this ${this.service} already has ${this.#open} connections open, its limit (--max-connections); ` +
          "close some, or raise the limit",
      );
    }
    if (maxUnauthenticated !== undefined && this.#unauthenticated.size >= maxUnauthenticated) {
      return new ConnectionLimitError(
        `this ${this.service} already has ${this.#unauthenticated.size} connections waiting for the handshake, its ` +
          "limit (--max-unauthenticated); try again in a few seconds",
      );
    }
    this.#open++;
    this.#unauthenticated.add(connection);
    connection.closed.then(() => {
      this.#open--;
      this.#unauthenticated.delete(connection);
    });
    return undefined;
  }

  /**
   * Whether to tell the server's owner of a refusal for a cap (its log line): at most once a second, so a
   * flood of connections does not become a flood of log lines. Every refused peer is told why all the same.
   */
  shouldTell(now = performance.now()): boolean {
    if (now - this.#lastTold < 1000) return false;
    this.#lastTold = now;
    return true;
  }

  /** The connection passed the handshake: it no longer counts against `maxUnauthenticated`. */
  authenticated(connection: Connection): void {
    this.#unauthenticated.delete(connection);
  }
}
