import type { ArgsDef, CommandDef } from "citty";
import { colourWanted } from "../diagnostics.ts";
import { PclusterError, UsageError } from "../errors.ts";
import { type FlagValues, type Flags, parseFlags } from "./flags.ts";
import { closest } from "./suggest.ts";

/** One `pcluster <name>` command: its flags, declared, and what it does with their checked values. */
export interface Command<F extends Flags = Flags> {
  description: string;
  flags: F;
  /** Flags that make sense only together (`--tls-cert` and `--tls-key`): both or neither. */
  together?: ReadonlyArray<readonly [keyof F & string, keyof F & string]>;
  run(values: FlagValues<F>): Promise<void> | void;
}

/** Declares a command (the identity, for the flags' types to flow into `run`). */
export function command<const F extends Flags>(definition: Command<F>): Command<F> {
  return definition;
}

export interface Program {
  name: string;
  version: string;
  description: string;
  // biome-ignore lint/suspicious/noExplicitAny: each command has its own flags
  commands: Record<string, Command<any>>;
}

/**
 * Runs the command `argv` names. A user's mistake (`UsageError`) is one line on stderr and exit code 2;
 * a refusal at run time (`PclusterError`: a port in use, an exposed address without a token) is one
 * line and exit code 1; anything else is a bug and keeps its stack trace.
 */
export async function runProgram(program: Program, argv: readonly string[]): Promise<void> {
  const [name, ...args] = argv;
  try {
    if (name === undefined || name === "--help" || name === "-h") return printUsage(program);
    if (name === "--version" || name === "-v") return console.log(program.version);
    if (args.includes("--help") || args.includes("-h")) {
      commandNamed(program, name);
      return printUsage(program, name);
    }
    const { command, values } = parseInvocation(program, argv);
    await command.run(values);
  } catch (error) {
    if (!(error instanceof PclusterError)) throw error;
    const where = name !== undefined && program.commands[name] ? `${program.name} ${name}` : program.name;
    const hint = error instanceof UsageError ? ` (see ${where} --help)` : "";
    console.error(`${where}: ${error.message}${hint}`);
    process.exit(error instanceof UsageError ? 2 : 1);
  }
}

/**
 * The command `argv` names and its checked flags, without running it; a `UsageError` for any mistake.
 * Also what the deploy files' tests use to prove their command lines are ones `pcluster` accepts.
 */
export function parseInvocation(
  program: Program,
  argv: readonly string[],
): { command: Command; values: FlagValues<Flags> } {
  const [name, ...args] = argv;
  if (name === undefined) throw new UsageError(`name a command: ${Object.keys(program.commands).join(", ")}`);
  const command = commandNamed(program, name);
  const values = parseFlags(args, command.flags);
  for (const [a, b] of command.together ?? []) {
    if ((values[a] === undefined) !== (values[b] === undefined)) throw new UsageError(`--${a} and --${b} go together`);
  }
  return { command, values };
}

function commandNamed(program: Program, name: string): Command {
  const command = program.commands[name];
  if (command !== undefined) return command;
  const suggestion = closest(name, Object.keys(program.commands));
  const known = Object.keys(program.commands).join(", ");
  throw new UsageError(
    `unknown command "${name}"${suggestion ? `; did you mean ${suggestion}?` : ` (commands: ${known})`}`,
  );
}

/** Whether help written to `stream` has colour: pcluster's one rule (`colourWanted`). */
export function colorsWanted(stream: { isTTY?: boolean } = process.stdout): boolean {
  return colourWanted(stream.isTTY === true);
}

async function printUsage(program: Program, name?: string): Promise<void> {
  const root: CommandDef = {
    meta: { name: program.name, version: program.version, description: program.description },
    subCommands: Object.fromEntries(
      Object.entries(program.commands).map(([key, command]) => [
        key,
        { meta: { name: key, description: command.description } },
      ]),
    ),
  };
  const command = name === undefined ? undefined : program.commands[name];
  // citty only draws help: a server started by a script (16 local nodes at once) does not load it.
  const { renderUsage } = await import("citty");
  const text =
    command === undefined
      ? await renderUsage(root)
      : await renderUsage({ meta: { name, description: command.description }, args: usageArgs(command.flags) }, root);
  // citty decides on colours by NO_COLOR=1 and CI alone; a pipe gets none either. It pads columns
  // to widths that count its colour codes: trailing blanks go.
  console.log((colorsWanted() ? text : Bun.stripANSI(text)).replace(/[ \t]+$/gm, ""));
}

function usageArgs(flags: Flags): ArgsDef {
  return Object.fromEntries(
    Object.entries(flags).map(([key, flag]) => [
      key,
      flag.type === "boolean"
        ? { type: "boolean", description: flag.description, default: flag.default as boolean | undefined }
        : {
            type: "string",
            description: flag.env ? `${flag.description} (default: $${flag.env})` : flag.description,
            default: flag.default as string | undefined,
            required: flag.required,
            valueHint: flag.valueHint ?? flag.type,
          },
    ]),
  );
}
