import { lstat, readFile, readdir, realpath, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { SetupError } from "../errors.ts";
import { findPackageEntry, isInsideFolder, packageFolderName } from "../protocol/package-layout.ts";
import type { PackageBundle, PackageFile, TaskSpec } from "../protocol/pipeline.ts";
import { applyTaskRunOptions } from "./task-options.ts";
import type { TaskDefinition } from "./chain-types.ts";

/** One task as the user writes it in `setup`: the function or class itself, or `"package#export"`. */
export type TaskInput = TaskDefinition;

/**
 * The root's half of code shipping: reading local package folders as files, hashing them, and finding
 * which export of which package each task of the user's taskchain is.
 */

/** A local package folder (absolute) and its files as they will be shipped. */
export interface LocalPackage {
  dir: string;
  bundle: PackageBundle;
}

/**
 * Bound on the files shipped, all packages together: they travel in one setup frame, whose maximum
 * is 64 MiB, so this leaves room for the rest of the message.
 */
export const MAX_BUNDLE_BYTES = 48 * 1024 * 1024;

/** Dotfiles that configure installing and so must travel; every other dotfile or dot folder stays home. */
const SHIPPED_DOTFILES = new Set([".npmrc", ".bunfig.toml"]);

/** Folders never shipped: the node installs dependencies itself; history is not code. */
const SKIPPED_FOLDERS = new Set(["node_modules", ".git"]);

function isShipped(name: string): boolean {
  if (SKIPPED_FOLDERS.has(name)) return false;
  return !name.startsWith(".") || SHIPPED_DOTFILES.has(name);
}

/**
 * Reads a package folder as files: paths relative with `/`, sorted, the executable bit kept.
 * `node_modules`, `.git` and dotfiles other than installer config (`.npmrc`, `.bunfig.toml`) are
 * skipped. A symlink is shipped as a copy of its target only when the target is a file inside the
 * folder; links to folders (which may loop) and links leading outside (which would ship files from
 * elsewhere on this machine) are skipped.
 *
 * @example const bundle = await readPackageFolder("./task_package") // { name: "task_package", files }
 */
export async function readPackageFolder(dir: string): Promise<PackageBundle> {
  const root = await packageRoot(dir);
  const files: PackageFile[] = [];
  let bytes = 0;
  for await (const { path, absolute, mode } of walk(root, root, "")) {
    const data = new Uint8Array(await readFile(absolute));
    bytes += data.length;
    if (bytes > MAX_BUNDLE_BYTES) throw tooLarge(`local package ${root} is`, bytes);
    files.push({ path, data, mode: mode & 0o111 ? 0o755 : 0o644 });
  }
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { name: packageFolderName(root), files };
}

/**
 * Reads every local package of a pipeline (relative paths from `baseDir`, default the working
 * directory) and checks that their folder names differ and that together they fit in one frame.
 */
export async function readLocalPackages(dirs: string[], baseDir = process.cwd()): Promise<LocalPackage[]> {
  const packages: LocalPackage[] = [];
  const byName = new Map<string, string>();
  let bytes = 0;
  for (const given of dirs) {
    const dir = await packageRoot(resolve(baseDir, given));
    const bundle = await readPackageFolder(dir);
    const clash = byName.get(bundle.name);
    if (clash !== undefined) {
      throw new SetupError(
        `local packages ${clash} and ${dir} would both ship as "${bundle.name}" (packages travel under their folder name); rename one folder`,
      );
    }
    byName.set(bundle.name, dir);
    bytes += bundle.files.reduce((sum, file) => sum + file.data.length, 0);
    if (bytes > MAX_BUNDLE_BYTES) {
      throw tooLarge(`local packages ${[...packages.map((p) => p.dir), dir].join(", ")} together are`, bytes);
    }
    packages.push({ dir, bundle });
  }
  return packages;
}

/** The real path of a package folder, or a SetupError saying why it is not one. */
async function packageRoot(dir: string): Promise<string> {
  const absolute = resolve(dir);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(absolute);
  } catch {
    throw new SetupError(`local package folder ${absolute} does not exist; check the path in localPackages`);
  }
  if (!info.isDirectory())
    throw new SetupError(`local package ${absolute} is not a folder; give the folder holding its package.json`);
  // The real path, so that the root imports the very module the user's script imported (Bun keys
  // modules by real path) and links can be judged by where they really lead.
  return realpath(absolute);
}

/** `what` names the folder(s) and ends in "is" / "are". */
function tooLarge(what: string, bytes: number): SetupError {
  return new SetupError(
    `${what} over ${MAX_BUNDLE_BYTES / 1024 / 1024} MiB (${bytes} bytes read so far) and cannot be shipped in ` +
      "one frame; node_modules is not shipped (nodes install dependencies themselves), so move data files out of the package folder",
  );
}

