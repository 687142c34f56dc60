import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { QueueFullError } from "../../src/errors.ts";
import { Root, type RootOptions } from "../../src/index.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, startNode } from "../support/nodes.ts";
import { REPO, killAll } from "../support/processes.ts";

/**
 * A slow output handler must slow the cluster down, not fill the root's memory: results come back
 * only as fast as the root hands them out (the node's result credit), and input goes out only as
 * fast as results come back. 20 000 outputs of 10 KB — 200 MB — go through a root whose heap must
 * never hold more than a few MB of them.
 */

const TASKS = `${REPO}/test/fixtures/tasks`;
const ITEMS = 20_000;
const OUTPUT_BYTES = 10 * 1024;
const TOTAL_BYTES = ITEMS * OUTPUT_BYTES;
const RESULT_WINDOW = 1024 * 1024;
let nodes: RunningNode[];

beforeAll(async () => {
  nodes = await Promise.all([startNode({ workers: 1 }), startNode({ workers: 1 })]);
}, 60_000);
afterAll(() => killAll());

function heapUsed(): number {
  Bun.gc(true);
  return process.memoryUsage().heapUsed;
}

describe("a slow outputHandler and large outputs", () => {
  test("the root's heap and the results not yet handled stay bounded; every output arrives", async () => {
    const cluster = new Root(
      nodes.map((node) => node.addr),
      { maxQueued: 256 },
    );
    try {
      let handled = 0;
      let handledBytes = 0;
      const seen = new Uint8Array(ITEMS);
      await cluster.setup("big-outputs", "1", [{ function: tasks.inflate }], {
        localPackages: [TASKS],
        resultWindow: RESULT_WINDOW,
        // ~1 ms every 8 outputs: far slower than two workers making 10 KB strings.
        outputHandler: async (output) => {
          const { id, blob } = output as { id: number; blob: string };
          seen[id]!++;
          handledBytes += blob.length;
          if (++handled % 8 === 0) await Bun.sleep(1);
        },
      });
      const baseline = heapUsed();
      let peakHeap = 0;
      let peakUnhandled = 0;
      let peakQueued = 0;
      let samples = 0;
      let sampling = true;
      // While the run goes: the root's heap, its queue, and the outputs made on the nodes but not yet
      // handled here (in the nodes' rings, in the sockets, or waiting in the root).
      const sampler = (async () => {
        while (sampling) {
          const status = await cluster.status();
          const processed = status.reduce((sum, node) => sum + (node.pipeline?.tasks[0]?.processed ?? 0), 0);
          peakUnhandled = Math.max(peakUnhandled, processed - handled);
          peakQueued = Math.max(peakQueued, cluster.progress.queued);
          peakHeap = Math.max(peakHeap, heapUsed() - baseline);
          samples++;
          await Bun.sleep(50);
        }
      })();
      async function* items() {
        for (let id = 0; id < ITEMS; id++) yield { id, size: OUTPUT_BYTES };
      }
      const started = performance.now();
      try {
        await cluster.run(items());
      } finally {
        sampling = false;
        await sampler;
      }
      const seconds = (performance.now() - started) / 1000;

      expect(handled).toBe(ITEMS);
      expect(handledBytes).toBe(TOTAL_BYTES);
      expect(seen.every((times) => times === 1)).toBe(true);
      expect(cluster.progress).toMatchObject({ fed: ITEMS, done: ITEMS, outputs: ITEMS, queued: 0, inFlight: 0 });
      expect(samples).toBeGreaterThan(10);
      console.log(
        `backpressure: ${ITEMS} outputs, ${(TOTAL_BYTES / 2 ** 20).toFixed(0)} MiB in ${seconds.toFixed(1)} s; ` +
          `peak heap growth ${(peakHeap / 2 ** 20).toFixed(1)} MiB, peak unhandled outputs ${peakUnhandled}, peak queued ${peakQueued} (${samples} samples)`,
      );
      // Made but not handled: bounded by the credit and the rings of two nodes (~1 MiB + 1 MiB each,
      // a few hundred outputs), not by the run. Buffering at the root would reach thousands.
      expect(peakUnhandled).toBeLessThan(1500);
      // The root's heap holds a few result frames, never the 200 MB of the run.
      expect(peakHeap).toBeLessThan(TOTAL_BYTES / 8);
      // run() holds input back at the bound: the queue never grows past it.
      expect(peakQueued).toBeLessThanOrEqual(256);
    } finally {
      await cluster.close();
    }
  }, 60_000);
});

