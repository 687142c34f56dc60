import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, normalize } from "node:path";
import { VERSION } from "../../src/version.ts";
import { REPO, spawnBun } from "../support/processes.ts";

/**
 * What `npm publish` would ship, and that it works as a registry install: the tarball `npm pack`
 * makes is added to a fresh project, whose `bunx pcluster` and `import … from "pcluster"` work.
 */

const base = mkdtempSync(join(tmpdir(), "pcluster-pack-"));
let files: string[];
let tarball: string;

/** Runs a command to its end (bounded) and returns its output; a failure shows it. */
async function run(command: string[], cwd: string, timeoutMs = 60_000): Promise<string> {
  const proc = Bun.spawn(command, { cwd, stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  if (code !== 0) throw new Error(`${command.join(" ")} exited with ${code}:\n${stdout}\n${stderr}`);
  return stdout;
}

beforeAll(async () => {
  const packed = JSON.parse(await run(["npm", "pack", "--json", "--pack-destination", base], REPO));
  files = packed[0].files.map((file: { path: string }) => file.path).sort();
  tarball = join(base, packed[0].filename);
}, 60_000);

afterAll(() => rmSync(base, { recursive: true, force: true }));

test("the package holds the sources, their declarations, README, LICENSE and CHANGELOG, and nothing of tests, benches, demo or deploy", () => {
  for (const file of [
    "package.json",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "src/index.ts",
    "src/cli.ts",
    "dist/types/index.d.ts",
  ]) {
    expect(files).toContain(file);
  }
  const unwanted = files.filter((file) =>
    /^(test|bench|deploy|\.ci|node_modules)\/|^src\/demo\/|fixtures|\.test\.ts$|\.bench\.ts$|^bun\.lock|^tsconfig/.test(
      file,
    ),
  );
  expect(unwanted).toEqual([]);
  expect(files.every((file) => file.startsWith("src/") || file.startsWith("dist/types/") || !file.includes("/"))).toBe(
    true,
  );
});

test("every relative import of a shipped source resolves to a shipped file", () => {
  const shipped = new Set(files);
  const missing: string[] = [];
  let checked = 0;
  for (const file of files.filter((path) => path.endsWith(".ts"))) {
    // Code lines only: doc comments show imports of a user's files (`from "./task_package"`).
    const text = readFileSync(join(REPO, file), "utf8")
      .split("\n")
      .filter((line) => !/^\s*(\*|\/\/|\/\*)/.test(line))
      .join("\n");
    for (const [, specifier] of text.matchAll(/(?:from|import\()\s*"(\.{1,2}\/[^"]+)"/g)) {
      // A declaration names its neighbour by its source's name: "./x.ts" is "./x.d.ts" beside it.
      const named = file.endsWith(".d.ts") ? specifier!.replace(/\.ts$/, ".d.ts") : specifier!;
      const target = normalize(join(dirname(file), named));
      checked++;
      if (!shipped.has(target)) missing.push(`${file} → ${specifier}`);
    }
  }
  expect(missing).toEqual([]);
  expect(checked).toBeGreaterThan(100); // the sources' own imports were read
});

test("@msgpack/msgpack is only a dev dependency, and no shipped source imports it", () => {
  const manifest = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8"));
  expect(manifest.dependencies["@msgpack/msgpack"]).toBeUndefined();
  expect(manifest.devDependencies["@msgpack/msgpack"]).toBeDefined();
  for (const file of files.filter((path) => path.endsWith(".ts"))) {
    expect({ file, imports: /from\s+"@msgpack\/msgpack"/.test(readFileSync(join(REPO, file), "utf8")) }).toEqual({
      file,
      imports: false,
    });
  }
  expect(manifest.license).toBe("MIT");
  expect(readFileSync(join(REPO, "LICENSE"), "utf8")).toContain("MIT License");
  expect(readFileSync(join(REPO, "CHANGELOG.md"), "utf8")).toContain(`## [${VERSION}]`);
});

test("installed from the tarball as from a registry: bunx pcluster and import from pcluster work", async () => {
  const project = join(base, "project");
  mkdirSync(project);
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "user-project", type: "module", private: true }));
  await run([process.execPath, "add", tarball], project, 120_000);
  expect((await run([process.execPath, "x", "pcluster", "--version"], project)).trim()).toBe(VERSION);
  expect(await run([process.execPath, "x", "pcluster", "node", "--help"], project)).toContain("--port=<port>");
  writeFileSync(
    join(project, "main.ts"),
    'import { Root, VERSION } from "pcluster";\nconsole.log(typeof Root, VERSION);\n',
  );
  expect((await run([process.execPath, "main.ts"], project)).trim()).toBe(`function ${VERSION}`);
  const refused = spawnBun(["x", "pcluster", "node", "--prot", "6005"], { cwd: project });
  expect(await refused.waitExit(30_000)).toBe(2);
  await refused.drained;
  expect(refused.stderr).toContain("unknown flag --prot; did you mean --port?");
}, 180_000);
