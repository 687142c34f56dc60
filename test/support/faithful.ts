/**
 * Whether a value arrived as itself: a deep comparison stricter than `toStrictEqual` (which takes a
 * Buffer for a Uint8Array, ignores a DataView's bytes and a null prototype, and finds two invalid Dates
 * different). Classes must match exactly, numbers by `Object.is` (a bigint is not a number), binary
 * values byte for byte, Sets member by member in order, objects key by key in order.
 *
 * What the codec documents as changed on the way is the expectation's job (`arrival`), not this one's.
 */
export function difference(actual: unknown, expected: unknown, path = "value"): string | undefined {
  if (typeof expected !== "object" || expected === null) {
    return Object.is(actual, expected) ? undefined : `${path}: ${show(actual)} instead of ${show(expected)}`;
  }
  if (typeof actual !== "object" || actual === null) return `${path}: ${show(actual)} instead of ${show(expected)}`;
  if (Object.getPrototypeOf(actual) !== Object.getPrototypeOf(expected)) {
    return `${path}: ${className(actual)} instead of ${className(expected)}`;
  }
  if (expected instanceof Date) {
    const same = Object.is((actual as Date).getTime(), expected.getTime());
    return same ? undefined : `${path}: ${show(actual)} instead of ${show(expected)}`;
  }
  if (expected instanceof RegExp) {
    const regexp = actual as RegExp;
    const same = regexp.source === expected.source && regexp.flags === expected.flags;
    return same ? undefined : `${path}: ${regexp} instead of ${expected}`;
  }
  if (expected instanceof ArrayBuffer || ArrayBuffer.isView(expected)) {
    const want = bytesOf(expected);
    const got = bytesOf(actual as ArrayBuffer | ArrayBufferView);
    if (got.length !== want.length) return `${path}: ${got.length} bytes instead of ${want.length}`;
    for (let i = 0; i < want.length; i++) {
      if (got[i] !== want[i]) return `${path}: byte ${i} is ${got[i]} instead of ${want[i]}`;
    }
    return undefined;
  }
  if (expected instanceof Set) {
    const got = [...(actual as Set<unknown>)];
    const want = [...expected];
    if (got.length !== want.length) return `${path}: ${got.length} members instead of ${want.length}`;
    for (let i = 0; i < want.length; i++) {
      const found = difference(got[i], want[i], `[...${path}][${i}]`);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  if (Array.isArray(expected)) {
    const got = actual as unknown[];
    if (got.length !== expected.length) return `${path}: length ${got.length} instead of ${expected.length}`;
    for (let i = 0; i < expected.length; i++) {
      const what = (array: unknown[]) => (i in array ? "a value" : "a hole");
      if (i in got !== i in expected) return `${path}[${i}]: ${what(got)} instead of ${what(expected)}`;
      const found = difference(got[i], expected[i], `${path}[${i}]`);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  const gotKeys = Object.keys(actual);
  const wantKeys = Object.keys(expected);
  if (gotKeys.join("\0") !== wantKeys.join("\0")) return `${path}: keys ${show(gotKeys)} instead of ${show(wantKeys)}`;
  for (const key of wantKeys) {
    const entry = (object: unknown) => (object as Record<string, unknown>)[key];
    const found = difference(entry(actual), entry(expected), `${path}.${key}`);
    if (found !== undefined) return found;
  }
  return undefined;
}

function bytesOf(value: ArrayBuffer | ArrayBufferView): Uint8Array {
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

function className(value: object): string {
  const proto = Object.getPrototypeOf(value);
  return proto === null ? "a null-prototype object" : `a ${proto.constructor?.name ?? "?"}`;
}

function show(value: unknown): string {
  return typeof value === "bigint" ? `${value}n` : Bun.inspect(value).slice(0, 80);
}

/**
 * The value as it must arrive: itself, but for what the README says changes on the way — -0 is 0, a
 * hole in an array is undefined, a null-prototype object is a plain one, a lone surrogate is U+FFFD.
 */
export function arrival(value: unknown): unknown {
  if (Object.is(value, -0)) return 0;
  if (typeof value === "string") return value.toWellFormed();
  if (typeof value !== "object" || value === null) return value;
  const proto = Object.getPrototypeOf(value);
  if (Array.isArray(value)) return Array.from(value, arrival);
  if (value instanceof Set) return new Set([...value].map(arrival));
  if (proto === null || proto === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([key, entry]) => [key, arrival(entry)]));
  }
  return value;
}
