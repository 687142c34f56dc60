// The types of our small HTTP servers, apart from their Bun-based code: users' declarations reach them.

/** A small HTTP server of ours (metrics, dashboard): where it listens, and how to stop it. */
export interface HttpEndpoint {
  /** "http://host:port/", the port being the actual one when 0 was asked for. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Stops listening and closes open connections (event streams included). Idempotent. */
  stop(): Promise<void>;
}

export interface ListenOptions {
  /** Default 127.0.0.1: what it serves is not authenticated. */
  host?: string;
  /** 0 picks a free port. */
  port: number;
  /** Whether the open server keeps the process alive (default true). */
  keepAlive?: boolean;
}
