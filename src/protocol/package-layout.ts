import { existsSync, readFileSync, realpathSync, statSync } from "node:fs";
import { basename, isAbsolute, join, relative, resolve, sep } from "node:path";
import { SetupError } from "../errors.ts";

/**
 * How a task package folder is named and how its entry module is found. The root (which finds a task's
 * export by importing the package) and the node (which tells its workers what to import) must agree on
 * both, so both import this one file.
 */

/** Longest package folder name, pipeline name or version the node accepts. */
const MAX_SEGMENT_LENGTH = 100;

/** Names a package folder may not have: the pipeline folder keeps its own files beside the packages. */
const RESERVED_PACKAGE_NAMES = new Set([
  "node_modules",
  "package.json",
  "bun.lock",
  "bun.lockb",
  "package-lock.json",
  "yarn.lock",
  "bunfig.toml",
]);

/**
 * The folder name a package travels under: the folder's basename, with anything outside
 * `[A-Za-z0-9._-]` replaced by `_`. The package.json `name` is not used because it may be scoped
 * (`@a/b`), which is not one path segment.
 *
 * @example packageFolderName("/home/me/task_package") // "task_package"
 */
export function packageFolderName(dir: string): string {
  let name = basename(resolve(dir))
    .replace(/[^A-Za-z0-9._-]/g, "_")
    .replace(/^\.+/, "");
  if (name === "" || RESERVED_PACKAGE_NAMES.has(name)) name = `pkg_${name}`;
  return name.slice(0, MAX_SEGMENT_LENGTH);
}

/**
 * Why `value` is not usable as a single folder name, or undefined when it is. Used by the node for the
 * pipeline name, its version and each package name, which all become folder names.
 */
export function segmentProblem(value: string): string | undefined {
  if (value === "") return "it is empty";
  if (value.length > MAX_SEGMENT_LENGTH) return `it is longer than ${MAX_SEGMENT_LENGTH} characters`;
  if (value.includes("\0")) return "it contains a NUL character";
  if (/[/\\]/.test(value)) return "it contains a path separator";
  if (value === "." || value === "..") return `"${value}" is not a folder name`;
  if (value.startsWith(".")) return "it starts with a dot";
  if (/^[A-Za-z]:/.test(value)) return "it starts with a drive letter";
  return undefined;
}

/** Whether `value` may name a shipped package's folder inside the pipeline folder. */
export function packageNameProblem(value: string): string | undefined {
  if (RESERVED_PACKAGE_NAMES.has(value)) return `"${value}" is reserved for the pipeline folder's own files`;
  return segmentProblem(value);
}

/** Extensions tried, in order, for an entry given without one and for `index.*`. */
const ENTRY_EXTENSIONS = [".ts", ".tsx", ".mts", ".js", ".mjs", ".cjs"];

/** package.json `exports` conditions Bun matches when importing, checked in the object's own order. */
const IMPORT_CONDITIONS = new Set(["bun", "import", "module", "node", "default"]);

/**
 * The absolute path of a package folder's entry module: package.json `exports` (its "." entry, with
 * the conditions Bun uses for `import`), then `module`, then `main`, then `index.ts`/`index.js`/….
 * The entry must lie inside the folder.
 *
 * Resolved here with plain file checks instead of `import(dir)` because Bun's folder import ignores
 * `exports`, and instead of `Bun.resolveSync` because its directory cache may not see files the node
 * has just written.
 *
 * @example findPackageEntry("./task_package") // "/abs/task_package/index.ts"
 */
export function findPackageEntry(dir: string): string {
  const root = resolve(dir);
  const manifest = readManifest(root);
  const declared = [exportsEntry(manifest?.exports), manifest?.module, manifest?.main].filter(
    (value): value is string => typeof value === "string" && value !== "",
  );
  for (const spec of declared) {
    const file = resolveModuleFile(join(root, spec));
    if (file !== undefined) return insidePackage(root, file, spec);
  }
  const index = resolveModuleFile(join(root, "index"));
  if (index !== undefined) return index;
  const tried =
    declared.length > 0
      ? `package.json points to ${declared.map((s) => `"${s}"`).join(", ")}, which do not exist; `
      : "";
  throw new SetupError(
    `package folder ${root} has no entry module: ${tried}add "exports", "module" or "main" to its package.json, or an index.ts / index.js`,
  );
}

interface Manifest {
  exports?: unknown;
  module?: unknown;
  main?: unknown;
}

function readManifest(root: string): Manifest | undefined {
  const path = join(root, "package.json");
  if (!existsSync(path)) return undefined;
  try {
    const parsed: unknown = JSON.parse(readFileSync(path, "utf8"));
    return typeof parsed === "object" && parsed !== null ? (parsed as Manifest) : undefined;
  } catch (error) {
    throw new SetupError(
      `${path} is not valid JSON (${(error as Error).message}); fix it so the package's entry can be found`,
    );
  }
}

/** The "." target of an `exports` field, following the conditions Bun uses for `import`. */
function exportsEntry(exports: unknown): string | undefined {
  if (typeof exports === "string") return exports;
  if (Array.isArray(exports)) {
    for (const candidate of exports) {
      const found = exportsEntry(candidate);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  if (typeof exports !== "object" || exports === null) return undefined;
  const map = exports as Record<string, unknown>;
  const keys = Object.keys(map);
  if (keys.some((key) => key.startsWith("."))) return exportsEntry(map["."]);
  for (const key of keys) {
    if (!IMPORT_CONDITIONS.has(key)) continue;
    const found = exportsEntry(map[key]);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** A file at `base`, `base` plus an extension, or `base/index` plus an extension. */
function resolveModuleFile(base: string): string | undefined {
  const candidates = [
    base,
    ...ENTRY_EXTENSIONS.map((ext) => base + ext),
    ...ENTRY_EXTENSIONS.map((ext) => join(base, `index${ext}`)),
  ];
  return candidates.find(isFile);
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The entry, after checking that it (links followed) does not lead out of the package folder. */
function insidePackage(root: string, file: string, spec: string): string {
  if (!isInsideFolder(realpathSync(root), realpathSync(file))) {
    throw new SetupError(
      `package folder ${root}: its entry "${spec}" lies outside the package folder; point it at a file inside`,
    );
  }
  return file;
}

/** Whether `path` lies strictly inside `folder` (both absolute; compared as written, links not followed). */
export function isInsideFolder(folder: string, path: string): boolean {
  const fromFolder = relative(folder, path);
  return fromFolder !== "" && fromFolder !== ".." && !fromFolder.startsWith(`..${sep}`) && !isAbsolute(fromFolder);
}
