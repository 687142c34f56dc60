/**
 * A bench's aims: each is printed with its verdict and recorded, so that `bun run bench --check` can
 * fail when one is not met. bench/index.ts runs every bench in a process of its own and passes it
 * AIMS_FILE_ENV, a file to which each aim not met is appended as one JSON line.
 */
import { appendFileSync } from "node:fs";

/** The environment variable naming the file that collects missed aims (set by bench/index.ts). */
export const AIMS_FILE_ENV = "PCLUSTER_BENCH_AIMS_FILE";

export interface AimOptions {
  /** The aim is `value ≤ bound` (a cost); otherwise `value ≥ bound`. */
  atMost?: boolean;
  /** How values are printed (default: 3 significant digits). */
  format?: (value: number) => string;
  /** Printed after the verdict (rounds, ranges…). */
  note?: string;
}

/** A missed aim, as recorded for the runner. */
export interface MissedAim {
  bench: string;
  name: string;
  value: number;
  bound: number;
  atMost: boolean;
}

const benchName = (Bun.main.split("/").pop() ?? "bench").replace(/\.bench\.ts$/, "");

/** Prints `name ≥ bound: value — met` (or NOT met) and records a miss; returns whether it was met. */
export function aim(name: string, value: number, bound: number, options: AimOptions = {}): boolean {
  const { line, met } = judgeAim(name, value, bound, options);
  console.log(line);
  return met;
}

/** `aim` for a bench that prints its report later: records a miss and returns the line to print. */
export function judgeAim(
  name: string,
  value: number,
  bound: number,
  options: AimOptions = {},
): { line: string; met: boolean } {
  const atMost = options.atMost === true;
  const format = options.format ?? ((v: number) => v.toPrecision(3));
  const met = Number.isFinite(value) && (atMost ? value <= bound : value >= bound);
  const note = options.note === undefined ? "" : ` ${options.note}`;
  const file = process.env[AIMS_FILE_ENV];
  if (!met && file !== undefined && file !== "") {
    const missed: MissedAim = { bench: benchName, name, value, bound, atMost };
    appendFileSync(file, `${JSON.stringify(missed)}\n`);
  }
  return {
    line: `  ${name} ${atMost ? "≤" : "≥"} ${format(bound)}: ${format(value)} — ${met ? "met" : "NOT met"}${note}`,
    met,
  };
}
