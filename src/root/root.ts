import consola from "consola";
import {
  NoNodesError,
  NodeBusyError,
  type PclusterError,
  QueueFullError,
  SetupError,
  StateError,
  TaskError,
} from "../errors.ts";
import { getDefaultLogAddress, log, setDefaultLogAddress, setLogToken } from "../log/client.ts";
import { type Endpoint, type HostPort, parseAddress } from "../protocol/address.ts";
import type { TaskErrorReport } from "../protocol/codec.ts";
import type { NodeStatus, SetupArgs, SetupResult, TaskStatsRecord } from "../protocol/pipeline.ts";
import { OutputChannel } from "./channel.ts";
import { scanForNodes } from "./discovery.ts";
import { mergeTaskStats } from "./inspect.ts";
import { type LocalCluster, startLocalCluster } from "./local.ts";
import { NodeClient, type NodeClientOptions } from "./node-client.ts";
import { type TaskInput, pipelineHash, readLocalPackages, resolveTaskchain } from "./packager.ts";
import { ResultPump, isThenable } from "./results.ts";
import { type NodeLane, Scheduler, type SchedulerOptions } from "./scheduler.ts";

export interface RootOptions extends NodeClientOptions {
  /** Most items waiting at the root: beyond it `feed` throws `QueueFullError` and `feedAsync` waits. */
  maxQueued?: number;
  /** Batching and window tuning (for experiments; the defaults adapt by themselves). */
  scheduler?: SchedulerOptions;
}

/** One task of a taskchain: a function or class exported by a local package (or `"package#export"`). */
export type TaskDefinition = TaskInput;

export interface SetupOptions {
  /** Folders of packages whose exports are the tasks; shipped to every node. */
  localPackages?: string[];
  /** npm specs (`lodash@4`) installed on every node, into this pipeline's own folder. */
  remotePackages?: string[];
  /** Called on the root with every output, in arrival order; a returned promise holds the next ones. */
  outputHandler?: (output: unknown) => unknown;
  /** Called with every task error (the item is dropped) and every item given up after retries. */
  errorHandler?: (error: TaskError) => unknown;
  /** Worker threads on each node (default: the node's own setting, its core count). */
  workersPerNode?: number;
  /** Times an item may take its worker down before it is given up (default 3). */
  maxAttempts?: number;
  /**
   * A task call that runs longer than this (more exactly: a worker that finishes no task call and
   * writes no output for this long while it has an item) ends its worker; the item counts an attempt,
   * as when a worker dies (default: no limit).
   */
  taskTimeoutMs?: number;
  /** Result bytes a node may send ahead of the root handling them (default 8 MiB). */
  resultWindow?: number;
  /** Bound on each node's setup, installs included (default 15 minutes). */
  setupTimeoutMs?: number;
}

/** Items `run()` takes from a (sync) iterable at a time, at most. */
const RUN_CHUNK_ITEMS = 4096;

export interface LocalOptions extends RootOptions {
  /** Node processes (default 2). */
  nodes?: number;
  /** Worker threads per node (default: cores / nodes, at least 1). */
  workers?: number;
  /** MB of memory each node may use before it ends a runaway worker (default: 80% of memory, shared between the nodes). */
  memoryLimitMb?: number;
}

/** A node as `status()` reports it. */
export type NodeReport = NodeStatus & { address: string };

/** Counts since setup, for progress displays. */
export interface Progress {
  fed: number;
  done: number;
  outputs: number;
  errors: number;
  resent: number;
  queued: number;
  inFlight: number;
}

interface Waiter {
  ready: () => boolean;
  resolve: () => void;
  reject: (error: Error) => void;
}

const MAX_UNHANDLED_ERROR_NOTES = 10;

