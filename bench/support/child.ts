/**
 * A bench subprocess driven over stdin/stdout, one command a line. It answers each command with a line
 * `@@ <json>`; any other line it prints is passed through to our stdout.
 */
export class Child {
  readonly #process: ReturnType<typeof spawnChild>;
  readonly #lines: AsyncGenerator<string>;

  constructor(
    readonly role: string,
    script: string,
    args: string[],
  ) {
    this.#process = spawnChild(script, args);
    this.#lines = this.#readLines();
  }

  async call<T>(command: string): Promise<T> {
    this.#process.stdin.write(`${command}\n`);
    await this.#process.stdin.flush();
    for (;;) {
      const line = await this.#lines.next();
      if (line.done === true) throw new Error(`${this.role} bench process exited during "${command}"`);
      if (line.value.startsWith("@@ ")) return JSON.parse(line.value.slice(3)) as T;
      console.log(line.value);
    }
  }

  async close(): Promise<void> {
    await this.#process.stdin.end();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), 5000)));
    const exited = await Promise.race([this.#process.exited, timedOut]);
    clearTimeout(timer);
    if (exited !== 0) this.#process.kill();
  }

  async *#readLines(): AsyncGenerator<string> {
    const decoder = new TextDecoder();
    let text = "";
    for await (const chunk of this.#process.stdout) {
      text += decoder.decode(chunk, { stream: true });
      for (let newline = text.indexOf("\n"); newline >= 0; newline = text.indexOf("\n")) {
        yield text.slice(0, newline);
        text = text.slice(newline + 1);
      }
    }
  }
}

function spawnChild(script: string, args: string[]) {
  return Bun.spawn([process.execPath, script, ...args], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
}

/** The loop of a child: answers each command line with `@@ <json of what handle returned>`. */
export async function serveCommands(handle: (command: string, argument: string) => Promise<unknown>): Promise<void> {
  for await (const line of console) {
    if (line.trim() === "") continue;
    const space = line.indexOf(" ");
    const [command, argument] = space < 0 ? [line.trim(), ""] : [line.slice(0, space), line.slice(space + 1).trim()];
    process.stdout.write(`@@ ${JSON.stringify((await handle(command, argument)) ?? null)}\n`);
  }
}
