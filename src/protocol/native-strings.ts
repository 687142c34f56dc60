/**
 * Loads msgpackr's native string extractor (msgpackr-extract) into this thread: it roughly halves the
 * time to decode items full of strings. codec.ts uses msgpackr's pure-JS entry, whose loading searches
 * for no addon; msgpackr's main entry searches for it (detect-libc, node-gyp-build: some 30 ms of CPU
 * per thread) and hands it to the same unpack.js. `decode` calls this at the first item large enough
 * for it to matter, so a thread that decodes no such item (a node's socket thread, a worker during
 * setup) never pays; items decoded before it has loaded are decoded in JS, as without the addon.
 */
export function loadNativeStrings(): Promise<void> {
  return import("msgpackr").then(
    () => {},
    () => {}, // msgpackr's main entry already treats a missing addon as optional
  );
}
