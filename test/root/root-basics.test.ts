import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NodeBusyError, Root, SetupError, StateError, type TaskError } from "../../src/index.ts";
import * as logging from "../fixtures/logging-tasks/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, startLogServerAt, startNode } from "../support/nodes.ts";
import { REPO, killAll, removeWithChildren } from "../support/processes.ts";
import { waitForFile } from "../support/log-server.ts";
import { consoleNotes } from "../support/console-notes.ts";
import { waitFor } from "../support/wait.ts";

const TASKS = join(REPO, "test/fixtures/tasks");
const LOGGING_TASKS = join(REPO, "test/fixtures/logging-tasks");
let logFile: string;
let nodes: RunningNode[];
let addrs: string[];

beforeAll(async () => {
  logFile = join(removeWithChildren(mkdtempSync(join(tmpdir(), "pcluster-root-"))), "cluster.log");
  const logServer = await startLogServerAt(logFile);
  nodes = await Promise.all([
    startNode({ logPort: logServer.port, workers: 1 }),
    startNode({ logPort: logServer.port, workers: 1 }),
  ]);
  addrs = nodes.map((node) => node.addr);
}, 60_000);
afterAll(() => killAll());

/** The chain run sequentially in this process: what the cluster must produce. */
function sequential(lines: string[]): string[] {
  const tagger = new tasks.Tagger("!");
  const out: string[] = [];
  for (const line of lines)
    for (const entry of tasks.splitWords(tasks.parse(line))) {
      const tagged = tagger.process(entry);
      if (tagged !== null) out.push(tagged);
    }
  return out.sort();
}

describe("the seed's flow", () => {
  test("setup, feed, waitEmpty, reset: as the Python README does it", async () => {
    const cluster = new Root(nodes.map((node) => ["127.0.0.1", node.port] as [string, number]));
    const outputs: unknown[] = [];
    await cluster.setup(
      "example-pipeline",
      1.0,
      [
        { function: logging.simpleTask, isGenerator: false },
        { function: logging.generatorTask, isGenerator: true },
        { function: logging.DropItem, isGenerator: false, args: ["item dropped"] },
      ],
      { localPackages: [LOGGING_TASKS], outputHandler: (output) => outputs.push(output) },
    );
    cluster.feed("hello world!", "its me an input item!");
    await cluster.waitEmpty();
    expect(outputs).toEqual([]); // DropItem drops everything, as in the seed
    const stats = await cluster.stats();
    expect(stats.map((task) => [task.task, task.processed, task.dropped])).toEqual([
      ["simpleTask", 2, 0],
      ["generatorTask", 2, 0],
      ["DropItem", 4, 4],
    ]);
    const status = await cluster.status();
    expect(status.map((node) => node.pipeline?.name)).toEqual(["example-pipeline", "example-pipeline"]);
    expect(status.every((node) => node.pipeline!.version === "1" && node.pipeline!.workers === 1)).toBe(true);
    await cluster.reset();
    // The tasks' log() lines reached the log server.
    const text = await waitForFile(logFile, (t) => (t.match(/item dropped/g) ?? []).length >= 4);
    expect(text).toContain("hello world!");
    expect(text).toContain("its me an input item!");
    // After reset the nodes are free for another root.
    const other = new Root(addrs);
    expect((await other.status()).every((node) => node.pipeline === null)).toBe(true);
    await other.close();
  });
});

