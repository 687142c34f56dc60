import { constants } from "node:fs";
import {
  lstat,
  mkdir,
  open,
  readFile,
  readdir,
  realpath,
  rename,
  rm,
  stat,
  symlink,
  unlink,
  writeFile,
} from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { SetupError } from "../errors.ts";
import { processIsAlive } from "../lifetime.ts";
import { findPackageEntry, isInsideFolder, packageNameProblem, segmentProblem } from "../protocol/package-layout.ts";
import type { PackageBundle } from "../protocol/pipeline.ts";

/**
 * The node's half of code shipping: writing a pipeline's packages under
 * `<workdir>/pipelines/<name>@<version>/<package>/` without ever letting a file land outside that
 * folder, and installing their dependencies there.
 *
 * Every installer runs with its cwd inside the pipeline folder and never with `--global`, so the
 * node's own node_modules and the host's global packages are never touched. (Bun's shared download
 * cache under ~/.bun is filled along the way; it is a cache of tarballs, not an install anything
 * resolves imports from.)
 */

export interface InstallOptions {
  /** The node's work dir; pipelines go to `<workdir>/pipelines/`. */
  workdir: string;
  /** Pipeline name and version, each one folder name. */
  name: string;
  version: string;
  packages: PackageBundle[];
  /** npm specs (`lodash@4`), `bun add`ed into the pipeline folder. */
  remotePackages: string[];
  /** Content hash from the root (`pipelineHash`): an unchanged pipeline is not written or installed again. */
  hash: string;
  /** Each line the installers print, as it comes. */
  onOutput?: (line: string) => void;
  /** Bound on each installer run (default 10 minutes). */
  installTimeoutMs?: number;
}

export interface InstalledPipeline {
  /** The pipeline folder. */
  dir: string;
  /**
   * For each package name, the absolute path of the module a worker imports: inside the cache entry
   * itself, never through the pipeline folder's link. Bun resolves a link once per process and keeps
   * what it found, so workers importing through `pipelines/<name>@<version>` after that link moved to
   * new code would still load the old.
   */
  entries: Record<string, string>;
  /** True when this exact code was already installed and nothing was written. */
  skipped: boolean;
  /**
   * The host cache's entry this node now runs, marked in use by this process: give it back with
   * `releaseCacheEntry` when the pipeline ends. Undefined when the node installed into its own work dir.
   */
  cacheEntry: string | undefined;
}

/** Written last, so a folder whose setup failed half-way is never taken for an installed one. */
const HASH_MARKER = ".pcluster-hash";
/** The host's cache of installed pipelines, beside the nodes' work dirs (see `hostCache`). */
const CACHE_FOLDER = ".pcluster-cache";
/**
 * Inside a cache entry: an empty file per node process that runs it, named by its pid, so that no node
 * removes the entry meanwhile (a replaced worker imports the code again). The folder's time is when a
 * node last began or stopped running it: what `pruneHostCache` keeps the newest of.
 */
const IN_USE_FOLDER = ".pcluster-in-use";
/** Where an entry goes to be removed: renamed out of the way at once, deleted at leisure. */
const REMOVING_PREFIX = ".removing-";
/** Cache entries a host keeps besides those in use, the most recently used first (`--keep-pipelines`). */
export const DEFAULT_KEEP_PIPELINES = 20;
const DEFAULT_INSTALL_TIMEOUT_MS = 10 * 60_000;
/** How often a node waiting for another's install of the same entry looks again. */
const LOCK_POLL_MS = 25;
/** A lock folder without a pid this long after it was made is left over (its maker died before writing it). */
const LOCK_GRACE_MS = 10_000;
/** How much of an installer's output a failure report carries. */
const OUTPUT_TAIL_CHARS = 4000;
const MAX_PATH_LENGTH = 4096;
const MAX_SPEC_LENGTH = 512;
/** The running pcluster's package root (the folder with its package.json), linked into each pipeline. */
const OWN_PCLUSTER_ROOT = resolve(import.meta.dir, "../..");
const DEPENDENCY_FIELDS = ["dependencies", "devDependencies", "peerDependencies", "optionalDependencies"] as const;

/**
 * Writes and installs a pipeline's packages, or does nothing when the same hash is installed already.
 *
 * @example
 * const { entries } = await installPipeline({ workdir, name: "p", version: "1.0", packages, remotePackages: [], hash })
 * const module = await import(entries["task_package"]!)
 */
