import type { LogLine } from "../protocol/messages.ts";

/** How a log server writes its records: the text below (the default), or one JSON object per line. */
export type LogFormat = "text" | "json";

/** The line's time as ISO 8601, or the raw number when it is no date. */
function timeOf(line: LogLine): string {
  const date = new Date(line.ts);
  // ts comes from the peer: a value past year 275760 is no Date, and must not crash the server.
  return Number.isNaN(date.getTime()) ? String(line.ts) : date.toISOString();
}

/**
 * One log record as it appears in the file, on stdout and on stderr: `[ISO-time host pid] message\n`,
 * with `WARN ` or `ERROR ` before the message when the level is not info.
 * Continuation lines of a multi-line message are indented by two spaces, so every record still
 * starts with `[` and a reader (or grep) can tell where one ends.
 */
export function formatLogLine(line: LogLine): string {
  const host = line.host.replace(/[\s\]]/g, "_");
  const level = line.level === "warn" || line.level === "error" ? `${line.level.toUpperCase()} ` : "";
  const message = line.msg.replace(/(\r?\n)+$/, "").replace(/\r?\n/g, "\n  ");
  return `[${timeOf(line)} ${host} ${line.pid}] ${level}${message}\n`;
}

/**
 * One record as a JSON line for `pcluster log --json`: every key always present (null when unknown),
 * so a reader gets one fixed shape whatever sent the line.
 */
export function formatLogJson(line: LogLine): string {
  return `${JSON.stringify({
    time: timeOf(line),
    level: line.level ?? "info",
    host: line.host,
    pid: line.pid,
    pipeline: line.pipeline ?? null,
    task: line.task ?? null,
    message: line.msg,
  })}\n`;
}

/** Many records as one string, for one write. */
export function formatLogLines(lines: readonly LogLine[], format: LogFormat = "text"): string {
  const one = format === "json" ? formatLogJson : formatLogLine;
  let text = "";
  for (const line of lines) text += one(line);
  return text;
}

/** Writes records to stdout or stderr (the fallback when no log server takes them). */
export function printLogLines(stream: NodeJS.WriteStream, lines: readonly LogLine[]): void {
  if (lines.length > 0) stream.write(formatLogLines(lines));
}
