import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, realpath, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SetupError } from "../../src/errors.ts";
import { installPipeline, writePackage } from "../../src/node/packages.ts";
import type { PackageBundle, PackageFile } from "../../src/protocol/pipeline.ts";
import { REPO } from "../support/processes.ts";

let temp: string;
let workdir: string;

const text = (path: string, content: string, mode?: number): PackageFile => ({
  path,
  data: new TextEncoder().encode(content),
  ...(mode === undefined ? {} : { mode }),
});

const simplePackage: PackageBundle = {
  name: "tasks",
  files: [
    text("package.json", JSON.stringify({ name: "tasks", type: "module", main: "src/main.ts" })),
    text(
      "src/main.ts",
      'import { twice } from "./lib/twice.ts";\nexport function simpleTask(item: number) { return twice(item); }\n',
    ),
    text("src/lib/twice.ts", "export const twice = (n: number) => n * 2;\n"),
    text("bin/tool.sh", "#!/bin/sh\necho tool\n", 0o755),
  ],
};

function install(overrides: Partial<Parameters<typeof installPipeline>[0]> = {}) {
  return installPipeline({
    workdir,
    name: "example",
    version: "1.0",
    packages: [simplePackage],
    remotePackages: [],
    hash: "hash-1",
    ...overrides,
  });
}

async function failure(promise: Promise<unknown>): Promise<SetupError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SetupError);
  return error as SetupError;
}

beforeAll(async () => {
  temp = await realpath(await mkdtemp(join(tmpdir(), "pcluster-packages-")));
  workdir = join(temp, "work");
});

afterAll(async () => {
  await rm(temp, { recursive: true, force: true });
});