export async function installPipeline(options: InstallOptions): Promise<InstalledPipeline> {
  const { workdir, name, version, packages, remotePackages, hash } = options;
  const since = Date.now();
  checkPipelineNames(name, version);
  checkPackageNames(packages);
  checkRemoteSpecs(remotePackages);
  if (hash === "" || /\s/.test(hash))
    throw new SetupError(`pipeline hash ${JSON.stringify(hash)} is not a hash; send pipelineHash(...)`);

  const pipelines = join(resolve(workdir), "pipelines");
  await mkdir(pipelines, { recursive: true });
  const dir = join(pipelines, `${name}@${version}`);
  if (await isInstalled(dir, hash, packages)) {
    if (!(await isLink(dir))) {
      await linkOwnPcluster(dir); // cheap, and keeps pointing at this node's pcluster if it moved
      return { dir, entries: entriesOf(dir, packages), skipped: true, cacheEntry: undefined };
    }
    // A link into the host's cache already points at this node's pcluster (its key says so).
    const entry = await realpath(dir);
    if (await claimCacheEntry(entry, options, since)) {
      return { dir, entries: entriesOf(entry, packages), skipped: true, cacheEntry: entry };
    }
  }

  const cache = await hostCache(workdir);
  if (cache === undefined) {
    await clearPipelineFolder(dir);
    await build(dir, options);
    return { dir, entries: entriesOf(dir, packages), skipped: false, cacheEntry: undefined };
  }
  const cached = join(cache, cacheEntryName(name, version, hash));
  // A new entry is the newest: it is removed between its publishing and its claim only by a host that
  // keeps no entry at all, which `pruneHostCache` refuses.
  do {
    if (!(await isInstalled(cached, hash, packages))) await publishOnce(cached, options, since);
  } while (!(await claimCacheEntry(cached, options, since)));
  await clearPipelineFolder(dir, false);
  await symlink(cached, dir, "junction");
  return { dir, entries: entriesOf(cached, packages), skipped: false, cacheEntry: cached };
}

// ---- entries in use, and the bound on the cache ------------------------------------------------------

/**
 * Marks the entry in use by this process, under the entry's lock (which whoever removes an entry
 * holds, see `pruneHostCache`, as does whoever builds it); false when it is not (or no longer) there.
 */
