// `bun run demo`: a local cluster of 2 node processes turns 20 000 lines of text into tagged
// words, with a function task, a generator task and a class task from ./task_package, and counts
// them with a combiner from there too: the workers fold the counts, the root merges their partials.
import { join } from "node:path";
import { Root } from "pcluster";
import { formatTaskStats } from "../root/inspect.ts";
import { STOP_WORDS, sampleLines } from "./corpus.ts";
import { TagCounts, WordTagger, normalize, splitWords } from "./task_package/index.ts";

const LINES = 20_000;

await using cluster = await Root.local({ nodes: 2 });
console.log(`local cluster: nodes ${cluster.nodes.join(", ")}, log file ${cluster.logFile}`);

await cluster.setup(
  "demo",
  "1.0",
  [{ function: normalize }, { function: splitWords, isGenerator: true }, { function: WordTagger, args: [STOP_WORDS] }],
  {
    localPackages: [join(import.meta.dir, "task_package")],
    // The tagged words never travel: each worker counts its own, and run() gives the merged counts.
    combine: { function: TagCounts },
  },
);

const started = performance.now();
// An array, so the progress display knows the total (a generator would show counts, without a percentage).
const counts = (await cluster.run([...sampleLines(LINES)], { progress: { label: "lines" } })) as ReturnType<
  TagCounts["result"]
>;
const seconds = (performance.now() - started) / 1000;

const stats = await cluster.stats();
const tagger = stats[2]!; // WordTagger sees every word and drops the stop words
const { fed, outputs } = cluster.progress;
console.log(
  `\n${fed} lines in → ${tagger.processed} words → ${outputs} tagged words out ` +
    `(${tagger.dropped} stop words dropped) in ${seconds.toFixed(2)} s`,
);
console.log(`most common words: ${top(counts.words, 5)}`);
console.log(`tags: ${top(counts.tags, 3)}`);
console.log("\nper task, merged over nodes and workers (cluster.stats()):");
console.log(formatTaskStats(stats));

/** "cluster 1234, node 1200, …": the most frequent keys, ties by name. */
function top(counts: Map<string, number>, n: number): string {
  return [...counts]
    .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : 1))
    .slice(0, n)
    .map(([key, count]) => `${key} ${count}`)
    .join(", ");
}
