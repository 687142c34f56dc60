/**
 * How large an item may be, apart from how large a frame may be. A frame is bounded by the receiver's
 * frame limit (`--max-frame`), which guards the memory one frame costs; an item or output of any size
 * up to `maxItemBytes` travels as a message split into parts (see parts.ts), joined by the receiver.
 */

/**
 * Default result window: result bytes a node may send ahead of the root handling them (setup's
 * `resultWindow`). The root gives it back in credit messages of a quarter of it or more.
 */
export const DEFAULT_RESULT_WINDOW_BYTES = 8 * 1024 * 1024;

/** Default largest item or output, encoded (`maxItemBytes`, `--max-item`): 1 GiB. */
export const DEFAULT_MAX_ITEM_BYTES = 1024 ** 3;

/**
 * The most `maxItemBytes` may be set to: a record's length and a message's `blob` are u32, and a
 * message holds a batch's other records and its envelope beside the item.
 */
export const MAX_ITEM_BYTES_CEILING = 3 * 1024 ** 3;

/**
 * What a message may hold beyond one item: a batch's other records (feed batches stop at 1 MiB by
 * default, result batches at 256 KiB, then take one more record) and the envelope.
 */
export const BATCH_OVERHEAD_BYTES = 16 * 1024 * 1024;

/** The largest joined message a peer that accepts items of `maxItemBytes` must take. */
export function messageLimitFor(maxItemBytes: number): number {
  return maxItemBytes + BATCH_OVERHEAD_BYTES;
}

/** Checks a `maxItemBytes` option (`what` names it in the error, thrown as a `Failure`); returns it. */
export function checkMaxItemBytes(
  value: unknown,
  what: string,
  Failure: new (message: string) => Error = RangeError,
): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > MAX_ITEM_BYTES_CEILING) {
    throw new Failure(
      `${what} must be a whole number of bytes from 1 to ${MAX_ITEM_BYTES_CEILING} (3 GiB), got ${String(value)}`,
    );
  }
  return value;
}
