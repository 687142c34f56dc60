import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmod, mkdir, mkdtemp, realpath, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SetupError } from "../../src/errors.ts";
import { findPackageEntry, packageFolderName } from "../../src/protocol/package-layout.ts";
import type { PackageBundle } from "../../src/protocol/pipeline.ts";
import {
  type LocalPackage,
  MAX_BUNDLE_BYTES,
  pipelineHash,
  readLocalPackages,
  readPackageFolder,
  resolveTaskchain,
} from "../../src/root/packager.ts";

let temp: string;
let pkgDir: string;
let outside: string;
let tasks: Record<string, Function>;
let packages: LocalPackage[];

const INDEX = `
export function simpleTask(item: unknown) { return item; }
export function* generatorTask(item: unknown) { yield item; yield item; }
export class DropItem {
  constructor(private msg: string) {}
  process(item: unknown) { return null; }
}
export class NoProcess { run(item: unknown) { return item; } }
export const notATask = 42;
export default simpleTask;
`;

async function write(path: string, text: string | Uint8Array): Promise<void> {
  await mkdir(join(path, ".."), { recursive: true });
  await writeFile(path, text);
}

beforeAll(async () => {
  temp = await realpath(await mkdtemp(join(tmpdir(), "pcluster-packager-")));
  pkgDir = join(temp, "task_package");
  outside = join(temp, "secret.txt");
  await write(outside, "not for shipping");
  await write(join(pkgDir, "package.json"), JSON.stringify({ name: "@scope/tasks", type: "module" }));
  await write(join(pkgDir, "index.ts"), INDEX);
  await write(join(pkgDir, "lib", "deep", "util.js"), "export const util = 1;\n");
  await write(join(pkgDir, "bin", "run.sh"), "#!/bin/sh\necho hi\n");
  await chmod(join(pkgDir, "bin", "run.sh"), 0o755);
  await write(join(pkgDir, "bun.lock"), "{}\n");
  await write(join(pkgDir, ".npmrc"), "registry=https://registry.npmjs.org/\n");
  await write(join(pkgDir, ".env"), "TOKEN=secret\n");
  await write(join(pkgDir, ".vscode", "settings.json"), "{}\n");
  await write(join(pkgDir, ".git", "HEAD"), "ref: refs/heads/main\n");
  await write(join(pkgDir, "node_modules", "dep", "index.js"), "module.exports = 1;\n");
  await write(join(pkgDir, "lib", "node_modules", "nested", "index.js"), "module.exports = 1;\n");
  await symlink(join(pkgDir, "lib", "deep", "util.js"), join(pkgDir, "util-link.js"));
  await symlink(outside, join(pkgDir, "leak.txt"));
  await symlink(pkgDir, join(pkgDir, "loop"));
  tasks = (await import(join(pkgDir, "index.ts"))) as Record<string, Function>;
  packages = await readLocalPackages([pkgDir]);
});

afterAll(async () => {
  await rm(temp, { recursive: true, force: true });
});

describe("readPackageFolder", () => {
  test("ships the code, config dotfiles and lock files, sorted, and nothing else", async () => {
    const bundle = await readPackageFolder(pkgDir);
    expect(bundle.name).toBe("task_package");
    expect(bundle.files.map((file) => file.path)).toEqual([
      ".npmrc",
      "bin/run.sh",
      "bun.lock",
      "index.ts",
      "lib/deep/util.js",
      "package.json",
      "util-link.js",
    ]);
  });

  test("keeps the executable bit and copies an in-folder link's target", async () => {
    const bundle = await readPackageFolder(pkgDir);
    const byPath = new Map(bundle.files.map((file) => [file.path, file]));
    expect(byPath.get("bin/run.sh")!.mode).toBe(0o755);
    expect(byPath.get("index.ts")!.mode).toBe(0o644);
    expect(new TextDecoder().decode(byPath.get("util-link.js")!.data)).toBe("export const util = 1;\n");
  });

  test("refuses a missing folder and a file, naming them", async () => {
    const missing = join(temp, "nope");
    await expect(readPackageFolder(missing)).rejects.toThrow(new RegExp(`${missing} does not exist`));
    await expect(readPackageFolder(outside)).rejects.toThrow(/secret\.txt is not a folder/);
  });

  test("refuses a folder too large for one frame, saying node_modules is not shipped", async () => {
    const big = join(temp, "big");
    await write(join(big, "data.bin"), new Uint8Array(MAX_BUNDLE_BYTES + 1));
    const error = await readPackageFolder(big).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SetupError);
    expect((error as Error).message).toContain(big);
    expect((error as Error).message).toContain("node_modules is not shipped");
    await rm(big, { recursive: true });
  });

  test("two local packages with the same folder name are refused", async () => {
    const other = join(temp, "elsewhere", "task_package");
    await write(join(other, "index.js"), "export const x = 1;\n");
    await expect(readLocalPackages([pkgDir, other])).rejects.toThrow(/would both ship as "task_package"/);
  });

  test("folder names are made path-safe", () => {
    expect(packageFolderName("/x/my package!")).toBe("my_package_");
    expect(packageFolderName("/x/.hidden")).toBe("hidden");
    expect(packageFolderName("/x/node_modules")).toBe("pkg_node_modules");
  });
});

