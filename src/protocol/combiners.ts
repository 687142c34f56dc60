/**
 * Combiners: folding a pipeline's outputs where they are made. Each worker keeps a partial (an
 * instance of the combiner), folds its finished items' outputs into it (`add`), and ships it with the
 * Done of exactly the items it covers; the root merges the partials (`merge`) and gives `result()`.
 * This file has what both sides need: the built-in combiners and how a partial travels.
 */
import { decode, encode } from "./codec.ts";

/** What a combiner class must have (a user's, exported by a task package, or a built-in). */
export interface Combiner {
  add(output: unknown): void;
  merge(other: Combiner): void;
  result(): unknown;
}

export type CombinerClass = new (...args: unknown[]) => Combiner;

/**
 * Task time a worker's partial gathers finished items for before it ships with their Done. Every
 * partial shipped is decoded and merged on the root, at a cost of its distinct keys (word counts: most
 * of the vocabulary again in each), so partials must be few: one per item of a few ms cost the root
 * more than the workers' whole work. The items' Done waits as long, so the engine's queue of a worker
 * with a combiner covers this linger (COMBINER_QUEUE_MS) and the worker never runs dry waiting for it.
 */
export const PARTIAL_MS = 40;
/** Work queued per worker with a combiner: the partial's linger and then some for the engine's reply. */
export const COMBINER_QUEUE_MS = PARTIAL_MS * 2.5;

/** The built-in combiners, by the name `setup`'s `combine` takes. */
export const BUILT_IN_COMBINERS = ["sum-by-key", "count"] as const;
export type BuiltInCombiner = (typeof BUILT_IN_COMBINERS)[number];

/** `"sum-by-key"`: outputs `{ [key]: number }`, summed per key; the result is one such object. */
export class SumByKey implements Combiner {
  totals = new Map<string, number>();

  add(output: unknown): void {
    if (output === null || typeof output !== "object") {
      throw new TypeError(`sum-by-key takes outputs of the form { [key]: number }, got ${describe(output)}`);
    }
    const totals = this.totals;
    for (const key in output) {
      const value = (output as Record<string, unknown>)[key];
      if (typeof value !== "number") {
        throw new TypeError(`sum-by-key: the value of "${key}" is ${describe(value)}, not a number`);
      }
      totals.set(key, (totals.get(key) ?? 0) + value);
    }
  }

  merge(other: Combiner): void {
    const totals = this.totals;
    for (const [key, value] of (other as SumByKey).totals) totals.set(key, (totals.get(key) ?? 0) + value);
  }

  result(): Record<string, number> {
    return Object.fromEntries(this.totals);
  }
}

/** `"count"`: how many outputs there were. */
export class Count implements Combiner {
  count = 0;

  add(): void {
    this.count++;
  }

  merge(other: Combiner): void {
    this.count += (other as Count).count;
  }

  result(): number {
    return this.count;
  }
}

export function builtInCombiner(name: BuiltInCombiner): CombinerClass {
  return (name === "sum-by-key" ? SumByKey : Count) as CombinerClass;
}

/** Whether `value` has what a combiner needs; else what it lacks. */
export function combinerProblem(value: unknown): string | undefined {
  if (typeof value !== "function") return `it is a ${value === null ? "null" : typeof value}, not a class`;
  const missing = ["add", "merge", "result"].filter((method) => typeof value.prototype?.[method] !== "function");
  if (missing.length > 0) return `class "${value.name}" has no ${missing.map((m) => `${m}()`).join(", ")} method`;
  return undefined;
}

/**
 * A partial as bytes: how many outputs it folded, then its own fields (MessagePack keeps plain data; a
 * field that is a Map is carried as its entries, flat — key, value, key, value… — and comes back a Map).
 * A combiner's state must be such fields.
 */
export function encodePartial(partial: Combiner, folded: number): Uint8Array {
  const fields: unknown[] = [folded];
  for (const [key, value] of Object.entries(partial)) {
    if (value instanceof Map) fields.push(key, true, flatEntries(value));
    else fields.push(key, false, value);
  }
  return encode(fields);
}

/**
 * Merges a shipped partial into `total`; returns how many outputs it folded. A "sum-by-key" partial is
 * added key by key straight from its flat entries: a Map built from them only to be walked once would
 * double the root's cost per key.
 */
export function mergePartial(
  total: Combiner,
  type: CombinerClass,
  bytes: Uint8Array,
  start: number,
  end: number,
): number {
  const fields = decode(bytes, start, end) as unknown[];
  if (!(total instanceof SumByKey) || fields[1] !== "totals" || fields[2] !== true) {
    total.merge(fromFields(type, fields));
    return fields[0] as number;
  }
  const entries = fields[3] as unknown[];
  const totals = total.totals;
  for (let at = 0; at < entries.length; at += 2) {
    const key = entries[at] as string;
    totals.set(key, (totals.get(key) ?? 0) + (entries[at + 1] as number));
  }
  return fields[0] as number;
}

function flatEntries(map: Map<unknown, unknown>): unknown[] {
  const flat = new Array<unknown>(map.size * 2);
  let at = 0;
  for (const [key, value] of map) {
    flat[at++] = key;
    flat[at++] = value;
  }
  return flat;
}

/** A partial from its fields: an instance of `type` (built without its constructor) with them. */
function fromFields(type: CombinerClass, fields: unknown[]): Combiner {
  const partial = Object.create(type.prototype) as Record<string, unknown>;
  for (let at = 1; at + 2 < fields.length; at += 3) {
    const value = fields[at + 2];
    if (fields[at + 1] !== true) partial[fields[at] as string] = value;
    else {
      const entries = value as unknown[];
      const map = new Map<unknown, unknown>();
      for (let entry = 0; entry < entries.length; entry += 2) map.set(entries[entry], entries[entry + 1]);
      partial[fields[at] as string] = map;
    }
  }
  return partial as unknown as Combiner;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `${typeof value} ${String(value).slice(0, 40)}`;
}