describe("installPipeline", () => {
  test("writes the package under pipelines/<name>@<version>/ and gives an importable entry", async () => {
    const installed = await install();
    expect(installed.skipped).toBe(false);
    expect(installed.dir).toBe(join(workdir, "pipelines", "example@1.0"));
    // Imported from the host cache's entry itself, which the pipeline folder links to.
    expect(await realpath(installed.dir)).toBe(installed.cacheEntry!);
    expect(installed.entries).toEqual({ tasks: join(installed.cacheEntry!, "tasks", "src", "main.ts") });
    const module = (await import(installed.entries.tasks!)) as { simpleTask: (n: number) => number };
    expect(module.simpleTask(21)).toBe(42);
    expect((await stat(join(installed.dir, "tasks", "bin", "tool.sh"))).mode & 0o777).toBe(0o755);
    expect((await stat(join(installed.dir, "tasks", "src", "main.ts"))).mode & 0o777).toBe(0o644);
    expect(await readFile(join(installed.dir, ".pcluster-hash"), "utf8")).toBe("hash-1");
  });

  test("a second setup with the same hash writes nothing; a new hash replaces the old files", async () => {
    const first = await install();
    const main = join(first.dir, "tasks", "src", "main.ts");
    // Dated far back: a rewrite would show as a new date, however fast the machine.
    const written = new Date(2001, 0, 1);
    await utimes(main, written, written);
    const again = await install();
    expect(again.skipped).toBe(true);
    expect((await stat(main)).mtimeMs).toBe(written.getTime());

    const changed: PackageBundle = {
      name: "tasks",
      files: [text("index.ts", "export const simpleTask = (n: number) => n;\n")],
    };
    const replaced = await install({ packages: [changed], hash: "hash-2" });
    expect(replaced.skipped).toBe(false);
    expect(existsSync(main)).toBe(false);
    expect(replaced.entries.tasks).toBe(join(replaced.cacheEntry!, "tasks", "index.ts"));
  });

  test("installs a package's dependencies and remote packages in the pipeline folder; pcluster is the node's own", async () => {
    // An offline "remote" package: a local folder given as a file: spec to `bun add`.
    const remote = join(temp, "remote-helper");
    await mkdir(remote, { recursive: true });
    await writeFile(
      join(remote, "package.json"),
      JSON.stringify({ name: "remote-helper", version: "1.0.0", main: "index.js" }),
    );
    await writeFile(join(remote, "index.js"), "module.exports = { helper: () => 'helped' };\n");

    const withDeps: PackageBundle = {
      name: "withdeps",
      files: [
        text(
          "package.json",
          JSON.stringify({
            name: "withdeps",
            type: "module",
            dependencies: { pcluster: "file:../../somewhere", "is-number": "7.0.0" },
          }),
        ),
        text(
          "index.ts",
          'import isNumber from "is-number";\nimport { helper } from "remote-helper";\n' +
            "export function check(item: unknown) { return [isNumber(item), helper()]; }\n",
        ),
      ],
    };
    const lines: string[] = [];
    const installed = await install({
      name: "deps",
      packages: [withDeps],
      remotePackages: [`file:${remote}`],
      hash: "deps-1",
      onOutput: (line) => lines.push(line),
    });
    const packageDir = join(installed.dir, "withdeps");
    const module = (await import(installed.entries.withdeps!)) as { check: (item: unknown) => unknown[] };
    expect(module.check(5)).toEqual([true, "helped"]);
    expect(module.check("x")).toEqual([false, "helped"]);
    expect(lines.length).toBeGreaterThan(0);

    // pcluster was dropped from the package's dependencies; the pipeline links the node's own.
    const manifest = JSON.parse(await readFile(join(packageDir, "package.json"), "utf8"));
    expect(manifest.dependencies).toEqual({ "is-number": "7.0.0" });
    expect(await realpath(join(installed.dir, "node_modules", "pcluster"))).toBe(await realpath(REPO));
    expect(await realpath(Bun.resolveSync("pcluster/package.json", packageDir))).toBe(
      await realpath(join(REPO, "package.json")),
    );
    if (existsSync(join(REPO, "src", "index.ts"))) {
      expect(await realpath(Bun.resolveSync("pcluster", packageDir))).toBe(
        await realpath(join(REPO, "src", "index.ts")),
      );
    }
    // Installed where the pipeline lives, and nowhere in the node's own install.
    expect(existsSync(join(packageDir, "node_modules", "is-number"))).toBe(true);
    expect(existsSync(join(installed.dir, "node_modules", "remote-helper"))).toBe(true);
    expect(existsSync(join(REPO, "node_modules", "is-number"))).toBe(false);
    expect(existsSync(join(REPO, "node_modules", "remote-helper"))).toBe(false);
  }, 120_000);

  test.if(existsSync(join(REPO, "src", "index.ts")))(
    "a shipped file importing log from pcluster gets the node's log",
    async () => {
      const logging: PackageBundle = {
        name: "logging",
        files: [
          text(
            "package.json",
            JSON.stringify({ name: "logging", type: "module", dependencies: { pcluster: "^0.1.0" } }),
          ),
          text("index.ts", 'import { log } from "pcluster";\nexport const logType = typeof log;\n'),
        ],
      };
      const installed = await install({ name: "logging", packages: [logging], hash: "log-1" });
      const module = (await import(installed.entries.logging!)) as { logType: string };
      expect(module.logType).toBe("function");
    },
  );

  test("a remote package that does not exist fails with the installer's exit code and output", async () => {
    const missing = "pcluster-definitely-missing-pkg-zz@1.0.0";
    const error = await failure(install({ name: "missing", remotePackages: [missing], hash: "missing-1" }));
    expect(error.message).toContain("installing remote packages");
    expect(error.message).toMatch(/exited with code [1-9]/);
    expect(error.message).toContain("pcluster-definitely-missing-pkg-zz");
    expect(existsSync(join(workdir, "pipelines", "missing@1.0", ".pcluster-hash"))).toBe(false);
  }, 120_000);

  test("remote specs that could pass installer flags are refused before anything is written", async () => {
    for (const spec of ["--global", "-g", "lodash@4 --global", ""]) {
      const error = await failure(install({ name: "flags", remotePackages: [spec], hash: "flags-1" }));
      expect(error.message).toContain(`remote package ${JSON.stringify(spec)} is refused`);
    }
    expect(existsSync(join(workdir, "pipelines", "flags@1.0"))).toBe(false);
  });

  test("pipeline names and versions that are not one folder name are refused", async () => {
    expect((await failure(install({ name: "../x" }))).message).toContain('pipeline name "../x"');
    expect((await failure(install({ name: "" }))).message).toContain("it is empty");
    expect((await failure(install({ name: "a@b" }))).message).toContain('contains "@"');
    expect((await failure(install({ version: "1/0" }))).message).toContain('pipeline version "1/0"');
    expect((await failure(install({ version: ".." }))).message).toContain('pipeline version ".."');
    expect(existsSync(join(workdir, "x"))).toBe(false);
    expect(existsSync(join(workdir, "pipelines", "a@b@1.0"))).toBe(false);
  });

  test("package names that are not one folder name, or are reserved, are refused", async () => {
    for (const name of ["../up", "node_modules", ".hidden", "a/b"]) {
      const bundle: PackageBundle = { name, files: [text("index.ts", "")] };
      const error = await failure(install({ name: "badpkg", packages: [bundle] }));
      expect(error.message).toContain(`package name ${JSON.stringify(name)}`);
    }
  });
});

