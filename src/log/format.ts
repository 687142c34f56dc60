import type { LogLine } from "../protocol/messages.ts";

/**
 * One log record as it appears in the file, on stdout and on stderr: `[ISO-time host pid] message\n`.
 * Continuation lines of a multi-line message are indented by two spaces, so every record still
 * starts with `[` and a reader (or grep) can tell where one ends.
 */
function formatLogLine(line: LogLine): string {
  const date = new Date(line.ts);
  // ts comes from the peer: a value past year 275760 is no Date, and must not crash the server.
  const time = Number.isNaN(date.getTime()) ? String(line.ts) : date.toISOString();
  const host = line.host.replace(/[\s\]]/g, "_");
  const message = line.msg.replace(/(\r?\n)+$/, "").replace(/\r?\n/g, "\n  ");
  return `[${time} ${host} ${line.pid}] ${message}\n`;
}

/** Many records as one string, for one write. */
export function formatLogLines(lines: readonly LogLine[]): string {
  let text = "";
  for (const line of lines) text += formatLogLine(line);
  return text;
}

/** Writes records to stdout or stderr (the fallback when no log server takes them). */
export function printLogLines(stream: NodeJS.WriteStream, lines: readonly LogLine[]): void {
  if (lines.length > 0) stream.write(formatLogLines(lines));
}
