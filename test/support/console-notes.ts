import { diagnostics } from "../../src/diagnostics.ts";

/**
 * What pcluster said on this process's console (diagnostics: notes, warnings, errors) while `body` ran.
 * Tests print warnings alone; notes are taken here too.
 */
export async function consoleNotes(body: () => Promise<void>): Promise<string> {
  const lines: string[] = [];
  const reporter = { log: (entry: { args: unknown[] }) => void lines.push(entry.args.join(" ")) };
  const console = diagnostics();
  const level = console.level;
  console.level = 3;
  console.addReporter(reporter);
  try {
    await body();
  } finally {
    console.removeReporter(reporter);
    console.level = level;
  }
  return lines.join("\n");
}
