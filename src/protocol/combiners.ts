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
 * A partial as bytes: its own fields (MessagePack keeps plain data; a field that is a Map is carried
 * as its entries and comes back a Map). A combiner's state must be such fields.
 */
export function encodePartial(partial: Combiner): Uint8Array {
  const fields: unknown[] = [];
  for (const [key, value] of Object.entries(partial)) {
    if (value instanceof Map) fields.push(key, true, [...value]);
    else fields.push(key, false, value);
  }
  return encode(fields);
}

/** A partial from its bytes: an instance of `type` (built without its constructor) with those fields. */
export function decodePartial(type: CombinerClass, bytes: Uint8Array, start = 0, end = bytes.length): Combiner {
  const fields = decode(bytes, start, end) as unknown[];
  const partial = Object.create(type.prototype) as Record<string, unknown>;
  for (let at = 0; at + 2 < fields.length; at += 3) {
    const value = fields[at + 2];
    partial[fields[at] as string] = fields[at + 1] === true ? new Map(value as Array<[unknown, unknown]>) : value;
  }
  return partial as unknown as Combiner;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `${typeof value} ${String(value).slice(0, 40)}`;
}
