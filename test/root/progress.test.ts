import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Writable } from "node:stream";
import { join } from "node:path";
import { Root } from "../../src/index.ts";
import { duration, knownTotal } from "../../src/root/progress-bar.ts";
import * as tasks from "../fixtures/tasks/index.ts";
import { type RunningNode, startNode } from "../support/nodes.ts";
import { REPO, killAll, killGroup, spawnGroup } from "../support/processes.ts";

/** `run(items, { progress })` and `process(items, { progress })`: what a user watching a run sees. */

const TASKS = join(REPO, "test/fixtures/tasks");
let cluster: Root;
let node: RunningNode;

/** A stream that is not a terminal, keeping what is written. */
function captured(): { stream: Writable; text: () => string } {
  let text = "";
  const stream = new Writable({
    write(chunk, _encoding, done) {
      text += String(chunk);
      done();
    },
  });
  return { stream, text: () => text };
}

beforeAll(async () => {
  const saved = process.env.PCLUSTER_TOKEN;
  delete process.env.PCLUSTER_TOKEN; // the local cluster's processes must not inherit one
  try {
    cluster = await Root.local({ nodes: 1, workers: 2 });
  } finally {
    if (saved !== undefined) process.env.PCLUSTER_TOKEN = saved;
  }
  node = await startNode({ workers: 1 }); // for the terminal case, run by a script of its own
}, 30_000);

afterAll(async () => {
  await cluster?.close();
  await killAll();
});

describe("progress to a stream that is not a terminal", () => {
  test("run(array): plain lines with counts that only grow, the last one at the total, no escape codes", async () => {
    await cluster.setup("progress", "1", [{ function: tasks.sleepy }], { localPackages: [TASKS] });
    const out = captured();
    const items = Array.from({ length: 400 }, (_, id) => ({ id, ms: 1 }));
    await cluster.run(items, { progress: { stream: out.stream, intervalMs: 20, label: "rows" } });
    const lines = out.text().split("\n").filter(Boolean);
    expect(lines.length).toBeGreaterThanOrEqual(2); // the first frame and the last, at least
    const counts = lines.map((line) => {
      const match = line.match(/^rows (\d+)% (\d+)\/400, \d+\/s, (ETA \S+|\S+ elapsed)/);
      expect(match, line).not.toBeNull();
      return Number(match![2]);
    });
    for (let i = 1; i < counts.length; i++) expect(counts[i]!).toBeGreaterThanOrEqual(counts[i - 1]!);
    expect(lines.at(-1)).toMatch(/^rows 100% 400\/400, \d+\/s, \d+s elapsed, 400 outputs$/);
    expect(out.text()).not.toContain("\x1b");
    expect(out.text().endsWith("\n")).toBe(true);
  }, 30_000);

  test("process(generator): the total is unknown, so counts without a percentage; outputs, errors", async () => {
    const options = { localPackages: [TASKS], errorHandler: () => {} };
    await cluster.setup("progress-gen", "1", [{ function: tasks.failOnThirteen }], options);
    const out = captured();
    function* numbers() {
      for (let n = 0; n < 50; n++) yield n;
    }
    const outputs: unknown[] = [];
    const progress = { stream: out.stream, intervalMs: 20 };
    for await (const output of cluster.process(numbers(), { progress })) outputs.push(output);
    expect(outputs).toHaveLength(49);
    const last = out.text().trimEnd().split("\n").at(-1);
    expect(last).toMatch(/^items 50, \d+\/s, \d+s elapsed, 49 outputs, 1 errors$/);
    expect(out.text()).not.toContain("%");
  }, 30_000);

  test("a second run counts from where it starts, not from setup", async () => {
    await cluster.setup("progress-again", "1", [{ function: tasks.double }], { localPackages: [TASKS] });
    await cluster.run([1, 2, 3]);
    const out = captured();
    await cluster.run(new Set([4, 5]), { progress: { stream: out.stream } });
    expect(out.text().trimEnd().split("\n").at(-1)).toMatch(/^items 100% 2\/2, .*, 2 outputs$/);
  }, 30_000);

  test("a malformed progress option is refused, naming what is wrong", async () => {
    await cluster.setup("progress-bad", "1", [{ function: tasks.double }], { localPackages: [TASKS] });
    await expect(cluster.run([1], { progress: { intervalMs: -5 } })).rejects.toThrow(
      "progress.intervalMs must be a positive number of milliseconds, got -5",
    );
    const noStream = cluster.run([1], { progress: { stream: {} as Writable } });
    await expect(noStream).rejects.toThrow(/progress.stream must be a writable stream/);
    const notAnOption = cluster.run([1], { progress: "yes" as unknown as boolean });
    await expect(notAnOption).rejects.toThrow(/progress must be true, false or/);
  }, 30_000);
});

