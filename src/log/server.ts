import { closeSync, fstatSync, fsyncSync, openSync, statSync, writeSync } from "node:fs";
import { resolve } from "node:path";
import { diagnostics } from "../diagnostics.ts";
import { PclusterError, ProtocolError } from "../errors.ts";
import { runUntilStopped } from "../lifetime.ts";
import { formatAddress } from "../protocol/address.ts";
import { type Server, serve } from "../protocol/handshake.ts";
import type { Connection } from "../protocol/connection.ts";
import { assertSafeListen } from "../protocol/safe-listen.ts";
import type { LogLine } from "../protocol/messages.ts";
import { type LogFormat, formatLogLines } from "./format.ts";

export interface LogServerOptions {
  host: string;
  /** 0: any free port (see `LogServer.port`). */
  port: number;
  outfile: string;
  /** Truncate the file first; by default lines are appended. */
  overwrite?: boolean;
  /** When set, clients must prove they know it. */
  token?: string;
  /** Allow listening beyond loopback without a token. */
  insecure?: boolean;
  /** Also print every line on stdout (default true). */
  echo?: boolean;
  /** "text" (default): `[time host pid] message` records; "json": one JSON object per line. */
  format?: LogFormat;
}

interface LogServer {
  readonly host: string;
  /** The port listened on (the real one when 0 was asked for). */
  readonly port: number;
  /** The absolute path of the file written. */
  readonly outfile: string;
  /** Closes every connection and the file. */
  stop(): Promise<void>;
}

/**
 * Collects log lines from any number of clients over persistent connections into one file (and
 * stdout). Each `log` message is written with one write call, so records of different clients never
 * interleave within a line.
 *
 * @example
 * const server = await startLogServer({ host: "127.0.0.1", port: 5000, outfile: "pcluster.log" });
 * await server.stop();
 */
export async function startLogServer(options: LogServerOptions): Promise<LogServer> {
  assertSafeListen(options.host, Boolean(options.token), options.insecure ?? false, "log");
  const outfile = resolve(options.outfile);
  let fd = openLogFile(outfile, options.overwrite ?? false);
  const echo = options.echo ?? true;
  let stopped = false;
  // Rotated (renamed away, as logrotate does by default) or removed: lines go to a new file at the path.
  const follow = setInterval(() => {
    if (stopped || isOpenAt(fd, outfile)) return;
    try {
      const old = fd;
      fd = openLogFile(outfile, false);
      fsyncSync(old);
      closeSync(old);
    } catch (error) {
      diagnostics().error(`pcluster log server: cannot open a new ${outfile}: ${(error as Error).message}`);
    }
  }, FOLLOW_MS);
  follow.unref();

  const write = (lines: LogLine[]): void => {
    if (stopped || lines.length === 0) return;
    const text = formatLogLines(lines, options.format);
    try {
      writeSync(fd, text);
    } catch (error) {
      diagnostics().error(`pcluster log server: cannot write to ${outfile}: ${(error as Error).message}`);
    }
    if (echo) process.stdout.write(text);
  };

  const onPeer = (connection: Connection): void => {
    connection.onMessage = (message) => {
      if (message.t === "log") return write(message.lines);
      connection.fail(new ProtocolError(`a log server only takes "log" messages, got "${message.t}"`));
      diagnostics().warn(`pcluster log server: closed ${connection.remoteAddress}: it sent a "${message.t}" message`);
    };
  };

  const onRefused = (address: string, error: unknown): void => {
    const why = error instanceof Error ? error.message : String(error);
    // A client without the token hangs up during the handshake without saying why: say what it lacks.
    const hint =
      options.token && !(error instanceof ProtocolError)
        ? " (this log server requires a token: clients need PCLUSTER_TOKEN or setLogToken())"
        : "";
    diagnostics().warn(`pcluster log server: refused ${address}: ${why}${hint}`);
  };

  let server: Server;
  try {
    server = serve({
      hostname: options.host,
      port: options.port,
      service: "log",
      token: options.token || undefined,
      onPeer,
      onRefused,
    });
  } catch (error) {
    clearInterval(follow);
    closeSync(fd);
    throw error;
  }

  return {
    host: options.host,
    port: server.port,
    outfile,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(follow);
      server.stop();
      fsyncSync(fd);
      closeSync(fd);
    },
  };
}

/**
 * `pcluster log`: runs a log server until SIGINT or SIGTERM. Prints one line when it listens; a
 * refusal (an exposed address without a token, a port in use) is thrown as a `PclusterError`, which the
 * CLI prints on one line before it exits with code 1.
 */
export async function runLogServer(options: LogServerOptions): Promise<void> {
  const server = await startLogServer(options);
  console.log(
    `pcluster log server listening on ${formatAddress(server.host, server.port)}, writing to ${server.outfile}`,
  );
  await runUntilStopped(() => server.stop());
}

/** How often the log server looks whether its file is still the one at its path. */
const FOLLOW_MS = 1000;

/** Whether the file open as `fd` is the one at `path` (not renamed away or removed since). */
function isOpenAt(fd: number, path: string): boolean {
  try {
    const open = fstatSync(fd);
    const there = statSync(path);
    return open.ino === there.ino && open.dev === there.dev;
  } catch {
    return false;
  }
}

function openLogFile(path: string, overwrite: boolean): number {
  try {
    return openSync(path, overwrite ? "w" : "a");
  } catch (error) {
    throw new PclusterError(`cannot open the log file ${path}: ${(error as Error).message}`, { cause: error });
  }
}
