import { readFileSync } from "node:fs";
import { CLI, type Spawned, spawnBun } from "./processes.ts";
import { waitFor } from "./wait.ts";

/** A `pcluster log` process on a free port of 127.0.0.1 (or `port`), once it says it listens. */
export async function spawnLogServer(
  outfile: string,
  options: { port?: number; args?: string[]; env?: Record<string, string | undefined> } = {},
): Promise<{ server: Spawned; port: number; addr: string }> {
  const args = [CLI, "log", "--host", "127.0.0.1", "--port", String(options.port ?? 0), "--outfile", outfile];
  const server = spawnBun([...args, ...(options.args ?? [])], { env: options.env });
  const [, port] = await server.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
  return { server, port: Number(port), addr: `127.0.0.1:${port}` };
}

/** Waits (bounded) until the file's text satisfies `done`, and returns the text. */
export async function waitForFile(path: string, done: (text: string) => boolean, timeoutMs = 10_000): Promise<string> {
  let text = "";
  return waitFor(
    () => {
      try {
        text = readFileSync(path, "utf8");
      } catch {
        text = ""; // not created yet
      }
      return text;
    },
    {
      what: `${path} to hold what the test expects`,
      until: done,
      timeoutMs,
      everyMs: 20,
      show: () => `\n${text.slice(-2000)}`,
    },
  );
}

/** One record of the text format: `[time host pid] message`, with `WARN ` or `ERROR ` before a message not at info. */
export const RECORD = /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) (\d+)\] (?:WARN |ERROR )?(.*)$/;

/** The messages of `pid`'s records in `text`, in file order. */
export function messagesOf(text: string, pid: number): string[] {
  const messages: string[] = [];
  for (const line of text.split("\n")) {
    const match = RECORD.exec(line);
    if (match !== null && Number(match[3]) === pid) messages.push(match[4]!);
  }
  return messages;
}