/**
 * `Root`: the client of the whole cluster. It ships the task code to every node, schedules the items
 * it is fed across them in adaptive batches, hands every output to your handler, and re-sends the
 * unfinished items of a node that is lost to the others.
 *
 * @example
 * import { Root } from "pcluster";
 * import { simpleTask, generatorTask, DropItem } from "./task_package";
 *
 * const cluster = new Root([["127.0.0.1", 6000], ["127.0.0.1", 6001]]);
 * await cluster.setup("example-pipeline", "1.0", [
 *   { function: simpleTask },
 *   { function: generatorTask, isGenerator: true },
 *   { function: DropItem, args: ["item dropped"] },
 * ], { localPackages: ["./task_package"], outputHandler: (out) => console.log(out) });
 * cluster.feed("hello world!", "its me an input item!");
 * await cluster.waitEmpty();
 * await cluster.reset();
 */
export class Root implements AsyncDisposable {
  readonly #options: RootOptions;
  readonly #endpoints = new Map<string, Endpoint>();
  readonly #clients = new Map<string, NodeClient>();
  readonly #lanes = new Map<NodeClient, NodeLane>();
  readonly #scheduler: Scheduler;
  readonly #results: ResultPump<NodeClient>;
  #setupOptions: SetupOptions = {};
  #running = false;
  #closed = false;
  /** Set when every node is lost: every wait and feed fails with it until the next setup. */
  #failure: PclusterError | undefined;
  #waiters: Waiter[] = [];
  #local: LocalCluster | undefined;
  /** Set when `reset()` stopped this root's local cluster: its nodes are gone. */
  #localStopped = false;
  /** The local cluster's log server, while `Root.local` made it the default log address (undone on reset). */
  #localLogDefault: { address: readonly [host: string, port: number]; token: boolean } | undefined;
  #outputOverride: ((output: unknown) => unknown) | undefined;
  #progress = { fed: 0, done: 0, outputs: 0, errors: 0, resent: 0 };
  #unhandledErrors = 0;

