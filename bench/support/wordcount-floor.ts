/**
 * The floor of bench/wordcount.bench.ts in a process of its own (see `wordCountHalvesInFreshProcess`):
 * prints one JSON line, a HalvesRun.
 */
import { wordCountHalvesInFreshThreads } from "./wordcount-loop.ts";

process.stdout.write(JSON.stringify(await wordCountHalvesInFreshThreads()));