interface WalkedFile {
  path: string;
  absolute: string;
  mode: number;
}

async function* walk(root: string, dir: string, prefix: string): AsyncGenerator<WalkedFile> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (!isShipped(entry.name)) continue;
    const absolute = join(dir, entry.name);
    const path = prefix + entry.name;
    if (entry.isDirectory()) {
      yield* walk(root, absolute, `${path}/`);
    } else if (entry.isFile()) {
      yield { path, absolute, mode: (await lstat(absolute)).mode };
    } else if (entry.isSymbolicLink()) {
      const target = await linkedFileInside(root, absolute);
      if (target !== undefined) yield { path, absolute: target, mode: (await stat(target)).mode };
    }
  }
}

/** The target of a link when it is a file inside the package folder; undefined for any other link. */
async function linkedFileInside(root: string, link: string): Promise<string | undefined> {
  try {
    const target = await realpath(link);
    return isInsideFolder(root, target) && (await stat(target)).isFile() ? target : undefined;
  } catch {
    return undefined; // a dangling link ships nothing
  }
}

/**
 * Content hash of a pipeline's code: package names, file paths, modes and bytes, and the remote
 * package specs. A node that already installed this hash skips writing and installing.
 */
export function pipelineHash(packages: PackageBundle[], remotePackages: string[]): string {
  const hash = new Bun.CryptoHasher("sha256"); // not node:crypto, which costs ~20 ms to import
  // Every field is length-prefixed, so no two different pipelines feed the same byte stream.
  const field = (bytes: Uint8Array | string) => {
    const data = typeof bytes === "string" ? Buffer.from(bytes, "utf8") : bytes;
    hash.update(`${data.length}:`);
    hash.update(data);
  };
  const byName = [...packages].sort((a, b) => compare(a.name, b.name));
  field(`packages ${byName.length}`);
  for (const bundle of byName) {
    field(bundle.name);
    field(`files ${bundle.files.length}`);
    for (const file of [...bundle.files].sort((a, b) => compare(a.path, b.path))) {
      field(file.path);
      field(String(file.mode ?? 0o644));
      field(file.data);
    }
  }
  const specs = [...remotePackages].sort(compare);
  field(`remote ${specs.length}`);
  for (const spec of specs) field(spec);
  return hash.digest("hex");
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---- finding each task's export --------------------------------------------------------------------

type Exports = Record<string, unknown>;

/** A local package with its entry module imported on the root. */
interface LoadedPackage {
  name: string;
  /** The package.json `name`, accepted in `"package#export"` beside the folder name. */
  manifestName: string | undefined;
  dir: string;
  exports: Exports;
}

/**
 * Turns the user's taskchain into wire `TaskSpec`s. A function or class is found by identity among
 * the exports of the local packages' entry modules (a named export is preferred over `default`; the
 * first package in `localPackages` order wins when several export it); a string `"package#export"`
 * names it directly. Anything not found, or not callable as a task, is a `SetupError` raised here,
 * before anything is sent to a node.
 *
 * @example
 * const specs = await resolveTaskchain([{ function: simpleTask }, { function: "task_package#DropItem", args: ["x"] }], packages)
 */
export async function resolveTaskchain(
  tasks: readonly TaskDefinition[],
  packages: LocalPackage[],
): Promise<TaskSpec[]> {
  if (tasks.length === 0) throw new SetupError("the taskchain is empty: give at least one task");
  const loaded = await Promise.all(packages.map(loadPackage));
  return tasks.map((task, index) => {
    const where = `task ${index + 1}`;
    const found =
      typeof task.function === "string"
        ? byReference(task.function, loaded, where)
        : byIdentity(task.function, loaded, where);
    const value = found.pkg.exports[found.exportName];
    checkTaskValue(value, `${where} ("${found.pkg.name}#${found.exportName}")`);
    if (task.args !== undefined && !Array.isArray(task.args)) {
      throw new SetupError(
        `${where} ("${found.pkg.name}#${found.exportName}"): args must be an array of constructor arguments`,
      );
    }
    const spec: TaskSpec = {
      package: found.pkg.name,
      export: found.exportName,
      isGenerator: task.isGenerator ?? isGeneratorTask(value as Function),
    };
    if (task.args !== undefined) spec.args = [...task.args];
    applyTaskRunOptions(spec, task, `${where} ("${found.pkg.name}#${found.exportName}")`);
    return spec;
  });
}

/**
 * Finds which shipped package exports the combiner class `type` (or `"package#export"`): the spec the
 * nodes load it by, and the class itself (the root merges the partials with it).
 */
export async function resolveCombiner(
  type: Function | string,
  args: readonly unknown[] | undefined,
  packages: LocalPackage[],
): Promise<{ spec: TaskSpec; value: unknown }> {
  const loaded = await Promise.all(packages.map(loadPackage));
  const where = "the combiner";
  const found = typeof type === "string" ? byReference(type, loaded, where) : byIdentity(type, loaded, where);
  if (args !== undefined && !Array.isArray(args)) {
    throw new SetupError(
      `${where} ("${found.pkg.name}#${found.exportName}"): args must be an array of constructor arguments`,
    );
  }
  const spec: TaskSpec = { package: found.pkg.name, export: found.exportName, isGenerator: false };
  if (args !== undefined) spec.args = [...args];
  return { spec, value: found.pkg.exports[found.exportName] };
}

async function loadPackage({ dir, bundle }: LocalPackage): Promise<LoadedPackage> {
  const entry = findPackageEntry(await realpath(dir));
  let exports: Exports;
  try {
    exports = (await import(entry)) as Exports;
  } catch (error) {
    throw new SetupError(
      `importing local package "${bundle.name}" (${entry}) on the root failed: ${(error as Error).message}`,
    );
  }
  return { name: bundle.name, manifestName: manifestName(bundle), dir, exports };
}

function manifestName(bundle: PackageBundle): string | undefined {
  const manifest = bundle.files.find((file) => file.path === "package.json");
  if (manifest === undefined) return undefined;
  try {
    const name: unknown = JSON.parse(new TextDecoder().decode(manifest.data)).name;
    return typeof name === "string" ? name : undefined;
  } catch {
    return undefined;
  }
}

interface FoundExport {
  pkg: LoadedPackage;
  exportName: string;
}

function byIdentity(fn: Function, packages: LoadedPackage[], where: string): FoundExport {
  if (typeof fn !== "function") {
    throw new SetupError(
      `${where}: "function" must be a function, a class or a "package#export" string, got ${typeof fn}`,
    );
  }
  let viaDefault: FoundExport | undefined;
  for (const pkg of packages) {
    for (const [exportName, value] of Object.entries(pkg.exports)) {
      if (value !== fn) continue;
      if (exportName !== "default") return { pkg, exportName };
      viaDefault ??= { pkg, exportName };
    }
  }
  if (viaDefault !== undefined) return viaDefault;
  const searched = packages.map((pkg) => `"${pkg.name}" (${pkg.dir})`).join(", ") || "none: localPackages is empty";
  throw new SetupError(
    `${where}: ${describeFunction(fn)} is not exported by any local package (searched ${searched}); ` +
      `export it from the package's entry module, add its package to localPackages, or name it as "package#export"`,
  );
}

function byReference(reference: string, packages: LoadedPackage[], where: string): FoundExport {
  const at = reference.lastIndexOf("#");
  if (at <= 0 || at === reference.length - 1) {
    throw new SetupError(
      `${where}: "${reference}" is not a task reference; write "package#export", e.g. "task_package#simpleTask"`,
    );
  }
  const packageName = reference.slice(0, at);
  const exportName = reference.slice(at + 1);
  const pkg = packages.find((p) => p.name === packageName) ?? packages.find((p) => p.manifestName === packageName);
  if (pkg === undefined) {
    const known = packages.map((p) => `"${p.name}"`).join(", ") || "none: localPackages is empty";
    throw new SetupError(
      `${where}: "${reference}" names package "${packageName}", which is not a local package (local packages: ${known})`,
    );
  }
  if (!Object.hasOwn(pkg.exports, exportName)) {
    const callable = Object.keys(pkg.exports).filter((name) => typeof pkg.exports[name] === "function");
    throw new SetupError(
      `${where}: package "${pkg.name}" has no export "${exportName}" (its function and class exports: ${callable.join(", ") || "none"})`,
    );
  }
  return { pkg, exportName };
}

/** Refuses exports that a worker could not call: non-functions, and classes without `process`. */
function checkTaskValue(value: unknown, where: string): void {
  if (typeof value !== "function") {
    throw new SetupError(
      `${where}: the export is a ${value === null ? "null" : typeof value}, not a function or a class`,
    );
  }
  if (isClass(value) && typeof value.prototype?.process !== "function") {
    throw new SetupError(
      `${where}: class "${value.name}" has no process(item) method; a class task is built once per worker and its process(item) is called for each item`,
    );
  }
}

function isClass(value: Function): boolean {
  return Function.prototype.toString.call(value).startsWith("class") || typeof value.prototype?.process === "function";
}

/** A generator function (or a class whose `process` is one) gives many outputs. */
function isGeneratorTask(value: Function): boolean {
  const callable: unknown = isClass(value) ? value.prototype?.process : value;
  const kind = (callable as { constructor?: { name?: string } } | undefined)?.constructor?.name;
  return kind === "GeneratorFunction" || kind === "AsyncGeneratorFunction";
}

function describeFunction(fn: Function): string {
  const kind = isClass(fn) ? "class" : "function";
  return fn.name ? `${kind} "${fn.name}"` : `an anonymous ${kind}`;
}
