import { expect, test } from "bun:test";
import { AuthError } from "../../src/errors.ts";
import { assertSafeListen, isLoopback } from "../../src/protocol/safe-listen.ts";

// The rule nodes and log servers share (src/protocol/safe-listen.ts); its CLI use is in log-server.test.ts.
test("loopback addresses are 127.0.0.0/8, ::1 (also IPv4-mapped) and localhost; nothing else", () => {
  for (const host of ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1", "localhost", "LocalHost"]) {
    expect(isLoopback(host)).toBe(true);
  }
  for (const host of ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "::ffff:10.0.0.1", "example.com", ""]) {
    expect(isLoopback(host)).toBe(false);
  }
});

test("listening beyond loopback needs a token or --insecure, and the refusal says what to do", () => {
  expect(() => assertSafeListen("127.0.0.1", false, false, "node")).not.toThrow();
  expect(() => assertSafeListen("0.0.0.0", true, false, "node")).not.toThrow();
  expect(() => assertSafeListen("0.0.0.0", false, true, "log")).not.toThrow();
  expect(() => assertSafeListen("0.0.0.0", false, false, "node")).toThrow(AuthError);
  expect(() => assertSafeListen("10.1.2.3", false, false, "node")).toThrow(
    /a node installs and runs the code it is sent/,
  );
  expect(() => assertSafeListen("::", false, false, "log")).toThrow(/--token \(or set PCLUSTER_TOKEN\).*--insecure/);
});
