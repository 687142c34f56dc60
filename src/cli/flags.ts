import { UsageError } from "../errors.ts";
import { closest } from "./suggest.ts";
import { type ValueKind, type ValueKinds, checkValue, expected } from "./values.ts";

/**
 * A command's flags, declared once: the parser refuses anything not declared (suggesting the closest
 * declared flag), a value flag without a value, a flag given twice, and a value its kind refuses. A
 * command adds a flag by adding a line to its `flags`; nothing else needs to know.
 */
export interface Flag {
  /** `boolean` for a switch (`--insecure`, `--no-insecure`); any other kind takes a value. */
  type: ValueKind | "boolean";
  description: string;
  /** Used when the flag is absent (checked like a given value). */
  default?: string | boolean;
  required?: boolean;
  /** An environment variable read when the flag is absent, before the default. */
  env?: string;
  /** The word shown for the value in `--help` (`--port=<port>`). */
  valueHint?: string;
}

export type Flags = Record<string, Flag>;

type ValueOf<F extends Flag> = F["type"] extends ValueKind ? ValueKinds[F["type"]] : boolean;

type AlwaysSet<F extends Flag> = F extends { default: string | boolean } | { required: true } ? true : false;

/** What `run` gets: each flag checked and converted; a flag that may be absent is an optional key. */
export type FlagValues<F extends Flags> = {
  -readonly [K in keyof F as AlwaysSet<F[K]> extends true ? K : never]: ValueOf<F[K]>;
} & {
  -readonly [K in keyof F as AlwaysSet<F[K]> extends true ? never : K]?: ValueOf<F[K]>;
};

/**
 * Parses a command's arguments (those after its name) against its declared flags. Accepts `--name value`,
 * `--name=value`, and for switches `--name`, `--name=true|false`, `--no-name`. Throws a `UsageError`.
 */
export function parseFlags<F extends Flags>(args: readonly string[], flags: F): FlagValues<F> {
  const given = new Map<string, string | boolean>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith("--") || arg === "--") {
      throw new UsageError(`unexpected argument "${arg}": every option is a --flag`);
    }
    const equals = arg.indexOf("=");
    let name = arg.slice(2, equals < 0 ? undefined : equals);
    let value: string | boolean | undefined = equals < 0 ? undefined : arg.slice(equals + 1);
    if (flags[name] === undefined && name.startsWith("no-") && flags[name.slice(3)]?.type === "boolean" && equals < 0) {
      name = name.slice(3);
      value = false;
    }
    const flag = flags[name];
    if (flag === undefined && flags[name.slice(3)] !== undefined && name.startsWith("no-")) {
      throw new UsageError(`--${name.slice(3)} takes a value, so there is no --${name}`);
    }
    if (flag === undefined) throw unknownFlag(name, flags);
    if (given.has(name)) throw new UsageError(`--${name} is given twice`);
    if (flag.type === "boolean") {
      if (value === undefined) value = true;
      else if (value === "true" || value === "false") value = value === "true";
      else if (typeof value === "string")
        throw new UsageError(`--${name} is a switch: give it alone, or =true or =false`);
    } else if (value === undefined) {
      // The next word is this flag's value unless it is another flag ("-5" is a value, and is refused by its kind).
      const next = args[i + 1];
      if (next !== undefined && !next.startsWith("--")) value = next;
      i += value === undefined ? 0 : 1;
    }
    if (value === undefined || value === "") throw new UsageError(`--${name} needs a value${hint(flag)}`);
    given.set(name, value);
  }

  const values: Record<string, unknown> = {};
  for (const [name, flag] of Object.entries(flags)) {
    const fromEnv = flag.env === undefined ? undefined : process.env[flag.env] || undefined;
    const raw = given.get(name) ?? fromEnv ?? flag.default;
    if (raw === undefined) {
      if (flag.required) throw new UsageError(`--${name} is required${hint(flag)}`);
      continue;
    }
    const label = given.has(name) || fromEnv === undefined ? `--${name}` : `$${flag.env}`;
    if (flag.type === "boolean") values[name] = typeof raw === "boolean" ? raw : raw === "true" || raw === "1";
    else values[name] = checkValue[flag.type](String(raw), label);
  }
  return values as FlagValues<F>;
}

function unknownFlag(name: string, flags: Flags): UsageError {
  const suggestion = closest(name, Object.keys(flags));
  return new UsageError(`unknown flag --${name}${suggestion === undefined ? "" : `; did you mean --${suggestion}?`}`);
}

function hint(flag: Flag): string {
  return flag.type === "boolean" ? "" : `: ${expected[flag.type]}`;
}