describe("pipelineHash", () => {
  const flipped = (bundle: PackageBundle, path: string): PackageBundle => ({
    name: bundle.name,
    files: bundle.files.map((file) => {
      if (file.path !== path) return file;
      const data = file.data.slice();
      data[0]! ^= 1;
      return { ...file, data };
    }),
  });

  test("is stable across two reads and changes with one byte, a mode or a remote spec", async () => {
    const first = await readPackageFolder(pkgDir);
    const second = await readPackageFolder(pkgDir);
    const hash = pipelineHash([first], ["is-number@7"]);
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
    expect(pipelineHash([second], ["is-number@7"])).toBe(hash);
    expect(pipelineHash([flipped(second, "index.ts")], ["is-number@7"])).not.toBe(hash);
    const modeChanged = {
      ...second,
      files: second.files.map((f) => (f.path === "index.ts" ? { ...f, mode: 0o755 } : f)),
    };
    expect(pipelineHash([modeChanged], ["is-number@7"])).not.toBe(hash);
    expect(pipelineHash([second], ["is-number@6"])).not.toBe(hash);
    expect(pipelineHash([second], [])).not.toBe(hash);
  });
});

describe("findPackageEntry", () => {
  test("follows exports with import conditions, then module, then main, then index", async () => {
    const dir = join(temp, "entries");
    await write(
      join(dir, "a", "package.json"),
      JSON.stringify({ exports: { ".": { types: "./x.d.ts", import: "./src/main.ts" } } }),
    );
    await write(join(dir, "a", "src", "main.ts"), "export {};\n");
    await write(join(dir, "b", "package.json"), JSON.stringify({ main: "lib" }));
    await write(join(dir, "b", "lib.js"), "export {};\n");
    await write(join(dir, "c", "index.ts"), "export {};\n");
    expect(findPackageEntry(join(dir, "a"))).toBe(join(dir, "a", "src", "main.ts"));
    expect(findPackageEntry(join(dir, "b"))).toBe(join(dir, "b", "lib.js"));
    expect(findPackageEntry(join(dir, "c"))).toBe(join(dir, "c", "index.ts"));
  });

  test("refuses an entry outside the folder and a folder without one", async () => {
    const dir = join(temp, "bad-entries");
    await write(join(dir, "out", "package.json"), JSON.stringify({ main: "../../secret.txt" }));
    await mkdir(join(dir, "empty"), { recursive: true });
    expect(() => findPackageEntry(join(dir, "out"))).toThrow(/lies outside the package folder/);
    expect(() => findPackageEntry(join(dir, "empty"))).toThrow(/has no entry module/);
  });
});

describe("resolveTaskchain", () => {
  test("finds each function and class by identity, preferring a named export over default", async () => {
    const specs = await resolveTaskchain(
      [
        { function: tasks.simpleTask! },
        { function: tasks.generatorTask! },
        { function: tasks.DropItem!, args: ["dropped"] },
      ],
      packages,
    );
    expect(specs).toEqual([
      { package: "task_package", export: "simpleTask", isGenerator: false },
      { package: "task_package", export: "generatorTask", isGenerator: true },
      { package: "task_package", export: "DropItem", isGenerator: false, args: ["dropped"] },
    ]);
  });

  test("accepts package#export by folder name or package.json name, and an explicit isGenerator", async () => {
    const specs = await resolveTaskchain(
      [
        { function: "task_package#DropItem", args: [1] },
        { function: "@scope/tasks#simpleTask", isGenerator: true },
      ],
      packages,
    );
    expect(specs).toEqual([
      { package: "task_package", export: "DropItem", isGenerator: false, args: [1] },
      { package: "task_package", export: "simpleTask", isGenerator: true },
    ]);
  });

  test("refuses a function no local package exports, naming it and the packages searched", async () => {
    function notExported(item: unknown) {
      return item;
    }
    const error = await resolveTaskchain([{ function: notExported }], packages).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SetupError);
    expect((error as Error).message).toContain('function "notExported" is not exported by any local package');
    expect((error as Error).message).toContain(`"task_package" (${pkgDir})`);
  });

  test("refuses a class without process, naming the class", async () => {
    await expect(resolveTaskchain([{ function: tasks.NoProcess! }], packages)).rejects.toThrow(
      /class "NoProcess" has no process\(item\) method/,
    );
  });

  test("refuses unknown packages and exports, and exports that are not callable", async () => {
    await expect(resolveTaskchain([{ function: "task_package#nope" }], packages)).rejects.toThrow(
      /package "task_package" has no export "nope" \(its function and class exports: .*simpleTask/,
    );
    await expect(resolveTaskchain([{ function: "other#simpleTask" }], packages)).rejects.toThrow(
      /names package "other", which is not a local package \(local packages: "task_package"\)/,
    );
    await expect(resolveTaskchain([{ function: "task_package#notATask" }], packages)).rejects.toThrow(
      /"task_package#notATask"\): the export is a number, not a function or a class/,
    );
    await expect(resolveTaskchain([{ function: "simpleTask" }], packages)).rejects.toThrow(/write "package#export"/);
    await expect(resolveTaskchain([], packages)).rejects.toThrow(/taskchain is empty/);
  });
});