async function claimCacheEntry(entry: string, options: InstallOptions, since: number): Promise<boolean> {
  const lock = `${entry}.lock`;
  const deadline = since + (options.installTimeoutMs ?? DEFAULT_INSTALL_TIMEOUT_MS) + LOCK_GRACE_MS;
  while (!(await takeLock(lock))) {
    if (await lockIsStale(lock)) await rm(lock, { recursive: true, force: true });
    else if (Date.now() > deadline) throw new SetupError(`waited too long for ${lock}; remove it if no node holds it`);
    else await Bun.sleep(LOCK_POLL_MS);
  }
  try {
    if (!(await isInstalled(entry, options.hash, options.packages))) return false;
    await mkdir(join(entry, IN_USE_FOLDER), { recursive: true });
    await writeFile(join(entry, IN_USE_FOLDER, String(process.pid)), "");
    return true;
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

/** This process no longer runs the entry (its pipeline was reset): it may be removed once it is old. */
export async function releaseCacheEntry(entry: string): Promise<void> {
  await unlink(join(entry, IN_USE_FOLDER, String(process.pid))).catch(() => {});
}

/** Whether a live process runs the entry; markers of processes that are gone are removed on the way. */
async function inUse(entry: string): Promise<boolean> {
  const users = await readdir(join(entry, IN_USE_FOLDER)).catch(() => [] as string[]);
  let used = false;
  for (const user of users) {
    const pid = Number(user);
    if (Number.isInteger(pid) && pid > 0 && processIsAlive(pid)) used = true;
    else await unlink(join(entry, IN_USE_FOLDER, user)).catch(() => {});
  }
  return used;
}

/**
 * Bounds the host's cache: keeps the `keep` entries used most recently (set up, or let go of, by any
 * node of the host) and every entry a live node runs, and removes the others — each code change makes
 * an entry, and a node left running for months would fill its disk with them. An entry is taken under
 * its lock and renamed out of the way at once, so a node setting it up meanwhile either claimed it
 * first (then it stays) or finds it gone and installs it again. This node's `pipelines/<name>@<version>`
 * links into removed entries go too. Returns the entries removed.
 */
export async function pruneHostCache(workdir: string, keep = DEFAULT_KEEP_PIPELINES): Promise<string[]> {
  if (!Number.isInteger(keep) || keep < 1)
    throw new RangeError(`keep must be a whole number of at least 1, got ${keep}`);
  const cache = cacheFolder(workdir);
  const names = await readdir(cache).catch(() => [] as string[]);
  const entries: { entry: string; usedAt: number }[] = [];
  for (const name of names) {
    const path = join(cache, name);
    if (name.startsWith(REMOVING_PREFIX)) {
      // Left by a node that died while removing it.
      const pid = Number(name.slice(REMOVING_PREFIX.length).split("-", 1)[0]);
      if (!processIsAlive(pid)) await removeFolder(path);
      continue;
    }
    const marker = await stat(join(path, HASH_MARKER)).catch(() => undefined);
    if (marker === undefined) continue; // a lock, a failure record, an install being built
    const used = await stat(join(path, IN_USE_FOLDER)).catch(() => undefined);
    entries.push({ entry: path, usedAt: Math.max(marker.mtimeMs, used?.mtimeMs ?? 0) });
  }
  entries.sort((a, b) => b.usedAt - a.usedAt);
  const removed: string[] = [];
  for (const { entry } of entries.slice(keep)) {
    const lock = `${entry}.lock`;
    if (!(await takeLock(lock))) continue; // being built or claimed right now: not this time
    const removing = join(cache, `${REMOVING_PREFIX}${process.pid}-${crypto.randomUUID().slice(0, 8)}`);
    try {
      if (await inUse(entry)) continue;
      await rename(entry, removing);
    } catch {
      continue; // gone already, or not ours to move: left alone
    } finally {
      await rm(lock, { recursive: true, force: true });
    }
    removed.push(entry);
    await rm(`${entry}.failed`, { force: true });
    await removeFolder(removing);
  }
  await removeDanglingLinks(join(resolve(workdir), "pipelines"));
  return removed;
}

/** Removes the links in `folder` whose target is gone (the cache entry of a pipeline, pruned). */
async function removeDanglingLinks(folder: string): Promise<void> {
  for (const name of await readdir(folder).catch(() => [] as string[])) {
    const path = join(folder, name);
    if (!(await lstat(path).catch(() => undefined))?.isSymbolicLink()) continue;
    if ((await stat(path).catch(() => undefined)) === undefined) await unlink(path).catch(() => {});
  }
}

/** Writes, installs and marks a pipeline in `dir` (an empty folder). */
async function build(dir: string, options: InstallOptions): Promise<void> {
  const { packages, remotePackages, name, hash } = options;
  // All files first, installers after: no install script runs while shipped files are still being placed.
  for (const bundle of packages) await writePackage(join(dir, bundle.name), bundle);
  const run = (args: string[], cwd: string, what: string) =>
    runInstaller(args, cwd, what, options.onOutput, options.installTimeoutMs ?? DEFAULT_INSTALL_TIMEOUT_MS);
  for (const bundle of packages) {
    const packageDir = join(dir, bundle.name);
    if (await prepareManifest(packageDir)) {
      await run(["install", "--production"], packageDir, `installing the dependencies of package "${bundle.name}"`);
    }
  }
  if (remotePackages.length > 0) {
    await ensurePipelineManifest(dir, name);
    await run(["add", ...remotePackages], dir, `installing remote packages ${remotePackages.join(" ")}`);
  }
  await linkOwnPcluster(dir);
  await writeMarker(dir, hash);
}

// ---- the host's cache ---------------------------------------------------------------------------------

/** The host's cache folder for a node with this work dir: beside it (see `hostCache`). */
function cacheFolder(workdir: string): string {
  return join(dirname(resolve(workdir)), CACHE_FOLDER);
}

/**
 * Installed pipelines by content, shared by every node whose work dir has the same parent (the nodes
 * of `Root.local`, or `~/.pcluster/node-<port>` of several nodes on one host): the first node to set
 * a pipeline up writes and installs it, the others link to it. Undefined when that folder cannot be
 * made; the node then installs into its own work dir, as before.
 */
async function hostCache(workdir: string): Promise<string | undefined> {
  const cache = cacheFolder(workdir);
  try {
    await mkdir(cache, { recursive: true });
    return cache;
  } catch {
    return undefined;
  }
}

/**
 * A cache entry's folder name: the pipeline, its content hash, and the pcluster it links to (nodes of
 * different pcluster copies on one host must not share the link to their own).
 */
export function cacheEntryName(name: string, version: string, hash: string): string {
  const digest = new Bun.CryptoHasher("sha256").update(`${hash}\0${OWN_PCLUSTER_ROOT}`).digest("hex").slice(0, 32);
  return `${name}@${version}-${digest}`;
}

/**
 * Publishes the entry unless another node of this host is doing so: then waits for its entry instead
 * of writing and installing the same files again (sixteen local nodes set up at once, each running
 * `bun install`, would share two cores). The builder holds `<entry>.lock` (a folder: mkdir is atomic),
 * with its pid inside so that a lock left by a process that died is taken over. A builder that fails
 * leaves its error and the time it gave up in `<entry>.failed`: a node that was already setting up when
 * that install failed fails with it instead of trying again in turn (whether or not it ever saw the
 * lock held), while a node that comes later tries afresh.
 */
async function publishOnce(cached: string, options: InstallOptions, since: number): Promise<void> {
  const lock = `${cached}.lock`;
  const failure = `${cached}.failed`;
  const deadline = since + (options.installTimeoutMs ?? DEFAULT_INSTALL_TIMEOUT_MS) + LOCK_GRACE_MS;
  for (;;) {
    if (await isInstalled(cached, options.hash, options.packages)) return;
    // An install that failed while this node was setting up: the same install here would fail the same way.
    const failed = await failureSince(failure, since);
    if (failed !== undefined) throw sharedFailure(failed);
    if (await takeLock(lock)) {
      let shared: string | undefined;
      try {
        // Again under the lock: the install before may have failed and let go of it since the look above.
        shared = await failureSince(failure, since);
        if (shared === undefined) {
          await rm(failure, { force: true });
          if (!(await isInstalled(cached, options.hash, options.packages))) await publish(cached, options);
        }
      } catch (error) {
        const record: FailureRecord = { at: Date.now(), message: (error as Error).message };
        await writeFile(failure, JSON.stringify(record)).catch(() => {});
        throw error;
      } finally {
        await rm(lock, { recursive: true, force: true });
      }
      if (shared !== undefined) throw sharedFailure(shared);
      return;
    }
    if (await lockIsStale(lock)) {
      await rm(lock, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new SetupError(
        `waited ${Math.round((Date.now() - since) / 1000)} s for another node of this host to install ` +
          `this pipeline (${lock} is held); remove that folder if no node is installing`,
      );
    }
    await Bun.sleep(LOCK_POLL_MS);
  }
}

function sharedFailure(message: string): SetupError {
  return new SetupError(`another node of this host failed to install this pipeline: ${message}`);
}

/** What a builder that failed leaves in `<entry>.failed`: when it gave up (the host's clock) and why. */
interface FailureRecord {
  at: number;
  message: string;
}

/** The error of an install that failed at or after `since`; undefined if none did (or its record is unreadable). */
async function failureSince(failure: string, since: number): Promise<string | undefined> {
  const text = await readFile(failure, "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const record = JSON.parse(text) as Partial<FailureRecord>;
    if (typeof record.at !== "number" || record.at < since) return undefined;
    return typeof record.message === "string" ? record.message : "(its error was not kept)";
  } catch {
    return undefined; // half-written, or left by an older pcluster: not a failure to share
  }
}

/** Takes the lock folder, with this process's pid inside; false when another holds it. */
async function takeLock(lock: string): Promise<boolean> {
  try {
    await mkdir(lock);
  } catch (error) {
    if ((error as { code?: string }).code === "EEXIST") return false;
    throw error;
  }
  await writeFile(join(lock, "pid"), String(process.pid));
  return true;
}

/** A lock whose holder is gone: its pid names no running process, or it has no pid long after it was made. */
async function lockIsStale(lock: string): Promise<boolean> {
  const pid = Number(await readFile(join(lock, "pid"), "utf8").catch(() => ""));
  if (Number.isInteger(pid) && pid > 0) return !processIsAlive(pid);
  const made = await stat(lock).catch(() => undefined);
  return made !== undefined && Date.now() - made.mtimeMs > LOCK_GRACE_MS;
}

/**
 * Builds the entry in a folder of its own, then renames it into place: readers see a whole install or
 * none. Nodes racing on one entry each build; the first rename wins and the others drop theirs.
 */
async function publish(cached: string, options: InstallOptions): Promise<void> {
  const building = `${cached}.building-${process.pid}-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await mkdir(building);
    await build(building, options);
    try {
      await rename(building, cached);
    } catch (error) {
      // Another node published it first (ENOTEMPTY or EEXIST), or a stale copy without a marker is there.
      if (await isInstalled(cached, options.hash, options.packages)) return;
      await rm(cached, { recursive: true, force: true });
      await rename(building, cached).catch(() => {
        throw new SetupError(`could not publish the installed pipeline to ${cached}: ${(error as Error).message}`);
      });
    }
  } finally {
    await removeFolder(building);
  }
}

async function isLink(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined))?.isSymbolicLink() === true;
}

// ---- checks on what the root sent ------------------------------------------------------------------

function checkPipelineNames(name: string, version: string): void {
  // "@" separates name from version in the folder name, so "a@b"+"c" and "a"+"b@c" must not meet.
  const nameProblem = segmentProblem(name) ?? (name.includes("@") ? 'it contains "@"' : undefined);
  if (nameProblem !== undefined) {
    throw new SetupError(
      `pipeline name ${JSON.stringify(name)} cannot be a folder name: ${nameProblem}; use letters, digits, ".", "_" or "-"`,
    );
  }
  const versionProblem = segmentProblem(version);
  if (versionProblem !== undefined) {
    throw new SetupError(
      `pipeline version ${JSON.stringify(version)} cannot be a folder name: ${versionProblem}; use e.g. "1.0"`,
    );
  }
}

function checkPackageNames(packages: PackageBundle[]): void {
  const seen = new Set<string>();
  for (const { name } of packages) {
    const problem = packageNameProblem(name);
    if (problem !== undefined)
      throw new SetupError(`package name ${JSON.stringify(name)} cannot be a folder name: ${problem}`);
    if (seen.has(name)) throw new SetupError(`package "${name}" is shipped twice; package names must differ`);
    seen.add(name);
  }
}

/** A spec is one argument to `bun add`: it must not be able to pass an installer flag such as `--global`. */
function checkRemoteSpecs(specs: string[]): void {
  for (const spec of specs) {
    const problem = specProblem(spec);
    if (problem !== undefined) {
      throw new SetupError(
        `remote package ${JSON.stringify(spec)} is refused: ${problem}; give npm specs such as "lodash@4"`,
      );
    }
  }
}

function specProblem(spec: string): string | undefined {
  if (spec === "") return "it is empty";
  if (spec.length > MAX_SPEC_LENGTH) return `it is longer than ${MAX_SPEC_LENGTH} characters`;
  if (spec.startsWith("-")) return "it starts with '-', which the installer would read as a flag";
  if (/[\s\0]/.test(spec)) return "it contains whitespace or NUL";
  return undefined;
}

/** Why a shipped file path is unsafe to write, or undefined when it is a plain relative path. */
function pathProblem(path: string): string | undefined {
  if (path === "") return "it is empty";
  if (path.length > MAX_PATH_LENGTH) return `it is longer than ${MAX_PATH_LENGTH} characters`;
  if (path.includes("\0")) return "it contains a NUL character";
  if (path.includes("\\")) return "it contains a backslash (shipped paths use '/')";
  if (path.startsWith("/") || /^[A-Za-z]:/.test(path)) return "it is absolute";
  const segments = path.split("/");
  if (segments.includes("..")) return "it has a '..' segment";
  if (segments.some((segment) => segment === "" || segment === ".")) return "it has an empty or '.' segment";
  if (segments.includes("node_modules") || segments.includes(".git"))
    return "it is inside node_modules/ or .git/, which only the node writes";
  return undefined;
}

function unsafePath(packageName: string, path: string, why: string): SetupError {
  return new SetupError(
    `refused to write ${JSON.stringify(path)} of package "${packageName}": it would land outside the pipeline folder (${why}); ` +
      "ship only plain relative paths inside the package",
  );
}

// ---- writing ------------------------------------------------------------------------------------------

async function isInstalled(dir: string, hash: string, packages: PackageBundle[]): Promise<boolean> {
  try {
    if (!(await stat(dir)).isDirectory()) return false; // a link into the host's cache counts
    if ((await readFile(join(dir, HASH_MARKER), "utf8")) !== hash) return false;
    for (const { name } of packages) if (!(await lstat(join(dir, name))).isDirectory()) return false;
    return true;
  } catch {
    return false;
  }
}

/** Removes an old install of this pipeline. Only this pipeline's folder is touched. */
async function clearPipelineFolder(dir: string, recreate = true): Promise<void> {
  // A link into the host's cache goes alone: what it leads to is shared with other nodes.
  if (await isLink(dir)) await unlink(dir);
  else await removeFolder(dir);
  if (recreate) await mkdir(dir, { recursive: true });
}

/** Removes a pipeline folder (or a cache entry being built), if it is there. */
async function removeFolder(dir: string): Promise<void> {
  // The link to the node's own pcluster goes first and alone: `rm` does not follow links, but this
  // one leads to the node's own code, so it is not left to chance.
  await unlink(join(dir, "node_modules", "pcluster")).catch(() => {});
  await rm(dir, { recursive: true, force: true });
}

/**
 * Writes one package's files into `packageDir`. Each path is checked as text first, then each folder
 * on the way is created one level at a time and refused if it is a link, and finally the file itself
 * is opened with O_NOFOLLOW: a link planted in the folder (by an earlier install, say) can never
 * redirect a write outside.
 */
export async function writePackage(packageDir: string, bundle: PackageBundle): Promise<void> {
  await mkdir(packageDir, { recursive: true });
  const root = await realpath(packageDir);
  for (const file of bundle.files) {
    const problem = pathProblem(file.path);
    if (problem !== undefined) throw unsafePath(bundle.name, file.path, problem);
    const target = join(root, file.path);
    if (!isInsideFolder(root, target))
      throw unsafePath(bundle.name, file.path, "it resolves outside the package folder");
    await makeFoldersInside(root, file.path, bundle.name);
    await writeNoFollow(target, file.data, file.mode, bundle.name, file.path);
  }
}

/** Creates the parent folders of `path` under `root`, refusing any that already exists as a link. */
async function makeFoldersInside(root: string, path: string, packageName: string): Promise<void> {
  const folders = path.split("/").slice(0, -1);
  let current = root;
  for (const folder of folders) {
    current = join(current, folder);
    const info = await lstat(current).catch(() => undefined);
    if (info === undefined) {
      await mkdir(current);
    } else if (info.isSymbolicLink()) {
      throw unsafePath(packageName, path, `"${folder}" is a symbolic link`);
    } else if (!info.isDirectory()) {
      throw new SetupError(
        `cannot write ${JSON.stringify(path)} of package "${packageName}": "${folder}" is a file, not a folder`,
      );
    }
  }
  const parent = await realpath(dirname(join(root, path)));
  if (parent !== root && !isInsideFolder(root, parent))
    throw unsafePath(packageName, path, "its folder resolves outside");
}

async function writeNoFollow(
  target: string,
  data: Uint8Array,
  mode: number | undefined,
  packageName: string,
  path: string,
): Promise<void> {
  const existing = await lstat(target).catch(() => undefined);
  if (existing?.isSymbolicLink()) throw unsafePath(packageName, path, "the file is a symbolic link");
  if (existing?.isDirectory())
    throw new SetupError(`cannot write ${JSON.stringify(path)} of package "${packageName}": a folder is there`);
  const permissions = mode !== undefined && mode & 0o111 ? 0o755 : 0o644;
  // O_NOFOLLOW closes the gap between the lstat above and the open (0 where the platform lacks it).
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | (constants.O_NOFOLLOW ?? 0);
  const handle = await open(target, flags, permissions);
  try {
    await handle.writeFile(data);
    await handle.chmod(permissions);
  } finally {
    await handle.close();
  }
}

async function writeMarker(dir: string, hash: string): Promise<void> {
  const temporary = join(dir, `${HASH_MARKER}.tmp`);
  await writeFile(temporary, hash);
  await rename(temporary, join(dir, HASH_MARKER));
}

function entriesOf(dir: string, packages: PackageBundle[]): Record<string, string> {
  const entries: Record<string, string> = {};
  for (const { name } of packages) entries[name] = findPackageEntry(join(dir, name));
  return entries;
}

// ---- installing --------------------------------------------------------------------------------------

/**
 * Drops `pcluster` from the package's dependencies (the node links its own, whatever the root's
 * package.json said about where pcluster came from) and says whether anything is left to install.
 */
async function prepareManifest(packageDir: string): Promise<boolean> {
  const path = join(packageDir, "package.json");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return false; // no package.json: nothing to install
  }
  let manifest: Record<string, unknown>;
  try {
    manifest = JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new SetupError(`${path} is not valid JSON (${(error as Error).message}); fix the package.json on the root`);
  }
  let changed = false;
  for (const field of DEPENDENCY_FIELDS) {
    const deps = manifest[field] as Record<string, unknown> | undefined;
    if (deps !== null && typeof deps === "object" && Object.hasOwn(deps, "pcluster")) {
      delete deps.pcluster;
      changed = true;
    }
  }
  if (changed) await writeFile(path, `${JSON.stringify(manifest, null, 2)}\n`);
  return ["dependencies", "optionalDependencies", "peerDependencies"].some((field) => {
    const deps = manifest[field];
    return deps !== null && typeof deps === "object" && Object.keys(deps).length > 0;
  });
}

/** The pipeline folder's own package.json, which `bun add` records the remote packages in. */
async function ensurePipelineManifest(dir: string, name: string): Promise<void> {
  const path = join(dir, "package.json");
  const exists = await lstat(path).then(
    () => true,
    () => false,
  );
  if (exists) return;
  const packageName = `pcluster-pipeline-${name.toLowerCase().replace(/[^a-z0-9._-]/g, "-")}`;
  await writeFile(path, `${JSON.stringify({ name: packageName, private: true }, null, 2)}\n`);
}

/**
 * Links `<pipeline>/node_modules/pcluster` to this node's pcluster, so that `import { log } from
 * "pcluster"` in a shipped package (resolved by walking up from its folder) gets the node's own.
 */
async function linkOwnPcluster(dir: string): Promise<void> {
  const modules = join(dir, "node_modules");
  await mkdir(modules, { recursive: true });
  const link = join(modules, "pcluster");
  const existing = await lstat(link).catch(() => undefined);
  if (existing?.isSymbolicLink() || existing?.isFile()) await unlink(link);
  else if (existing?.isDirectory()) await rm(link, { recursive: true, force: true });
  await symlink(OWN_PCLUSTER_ROOT, link, "junction"); // "junction": a folder link Windows allows without admin rights
}

async function runInstaller(
  args: string[],
  cwd: string,
  what: string,
  onOutput: ((line: string) => void) | undefined,
  timeoutMs: number,
): Promise<void> {
  const installer = Bun.spawn([process.execPath, ...args], {
    cwd,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" },
  });
  const output = new InstallerOutput(onOutput);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    installer.kill("SIGKILL");
  }, timeoutMs);
  const reading = Promise.all([output.read(installer.stdout), output.read(installer.stderr)]);
  const code = await installer.exited;
  clearTimeout(timer);
  // A script the installer started may still hold the pipes open: wait for them only briefly.
  await Promise.race([reading, Bun.sleep(1000)]);
  const command = `bun ${args.join(" ")}`;
  if (timedOut) {
    throw new SetupError(
      `${what} timed out after ${timeoutMs / 1000} s (\`${command}\` in ${cwd}); its output ended with:\n${output.tail()}`,
    );
  }
  if (code !== 0) {
    throw new SetupError(
      `${what} failed: \`${command}\` in ${cwd} exited with code ${code}; its output ended with:\n${output.tail()}`,
    );
  }
}

/** An installer's output: passed on line by line, and its last few thousand characters kept for errors. */
class InstallerOutput {
  #tail = "";

  constructor(readonly onLine: ((line: string) => void) | undefined) {}

  /** Reads one of the installer's streams to its end; each stream keeps its own unfinished line. */
  async read(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true });
      this.#tail = (this.#tail + text).slice(-OUTPUT_TAIL_CHARS);
      const lines = (partial + text).split(/\r?\n/);
      partial = lines.pop() ?? "";
      for (const line of lines) this.onLine?.(line);
    }
    if (partial !== "") this.onLine?.(partial);
  }

  tail(): string {
    return this.#tail.trim() || "(no output)";
  }
}
