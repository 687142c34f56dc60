import { afterAll, expect, test } from "bun:test";
import { killAll, spawnBun } from "./support/processes.ts";

/**
 * What pcluster prints on a console (a node's setups, a root's lost node, a log server's refusals), run in
 * a fresh process whose stdout and stderr are pipes, as a node's are under systemd or `Root.local`.
 */
const PRINT_ALL = `
  const { diagnostics } = await import("./src/diagnostics.ts");
  const say = diagnostics();
  say.info("[node] set up \\"squares\\" 1.0 (2 workers)");
  say.success("done");
  say.warn("[root] node 127.0.0.1:1 lost");
  say.error("pcluster: connection handler failed:", new Error("outer", { cause: new Error("inner") }));
`;

async function run(script: string, env: Record<string, string | undefined>) {
  const proc = spawnBun(["-e", script], { env: { NO_COLOR: undefined, FORCE_COLOR: undefined, ...env } });
  const code = await proc.waitExit(20_000);
  await proc.drained;
  return { code, stdout: proc.stdout, stderr: proc.stderr };
}

afterAll(() => killAll());

test("info and success on stdout, warnings and errors with their stack and cause on stderr, uncoloured in a pipe", async () => {
  const { code, stdout, stderr } = await run(PRINT_ALL, { CONSOLA_LEVEL: "3" });
  expect(code).toBe(0);
  expect(stdout).toBe('ℹ [node] set up "squares" 1.0 (2 workers)\n✔ done\n');
  expect(stderr).toStartWith(
    "\n WARN  [root] node 127.0.0.1:1 lost\n\n\n ERROR  pcluster: connection handler failed: outer\n",
  );
  expect(stderr).toMatch(/\n {2}at .*\[eval\]/); // the error's own frames, indented
  expect(stderr).toMatch(/\n\n {2}\[cause\]: inner\n {4}at /);
  expect(stderr).not.toContain("\u001b[");
});

test("the level: warnings and errors alone under tests, everything up to info when deployed, none at -999", async () => {
  const underTest = await run(PRINT_ALL, { CONSOLA_LEVEL: undefined, NODE_ENV: "test" });
  expect(underTest.stdout).toBe("");
  expect(underTest.stderr).toContain(" WARN  [root] node 127.0.0.1:1 lost");
  const deployed = await run(PRINT_ALL, { CONSOLA_LEVEL: undefined, NODE_ENV: "production" });
  expect(deployed.stdout).toContain("ℹ [node] set up");
  const silent = await run(PRINT_ALL, { CONSOLA_LEVEL: "-999" });
  expect(silent.stdout + silent.stderr).toBe("");
});

test("FORCE_COLOR paints the marks; NO_COLOR wins over it", async () => {
  const coloured = await run(PRINT_ALL, { CONSOLA_LEVEL: "3", FORCE_COLOR: "1" });
  expect(coloured.stdout).toStartWith("\u001b[36mℹ\u001b[0m [node] set up");
  expect(coloured.stderr).toContain("\u001b[43;30m WARN \u001b[0m [root] node 127.0.0.1:1 lost");
  const plain = await run(PRINT_ALL, { CONSOLA_LEVEL: "3", FORCE_COLOR: "1", NO_COLOR: "1" });
  expect(plain.stdout + plain.stderr).not.toContain("\u001b[");
  // FORCE_COLOR overrides TERM=dumb; an empty NO_COLOR is no request (no-color.org).
  const dumb = await run(PRINT_ALL, { CONSOLA_LEVEL: "3", FORCE_COLOR: "1", TERM: "dumb", NO_COLOR: "" });
  expect(dumb.stdout).toStartWith("\u001b[36mℹ\u001b[0m [node] set up");
});

test("FORCE_COLOR=0 or false means no colour, as Node and chalk read it", async () => {
  for (const force of ["0", "false"]) {
    const { stdout, stderr } = await run(PRINT_ALL, { CONSOLA_LEVEL: "3", FORCE_COLOR: force });
    expect(stdout).toBe('ℹ [node] set up "squares" 1.0 (2 workers)\n✔ done\n');
    expect(stderr).not.toContain("\u001b[");
  }
});

test("a closed stdout drops the line instead of taking the process down", async () => {
  const { code, stderr } = await run(
    `
    const { closeSync } = await import("node:fs");
    closeSync(1);
    const { diagnostics } = await import("./src/diagnostics.ts");
    diagnostics().info("nowhere to go");
    diagnostics().warn("still here");
    `,
    { CONSOLA_LEVEL: "3" },
  );
  expect(stderr).toContain(" WARN  still here");
  expect(code).toBe(0);
});
