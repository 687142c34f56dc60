import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RECORD, waitForFile } from "../support/log-server.ts";
import { REPO, type Spawned, groupAlive, killAll, killGroup, spawnBun, spawnGroup } from "../support/processes.ts";

/**
 * What a new user does: a fresh project that depends on pcluster by `bun add pcluster@file:<clone>`,
 * a log server and two nodes started with `bunx pcluster …` in it, a task package of their own whose
 * tasks `import { log } from "pcluster"`, and a script `bun main.ts` that drives the nodes with Root.
 */

const base = mkdtempSync(join(tmpdir(), "pcluster-new-user-"));
const project = join(base, "project");
mkdirSync(project);
/**
 * The nodes' work dirs lie outside the project, as the default (~/.pcluster/node-<port>) does: shipped
 * code then finds "pcluster" only through the node's own link, not in the project's node_modules.
 */
const nodeWorkdir = (index: number) => join(base, `node-${index}`);
const servers: Spawned[] = [];
/** As a user's shell has it: no test-runner NODE_ENV, no token from the environment the tests run in. */
const USER_ENV = { NODE_ENV: undefined, PCLUSTER_TOKEN: undefined };

/** `bunx pcluster <args>` in the project (`bun x` is what `bunx` runs), in its own process group. */
async function startServer(args: string[]): Promise<{ proc: Spawned; port: number }> {
  const proc = spawnGroup([process.execPath, "x", "pcluster", ...args], { cwd: project, env: USER_ENV });
  servers.push(proc);
  const [, port] = await proc.waitFor(/pcluster (?:log server|node) listening on 127\.0\.0\.1:(\d+)/, 20_000);
  return { proc, port: Number(port) };
}

const TASKS = `import { log } from "pcluster";

export function shout(word: string): string {
  log(\`shout: \${word}\`);
  return word.toUpperCase();
}

export function* letters(word: string): Generator<string> {
  yield* word;
}

export class Consonants {
  constructor(private readonly suffix: string) {}
  process(letter: string): string | null {
    return "AEIOU".includes(letter) ? null : letter + this.suffix;
  }
}
`;

const MAIN = `import { Root, flushLogs, log, setDefaultLogAddress } from "pcluster";
import { Consonants, letters, shout } from "./word_tasks/index.ts";

const [logAddr, ...nodes] = process.argv.slice(2);
setDefaultLogAddress(logAddr!);
const cluster = new Root(nodes);
const outputs: string[] = [];
await cluster.setup("new-user", "1.0", [
  { function: shout },
  { function: letters, isGenerator: true },
  { function: Consonants, args: ["!"] },
], { localPackages: ["./word_tasks"], outputHandler: (output) => { outputs.push(output as string); } });
cluster.feed(...process.env.WORDS!.split(","));
await cluster.waitEmpty();
console.log("RESULT " + JSON.stringify({ outputs: outputs.sort(), stats: await cluster.stats() }));
log("main: all done");
await cluster.reset();
await flushLogs();
`;

const WORDS = ["pipeline", "cluster", "node", "worker", "queue", "item", "bun", "thread", "socket", "root"];

afterAll(async () => {
  await Promise.all(servers.map((server) => killGroup(server)));
  await killAll();
  rmSync(base, { recursive: true, force: true });
});

test("bun add pcluster@file:…, bunx pcluster log/node, and a script with its own task package", async () => {
  writeFileSync(
    join(project, "package.json"),
    `${JSON.stringify({ name: "new-user-project", private: true, type: "module" }, null, 2)}\n`,
  );
  const add = spawnBun(["add", `pcluster@file:${REPO}`], { cwd: project, env: USER_ENV });
  const addCode = await add.waitExit(120_000);
  expect(addCode, add.output).toBe(0);
  expect(existsSync(join(project, "node_modules/.bin/pcluster"))).toBe(true); // what bunx runs, not a download
  // The declarations its `exports` point a type checker at (built by the clone's install, `prepare`).
  expect(existsSync(join(project, "node_modules/pcluster/dist/types/index.d.ts"))).toBe(true);

  const logFile = join(project, "cluster.log");
  const logServer = await startServer(["log", "--host", "127.0.0.1", "--port", "0", "--outfile", logFile]);
  const nodes = await Promise.all(
    [0, 1].map((index) =>
      startServer([
        "node",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--log-host",
        "127.0.0.1",
        "--log-port",
        String(logServer.port),
        "--workers",
        "1",
        "--workdir",
        nodeWorkdir(index),
      ]),
    ),
  );

  writeFileSync(join(project, "main.ts"), MAIN);
  const tasks = join(project, "word_tasks");
  mkdirSync(tasks);
  writeFileSync(
    join(tasks, "package.json"),
    `${JSON.stringify({ name: "word_tasks", type: "module", main: "index.ts" }, null, 2)}\n`,
  );
  writeFileSync(join(tasks, "index.ts"), TASKS);

  const main = spawnBun(["main.ts", `127.0.0.1:${logServer.port}`, ...nodes.map((node) => `127.0.0.1:${node.port}`)], {
    cwd: project,
    env: { ...USER_ENV, WORDS: WORDS.join(",") },
  });
  const mainCode = await main.waitExit(60_000);
  expect(mainCode, main.output).toBe(0);
  const result = main.stdout.match(/^RESULT (.*)$/m);
  expect(result, main.output).not.toBeNull();
  const { outputs, stats } = JSON.parse(result![1]!) as {
    outputs: string[];
    stats: Array<{ task: string; processed: number; dropped: number }>;
  };

  const expected = WORDS.flatMap((word) => [...word.toUpperCase()])
    .filter((letter) => !"AEIOU".includes(letter))
    .map((letter) => `${letter}!`)
    .sort();
  expect(outputs).toEqual(expected);
  const letterCount = WORDS.join("").length;
  expect(stats.map(({ task, processed, dropped }) => ({ task, processed, dropped }))).toEqual([
    { task: "shout", processed: WORDS.length, dropped: 0 },
    { task: "letters", processed: WORDS.length, dropped: 0 },
    { task: "Consonants", processed: letterCount, dropped: letterCount - expected.length },
  ]);

  // Every task's log line, from the node processes (not the script), and both nodes set up, in the one file.
  const text = await waitForFile(
    logFile,
    (text) => WORDS.every((word) => text.includes(`shout: ${word}`)) && text.includes("main: all done"),
  );
  const taskRecords = text.split("\n").flatMap((line) => {
    const match = RECORD.exec(line);
    return match !== null && match[4]!.startsWith("shout: ") ? [{ pid: Number(match[3]), msg: match[4]! }] : [];
  });
  expect(taskRecords.map((record) => record.msg).sort()).toEqual(WORDS.map((word) => `shout: ${word}`).sort());
  expect(taskRecords.every((record) => record.pid !== main.pid)).toBe(true);
  for (const node of nodes) expect(text).toContain(`[node 127.0.0.1:${node.port}] setting up "new-user" 1.0`);

  // The servers go with their process groups.
  await Promise.all(servers.map((server) => killGroup(server)));
  expect(servers.filter((server) => groupAlive(server.pid))).toEqual([]);
}, 150_000);
