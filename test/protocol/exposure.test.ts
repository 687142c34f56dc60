import { expect, test } from "bun:test";
import { AuthError } from "../../src/errors.ts";
import ipaddr from "ipaddr.js";
import { dottedIPv4FirstOctet } from "../../src/protocol/address.ts";
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

test("the dotted-quad shortcut (no ipaddr.js at start-up) agrees with ipaddr.js, and leaves other forms to it", () => {
  const plain = ["127.0.0.1", "0.0.0.0", "255.255.255.255", "10.20.30.40", "127.255.0.9", "1.2.3.4", "199.249.0.100"];
  for (const host of plain) {
    expect(dottedIPv4FirstOctet(host)).toBe(ipaddr.parse(host).toByteArray()[0]!);
    expect(isLoopback(host)).toBe(ipaddr.parse(host).range() === "loopback");
  }
  // Leading zeros, short and hex forms, out-of-range octets, IPv6, names: not dotted quads; ipaddr.js decides.
  for (const host of ["0127.0.0.1", "127.1", "0x7f.0.0.1", "256.1.1.1", "1.2.3", "1.2.3.4.5", "::1", "localhost", ""]) {
    expect(dottedIPv4FirstOctet(host)).toBeUndefined();
  }
  expect(isLoopback("0x7f.0.0.1")).toBe(ipaddr.process("0x7f.0.0.1").range() === "loopback");
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
