import type * as CliProgress from "cli-progress";
import { colourWanted } from "../diagnostics.ts";
import type { ProgressOptions } from "./options.ts";

/**
 * The progress display of `run(items, { progress })` and `process(items, { progress })`.
 *
 * cli-progress draws it: on a terminal it redraws one line in place (cursor hidden meanwhile, no line
 * wrap), anywhere else it prints a plain line every `intervalMs` and once at the end, which is what a
 * log file or CI output wants. We give it our own format (count, total when known, rate, ETA, outputs),
 * because a total is often unknown (a generator) and its built-in tokens have no rate.
 */

/** What the display reads on every frame (it shows what they grew by since it started). */
export interface ProgressCounts {
  done: number;
  outputs: number;
  errors: number;
}

const DEFAULT_INTERVAL_MS = 2000;
/** Frames per second on a terminal: smooth enough, and cheap beside the run it shows. */
const TTY_FPS = 10;

/** How many items an iterable holds when it says so (arrays, typed arrays, `length`, Set and Map `size`). */
export function knownTotal(items: unknown): number | undefined {
  if (Array.isArray(items)) return items.length;
  for (const key of ["size", "length"] as const) {
    const value = (items as Record<string, unknown>)[key];
    if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return value;
  }
  return undefined;
}

/** Checks a `progress` option; throws a `TypeError` naming what is wrong with it. */
function parseOption(option: boolean | ProgressOptions): Required<ProgressOptions> {
  const options: ProgressOptions = option === true ? {} : option === false ? {} : option;
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`progress must be true, false or { stream, intervalMs, label }, got ${Bun.inspect(option)}`);
  }
  const stream = options.stream ?? process.stderr;
  if (typeof (stream as { write?: unknown }).write !== "function") {
    throw new TypeError("progress.stream must be a writable stream (something with a write method)");
  }
  const intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  if (typeof intervalMs !== "number" || !(intervalMs > 0) || !Number.isFinite(intervalMs)) {
    const got = Bun.inspect(intervalMs);
    throw new TypeError(`progress.intervalMs must be a positive number of milliseconds, got ${got}`);
  }
  const label = options.label ?? "items";
  if (typeof label !== "string") throw new TypeError(`progress.label must be a string, got ${Bun.inspect(label)}`);
  return { stream, intervalMs, label };
}

const GREEN = (text: string) => `\x1b[32m${text}\x1b[39m`;

/** Plain digits: a log line is read by scripts too. */
const count = (value: number): string => String(Math.round(value));

/** "42s", "3m05s", "1h02m": a duration to read at a glance. */
export function duration(seconds: number): string {
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole}s`;
  const pad = (value: number) => String(value).padStart(2, "0");
  if (whole < 3600) return `${Math.floor(whole / 60)}m${pad(whole % 60)}s`;
  return `${Math.floor(whole / 3600)}h${pad(Math.floor((whole % 3600) / 60))}m`;
}

/**
 * Starts showing the progress of a run of `items`, reading `read()` on every frame and counting from
 * what it says now; disposing it draws the last frame and ends the line. Returns undefined when
 * `option` is false or absent.
 *
 * @example
 * using _display = showProgress({ label: "lines" }, lines, () => cluster.progress);
 */
export function showProgress(
  option: boolean | ProgressOptions | undefined,
  items: unknown,
  read: () => ProgressCounts,
): Disposable | undefined {
  if (option === undefined || option === false) return undefined;
  // Loaded here, not at the top: every Worker thread whose task imports `log` from "pcluster" loads
  // this module, and cli-progress would cost each of them ~20 ms of CPU for a bar only a root draws.
  const { Format, SingleBar } = require("cli-progress") as typeof CliProgress;
  const { stream, intervalMs, label } = parseOption(option);
  const base = read();
  const counts = (): ProgressCounts => {
    const now = read();
    return { done: now.done - base.done, outputs: now.outputs - base.outputs, errors: now.errors - base.errors };
  };
  const total = knownTotal(items);
  const tty = stream.isTTY === true;
  const colour = colourWanted(tty); // used by the bar alone: plain lines off a terminal have none
  const started = performance.now();

  type BarOptions = Parameters<typeof CliProgress.Format.BarFormat>[1];
  /** One frame: on a terminal with the bar and colour as asked; elsewhere neither, figures by commas. */
  const frame = (options: BarOptions, withBar: boolean, inColour: boolean): string => {
    const { done, outputs, errors } = counts();
    // From the count read now, not the bar's value (set at the last refresh): figures and bar agree.
    const progress = total === undefined || total === 0 ? 1 : Math.min(done / total, 1);
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const parts: string[] = [];
    if (total === undefined) {
      parts.push(`${label} ${count(done)}`);
    } else {
      const drawn = Format.BarFormat(progress, options);
      const bar = withBar ? ` ${inColour ? GREEN(drawn) : drawn}` : "";
      parts.push(`${label}${bar} ${Math.floor(progress * 100)}% ${count(done)}/${count(total)}`);
    }
    parts.push(`${count(rate)}/s`);
    if (total !== undefined && done < total) {
      parts.push(`ETA ${rate > 0 ? duration((total - done) / rate) : "?"}`);
    } else {
      parts.push(`${duration(seconds)} elapsed`);
    }
    if (outputs > 0) parts.push(`${count(outputs)} outputs`);
    if (errors > 0) parts.push(`${count(errors)} errors`);
    return parts.join(tty ? " | " : ", ");
  };
  // cli-progress cuts a frame at the terminal's width counting escape codes as characters: a frame
  // too wide drops its colour, then its bar, rather than be cut in the middle of a code.
  const format = (options: BarOptions, params: { maxWidth: number }): string => {
    if (!tty) return frame(options, false, false);
    const full = frame(options, true, colour);
    if (full.length <= params.maxWidth) return full;
    const plain = frame(options, true, false);
    return plain.length <= params.maxWidth ? plain : frame(options, false, false);
  };

  const bar = new SingleBar({
    stream: stream as NodeJS.WritableStream, // a stream with `write` (checked above)
    format: format as ConstructorParameters<typeof CliProgress.SingleBar>[0]["format"],
    noTTYOutput: true,
    notTTYSchedule: intervalMs,
    fps: TTY_FPS,
    // Nothing that changes the terminal's state (a hidden cursor, no wrapping): a run stopped by
    // Ctrl-C never gets to undo it. A frame fits the width instead (see `format`).
    hideCursor: false,
    linewrap: true,
    barsize: 24,
    barCompleteChar: "█",
    barIncompleteChar: "░",
    // A terminal keeps the last frame; elsewhere the last line is already written, a blank one would follow.
    clearOnComplete: !tty,
  });
  // The bar redraws on its own timer (TTY_FPS, or every intervalMs), and `format` reads every figure
  // then: its own value and ETA are not used.
  bar.start(total ?? 0, 0);
  return { [Symbol.dispose]: () => bar.stop() }; // draws the last frame
}
