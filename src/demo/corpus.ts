import type { Line } from "./task_package/index.ts";

/** The demo's input: made-up sentences, the same on every run (a seeded generator picks the words). */

export const STOP_WORDS = ["the", "a", "an", "and", "of", "to", "in", "on", "is", "it", "with", "at"];

const WORDS = [
  ...STOP_WORDS,
  "cluster",
  "node",
  "worker",
  "pipeline",
  "item",
  "task",
  "queue",
  "socket",
  "level",
  "radar",
  "noon",
  "kayak",
  "running",
  "sending",
  "waiting",
  "bun",
  "thread",
  "message",
  "output",
  "input",
  "generator",
  "scheduler",
  "fast",
  "quiet",
  "busy",
  "idle",
];

/** `count` lines like `{ id: 7, text: "The radar, sending a message!" }`, ids from 1. */
export function* sampleLines(count: number): Generator<Line> {
  let seed = 42;
  // mulberry32: tiny, seeded, good enough to pick words.
  const random = (): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), seed | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T>(from: readonly T[]): T => from[Math.floor(random() * from.length)]!;
  for (let id = 1; id <= count; id++) {
    const length = 3 + Math.floor(random() * 10);
    const words = Array.from({ length }, (_, index) => (index > 0 && random() < 0.1 ? `${pick(WORDS)},` : pick(WORDS)));
    const sentence = words.join(" ");
    yield { id, text: `${sentence[0]!.toUpperCase()}${sentence.slice(1)}${pick([".", "!", "?", "..."])}` };
  }
}