describe("a root over two nodes", () => {
  let cluster: Root;
  const errors: TaskError[] = [];
  beforeAll(async () => {
    cluster = new Root(addrs);
  });
  afterAll(() => cluster.close());

  test("a 3-stage chain with a generator and a class gives exactly the sequential outputs", async () => {
    const outputs: string[] = [];
    await cluster.setup(
      "words",
      "2",
      [
        { function: tasks.parse },
        { function: tasks.splitWords, isGenerator: true },
        { function: tasks.Tagger, args: ["!"] },
      ],
      { localPackages: [TASKS], outputHandler: (output) => void outputs.push(output as string) },
    );
    const lines = Array.from({ length: 2000 }, (_, i) => `${i}:w${i % 7} skip x${i % 13} y${i}`);
    cluster.feed(...lines);
    await cluster.waitEmpty();
    expect(outputs.sort()).toEqual(sequential(lines));
    expect(cluster.progress).toMatchObject({ fed: 2000, done: 2000, outputs: 6000, queued: 0, inFlight: 0 });
    const stats = await cluster.stats();
    expect(stats.map((task) => task.processed)).toEqual([2000, 2000, 8000]);
    expect(stats[2]!.dropped).toBe(2000);
  });

  test("the seed's input loop: waitInput, then feed, item by item", async () => {
    const outputs: number[] = [];
    await cluster.setup("loop", "1", [{ function: tasks.double }], {
      localPackages: [TASKS],
      outputHandler: (output) => void outputs.push(output as number),
    });
    for (let i = 0; i < 300; i++) {
      await cluster.waitInput();
      cluster.feed(i);
    }
    await cluster.waitEmpty();
    expect(outputs.sort((a, b) => a - b)).toEqual(Array.from({ length: 300 }, (_, i) => i * 2));
  });

  test("a throwing task drops its item; errorHandler gets task, message, stack, node, item and its input", async () => {
    const outputs: number[] = [];
    await cluster.setup("errors", "1", [{ function: tasks.failOnThirteen }], {
      localPackages: [TASKS],
      outputHandler: (output) => void outputs.push(output as number),
      errorHandler: (error) => void errors.push(error),
    });
    cluster.feed(...Array.from({ length: 30 }, (_, i) => i));
    await cluster.waitEmpty();
    expect(outputs.length).toBe(29);
    expect(errors.length).toBe(1);
    const error = errors[0]!;
    expect(error.task).toBe("failOnThirteen");
    expect(error.message).toContain("thirteen is unlucky");
    // Named by its input: the root's id of an item follows the order items were sent in, not fed.
    expect(error.message).toMatch(/^task "failOnThirteen" failed on item \d+ \(input: 13\) on node 127\.0\.0\.1:\d+: /);
    expect(error.remoteStack).toContain("failOnThirteen");
    expect(addrs).toContain(error.node!);
    expect(error.failed).toBe(false);
    expect(error.input).toBe(13); // the input item it descends from, as it was fed
  });

  test("handlers that throw or reject are reported with their stack; the run goes on and every output is handed out once", async () => {
    const seen = new Set<number>();
    let handled = 0;
    const text = await consoleNotes(async () => {
      await cluster.setup("handlers", "1", [{ function: tasks.failOnThirteen }], {
        localPackages: [TASKS],
        outputHandler: async (output) => {
          seen.add(output as number);
          if (++handled === 5) throw new Error("the sink broke"); // sync on purpose: no await before it
          if (handled === 7) await Promise.reject(new Error("the sink broke later"));
        },
        errorHandler: () => {
          throw new Error("the error sink broke");
        },
      });
      await cluster.run(Array.from({ length: 200 }, (_, i) => i));
    });
    expect(handled).toBe(199); // 13 threw in its task
    expect(seen.size).toBe(199);
    expect(cluster.progress).toMatchObject({ fed: 200, done: 200, outputs: 199, errors: 1 });
    expect(text).toContain("the outputHandler threw: Error: the sink broke");
    expect(text).toContain("the outputHandler threw: Error: the sink broke later");
    expect(text).toContain("the errorHandler threw: Error: the error sink broke");
    expect(text).toMatch(/root-basics\.test\.ts:\d+:\d+/); // the stack, where it threw
  });

  test("sleep pauses every worker after its current item; wakeup resumes", async () => {
    const outputs: unknown[] = [];
    await cluster.setup("sleepy", "1", [{ function: tasks.block }], {
      localPackages: [TASKS],
      outputHandler: (output) => void outputs.push(output),
    });
    await cluster.sleep();
    expect((await cluster.status()).every((node) => node.pipeline!.awake === false)).toBe(true);
    cluster.feed(...Array.from({ length: 20 }, (_, id) => ({ id, ms: 1 })));
    // The nodes took every item, and their parked workers ran none.
    const asleep = await waitFor(() => cluster.status(), {
      what: "the nodes to hold all 20 items",
      until: (nodes) => nodes.reduce((sum, node) => sum + node.pipeline!.inFlight, 0) === 20,
    });
    for (const node of asleep) expect(node.pipeline!.tasks[0]!.processed).toBe(0);
    expect(outputs.length).toBe(0);
    await cluster.wakeup();
    await cluster.waitEmpty();
    expect(outputs.length).toBe(20);
  });

  test("process() yields the outputs of an async iterable; run() feeds with backpressure", async () => {
    await cluster.setup("iterate", "1", [{ function: tasks.double }], { localPackages: [TASKS] });
    async function* numbers() {
      for (let i = 0; i < 5000; i++) yield i;
    }
    const seen: number[] = [];
    for await (const output of cluster.process(numbers())) seen.push(output as number);
    expect(seen.length).toBe(5000);
    expect(seen.sort((a, b) => a - b)[4999]).toBe(9998);
    await cluster.run([1, 2, 3]);
    expect(cluster.progress.done).toBe(5003);
  });

  test("feedMany takes an array larger than a spread can pass, or any iterable; anything else is refused", async () => {
    let sum = 0;
    let count = 0;
    await cluster.setup("many", "1", [{ function: tasks.double }], {
      localPackages: [TASKS],
      outputHandler: (output) => {
        sum += output as number;
        count++;
      },
    });
    const many = Array.from({ length: 600_000 }, (_, i) => i);
    cluster.feedMany(many);
    cluster.feedMany(new Set([1_000_000, 2_000_000]));
    await cluster.waitEmpty();
    expect(count).toBe(600_002);
    expect(sum).toBe(600_000 * 599_999 + 6_000_000);
    expect(() => cluster.feedMany("text" as never)).toThrow(
      'feedMany takes an array or an iterable of items, got "text"; to feed one item, call feed(item)',
    );
    expect(() => cluster.feedMany(42 as never)).toThrow(TypeError);
    expect(cluster.progress.fed).toBe(600_002);
  }, 60_000);

  test("run() takes items at hand in chunks; an item it cannot send is named by its place, and the iterable is closed", async () => {
    const outputs: number[] = [];
    await cluster.setup("chunks", "1", [{ function: tasks.double }], {
      localPackages: [TASKS],
      outputHandler: (output) => void outputs.push(output as number),
    });
    await cluster.run(Array.from({ length: 10_000 }, (_, i) => i));
    expect(outputs.length).toBe(10_000);
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    let closed = false;
    function* items() {
      try {
        for (let i = 0; i < 10_000; i++) yield i === 4500 ? cycle : i;
      } finally {
        closed = true;
      }
    }
    await expect(cluster.run(items())).rejects.toThrow(
      "items[4500].self: a circular reference (back to items[4500]) cannot be sent",
    );
    expect(closed).toBe(true);
  }, 60_000);

  test("a bounded queue: feed refuses beyond it, feedAsync waits for room", async () => {
    await cluster.reset(); // frees the nodes for another root
    const bounded = new Root(addrs, { maxQueued: 10 });
    try {
      await bounded.setup("bounded", "1", [{ function: tasks.identity }], { localPackages: [TASKS] });
      expect(() => bounded.feed(...Array.from({ length: 11 }, (_, i) => i))).toThrow(/bounded at 10.*feedAsync/);
      for (let i = 0; i < 500; i++) await bounded.feedAsync(i);
      await bounded.waitEmpty();
      expect(bounded.progress.done).toBe(500);
      // Many at once: as many as fit go each time, the rest wait for room.
      let most = 0;
      const watch = setInterval(() => (most = Math.max(most, bounded.progress.queued)), 0);
      await bounded.feedAsync(...Array.from({ length: 2000 }, (_, i) => i));
      clearInterval(watch);
      await bounded.waitEmpty();
      expect(bounded.progress.done).toBe(2500);
      expect(most).toBeLessThanOrEqual(10);
    } finally {
      await bounded.close();
    }
  });

  test("a function no local package exports is refused at setup, before anything is sent", async () => {
    function notExported(item: unknown) {
      return item;
    }
    await expect(cluster.setup("bad", "1", [{ function: notExported }], { localPackages: [TASKS] })).rejects.toThrow(
      SetupError,
    );
    await expect(cluster.setup("bad", "1", [{ function: notExported }], { localPackages: [TASKS] })).rejects.toThrow(
      /notExported/,
    );
    await expect(cluster.setup("bad", "1", [{ function: "tasks#nope" }], { localPackages: [TASKS] })).rejects.toThrow(
      /nope/,
    );
  });

  test("calls before setup say so", async () => {
    const fresh = new Root(addrs);
    expect(() => fresh.feed(1)).toThrow(StateError);
    await expect(fresh.waitEmpty()).rejects.toThrow(/call setup\(\) first/);
    await fresh.close();
    await expect(fresh.setup("x", "1", [{ function: tasks.identity }], { localPackages: [TASKS] })).rejects.toThrow(
      /closed/,
    );
  });

  test("a second root is refused while the first holds the nodes, and the first keeps working", async () => {
    const outputs: number[] = [];
    await cluster.setup("first", "1", [{ function: tasks.double }], {
      localPackages: [TASKS],
      outputHandler: (output) => void outputs.push(output as number),
    });
    const second = new Root(addrs);
    try {
      const attempt = second.setup("second", "1", [{ function: tasks.identity }], { localPackages: [TASKS] });
      await expect(attempt).rejects.toBeInstanceOf(NodeBusyError);
      await expect(attempt).rejects.toThrow(/runs pipeline "first" 1 for root/);
      const status = await second.status();
      expect(status.every((node) => node.pipeline?.busy === true && node.pipeline.name === "first")).toBe(true);
    } finally {
      await second.close();
    }
    cluster.feed(1, 2, 3);
    await cluster.waitEmpty();
    expect(outputs.sort()).toEqual([2, 4, 6]);
  });
});