  /** @param nodeAddrs nodes as `[host, port]` or `"host:port"`; more with `addNode` or `searchNodes`. */
  constructor(nodeAddrs: HostPort[] = [], options: RootOptions = {}) {
    this.#options = { ...options, token: options.token ?? process.env.PCLUSTER_TOKEN };
    for (const addr of nodeAddrs) this.addNode(addr);
    this.#scheduler = new Scheduler(options.scheduler);
    this.#scheduler.onPumped = () => this.#settle();
    this.#results = new ResultPump<NodeClient>({
      output: (value) => this.#onOutput(value),
      taskError: (client, item, report, failed) => this.#onTaskError(client, item, report, failed),
      done: (client, ids) => this.#onDone(client, ids),
      handled: (client, bytes) => client.credit(bytes),
    });
    this.#results.onIdle = () => this.#settle();
  }

  /**
   * Starts a local cluster — a log server and `nodes` real node processes on free loopback ports — and
   * returns a Root connected to them. The processes stop on `reset()`, `close()` or process exit.
   *
   * @example
   * await using cluster = await Root.local({ nodes: 2 });
   */
  static async local(options: LocalOptions = {}): Promise<Root> {
    const cluster = await startLocalCluster({ nodes: options.nodes, workers: options.workers, memoryLimitMb: options.memoryLimitMb, token: options.token });
    const root = new Root(cluster.nodes, options);
    root.#local = cluster;
    if (getDefaultLogAddress() === undefined) {
      setDefaultLogAddress(cluster.logAddress);
      if (options.token) setLogToken(options.token);
      root.#localLogDefault = { address: cluster.logAddress, token: Boolean(options.token) };
    }
    return root;
  }

  /** The nodes this root knows, as "host:port". */
  get nodes(): string[] {
    return [...this.#endpoints.keys()];
  }

  /** The local cluster's log file, for a Root made by `Root.local`. */
  get logFile(): string | undefined {
    return this.#local?.logFile;
  }

  get progress(): Progress {
    return { ...this.#progress, queued: this.#scheduler.queued, inFlight: this.#scheduler.inFlight };
  }

  /** Adds a node by address (it is set up with the next `setup`). */
  addNode(addr: HostPort): void {
    const endpoint = parseAddress(addr, "node address");
    this.#endpoints.set(endpoint.key, endpoint);
  }

  /**
   * Scans a network for nodes on `port` and adds every idle one; busy nodes (running another root's
   * pipeline) are skipped, and said so. Returns how many nodes were added.
   *
   * @example
   * await cluster.searchNodes({ network: "192.168.1.0/24", port: 6000 });
   */
  async searchNodes(options: { network: string; port: number; timeoutMs?: number; concurrency?: number }): Promise<number> {
    const found = await scanForNodes({ ...options, token: this.#options.token, tls: this.#options.tls });
    let added = 0;
    for (const node of found.idle) {
      if (!this.#endpoints.has(node.address)) added++;
      this.addNode(node.address);
    }
    for (const node of found.busy) {
      const pipeline = node.status.pipeline!;
      this.#note("info", `searchNodes: skipped busy node ${node.address}: it runs "${pipeline.name}" ${pipeline.version} for root ${pipeline.owner}`);
    }
    for (const node of found.refused) this.#note("warn", `searchNodes: node ${node.address} refused us: ${node.reason}`);
    return added;
  }

  /**
   * Ships the taskchain and its packages to every node and starts their workers. A task function that
   * no local package exports, a busy node, an unreachable node or a failed install is a clear error,
   * and then no node is left set up. Setting up again replaces the running pipeline.
   */
  async setup(name: string, version: string | number, taskchain: TaskDefinition[], options: SetupOptions = {}): Promise<void> {
    this.#assertOpen();
    if (this.#localStopped) {
      throw new StateError("reset() stopped this root's local cluster; start another with Root.local(), or call setup() again without reset() to replace a pipeline");
    }
    for (const option of ["workersPerNode", "maxAttempts", "taskTimeoutMs", "resultWindow", "setupTimeoutMs"] as const) {
      const value = options[option];
      if (value !== undefined && !(Number.isInteger(value) && value > 0)) {
        throw new TypeError(`setup option ${option} must be a positive integer, got ${Bun.inspect(value)}`);
      }
    }
    if (this.#running) await this.#stopPipeline("set up again");
    const packages = await readLocalPackages(options.localPackages ?? []);
    const tasks = await resolveTaskchain(taskchain, packages);
    const bundles = packages.map((local) => local.bundle);
    const remotePackages = options.remotePackages ?? [];
    const args: SetupArgs = {
      name,
      version: String(version),
      taskchain: tasks,
      packages: bundles,
      remotePackages,
      hash: pipelineHash(bundles, remotePackages),
      workers: options.workersPerNode,
      maxAttempts: options.maxAttempts,
      taskTimeoutMs: options.taskTimeoutMs,
      resultWindow: options.resultWindow,
    };
    if (this.#endpoints.size === 0) {
      throw new NoNodesError("no nodes to set up: pass addresses to new Root(...), call addNode(), or searchNodes()");
    }
    const endpoints = [...this.#endpoints.values()];
    const outcomes = await Promise.allSettled(endpoints.map((endpoint) => this.#setupNode(endpoint, args, options)));
    const failures = outcomes.flatMap((outcome, index) =>
      outcome.status === "rejected" ? [{ node: endpoints[index]!.key, error: outcome.reason as Error }] : [],
    );
    if (failures.length > 0) {
      await this.#stopPipeline("another node failed to set up");
      const lines = failures.map((failure) => `  ${failure.node}: ${failure.error.message}`).join("\n");
      const message = `setup of "${name}" ${args.version} failed on ${failures.length} of ${endpoints.length} nodes:\n${lines}`;
      throw failures.every((failure) => failure.error instanceof NodeBusyError) ? new NodeBusyError(message) : new SetupError(message);
    }
    this.#setupOptions = options;
    this.#progress = { fed: 0, done: 0, outputs: 0, errors: 0, resent: 0 };
    this.#unhandledErrors = 0;
    this.#failure = undefined;
    this.#running = true;
    for (const outcome of outcomes) {
      const { client, result } = (outcome as PromiseFulfilledResult<{ client: NodeClient; result: SetupResult }>).value;
      this.#lanes.set(client, this.#scheduler.addLane(client, result.workers, result.window));
      client.startHeartbeat();
    }
    this.#note("info", `"${name}" ${args.version} set up on ${endpoints.length} nodes (${this.#scheduler.lanes.reduce((n, lane) => n + lane.workers, 0)} workers)`);
    this.#updateKeepAlive();
  }

  /**
   * Queues items for the cluster. Each is encoded now; an item holding a value that cannot be carried
   * as itself (README: "What an item may be") throws an `ItemEncodeError` naming it and the path, e.g.
   * `items[3].meta.cb: a function cannot be sent`, and nothing of the call is queued.
   * For a large array use `feedMany(array)`: a spread of some 500 000 arguments or more overflows the stack.
   */
  feed(...items: unknown[]): void {
    this.#enqueue(items, 0);
  }

  /**
   * Like `feed`, for the items of an array or any iterable, however many.
   *
   * @example
   * cluster.feedMany(lines); // not cluster.feed(...lines) for millions of lines
   */
  feedMany(iterable: readonly unknown[] | Iterable<unknown>): void {
    if (typeof iterable === "string" || typeof (iterable as Partial<Iterable<unknown>>)?.[Symbol.iterator] !== "function") {
      throw new TypeError(`feedMany takes an array or an iterable of items, got ${Bun.inspect(iterable).slice(0, 80)}; to feed one item, call feed(item)`);
    }
    this.#enqueue(Array.isArray(iterable) ? iterable : Array.from(iterable), 0);
  }

  /** Queues `items`; a refused one is named by its index counted from `firstIndex`. */
  #enqueue(items: readonly unknown[], firstIndex: number): void {
    this.#assertRunning("feed");
    const maxQueued = this.#options.maxQueued;
    if (maxQueued !== undefined && this.#scheduler.queued + items.length > maxQueued) {
      throw new QueueFullError(
        `the root's queue holds ${this.#scheduler.queued} items and is bounded at ${maxQueued}; ` +
          "use `await cluster.feedAsync(item)` to wait for room",
      );
    }
    this.#scheduler.enqueueValues(items, firstIndex); // an item that cannot be carried throws ItemEncodeError
    this.#progress.fed += items.length;
    this.#updateKeepAlive();
  }

  /** Like `feed`, but waits for room when the queue is bounded (`maxQueued`), feeding as much as fits each time. */
  async feedAsync(...items: unknown[]): Promise<void> {
    const bound = this.#options.maxQueued;
    if (bound === undefined) return this.#enqueue(items, 0);
    for (let at = 0; at < items.length; ) {
      if (this.#scheduler.queued >= bound) await this.#room(bound);
      const take = Math.min(items.length - at, bound - this.#scheduler.queued);
      this.#enqueue(items.slice(at, at + take), at);
      at += take;
    }
  }

  /** Resolves when the root's queue is empty and some worker somewhere is idle: time to feed more. */
  waitInput(): Promise<void> {
    return this.#when(() => this.#scheduler.queued === 0 && this.#scheduler.lanes.some((lane) => lane.idleWorkers > 0));
  }

  /** Resolves when every fed item and everything it generated is finished and every output handled. */
  waitEmpty(): Promise<void> {
    return this.#when(() => this.#scheduler.queued === 0 && this.#scheduler.inFlight === 0 && this.#results.idle);
  }

  /** Feeds every item of an (async) iterable, holding back while the cluster is busy, then waits until all is done. */
  async run(items: Iterable<unknown> | AsyncIterable<unknown>): Promise<void> {
    this.#assertRunning("run");
    const bound = this.#options.maxQueued ?? this.#defaultBound();
    if (Symbol.iterator in items) {
      // Items that are at hand go in chunks, as much as the queue has room for: no promise per item.
      const iterator = (items as Iterable<unknown>)[Symbol.iterator]();
      let taken = 0;
      try {
        for (let done = false; !done; ) {
          if (this.#scheduler.queued >= bound) await this.#room(bound);
          const chunk: unknown[] = [];
          const room = Math.min(RUN_CHUNK_ITEMS, bound - this.#scheduler.queued);
          while (chunk.length < room) {
            const step = iterator.next();
            if (step.done === true) {
              done = true;
              break;
            }
            chunk.push(step.value);
          }
          if (chunk.length > 0) this.#enqueue(chunk, taken);
          taken += chunk.length;
        }
      } catch (error) {
        iterator.return?.(); // as for-of does when its body throws
        throw error;
      }
    } else {
      let taken = 0;
      for await (const item of items) {
        if (this.#scheduler.queued >= bound) await this.#room(bound);
        this.#enqueue([item], taken++);
      }
    }
    await this.waitEmpty();
  }

  /**
   * Runs an (async) iterable through the cluster and yields the outputs as they come. Input is read
   * only as fast as outputs are consumed.
   *
   * @example
   * for await (const out of cluster.process(lines)) console.log(out);
   */
  async *process(items: Iterable<unknown> | AsyncIterable<unknown>): AsyncGenerator<unknown> {
    this.#assertRunning("process");
    if (this.#outputOverride !== undefined) throw new StateError("process() is already running on this root");
    const channel = new OutputChannel<unknown>(1024);
    this.#outputOverride = (output) => channel.push(output);
    const feeding = this.run(items).then(
      () => channel.end(),
      (error) => channel.fail(error),
    );
    try {
      yield* channel;
      await feeding;
    } finally {
      this.#outputOverride = undefined;
    }
  }

  /** Workers finish their current item, then pause; resolves once all have. */
  async sleep(): Promise<void> {
    this.#assertRunning("sleep");
    await Promise.all([...this.#lanes.keys()].map((client) => client.request("sleep", undefined, 10 * 60_000)));
  }

  /** Wakes the workers up again. */
  async wakeup(): Promise<void> {
    this.#assertRunning("wakeup");
    await Promise.all([...this.#lanes.keys()].map((client) => client.request("wakeup")));
  }

  /** Each node's status: its pipeline, cores, workers, idle workers, awake, start time, per-task counts. */
  async status(): Promise<NodeReport[]> {
    this.#assertOpen();
    return Promise.all(
      [...this.#endpoints.values()].map(async (endpoint) => {
        const client = await this.#client(endpoint);
        return { address: endpoint.key, ...(await client.request<NodeStatus>("status")) };
      }),
    );
  }

  /** Per task: processed, dropped, errors, total and mean time, merged over all workers of all nodes. */
  async stats(): Promise<TaskStatsRecord[]> {
    const reports = await this.status();
    return mergeTaskStats(reports.flatMap((report) => (report.pipeline ? [report.pipeline.tasks] : [])));
  }

  /** Stops the pipeline on every node and forgets what was queued; waits in progress reject. Nodes are free again. */
  async reset(): Promise<void> {
    if (this.#closed) return;
    await this.#stopPipeline("the cluster was reset");
    for (const client of this.#clients.values()) client.close();
    this.#clients.clear();
    const local = this.#local;
    this.#local = undefined;
    if (local !== undefined) this.#localStopped = true;
    await local?.stop();
    this.#forgetLocalLogDefault();
  }

  /** Resets, closes every connection and stops a local cluster; the root cannot be used again. */
  async close(): Promise<void> {
    await this.reset();
    this.#closed = true;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * The local cluster's log server is gone with it: `log()` goes back to stdout rather than to a dead
   * address (and a later `Root.local` sets its own), unless the program chose another address meanwhile.
   */
  #forgetLocalLogDefault(): void {
    const owned = this.#localLogDefault;
    this.#localLogDefault = undefined;
    const current = getDefaultLogAddress();
    if (owned === undefined || current?.[0] !== owned.address[0] || current[1] !== owned.address[1]) return;
    setDefaultLogAddress(undefined);
    if (owned.token) setLogToken(undefined);
  }

  // ---- nodes --------------------------------------------------------------------------------------

  async #client(endpoint: Endpoint): Promise<NodeClient> {
    const existing = this.#clients.get(endpoint.key);
    if (existing?.isOpen) return existing;
    const client = await NodeClient.connect(endpoint, this.#options);
    this.#clients.set(endpoint.key, client);
    client.onResults = (blob, idle, frameBytes) => {
      const lane = this.#lanes.get(client);
      if (lane !== undefined) this.#scheduler.reportIdle(lane, idle);
      this.#results.push(client, blob, frameBytes);
    };
    client.onLost = (reason) => this.#onNodeLost(client, reason);
    client.onEvent = (name, data) => {
      if (name === "reset" && this.#lanes.has(client)) {
        client.close();
        this.#onNodeLost(client, new StateError(`node ${client.address} reset the pipeline: ${(data as { why?: string })?.why ?? "no reason given"}`));
      }
    };
    return client;
  }

  async #setupNode(endpoint: Endpoint, args: SetupArgs, options: SetupOptions): Promise<{ client: NodeClient; result: SetupResult }> {
    const client = await this.#client(endpoint);
    const result = await client.request<SetupResult>("setup", args, options.setupTimeoutMs ?? 15 * 60_000);
    return { client, result };
  }

  /**
   * A node is gone: its unfinished items go to the others, and it leaves this root's nodes (so that the
   * next `setup` does not fail on it; `addNode` brings it back). With none left, everything waiting fails.
   */
  #onNodeLost(client: NodeClient, reason: PclusterError): void {
    this.#clients.delete(client.address);
    const lane = this.#lanes.get(client);
    if (lane === undefined) return;
    this.#lanes.delete(client);
    this.#endpoints.delete(client.address);
    // Items whose Done waits behind the output handler are finished: their outputs are still handed out.
    const { requeued, finished } = this.#scheduler.removeLane(lane, this.#results.pendingDone(client));
    this.#progress.resent += requeued;
    this.#progress.done += finished;
    const left = this.#scheduler.lanes.length;
    this.#note(
      "warn",
      `node ${client.address} lost (${reason.message}); re-sending ${requeued} unfinished items to the ${left} other node${left === 1 ? "" : "s"}; ` +
        "it is dropped from this root's nodes (addNode() brings it back)",
    );
    if (left === 0 && this.#running) {
      this.#failure = new NoNodesError(
        `every node is lost (the last, ${client.address}: ${reason.message}); ${this.#scheduler.queued} items are not finished. ` +
          "Add nodes and call setup() again",
      );
    }
    this.#settle();
  }

  /** Resets the pipeline on the nodes that run it and forgets all work; pending waits reject. */
  async #stopPipeline(why: string): Promise<void> {
    const clients = [...this.#lanes.keys()];
    this.#running = false;
    this.#lanes.clear();
    this.#scheduler.clear();
    this.#results.clear();
    this.#rejectAll(new StateError(`${why}; the wait was abandoned`));
    await Promise.all(clients.map((client) => client.request("reset", undefined, 10_000).catch(() => {})));
    this.#updateKeepAlive();
  }

  // ---- results ------------------------------------------------------------------------------------

  #onOutput(value: unknown): unknown {
    this.#progress.outputs++;
    const handler = this.#outputOverride ?? this.#setupOptions.outputHandler;
    return handler === undefined ? undefined : callHandler("outputHandler", handler, value);
  }

  #onTaskError(client: NodeClient, item: number, report: TaskErrorReport, failed: boolean): unknown {
    this.#progress.errors++;
    const error = new TaskError(`task "${report.task}" ${failed ? "could not finish" : "failed on"} item ${item} on node ${client.address}: ${report.message}`, {
      task: report.task,
      stack: report.stack,
      failed,
      node: client.address,
      item,
    });
    const handler = this.#setupOptions.errorHandler;
    if (handler !== undefined) return callHandler("errorHandler", handler, error);
    if (this.#unhandledErrors++ < MAX_UNHANDLED_ERROR_NOTES) {
      consola.warn(`pcluster: ${error.message}${this.#unhandledErrors === MAX_UNHANDLED_ERROR_NOTES ? " (further task errors are not printed; pass an errorHandler to see them all)" : ""}`);
    }
    return undefined;
  }

  #onDone(client: NodeClient, ids: number[]): void {
    const lane = this.#lanes.get(client);
    if (lane === undefined) return; // a lost node: its items were re-queued already
    for (const id of ids) if (this.#scheduler.complete(lane, id)) this.#progress.done++;
  }

  // ---- waiting ------------------------------------------------------------------------------------

  #when(ready: () => boolean): Promise<void> {
    try {
      this.#assertRunning("wait");
    } catch (error) {
      return Promise.reject(error);
    }
    if (ready()) return Promise.resolve();
    const promise = new Promise<void>((resolve, reject) => this.#waiters.push({ ready, resolve, reject }));
    this.#updateKeepAlive();
    return promise;
  }

  async #room(bound: number | undefined): Promise<void> {
    if (bound === undefined || this.#scheduler.queued < bound) return;
    await this.#when(() => this.#scheduler.queued < bound);
  }

  #defaultBound(): number {
    let window = 0;
    for (const lane of this.#scheduler.lanes) window += lane.window.size;
    return Math.max(1024, window * 2);
  }

  /** Wakes every waiter whose condition holds now (or fails them all if the cluster failed). */
  #settle(): void {
    if (this.#failure !== undefined) return this.#rejectAll(this.#failure);
    if (this.#waiters.length > 0) {
      this.#waiters = this.#waiters.filter((waiter) => {
        if (!waiter.ready()) return true;
        waiter.resolve();
        return false;
      });
    }
    this.#updateKeepAlive();
  }

  #rejectAll(error: Error): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }

  /**
   * Keeps the process alive exactly while there is work or a wait: a script that forgets `reset()`
   * still exits when it is done, and its nodes free themselves when the connection drops.
   */
  #updateKeepAlive(): void {
    const active =
      this.#waiters.length > 0 || this.#scheduler.queued > 0 || this.#scheduler.inFlight > 0 || !this.#results.idle;
    for (const client of this.#clients.values()) client.keepAlive(active);
  }

  #assertOpen(): void {
    if (this.#closed) throw new StateError("this root is closed; create a new one");
  }

  #assertRunning(what: string): void {
    this.#assertOpen();
    if (this.#failure !== undefined) throw this.#failure;
    if (!this.#running) throw new StateError(`cannot ${what}: call setup() first`);
  }

  /** To the console and the log. */
  #note(level: "info" | "warn", message: string): void {
    consola[level](`[root] ${message}`);
    if (getDefaultLogAddress() !== undefined) log(`[root] ${message}`);
  }
}

/**
 * Runs a user handler on one value (no closure: this runs once per output). What it throws, or a
 * promise it returns rejects with, is printed and never stops the results; a promise it returns holds
 * the next results until it settles.
 */
function callHandler<T>(name: string, handler: (value: T) => unknown, value: T): unknown {
  try {
    const result = handler(value);
    return isThenable(result) ? Promise.resolve(result).then(undefined, (error: unknown) => reportHandlerError(name, error)) : result;
  } catch (error) {
    reportHandlerError(name, error);
    return undefined;
  }
}

function reportHandlerError(name: string, error: unknown): void {
  consola.error(`pcluster: the ${name} threw: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
}
