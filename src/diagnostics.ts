import { fstatSync, writeSync } from "node:fs";
import type { ConsolaInstance, LogObject } from "consola";

/**
 * consola, which pcluster's parts print their diagnostics through, loaded on first use, with a reporter
 * of pcluster's own. consola's default entry costs a process about 75 ms of CPU before its first line
 * (its fancy reporter loads `node:tty` and measures each line's width for a right-aligned clock); its
 * core and this reporter, about 20. Every node, log server and root script prints through it.
 *
 * The lines look as consola's: `ℹ message` and `✔ message` on stdout, ` WARN  message` and
 * ` ERROR  message` (then the error's stack) on stderr, in colour as `colourWanted` says.
 * The level is consola's too: CONSOLA_LEVEL if given, else warnings and errors alone under tests
 * (NODE_ENV=test or TEST), everything with DEBUG, up to info otherwise.
 *
 * @example
 * diagnostics().warn("pcluster: something worth knowing");
 */
export function diagnostics(): ConsolaInstance {
  if (loaded === undefined) {
    const { createConsola } = require("consola/core") as typeof import("consola/core");
    const level = defaultLevel();
    loaded = createConsola({ level, defaults: { level }, reporters: [{ log: printLine }] });
  }
  return loaded;
}

let loaded: ConsolaInstance | undefined;

/** consola's levels: 0 fatal and error, 1 warn, 2 log, 3 info and success, 4 debug, 5 trace. */
function defaultLevel(): number {
  const given = Number.parseInt(process.env.CONSOLA_LEVEL ?? "", 10);
  if (Number.isInteger(given)) return given;
  const env = process.env;
  if (flag(env.DEBUG)) return 4;
  if (env.NODE_ENV === "test" || flag(env.TEST)) return 1;
  return 3;
}

function flag(value: string | undefined): boolean {
  return value !== undefined && value !== "" && value !== "false";
}

const ESC = "\u001b[";
const paint = (code: string, text: string) => `${ESC}${code}m${text}${ESC}0m`;

/** One log call as a line (or, with an error's stack, a few), written as consola's default reporter would. */
function printLine(entry: LogObject): void {
  const fd = entry.level < 2 ? 2 : 1; // warnings and errors to stderr
  const colour = inColour(fd);
  const text = formatArgs(entry.args);
  let line: string;
  switch (entry.type) {
    case "fatal":
    case "error":
      line = `\n${colour ? paint("41;97", " ERROR ") : " ERROR "} ${text}\n`;
      break;
    case "warn":
      line = `\n${colour ? paint("43;30", " WARN ") : " WARN "} ${text}\n`;
      break;
    case "info":
      line = `${colour ? paint("36", "ℹ") : "ℹ"} ${text}`;
      break;
    case "success":
    case "ready":
      line = `${colour ? paint("32", "✔") : "✔"} ${text}`;
      break;
    default:
      line = text;
  }
  writeAll(fd, Buffer.from(`${line}\n`));
}

/**
 * Writes all of `bytes` to `fd` now (a diagnostic is printed before what follows it happens), waiting
 * up to a second in all for a full pipe to take them. A stream nobody reads any more (a closed pipe)
 * drops the line: it has nowhere to go, and it must not take the process down.
 */
function writeAll(fd: number, bytes: Uint8Array): void {
  for (let at = 0, waits = 0; at < bytes.length; ) {
    try {
      at += writeSync(fd, bytes, at);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EAGAIN" || ++waits > 1000) return;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

const pause = new Int32Array(new SharedArrayBuffer(4));

function formatArgs(args: unknown[]): string {
  return args
    .map((arg) => (arg instanceof Error ? formatError(arg, 0) : typeof arg === "string" ? arg : Bun.inspect(arg)))
    .join(" ");
}

/** An error's message, then its stack's frames (indented, relative to the working directory), then its cause. */
function formatError(error: Error, depth: number): string {
  const indent = "  ".repeat(depth + 1);
  const cwd = `${process.cwd()}/`;
  const frames = (error.stack ?? "")
    .split("\n")
    .slice(error.message.split("\n").length)
    .map((frame) => indent + frame.trim().replace("file://", "").replace(cwd, ""));
  const prefix = depth > 0 ? `${"  ".repeat(depth)}[cause]: ` : "";
  const cause = error.cause instanceof Error ? `\n\n${formatError(error.cause, depth + 1)}` : "";
  return `${prefix}${error.message}\n${frames.join("\n")}${cause}`;
}

/**
 * Whether output to a terminal (or not, `terminal` false) is to have colour — the one rule of every
 * console pcluster writes (diagnostics, the CLI's help, the progress bar). NO_COLOR set to anything
 * but "" means none (https://no-color.org), whatever else is set. FORCE_COLOR decides next, as Node and
 * chalk read it: "0" or "false" means none even on a terminal, any other value colour even in a pipe or
 * with TERM=dumb. Otherwise a terminal other than TERM=dumb has colour.
 */
export function colourWanted(terminal: boolean): boolean {
  const env = process.env;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== "") return false;
  const force = env.FORCE_COLOR;
  if (force !== undefined) return force !== "0" && force !== "false";
  return terminal && env.TERM !== "dumb";
}

/** Whether what goes to file descriptor `fd` has colour (see `colourWanted`). */
function inColour(fd: 1 | 2): boolean {
  return colourWanted((colourFor[fd] ??= isTerminal(fd)));
}

const colourFor: { 1?: boolean; 2?: boolean } = {};

/**
 * A character device other than the memory devices (/dev/null and its kin, major number 1): what
 * `isatty` says here, without `node:tty`, which costs a Bun process about 20 ms of CPU to load.
 */
function isTerminal(fd: number): boolean {
  try {
    const stats = fstatSync(fd);
    return stats.isCharacterDevice() && ((stats.rdev >> 8) & 0xfff) !== 1;
  } catch {
    return false;
  }
}
