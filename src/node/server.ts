import { sharedMemory } from "../protocol/kept-buffers.ts";
import { diagnostics } from "../diagnostics.ts";
import { availableParallelism, homedir, hostname } from "node:os";
import { basename, join } from "node:path";
import { NodeBusyError, ProtocolError, StateError, TimeoutError, UsageError } from "../errors.ts";
import { runUntilStopped } from "../lifetime.ts";
import { flushLogs, logAt, sendLogLines, setDefaultLogAddress } from "../log/log.ts";
import { formatAddress } from "../protocol/address.ts";
import { type Server, serve } from "../protocol/handshake.ts";
import type { RecordBatchBuilder } from "../protocol/codec.ts";
import { RecordReader } from "../protocol/record.ts";
import type { Connection, ServerTls } from "../protocol/connection.ts";
import { assertSafeListen } from "../protocol/safe-listen.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../protocol/frame.ts";
import {
  DEFAULT_MAX_ITEM_BYTES,
  DEFAULT_RESULT_WINDOW_BYTES,
  checkMaxItemBytes,
  messageLimitFor,
} from "../protocol/limits.ts";
import type { LogLevel, Message } from "../protocol/messages.ts";
import { type NodeStatus, type SetupArgs, type SetupResult, parseSetupArgs } from "../protocol/pipeline.ts";
import type { HttpEndpoint } from "../metrics/endpoint.ts";
import { RecentErrors } from "../metrics/recent-errors.ts";
import { VERSION } from "../version.ts";
import { Engine } from "./engine/engine.ts";
import { countFeedRecords } from "./engine/input-dispatch.ts";
import { defaultMemoryLimit } from "./engine/memory-limit.ts";
import { type NodeObservation, serveNodeMetrics } from "./metrics.ts";
import { DEFAULT_KEEP_PIPELINES, installPipeline, pruneHostCache, releaseCacheEntry } from "./packages.ts";
import { endProcesses, startedByThisProcess } from "./task-processes.ts";
import { DEFAULT_STALL_EXIT_MS, startWatchdog } from "./watchdog.ts";

export interface NodeServerOptions {
  host: string;
  port: number;
  /** Where the node and its tasks log (`log()` inside a task goes there). */
  logAddress?: readonly [host: string, port: number];
  /** Worker threads per pipeline (default: the number of cores). */
  workers?: number;
  /** Where pipelines are written and installed (default `~/.pcluster/node-<port>`). */
  workdir?: string;
  /** Shared token roots must prove; required to listen beyond loopback unless `insecure`. */
  token?: string;
  insecure?: boolean;
  tls?: ServerTls;
  maxFrameBytes?: number;
  /** Connections open at once, at most (default 256); one more is told why and closed. */
  maxConnections?: number;
  /** Connections still in the handshake, at most (default 64): a flood of them costs a bounded few KiB each. */
  maxUnauthenticated?: number;
  /** Largest frame a connection may send before its handshake completes (default 4 KiB). */
  maxHandshakeFrameBytes?: number;
  /**
   * Largest item or output, encoded (default 1 GiB): told to the root at setup, which refuses larger
   * items at `feed`; a larger output is a task error. Items larger than a frame travel in parts.
   */
  maxItemBytes?: number;
  /** Bytes of each worker's input and output ring (default 1 MiB each). */
  ringBytes?: number;
  /** Resident bytes above which a worker is ended to save the node (default 80% of memory; see Engine). */
  memoryLimitBytes?: number;
  /** How long a pipeline outlives its root's connection before it is reset (default 3 s). */
  orphanGraceMs?: number;
  /**
   * How long the root that owns the pipeline may send nothing at all before it is taken for gone and its
   * connection closed (default 60 s; see `#watchOwner`). A root pings its nodes every 2 s.
   */
  rootTimeoutMs?: number;
  /**
   * How long any other connection (a `pcluster status`, a dashboard's root, a root refused as busy or
   * not set up yet) may send nothing before it is closed (default 300 s; see `#watchSilence`). A peer
   * that vanished without a word would otherwise hold one of the `maxConnections` places for good.
   */
  idleTimeoutMs?: number;
  /**
   * On SIGTERM or SIGINT, how long the items of the running pipeline may take to finish here before the
   * node stops (default 10 s; 0: it stops at once). The root is told to send nothing more meanwhile, and
   * re-sends what is left after it, as for a node that dies. A second signal stops at once (see `drain`).
   */
  drainTimeoutMs?: number;
  /**
   * `pcluster node` only: how long its main thread may not run before the process ends itself, so that
   * its supervisor starts it again (default 60 s; 0: never; see watchdog.ts).
   */
  stallExitMs?: number;
  /**
   * Installed pipelines the host's cache keeps besides those a node runs, the most recently used first
   * (default 20; see `pruneHostCache`).
   */
  keepPipelines?: number;
  /** Serve Prometheus metrics at http://metricsHost:metricsPort/metrics (see metrics.ts). */
  metricsPort?: number;
  /** Default 127.0.0.1. */
  metricsHost?: string;
  /**
   * Notes at info level (setups, resets) go to the log server only, not the console: what `Root.local`'s
   * nodes do, whose console nobody reads. Printing loads consola, about 50 ms of CPU per node.
   */
  quiet?: boolean;
}