describe("progress on a terminal", () => {
  /** Runs test/support/progress-tty.ts under `script`, whose pseudo-terminal is the script's stderr. */
  async function onTerminal(env: Record<string, string | undefined>, columns = 200): Promise<string> {
    const run = `${process.execPath} ${join(REPO, "test/support/progress-tty.ts")} ${node.addr}`;
    const command = `stty cols ${columns} rows 40 && ${run}`; // a terminal of known width
    const options = { cwd: REPO, env: { PCLUSTER_TOKEN: undefined, ...env } };
    const child = spawnGroup(["script", "-qfec", command, "/dev/null"], options);
    try {
      expect(await child.waitExit(30_000), child.output).toBe(0);
      await Promise.race([child.drained, Bun.sleep(2000)]);
      return child.stdout;
    } finally {
      await killGroup(child, 500);
    }
  }

  test("a bar redrawn in place whose last frame shows 100% and the total, in colour", async () => {
    const screen = await onTerminal({ NO_COLOR: undefined });
    expect(screen).toContain("RAN 300");
    // Frames are redrawn in place: each starts by moving the cursor to column 1 (no new line between them).
    const frames = screen.split("\x1b[1G").slice(1);
    expect(frames.length).toBeGreaterThanOrEqual(2);
    const last = frames.at(-1)!;
    expect(last).toMatch(/^rows \x1b\[32m█{24}\x1b\[39m 100% 300\/300/);
    expect(last).toContain("300 outputs");
    // Nothing a Ctrl-C would leave behind: the cursor is never hidden, line wrapping never turned off.
    expect(screen).not.toContain("\x1b[?25l");
    expect(screen).not.toContain("\x1b[?7l");
  }, 40_000);

  test("with NO_COLOR the bar has no colour codes, only cursor movement", async () => {
    const screen = await onTerminal({ NO_COLOR: "1" });
    expect(screen).toContain("RAN 300");
    const last = screen.split("\x1b[1G").at(-1)!;
    expect(last).toMatch(/^rows █{24} 100% 300\/300 \| \d+\/s \| \d+s elapsed \| 300 outputs/);
    expect(screen).not.toMatch(/\x1b\[\d+m/);
  }, 40_000);

  test("with FORCE_COLOR=0 (and no NO_COLOR) the bar has no colour codes either", async () => {
    const screen = await onTerminal({ NO_COLOR: undefined, FORCE_COLOR: "0" });
    expect(screen).toContain("RAN 300");
    const last = screen.split("\x1b[1G").at(-1)!;
    expect(last).toMatch(/^rows █{24} 100% 300\/300/);
    expect(screen).not.toMatch(/\x1b\[\d+m/);
  }, 40_000);

  test("on a narrow terminal a frame gives up its colour, then its bar, rather than wrap", async () => {
    const screen = await onTerminal({ NO_COLOR: undefined }, 60);
    expect(screen).toContain("RAN 300");
    const frames = screen.split("\x1b[1G").slice(1);
    for (const frame of frames) expect(frame.replace(/\x1b\[0K[\s\S]*$/, "").length).toBeLessThanOrEqual(60);
    expect(frames.at(-1)).toMatch(/^rows 100% 300\/300 \| \d+\/s \| \d+s elapsed \| 300 outputs/);
  }, 40_000);
});

describe("progress pieces", () => {
  test("the total of arrays, Sets, Maps and array-likes is known; of generators it is not", () => {
    expect(knownTotal([1, 2, 3])).toBe(3);
    expect(knownTotal(new Set([1, 2]))).toBe(2);
    expect(knownTotal(new Map([[1, 2]]))).toBe(1);
    expect(knownTotal(new Uint8Array(7))).toBe(7);
    expect(knownTotal((function* () {})())).toBeUndefined();
  });

  test("durations read at a glance", () => {
    expect(duration(0.4)).toBe("0s");
    expect(duration(59.4)).toBe("59s");
    expect(duration(185)).toBe("3m05s");
    expect(duration(3720)).toBe("1h02m");
  });
});
