import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { REPO, killAll, spawnBun } from "../support/processes.ts";

/**
 * The declarations users get: a user project with the strictest flags and NodeNext resolution, with
 * pcluster in its node_modules, typechecks with 0 errors — through the `types` condition of the
 * package's `exports` (dist/types, built by `bun run build`), never pcluster's .ts sources — and
 * reaches no file beyond them (not Bun's types: a user need not have them). The same project with a
 * chain whose tasks do not fit fails, so the check can fail.
 */

const TSC = join(REPO, "node_modules/typescript/bin/tsc");
const DECLARATIONS = join(REPO, "dist/types");
/** TypeScript's own lib files (`lib: ["ESNext"]`), wherever the compiler package keeps them. */
const TYPESCRIPT_LIB = /\/node_modules\/(?:@typescript\/[^/]+|typescript)\/lib\/lib\.[\w.-]+\.d\.ts$/;
const base = mkdtempSync(join(tmpdir(), "pcluster-declarations-"));
const project = join(base, "user-project");

const STRICTEST = {
  compilerOptions: {
    target: "ES2022",
    lib: ["ESNext"],
    module: "NodeNext",
    moduleResolution: "NodeNext",
    strict: true,
    exactOptionalPropertyTypes: true,
    noPropertyAccessFromIndexSignature: true,
    noUncheckedIndexedAccess: true,
    noImplicitOverride: true,
    noImplicitReturns: true,
    noFallthroughCasesInSwitch: true,
    noUnusedLocals: true,
    noUnusedParameters: true,
    verbatimModuleSyntax: true,
    isolatedModules: true,
    skipLibCheck: false,
    noEmit: true,
    // No ambient types at all: pcluster's declarations must not need Bun's or Node's.
    types: [],
  },
  files: ["main.ts"],
};

const TASKS = `import { log } from "pcluster";

export interface Line {
  id: number;
  text: string;
}

export function parse(raw: string): Line {
  const at = raw.indexOf(":");
  return { id: Number(raw.slice(0, at)), text: raw.slice(at + 1) };
}

export function* words(line: Line): Generator<{ id: number; word: string }> {
  for (const word of line.text.split(" ")) yield { id: line.id, word };
}

export class Tagger {
  constructor(private readonly stopWords: readonly string[]) {}
  process(entry: { id: number; word: string }): { id: number; word: string; long: boolean } | null {
    if (this.stopWords.includes(entry.word)) return null;
    log(\`tagging \${entry.word}\`);
    return { ...entry, long: entry.word.length > 6 };
  }
}

export async function count(text: string): Promise<number> {
  return text.length;
}
`;

const MAIN = `import {
  type LocalOptions,
  type NodeReport,
  type Progress,
  Root,
  type RootOptions,
  type SetupOptions,
  type TaskError,
  type TaskStats,
  NoNodesError,
  VERSION,
  log,
  setDefaultLogAddress,
} from "pcluster";
import { Tagger, parse, words } from "./tasks.js";

const options: RootOptions = { token: "secret", tls: { ca: "PEM", rejectUnauthorized: true }, maxQueued: 1000 };
const local: LocalOptions = { nodes: 2, workers: 1 };
setDefaultLogAddress(["127.0.0.1", 6100]);
log(\`pcluster \${VERSION}\`);

export async function main(): Promise<void> {
  await using cluster = local.nodes === 2 ? new Root(["127.0.0.1:6000"], options) : await Root.local(local);
  const errors: TaskError[] = [];
  const setup: SetupOptions<{ id: number; word: string; long: boolean }> = {
    localPackages: ["./tasks"],
    errorHandler: (error) => void errors.push(error),
    workersPerNode: 2,
  };
  const pipeline = await cluster.setup(
    "words",
    1,
    [{ function: parse }, { function: words }, { function: Tagger, args: [["the", "a"]] }],
    setup,
  );
  pipeline.feed("1:the quick brown fox");
  const long: string[] = [];
  for await (const tagged of pipeline.process(["2:jumps over", "3:a lazy dog"])) {
    if (tagged.long) long.push(tagged.word);
  }
  await pipeline.run(["4:more"]);
  const progress: Progress = cluster.progress;
  const stats: TaskStats[] = await cluster.stats();
  const nodes: NodeReport[] = await cluster.status();
  const first = stats[0];
  log(\`\${long.length} long, \${progress.done} done, \${first?.meanMs ?? 0} ms, \${nodes.length} nodes, \${errors.length} errors\`);
}

main().catch((error: unknown) => {
  if (error instanceof NoNodesError) log(error.message);
});
`;

/** The same program with a task that does not fit: \`count\` takes text, \`parse\` gives records. */
const WRONG_MAIN = `import { Root } from "pcluster";
import { count, parse } from "./tasks.js";

export async function main(): Promise<void> {
  const cluster = new Root(["127.0.0.1:6000"]);
  await cluster.setup("wrong", 1, [{ function: parse }, { function: count }], { localPackages: ["./tasks"] });
}
`;

/** tsc on the project, with the files it read. */
async function typecheck(): Promise<{ code: number; output: string; files: string[] }> {
  const tsc = spawnBun([TSC, "-p", project, "--pretty", "false", "--listFiles"], { cwd: project });
  const code = await tsc.waitExit(120_000);
  await tsc.drained;
  const lines = tsc.stdout.split("\n").map((line) => line.trim());
  return {
    code,
    output: lines.filter((line) => !line.startsWith("/")).join("\n") + tsc.stderr,
    files: lines.filter((line) => line.startsWith("/")),
  };
}

beforeAll(async () => {
  const build = spawnBun(["run", "build"], { cwd: REPO });
  expect(await build.waitExit(120_000), build.output).toBe(0);
  mkdirSync(join(project, "node_modules"), { recursive: true });
  // As an install puts it: the package folder under node_modules (a link to this repository).
  symlinkSync(REPO, join(project, "node_modules/pcluster"), "dir");
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "user-project", private: true, type: "module" }));
  writeFileSync(join(project, "tsconfig.json"), JSON.stringify(STRICTEST, null, 2));
  writeFileSync(join(project, "tasks.ts"), TASKS);
}, 150_000);
afterAll(async () => {
  await killAll();
  rmSync(base, { recursive: true, force: true });
});

test("a user project with the strictest flags and NodeNext typechecks with 0 errors from pcluster's declarations", async () => {
  writeFileSync(join(project, "main.ts"), MAIN);
  const { code, output, files } = await typecheck();
  expect(output).toBe("");
  expect(code).toBe(0);

  // Through the exports' types condition, not the sources; and nothing but them and the project.
  expect(files).toContain(join(DECLARATIONS, "index.d.ts"));
  const beyond = files.filter((file) => {
    const real = resolve(file);
    const ownFile = real.startsWith(`${project}/`) && !real.includes("/node_modules/");
    return !ownFile && !real.startsWith(`${DECLARATIONS}/`) && !TYPESCRIPT_LIB.test(real);
  });
  expect(beyond).toEqual([]);
}, 150_000);

test("the same project with a chain whose tasks do not fit fails to typecheck, naming the mismatch", async () => {
  writeFileSync(join(project, "main.ts"), WRONG_MAIN);
  const { code, output } = await typecheck();
  expect(code).not.toBe(0);
  expect(output).toContain("main.ts(6,");
  expect(output).toContain("Type 'Line' is not assignable to type 'string'");
}, 150_000);