/** The pipeline a root set up here, and who owns it. */
interface Pipeline {
  name: string;
  version: string;
  owner: Connection;
  ownerName: string;
  startedAt: number;
  /** Set once the packages are installed and the workers run. */
  engine: Engine | undefined;
  /** The host cache's entry it runs from, marked in use by this node until the pipeline is reset. */
  cacheEntry: string | undefined;
  /** Result bytes the owner still lets us send (it sends `credit` as it handles them). */
  credit: number;
  /** Items the owner may have in flight here, at most (what `setup` granted). */
  window: SetupResult["window"];
  orphanTimer: ReturnType<typeof setTimeout> | undefined;
  /** The last task errors, for the dashboard. */
  errors: RecentErrors;
}

/** Connection caps (see NodeServerOptions): far above what roots and `pcluster status` need. */
const DEFAULT_MAX_CONNECTIONS = 256;
const DEFAULT_MAX_UNAUTHENTICATED = 64;

/** See NodeServerOptions.rootTimeoutMs and idleTimeoutMs. */
const DEFAULT_ROOT_TIMEOUT_MS = 60_000;
const DEFAULT_IDLE_TIMEOUT_MS = 300_000;
/** See NodeServerOptions.drainTimeoutMs: within systemd's and Kubernetes' default grace (15 s in our unit, 30 s). */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
/** How often a drain looks whether the items are done and their results sent. */
const DRAIN_CHECK_MS = 20;

/** An open connection as the silence watch sees it (see `#watchSilence`). */
interface Peer {
  /** Who it is, for the notes: the client's name or its address. */
  client: string;
  /** Its received bytes when last looked at, and when they last changed. */
  received: number;
  heardAt: number;
  /** Its requests still being answered: a peer waiting for an answer (a long install) is not silent. */
  requests: number;
}

/** Items in flight a node grants per worker: enough to keep rings full across a round trip. */
const WINDOW_ITEMS_PER_WORKER = 16_384;

/** Results bytes queued for the owner's socket above which the engine's output pauses until it writes them. */
const RESULTS_QUEUE_BYTES = 4 * 1024 * 1024;

/**
 * `NodeServer`: one per host. Serves roots over persistent framed connections; runs one root's pipeline
 * at a time on an `Engine`. Input batches go to the engine as bytes and results come back as bytes:
 * this thread never decodes an item.
 *
 * Flow: the root may have `window` items in flight; results go out while the root's credit lasts and
 * the socket keeps up, otherwise the engine's output pauses, its workers stop, and input stops with them.
 */
class NodeServer {
  readonly #options: NodeServerOptions;
  #workdir: string | undefined;
  readonly #defaultWorkers: number;
  readonly #memoryLimit: number;
  readonly #maxItemBytes: number;
  #server: Server | undefined;
  #metrics: HttpEndpoint | undefined;
  #pipeline: Pipeline | undefined;
  /** Set by `drain`: the node finishes its items, then stops. */
  #stopping = false;
  /** Serializes setup and reset, so a second root cannot slip in while a pipeline installs or stops. */
  #lifecycle: Promise<unknown> = Promise.resolve();
  readonly #connections = new Map<Connection, Peer>();
  #silenceWatch: ReturnType<typeof setInterval> | undefined;