describe("items of megabytes", () => {
  const MIB = 1024 * 1024;
  const ITEM_COUNT = 40;
  // Each item a 1 MiB string; each takes 5 ms on the node, so the input is ready far faster than it goes.
  const pad = "x".repeat(MIB);
  const item = (ms = 5) => ({ ms, pad });
  /** Runs `body` on a root of the two nodes whose pipeline is `name` with the one task `task`; closes it. */
  async function onPipeline(
    name: string,
    task: typeof tasks.padLength | typeof tasks.inflate,
    options: RootOptions,
    body: (cluster: Root) => Promise<void>,
  ): Promise<void> {
    const cluster = new Root(
      nodes.map((node) => node.addr),
      options,
    );
    try {
      await cluster.setup(name, "1", [{ function: task }], { localPackages: [TASKS] });
      await body(cluster);
    } finally {
      await cluster.close();
    }
  }

  test("run() and process() read their input only while the root's queue holds less than maxQueuedBytes", async () => {
    await onPipeline("big-inputs", tasks.padLength, { maxQueuedBytes: 4 * MIB }, async (cluster) => {
      // Before each item the iterable gives: the items it gave that are held at the root (read and not
      // fed yet, or queued), not gone to a node.
      let peakHeld = 0;
      const look = (given: number) => {
        const { fed, queued } = cluster.progress;
        peakHeld = Math.max(peakHeld, given - (fed - fedBefore) + queued);
      };
      let fedBefore = 0;
      function* syncItems() {
        for (let i = 0; i < ITEM_COUNT; i++) {
          look(i);
          yield item();
        }
      }
      async function* asyncItems() {
        for (let i = 0; i < ITEM_COUNT; i++) {
          look(i);
          yield item();
        }
      }
      const lengths: number[] = [];
      // Small items first: the queue's idea of an item's size must not carry over to the large ones.
      await cluster.run(Array.from({ length: 500 }, () => ({ pad: "s" })));
      fedBefore = cluster.progress.fed;
      await cluster.run(syncItems());
      fedBefore = cluster.progress.fed;
      for await (const length of cluster.process(asyncItems())) lengths.push(length as number);
      expect(lengths).toEqual(Array(ITEM_COUNT).fill(MIB));
      expect(cluster.progress).toMatchObject({
        fed: 500 + 2 * ITEM_COUNT,
        done: 500 + 2 * ITEM_COUNT,
        queued: 0,
        inFlight: 0,
      });
      // 4 MiB of 1 MiB items, and the one let in below the bound. Without the byte bound, all 40 wait here.
      expect(peakHeld).toBeGreaterThan(0);
      expect(peakHeld).toBeLessThanOrEqual(5);
    });
  }, 60_000);

  test("by default run() holds at most 64 MiB of input at the root (twice the nodes' window, when larger)", async () => {
    await onPipeline("big-inputs", tasks.padLength, {}, async (cluster) => {
      let peakHeld = 0;
      async function* items() {
        for (let i = 0; i < 100; i++) {
          const { fed, queued } = cluster.progress;
          peakHeld = Math.max(peakHeld, i - fed + queued);
          yield item(2);
        }
      }
      await cluster.run(items());
      expect(cluster.progress).toMatchObject({ fed: 100, done: 100, outputs: 100, queued: 0, inFlight: 0 });
      // Two nodes of one worker may have 4 MiB each in flight: the default is then 64 MiB, and one more.
      expect(peakHeld).toBeGreaterThan(32);
      expect(peakHeld).toBeLessThanOrEqual(65);
    });
  }, 60_000);

  test("process() keeps at most 16 MiB of outputs for a slow loop; the rest wait on the nodes", async () => {
    await onPipeline("big-outputs-loop", tasks.inflate, {}, async (cluster) => {
      const count = 60;
      const ids = Array.from({ length: count }, (_, id) => ({ id, size: MIB }));
      let consumed = 0;
      let peakWaiting = 0;
      for await (const output of cluster.process(ids)) {
        expect((output as { blob: string }).blob.length).toBe(MIB);
        // Handed to the loop (counted in progress.outputs) and not taken by it yet.
        peakWaiting = Math.max(peakWaiting, cluster.progress.outputs - consumed);
        consumed++;
        await Bun.sleep(5);
      }
      expect(consumed).toBe(count);
      // 16 MiB of 1 MiB outputs, and the one that filled it. Bounded in outputs alone (1 024), all 60 wait.
      expect(peakWaiting).toBeGreaterThan(4);
      expect(peakWaiting).toBeLessThanOrEqual(17);
    });
  }, 60_000);

  test("feed refuses items once the queue holds maxQueuedBytes (QueueFullError); feedAsync waits for room", async () => {
    await onPipeline("big-feeds", tasks.padLength, { maxQueuedBytes: 4 * MIB }, async (cluster) => {
      // In one turn of the event loop nothing goes out: the queue holds all that was fed.
      let fed = 0;
      const error = (() => {
        try {
          for (; fed < ITEM_COUNT; fed++) cluster.feed(item(0));
        } catch (caught) {
          return caught as Error;
        }
      })();
      expect(error).toBeInstanceOf(QueueFullError);
      expect(error!.message).toContain("bounded at 4194304 (maxQueuedBytes)");
      expect(fed).toBeGreaterThanOrEqual(4);
      expect(fed).toBeLessThanOrEqual(5);
      for (let i = fed; i < ITEM_COUNT; i++) await cluster.feedAsync(item(0));
      await cluster.waitEmpty();
      expect(cluster.progress).toMatchObject({ fed: ITEM_COUNT, done: ITEM_COUNT, outputs: ITEM_COUNT, errors: 0 });
    });
  }, 60_000);
});
