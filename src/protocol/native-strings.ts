/**
 * Loads msgpackr's native string extractor (msgpackr-extract) into this thread: it roughly halves the
 * time to decode items full of strings. codec.ts uses msgpackr's pure-JS entry, whose loading costs
 * no addon search; msgpackr's main entry searches for the addon and hands it to the same unpack.js.
 * Threads that decode items call this (a node's workers, a root); a node's socket thread, which only
 * moves bytes, does not. Without the addon (another platform) decoding stays in JS, as msgpackr does.
 */
export async function loadNativeStrings(): Promise<void> {
  await import("msgpackr");
}