  private constructor(options: NodeServerOptions) {
    this.#options = options;
    this.#defaultWorkers = options.workers || availableParallelism();
    this.#memoryLimit = options.memoryLimitBytes ?? defaultMemoryLimit();
    this.#maxItemBytes = checkMaxItemBytes(options.maxItemBytes ?? DEFAULT_MAX_ITEM_BYTES, "--max-item", UsageError);
    this.#workdir = options.workdir;
  }

  /** Checks the options, listens, and resolves with the running server. */
  static async start(options: NodeServerOptions): Promise<NodeServer> {
    assertSafeListen(options.host, Boolean(options.token), options.insecure ?? false, "node");
    const node = new NodeServer(options);
    if (options.logAddress !== undefined) setDefaultLogAddress(options.logAddress);
    node.#server = serve({
      hostname: options.host,
      port: options.port,
      service: "node",
      token: options.token || undefined,
      tls: options.tls,
      maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
      maxHandshakeFrameBytes: options.maxHandshakeFrameBytes,
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      maxUnauthenticated: options.maxUnauthenticated ?? DEFAULT_MAX_UNAUTHENTICATED,
      // A feed batch holds the largest item and the batch's others; results the same of outputs.
      maxMessageBytes: messageLimitFor(node.#maxItemBytes),
      // Setup messages carry whole packages; a command may take long (installs), a result must not wait.
      requestTimeoutMs: 30_000,
      // Large feeds come in parts: joined in shared memory, their large items go to a worker as they lie
      // (in memory the pipeline's engine keeps for the next ones, once they are done).
      joinParts: (size) => node.#pipeline?.engine?.oversizeBuffers.take(size) ?? new Uint8Array(sharedMemory(size)),
      onPeer: (connection, client) => node.#accept(connection, client ?? connection.remoteAddress),
      onRefused: (address, error) => node.#note("warn", `refused ${address}: ${(error as Error).message}`),
    });
    // The port listened on, not the one asked for: nodes started with --port 0 must not share a work dir.
    node.#workdir ??= join(homedir(), ".pcluster", `node-${node.port}`);
    if (options.metricsPort !== undefined) {
      try {
        const listen = { host: options.metricsHost, port: options.metricsPort };
        node.#metrics = serveNodeMetrics(() => node.observe(), listen);
      } catch (error) {
        node.#server.stop(true);
        throw error;
      }
      node.#note("info", `serving Prometheus metrics at ${node.#metrics.url}metrics`);
    }
    node.#watchSilence();
    // To the log server only: `pcluster node` prints this line itself, once, whatever consola's level.
    node.#note("info", node.listeningLine, { console: false });
    return node;
  }

  /** "listening on HOST:PORT (workers N, memory limit M MB, workdir D)": what a started node says. */
  get listeningLine(): string {
    const limitMb = Math.round(this.#memoryLimit / 1048576);
    return `listening on ${this.address} (workers ${this.#defaultWorkers}, memory limit ${limitMb} MB, workdir ${this.#workdir})`;
  }

  /** Where pipelines are written and installed. */
  get workdir(): string {
    return this.#workdir!;
  }

  get port(): number {
    return this.#server!.port;
  }

  get address(): string {
    return formatAddress(this.#options.host, this.port);
  }

  /**
   * Lets the running pipeline's items finish before a stop: its root is told to send nothing more (a
   * `draining` event), and this waits until every item here is done and its results are written, for
   * at most `drainTimeoutMs`. What is left then, the root re-sends elsewhere once the node stops, as for
   * a node that dies. Returns at once without a pipeline, its root, or items.
   */
  async drain(): Promise<void> {
    const pipeline = this.#pipeline;
    const engine = pipeline?.engine;
    const ms = this.#options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
    if (pipeline === undefined || engine === undefined || ms <= 0) return;
    const owner = pipeline.owner;
    const done = () => this.#pipeline !== pipeline || owner.isClosed || (engine.isEmpty && owner.queuedBytes === 0);
    if (done()) return;
    this.#stopping = true; // it still listens: `pcluster status` shows it stopping, and other roots find it busy
    owner.send({ t: "event", name: "draining", data: { timeoutMs: ms } });
    const about = { pipeline: pipeline.name };
    this.#note(
      "info",
      `stopping: the ${engine.inFlight} items of ${describe(pipeline)} here finish first, for at most ${ms / 1000} s (a second signal stops at once)`,
      { about },
    );
    for (const deadline = performance.now() + ms; !done() && performance.now() < deadline; )
      await Bun.sleep(DRAIN_CHECK_MS);
    if (done()) return;
    const left = `stopping with ${engine.inFlight} items unfinished after ${ms / 1000} s: the root sends them elsewhere`;
    this.#note("warn", left, { about });
  }

  /** Stops the pipeline, closes every connection and frees the port. */
  async stop(): Promise<void> {
    // Stop listening but keep the open connections until the owner has heard the reset event.
    this.#server?.stop(false);
    clearInterval(this.#silenceWatch);
    await this.#metrics?.stop();
    await this.#resetPipeline("the node is shutting down");
    for (const connection of this.#connections.keys()) connection.close();
  }

  // ---- connections --------------------------------------------------------------------------------

  #accept(connection: Connection, client: string): void {
    const peer: Peer = { client, received: connection.receivedBytes, heardAt: performance.now(), requests: 0 };
    this.#connections.set(connection, peer);
    connection.onRequest = (cmd, args) => {
      const answer = this.#command(connection, client, cmd, args);
      if (!(answer instanceof Promise)) return answer;
      peer.requests++;
      return answer.finally(() => peer.requests--);
    };
    connection.onMessage = (message) => this.#push(connection, message);
    connection.closed.then((reason) => {
      this.#connections.delete(connection);
      const pipeline = this.#pipeline;
      if (pipeline?.owner !== connection) return;
      const grace = this.#options.orphanGraceMs ?? 3000;
      const why = reason ? ` (${reason.message})` : "";
      const about = { pipeline: pipeline.name };
      this.#note("warn", `root ${client} disconnected${why}; resetting ${describe(pipeline)} in ${grace} ms`, {
        about,
      });
      pipeline.orphanTimer = setTimeout(() => {
        if (this.#pipeline === pipeline) void this.#serialized(() => this.#resetPipeline(`its root ${client} is gone`));
      }, grace);
    });
  }

  #command(connection: Connection, client: string, cmd: string, args: unknown): unknown {
    switch (cmd) {
      case "ping":
        return "pong";
      case "status":
        return this.#status(connection);
      case "setup":
        return this.#serialized(() => this.#setup(connection, client, parseSetupArgs(args)));
      case "reset":
        this.#ownedBy(connection, "reset");
        return this.#serialized(() => this.#resetPipeline(`reset by its root ${client}`)).then(() => null);
      case "sleep":
        return this.#engineOf(connection, cmd)
          .sleep()
          .then(() => null);
      case "wakeup":
        this.#engineOf(connection, cmd).wakeup();
        return null;
      case "waitIdle":
        return this.#engineOf(connection, cmd)
          .whenIdle()
          .then(() => null);
      case "waitEmpty":
        return this.#engineOf(connection, cmd)
          .whenEmpty()
          .then(() => null);
      case "waitAsleep":
        return this.#engineOf(connection, cmd)
          .whenAsleep()
          .then(() => null);
      case "stats":
        return this.#pipeline?.engine?.stats() ?? [];
      default:
        throw new ProtocolError(
          `unknown command "${cmd}"; a node takes ping, status, setup, reset, sleep, wakeup, waitIdle, waitEmpty, waitAsleep, stats`,
        );
    }
  }

  #push(connection: Connection, message: Message): void {
    switch (message.t) {
      case "feed": {
        const pipeline = this.#pipeline;
        try {
          const engine = this.#engineOf(connection, "feed");
          const blob = message.blob;
          const records = countFeedRecords(blob, engine.taskCount); // a malformed batch throws
          const over = overGrant(engine, pipeline!.window, records, blob.length);
          if (over !== undefined) {
            // A root that sends past its grant has a bug; its items are not lost for it: they go back.
            this.#note("warn", `refused a feed of ${records} items from ${connection.remoteAddress}: ${over}`);
            connection.send({ t: "event", name: "refused", data: { ids: feedRecordIds(blob, records), reason: over } });
            connection.releaseMessage(); // the ids were copied out
            return;
          }
          // Copied into the rings whole: the frame's memory may take the next feed.
          if (!engine.dispatch(blob, records)) connection.releaseMessage();
        } catch (error) {
          // The root's items stay in its ledger; it re-sends them elsewhere when this connection closes.
          this.#note("warn", `refused a feed from ${connection.remoteAddress}: ${(error as Error).message}`);
          connection.fail(error);
        }
        return;
      }
      case "credit": {
        const pipeline = this.#pipeline;
        if (pipeline?.owner !== connection) return;
        pipeline.credit += message.bytes;
        this.#updateOutputFlow(pipeline);
        return;
      }
      default:
        connection.fail(new ProtocolError(`a node does not take "${message.t}" messages outside the handshake`));
    }
  }

  // ---- pipeline lifecycle ----------------------------------------------------------------------------

  /** Runs setup/reset one at a time. */
  #serialized<T>(step: () => Promise<T>): Promise<T> {
    const run = this.#lifecycle.then(step, step);
    this.#lifecycle = run.catch(() => {});
    return run;
  }

  async #setup(connection: Connection, client: string, args: SetupArgs): Promise<SetupResult> {
    const current = this.#pipeline;
    // Its own root, back on a new connection within the grace (it was taken for gone, or its connection
    // dropped): the grace was kept for it, so it need not wait for the reset.
    if (current?.owner.isClosed && current.ownerName === client) {
      await this.#resetPipeline(`set up again by its root ${client}, which came back`);
      return this.#setup(connection, client, args);
    }
    if (current !== undefined && current.owner !== connection) {
      this.#note(
        "warn",
        `refused setup of ${describe(args)} for root ${client}: busy with ${describe(current)} for root ${current.ownerName}`,
      );
      throw new NodeBusyError(
        `this node runs pipeline ${describe(current)} for root ${current.ownerName} since ${new Date(current.startedAt).toISOString()}; ` +
          "one root at a time: reset it from that root, or wait until that root disconnects",
      );
    }
    if (connection.isClosed) throw new StateError("the root disconnected before setup began");
    if (current !== undefined) await this.#resetPipeline(`set up again by its root ${client}`);

    const pipeline: Pipeline = {
      name: args.name,
      version: args.version,
      owner: connection,
      ownerName: client,
      startedAt: Date.now(),
      engine: undefined,
      cacheEntry: undefined,
      credit: args.resultWindow ?? DEFAULT_RESULT_WINDOW_BYTES,
      window: { items: 0, bytes: 0 },
      orphanTimer: undefined,
      errors: new RecentErrors(),
    };
    this.#pipeline = pipeline; // claimed now: another root's setup is refused while this one installs
    try {
      this.#note("info", `setting up ${describe(pipeline)} for root ${client}`, { about: { pipeline: pipeline.name } });
      const installed = await installPipeline({
        workdir: this.workdir,
        name: args.name,
        version: args.version,
        packages: args.packages,
        remotePackages: args.remotePackages,
        hash: args.hash,
      });
      pipeline.cacheEntry = installed.cacheEntry;
      const workers = args.workers || this.#defaultWorkers;
      const ringBytes = this.#options.ringBytes ?? 1 << 20;
      const engine = await Engine.start(
        args.taskchain,
        installed.entries,
        {
          workers,
          inputRingBytes: ringBytes,
          outputRingBytes: ringBytes,
          maxAttempts: args.maxAttempts,
          taskTimeoutMs: args.taskTimeoutMs || undefined,
          concurrency: args.concurrency,
          shareFanOut: args.shareFanOut,
          combine: args.combine,
          memoryLimitBytes: this.#memoryLimit,
          maxItemBytes: Math.min(this.#maxItemBytes, args.maxItemBytes ?? this.#maxItemBytes),
        },
        {
          onResults: (batch) => this.#sendResults(pipeline, batch),
          onTaskError: (report) => {
            const what = report.failed ? "could not finish" : "dropped";
            const { task, item, message, failed } = report;
            pipeline.errors.add({ task, item, message, failed });
            const about = { pipeline: pipeline.name, task: report.task };
            const stack = report.stack ? `\n${report.stack}` : "";
            this.#note("warn", `task "${report.task}" ${what} item ${report.item}: ${report.message}${stack}`, {
              about,
            });
          },
          onWorkerDied: (worker, reason) => {
            const about = { pipeline: pipeline.name };
            this.#note("warn", `worker ${worker} of ${describe(pipeline)} died (${reason}); replaced`, { about });
          },
          onLog: (lines) => {
            for (const line of lines) line.pipeline ??= pipeline.name; // workers know their task, the node its pipeline
            sendLogLines(lines);
          },
        },
      );
      if (this.#pipeline !== pipeline || connection.isClosed) {
        await engine.reset();
        throw new StateError(`setup of ${describe(pipeline)} was cancelled: the root disconnected`);
      }
      pipeline.engine = engine;
      pipeline.window = { items: workers * WINDOW_ITEMS_PER_WORKER, bytes: workers * ringBytes * 4 };
      const cached = installed.skipped ? " (code unchanged, not reinstalled)" : "";
      this.#note("info", `${describe(pipeline)} ready on ${workers} workers${cached}`, {
        about: { pipeline: pipeline.name },
      });
      if (installed.cacheEntry !== undefined) void this.#pruneCache();
      const maxItemBytes = this.#maxItemBytes;
      return {
        workers,
        cores: availableParallelism(),
        cached: installed.skipped,
        window: pipeline.window,
        maxItemBytes,
      };
    } catch (error) {
      if (pipeline.cacheEntry !== undefined) await releaseCacheEntry(pipeline.cacheEntry);
      if (this.#pipeline === pipeline) this.#pipeline = undefined;
      const message = error instanceof Error ? error.message : String(error);
      const about = { pipeline: pipeline.name };
      this.#note("error", `setup of ${describe(pipeline)} for root ${client} failed: ${message}`, { about });
      throw error;
    }
  }

  async #resetPipeline(why: string): Promise<void> {
    const pipeline = this.#pipeline;
    if (pipeline === undefined) return;
    this.#pipeline = undefined;
    clearTimeout(pipeline.orphanTimer);
    await pipeline.engine?.reset();
    // What its tasks started ends with it: the engine ended its workers' own, and here go those of
    // workers that died on their own (their processes passed to another thread of this process).
    await endProcesses(startedByThisProcess());
    if (pipeline.cacheEntry !== undefined) await releaseCacheEntry(pipeline.cacheEntry);
    this.#note("info", `reset ${describe(pipeline)}: ${why}`, { about: { pipeline: pipeline.name } });
    if (!pipeline.owner.isClosed) {
      try {
        pipeline.owner.send({ t: "event", name: "reset", data: { why } });
      } catch {
        // closing
      }
    }
  }

  /** Removes the host cache's oldest entries that no node runs, past the number kept (a note says which). */
  async #pruneCache(): Promise<void> {
    try {
      const removed = await pruneHostCache(this.workdir, this.#options.keepPipelines ?? DEFAULT_KEEP_PIPELINES);
      if (removed.length === 0) return;
      const names = removed.map((entry) => basename(entry)).join(", ");
      this.#note("info", `removed ${removed.length} installed pipelines no node runs from the host's cache: ${names}`);
    } catch (error) {
      this.#note("warn", `could not prune the host's cache of installed pipelines: ${(error as Error).message}`);
    }
  }

  /**
   * Closes connections that have gone silent. The pipeline's owner is taken for gone once it has sent
   * nothing for the root timeout: a root pings its nodes every 2 s while a pipeline of theirs runs, so a
   * silent one is stopped or hung, or its host or the network between is down without a word — no FIN,
   * no RST: the socket stays open, and the node would be held for that root forever. Its connection is
   * then closed as if it had left (the pipeline is reset after the grace; a root that comes back finds
   * its node lost, re-sends its unfinished items and sets the node up again). Any other connection is
   * closed after the idle timeout, so that peers which vanished do not fill the connection places; a
   * root dials again when it next needs the node. A connection waiting for an answer (a long install) is
   * not silent, and neither is one whose ticks come late: this thread was held, its bytes may be unread.
   */
  #watchSilence(): void {
    const rootMs = this.#options.rootTimeoutMs ?? DEFAULT_ROOT_TIMEOUT_MS;
    const idleMs = this.#options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const everyMs = Math.min(rootMs / 4, idleMs / 4, 5000);
    let lastTick = performance.now();
    this.#silenceWatch = setInterval(() => {
      const now = performance.now();
      const late = now - lastTick > 2 * everyMs;
      lastTick = now;
      for (const [connection, peer] of this.#connections) {
        if (connection.receivedBytes !== peer.received || peer.requests > 0 || late) {
          peer.received = connection.receivedBytes;
          peer.heardAt = now;
          continue;
        }
        const owner = this.#pipeline?.owner === connection;
        const limitMs = owner ? rootMs : idleMs;
        if (now - peer.heardAt < limitMs || connection.isClosed) continue;
        if (owner) {
          connection.destroy(new TimeoutError(`it sent nothing for ${rootMs} ms`));
        } else {
          // Told why, in case it is still there: a root dials again when it next needs this node.
          this.#note("info", `closing the connection of ${peer.client}: idle for ${idleMs} ms`);
          connection.fail(new TimeoutError(`the node closed this connection: idle for ${idleMs} ms`));
        }
      }
    }, everyMs);
    this.#silenceWatch.unref();
  }

  #ownedBy(connection: Connection, what: string): Pipeline {
    const pipeline = this.#pipeline;
    if (pipeline === undefined) throw new StateError(`cannot ${what}: no pipeline is set up on this node`);
    if (pipeline.owner !== connection) {
      throw new NodeBusyError(
        `cannot ${what}: this node runs pipeline ${describe(pipeline)} for another root (${pipeline.ownerName})`,
      );
    }
    return pipeline;
  }

  #engineOf(connection: Connection, what: string): Engine {
    const engine = this.#ownedBy(connection, what).engine;
    if (engine === undefined) throw new StateError(`cannot ${what}: the pipeline is still being set up`);
    return engine;
  }

  // ---- results and flow ---------------------------------------------------------------------------

  #sendResults(pipeline: Pipeline, batch: RecordBatchBuilder): void {
    const connection = pipeline.owner;
    const engine = pipeline.engine;
    if (connection.isClosed) {
      batch.takeRecords(); // the root is gone; what it does not acknowledge, it re-sends elsewhere
      return;
    }
    const standing = engine?.standingBacklog() ? 1 : 0;
    const fields = { idle: engine?.hungryWorkers ?? 0, standing };
    if (batch.hasReferences) {
      // An oversize output is in it: its bytes go to the socket as they are, not copied into the frame.
      const pieces = batch.finishFramePieces("results", fields);
      for (const piece of pieces) pipeline.credit -= piece.length;
      connection.sendFramePieces(pieces);
    } else {
      batch.lendFrame("results", fields, (frame) => {
        pipeline.credit -= frame.length;
        connection.sendFrameCopy(frame);
      });
    }
    this.#updateOutputFlow(pipeline);
  }

  /** Pauses the engine's output while the root's credit is spent or the socket lags; resumes after. */
  #updateOutputFlow(pipeline: Pipeline): void {
    const engine = pipeline.engine;
    if (engine === undefined) return;
    const connection = pipeline.owner;
    if (pipeline.credit > 0 && connection.queuedBytes <= RESULTS_QUEUE_BYTES) {
      engine.resumeOutput();
      return;
    }
    engine.pauseOutput();
    if (pipeline.credit > 0) {
      connection.writable(RESULTS_QUEUE_BYTES).then(() => {
        if (this.#pipeline === pipeline) this.#updateOutputFlow(pipeline);
      });
    }
  }

  // ---- status -----------------------------------------------------------------------------------

  /** What /metrics shows: the status as any client sees it, and the engine's rings and retries. */
  observe(): NodeObservation {
    const engine = this.#pipeline?.engine;
    return {
      status: this.#status(undefined),
      rings: engine?.ringFill() ?? [],
      retries: engine?.retries ?? { retried: 0, givenUp: 0 },
      backlogBytes: engine?.backlogBytes ?? 0,
    };
  }

  #status(connection: Connection | undefined): NodeStatus {
    const pipeline = this.#pipeline;
    const engine = pipeline?.engine;
    return {
      host: hostname(),
      listen: this.address,
      pid: process.pid,
      version: VERSION,
      cores: availableParallelism(),
      workers: this.#defaultWorkers,
      memory: { used: process.memoryUsage.rss(), limit: this.#memoryLimit },
      stopping: this.#stopping,
      pipeline:
        pipeline === undefined
          ? null
          : {
              name: pipeline.name,
              version: pipeline.version,
              owner: pipeline.ownerName,
              busy: pipeline.owner !== connection,
              startedAt: pipeline.startedAt,
              workers: engine?.workerCount ?? 0,
              idleWorkers: engine?.idleWorkers ?? 0,
              awake: engine !== undefined && !engine.isAsleep,
              inFlight: engine?.inFlight ?? 0,
              workersReplaced: engine?.workersReplaced ?? 0,
              lagMs: engine?.lagMs ?? 0,
              tasks: engine?.stats() ?? [],
              itemsDone: engine?.itemsDone ?? 0,
              recentErrors: pipeline.errors.list(),
              tasksByWorker: engine?.statsByWorker() ?? [],
            },
    };
  }

  /** To the console and the log server (at `level`, naming the pipeline or task it is `about`). */
  #note(
    level: LogLevel,
    message: string,
    options: { console?: boolean; about?: { pipeline?: string; task?: string } } = {},
  ): void {
    const line = `[node ${this.#server ? this.address : this.#options.host}] ${message}`;
    const toConsole = options.console !== false && (level !== "info" || this.#options.quiet !== true);
    if (toConsole) diagnostics()[level](line);
    if (this.#options.logAddress !== undefined) logAt(level, line, {}, options.about);
  }
}

function describe(pipeline: { name: string; version: string }): string {
  return `"${pipeline.name}" ${pipeline.version}`;
}

/**
 * `pcluster node`: runs a node until SIGINT or SIGTERM, lets the items it has finish (see `drain`), then
 * stops its workers and frees its port. A watchdog ends it should its main thread stop running (see
 * watchdog.ts).
 * A refusal (an exposed address without a token, a port in use) is thrown as a `PclusterError`, which
 * the CLI prints on one line before it exits with code 1.
 */
export async function runNodeServer(options: NodeServerOptions): Promise<void> {
  const node = await NodeServer.start(options);
  console.log(`pcluster node ${node.listeningLine}`);
  const stallMs = options.stallExitMs ?? DEFAULT_STALL_EXIT_MS;
  const stopWatchdog = stallMs > 0 ? startWatchdog(stallMs, `pcluster node ${node.address}`) : () => {};
  await runUntilStopped(
    () => node.stop(),
    () => node.drain(),
  );
  stopWatchdog();
  await flushLogs(2000);
  process.exit(0);
}

/**
 * Why a feed of `records` records (`bytes` bytes) would take the engine past the grant, or undefined.
 * Counted as the root counts: whole records. While the engine has fewer items than workers, one item
 * is let in past the byte grant, in a feed of its own: items of megabytes, of which the grant holds
 * one or none, still reach every worker (the root counts more in flight than this, never less).
 */
function overGrant(
  engine: { inFlight: number; backlogBytes: number; workerCount: number },
  grant: { items: number; bytes: number },
  records: number,
  bytes: number,
): string | undefined {
  const items = engine.inFlight + records;
  const waiting = engine.backlogBytes + bytes;
  const byItself = engine.inFlight < engine.workerCount && records === 1;
  if (items <= grant.items && (waiting <= grant.bytes || byItself)) return undefined;
  return `it would take this node past the window it granted (${items} items, ${waiting} bytes waiting; granted ${grant.items} items, ${grant.bytes} bytes)`;
}

/** The ids of a feed batch's records, as u32 little-endian: what a refusal gives back to the root. */
function feedRecordIds(blob: Uint8Array, records: number): Uint8Array {
  const ids = new Uint8Array(records * 4);
  const view = new DataView(ids.buffer);
  const reader = new RecordReader(blob);
  for (let at = 0; reader.next(); at += 4) view.setUint32(at, reader.id, true);
  return ids;
}
