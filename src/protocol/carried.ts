/**
 * What an item may be (the README's table): the values the item codec carries as themselves, and the
 * walk that finds the first value it cannot, with the path to it.
 *
 * Carried: strings, numbers, booleans, null, undefined, bigints, plain objects (prototype
 * Object.prototype or null) and arrays of carried values, Sets of them, Dates, RegExps, Buffers,
 * ArrayBuffers, DataViews and the typed arrays msgpackr knows. Everything else is refused: functions,
 * symbols, circular references, Maps (they would arrive as objects), class instances (they would
 * arrive without their class), the key "__proto__" (msgpackr renames it), Errors, and other built-ins.
 *
 * The small-item writer (small-msgpack.ts) accepts only a subset of this and declines everything else,
 * so the walk runs only on what it declined, before msgpackr encodes it: a small plain item is looked
 * at once.
 */

/** Prototypes of the built-in classes msgpackr (`moreTypes`) writes and reads back as the same class. */
const CARRIED_CLASSES = new Set<object>([
  Date.prototype,
  RegExp.prototype,
  ArrayBuffer.prototype,
  DataView.prototype,
  Buffer.prototype,
  Int8Array.prototype,
  Uint8Array.prototype,
  Uint8ClampedArray.prototype,
  Int16Array.prototype,
  Uint16Array.prototype,
  Int32Array.prototype,
  Uint32Array.prototype,
  Float32Array.prototype,
  Float64Array.prototype,
  BigInt64Array.prototype,
  BigUint64Array.prototype,
]);

/** Where a value that cannot be carried is (`items[3].meta.cb`), and why (`a function cannot be sent`). */
export interface Uncarried {
  path: string;
  reason: string;
}

/** One step of a path: an object's key, an array's index, or the n-th member of a Set. */
type Step = string | number | SetMember;
class SetMember {
  constructor(readonly index: number) {}
}

// The walk's stacks: the objects it is inside of (to find a cycle) and the steps to where it is. They
// are left as they are when it finds something, so that they spell the path; emptied after each walk.
const ancestors: object[] = [];
const steps: Step[] = [];
let walkRoot = "";

/**
 * The first value in `value` that cannot be carried as itself, or undefined when all can. `root` names
 * the value in the path: `items[3]` (a number n stands for `items[n]`), `outputs[0]`.
 */
export function findUncarried(value: unknown, root: string | number): Uncarried | undefined {
  walkRoot = typeof root === "number" ? `items[${root}]` : root;
  try {
    const reason = check(value);
    return reason === undefined ? undefined : { path: pathOf(steps.length), reason };
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    return { path: walkRoot, reason: "it is nested too deeply to be sent (the stack ran out)" };
  } finally {
    ancestors.length = 0; // let the caller's objects go
    steps.length = 0;
  }
}

/** Why `value` cannot be carried, or undefined. */
function check(value: unknown): string | undefined {
  switch (typeof value) {
    case "object":
      break;
    case "function":
      return "a function cannot be sent";
    case "symbol":
      return "a symbol cannot be sent";
    default:
      return undefined; // string, number, boolean, undefined, bigint
  }
  if (value === null) return undefined;
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) {
    return enter(value) ?? checkEntries(value as Record<string, unknown>);
  }
  if (proto === Array.prototype && Array.isArray(value)) return enter(value) ?? checkArray(value);
  if (proto === Set.prototype) return enter(value) ?? checkSet(value as Set<unknown>);
  if (CARRIED_CLASSES.has(proto as object)) return undefined;
  return refusal(value, proto);
}

/** Steps inside `container`; a reason if it is one of the objects the walk is already inside of. */
function enter(container: object): string | undefined {
  const at = ancestors.indexOf(container);
  if (at >= 0) return `a circular reference (back to ${pathOf(at)}) cannot be sent`;
  ancestors.push(container);
  return undefined;
}

function checkEntries(object: Record<string, unknown>): string | undefined {
  const keys = Object.keys(object); // what the writers write: own enumerable string keys
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    steps.push(key);
    if (key === "__proto__") return 'a key named "__proto__" cannot be sent (MessagePack readers rename or drop it)';
    const reason = check(object[key]);
    if (reason !== undefined) return reason;
    steps.pop();
  }
  ancestors.pop();
  return undefined;
}

function checkArray(array: readonly unknown[]): string | undefined {
  for (let i = 0; i < array.length; i++) {
    steps.push(i);
    const reason = check(array[i]);
    if (reason !== undefined) return reason;
    steps.pop();
  }
  ancestors.pop();
  return undefined;
}

function checkSet(set: Set<unknown>): string | undefined {
  let i = 0;
  for (const member of set) {
    steps.push(new SetMember(i++));
    const reason = check(member);
    if (reason !== undefined) return reason;
    steps.pop();
  }
  ancestors.pop();
  return undefined;
}

/** Why an object of a class not carried is refused, with what to send instead. */
function refusal(value: object, proto: unknown): string {
  if (proto === Map.prototype) {
    return "a Map cannot be sent (it would arrive as an object); send Object.fromEntries(map) or [...map]";
  }
  const own = Object.hasOwn(proto as object, "constructor");
  const maker = own ? (proto as { constructor: unknown }).constructor : undefined;
  if (typeof maker !== "function") {
    return "an object with a prototype of its own cannot be sent (what it inherits would be lost); send a plain object";
  }
  const name = maker.name || "(anonymous class)";
  const a = /^[aeiou]/i.test(name) ? "an" : "a";
  if (value instanceof Error) {
    return `${a} ${name} cannot be sent; send its fields as a plain object, e.g. { name, message }`;
  }
  if (Function.prototype.toString.call(maker).includes("[native code]")) return `${a} ${name} cannot be sent`;
  return (
    `${a} ${name} (an instance of a class) cannot be sent: ` +
    "it would arrive as a plain object, without its class; send a plain object"
  );
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** The path of the first `count` steps, from the walk's root, written as JavaScript would reach it. */
function pathOf(count: number): string {
  let path = walkRoot;
  for (let i = 0; i < count; i++) {
    const step = steps[i]!;
    if (typeof step === "number") path += `[${step}]`;
    else if (typeof step === "string") {
      path += IDENTIFIER.test(step) && step !== "__proto__" ? `.${step}` : `[${JSON.stringify(step)}]`;
    } else path = `[...${path}][${step.index}]`;
  }
  return path;
}