describe("hostile packages", () => {
  const hostile = [
    "../escape.txt",
    "/abs.txt",
    "a/../../x",
    "node_modules/x.js",
    "C:/x.txt",
    "a\\..\\..\\x",
    "a//b",
    "x\0y",
  ];

  for (const path of hostile) {
    test(`refuses ${JSON.stringify(path)} and writes nothing outside`, async () => {
      const bundle: PackageBundle = {
        name: "evil",
        files: [text("index.ts", "export const a = 1;\n"), text(path, "pwned")],
      };
      const error = await failure(install({ name: "hostile", packages: [bundle], hash: `hostile-${path}` }));
      expect(error.message).toContain(JSON.stringify(path));
      expect(error.message).toContain("would land outside the pipeline folder");
      const pipelineDir = join(workdir, "pipelines", "hostile@1.0");
      expect(existsSync(join(pipelineDir, "escape.txt"))).toBe(false);
      expect(existsSync(join(pipelineDir, "x"))).toBe(false);
      expect(existsSync(join(pipelineDir, "evil", "node_modules"))).toBe(false);
      expect(existsSync("/abs.txt")).toBe(false);
      expect(existsSync(join(pipelineDir, ".pcluster-hash"))).toBe(false);
    });
  }

  test("refuses a path through a folder link planted in the package folder", async () => {
    const outside = join(temp, "outside-dir");
    const packageDir = join(temp, "planted", "evil");
    await mkdir(outside, { recursive: true });
    await mkdir(packageDir, { recursive: true });
    await symlink(outside, join(packageDir, "link"));
    const bundle: PackageBundle = {
      name: "evil",
      files: [text("link/pwned.txt", "pwned"), text("link/deeper/x.txt", "pwned")],
    };
    const error = await failure(writePackage(packageDir, bundle));
    expect(error.message).toContain('"link/pwned.txt"');
    expect(error.message).toContain("would land outside the pipeline folder");
    expect(existsSync(join(outside, "pwned.txt"))).toBe(false);
    expect(existsSync(join(outside, "deeper"))).toBe(false);
  });

  test("refuses to write through a file link planted in the package folder", async () => {
    const outsideFile = join(temp, "outside.txt");
    const packageDir = join(temp, "planted-file", "evil");
    await writeFile(outsideFile, "original");
    await mkdir(packageDir, { recursive: true });
    await symlink(outsideFile, join(packageDir, "config.json"));
    const error = await failure(writePackage(packageDir, { name: "evil", files: [text("config.json", "pwned")] }));
    expect(error.message).toContain('"config.json"');
    expect(await readFile(outsideFile, "utf8")).toBe("original");
  });
});
