import { afterAll, expect, test } from "bun:test";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { STOP_WORDS, sampleLines } from "../src/demo/corpus.ts";
import { WordTagger, normalize, splitWords } from "../src/demo/task_package/index.ts";
import { setLogSink } from "../src/log/log.ts";
import { type Spawned, killAll, spawnBun } from "./support/processes.ts";

/** `bun run demo`, the quick start's first command: it must work, say the right numbers, and leave nothing running. */

let demo: Spawned | undefined;
let workdir: string | undefined;

afterAll(async () => {
  // SIGTERM first: the demo's local cluster ends its nodes with it. SIGKILL (by PID) after.
  demo?.kill("SIGTERM");
  await demo?.waitExit(5000).catch(() => {});
  await killAll();
  // Also when the test failed before reading it: a demo ended by SIGKILL leaves its work dir behind.
  workdir ??= workdirIn(demo?.stdout ?? "");
  if (workdir !== undefined) {
    for (const pid of processesMentioning(workdir)) kill(pid);
    rmSync(workdir, { recursive: true, force: true });
  }
});

/** The local cluster's work dir, from the demo's first line (the folder of its log file). */
function workdirIn(out: string): string | undefined {
  const logFile = out.match(/^local cluster: nodes .*, log file (\S+)$/m)?.[1];
  return logFile === undefined ? undefined : dirname(logFile);
}

/** The tasks run in this process, one item after another: what the cluster must have computed. */
async function expectedFor(
  lines: number,
): Promise<{ words: number; kept: number; dropped: number; counts: Map<string, number>; tags: Map<string, number> }> {
  setLogSink(() => {}); // the tasks' log lines are not wanted here (bun test runs every file in one process)
  try {
    const tagger = new WordTagger(STOP_WORDS);
    const counts = new Map<string, number>();
    const tags = new Map<string, number>();
    let words = 0;
    let kept = 0;
    for (const line of sampleLines(lines)) {
      for (const word of splitWords(normalize(line))) {
        words++;
        const tagged = tagger.process(word);
        if (tagged === null) continue;
        kept++;
        counts.set(tagged.word, (counts.get(tagged.word) ?? 0) + 1);
        for (const tag of tagged.tags) tags.set(tag, (tags.get(tag) ?? 0) + 1);
      }
    }
    return { words, kept, dropped: words - kept, counts, tags };
  } finally {
    await new Promise((resolve) => setImmediate(resolve)); // the sink takes the lines of this tick on the next
    setLogSink(undefined);
  }
}

test("bun run demo runs the pipeline, prints the right summary, exits 0 and leaves no process behind", async () => {
  demo = spawnBun(["run", "src/demo/run.ts"], { env: { PCLUSTER_TOKEN: undefined } });
  // A bound against hanging, not a speed check (the demo's speed belongs in a bench): it takes a second
  // or two on a quiet machine.
  const code = await demo.waitExit(50_000);
  await Promise.race([demo.drained, Bun.sleep(2000)]);
  const out = demo.stdout;
  expect(code, demo.output).toBe(0);

  const [, nodeList] = out.match(/^local cluster: nodes (.*), log file (\S+)$/m) ?? [];
  expect(nodeList, out).toBeDefined();
  workdir = workdirIn(out)!;
  const ports = nodeList!.split(", ").map((addr) => Number(addr.replace("127.0.0.1:", "")));
  expect(ports).toHaveLength(2);

  const summary = out.match(/^(\d+) lines in → (\d+) words → (\d+) tagged words out \((\d+) stop words dropped\)/m);
  expect(summary, out).not.toBeNull();
  const [lines, words, kept, dropped] = summary!.slice(1).map(Number) as [number, number, number, number];
  const expected = await expectedFor(lines);
  expect(lines).toBeGreaterThanOrEqual(1000);
  expect({ words, kept, dropped }).toEqual({ words: expected.words, kept: expected.kept, dropped: expected.dropped });

  // The counts come from the combiner (TagCounts): the workers' partials merged on the root.
  const top = (counts: Map<string, number>, n: number) =>
    [...counts]
      .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : 1))
      .slice(0, n)
      .map(([key, count]) => `${key} ${count}`)
      .join(", ");
  expect(out).toContain(`most common words: ${top(expected.counts, 5)}`);
  expect(out).toContain(`tags: ${top(expected.tags, 3)}`);
  // The stats table: processed and dropped per task, merged over both nodes.
  expect(out).toMatch(new RegExp(`^normalize\\s+${lines}\\s+0\\s+0\\s`, "m"));
  expect(out).toMatch(new RegExp(`^splitWords\\s+${lines}\\s+0\\s+0\\s`, "m"));
  expect(out).toMatch(new RegExp(`^WordTagger\\s+${words}\\s+${dropped}\\s+0\\s`, "m"));
  // The progress display (run's { progress }) printed at least its final line to stderr, a pipe here: whole lines.
  const lastProgress = `^lines 100% ${lines}/${lines}, \\d+/s, \\d+(s|m\\d\\ds) elapsed, ${kept} outputs$`;
  expect(demo.stderr).toMatch(new RegExp(lastProgress, "m"));

  // Nothing left: no process mentions the local cluster's work dir, which is gone, and no node port answers.
  expect(processesMentioning(workdir)).toEqual([]);
  expect(existsSync(workdir)).toBe(false);
  for (const port of ports) expect(await answers(port)).toBe(false);
}, 60_000);

/** PIDs of running processes whose command line contains `text` (the local cluster's processes name its work dir). */
function processesMentioning(text: string): number[] {
  if (!existsSync("/proc")) return [];
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return (
          readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(text) &&
          !readFileSync(`/proc/${pid}/stat`, "utf8").match(/^\d+ \(.*\) Z/)
        );
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

function kill(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone
  }
}

/** Whether something accepts a TCP connection on 127.0.0.1:port. */
async function answers(port: number): Promise<boolean> {
  try {
    const socket = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
    socket.end();
    return true;
  } catch {
    return false;
  }
}
