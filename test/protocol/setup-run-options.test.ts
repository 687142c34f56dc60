import { expect, test } from "bun:test";
import { parseSetupArgs } from "../../src/protocol/pipeline.ts";

const args = (extra: object = {}, task: object = {}) => ({
  name: "p",
  version: "1",
  taskchain: [{ package: "tasks", export: "work", isGenerator: false, ...task }],
  packages: [],
  remotePackages: [],
  hash: "h",
  ...extra,
});

test("a node takes concurrency and retry as sent, and refuses them out of range, naming the field", () => {
  const parsed = parseSetupArgs(
    args({ concurrency: 50 }, { concurrency: 4, retry: { attempts: 3, backoffMs: 100, when: ["ECONNRESET"] } }),
  );
  expect(parsed.concurrency).toBe(50);
  expect(parsed.taskchain[0]!.concurrency).toBe(4);
  expect(parsed.taskchain[0]!.retry).toEqual({ attempts: 3, backoffMs: 100, when: ["ECONNRESET"] });

  expect(() => parseSetupArgs(args({ concurrency: 0 }))).toThrow(
    "setup option concurrency must be from 1 to 10000, got 0",
  );
  expect(() => parseSetupArgs(args({ concurrency: 1e9 }))).toThrow("setup option concurrency must be from 1 to 10000");
  expect(() => parseSetupArgs(args({}, { concurrency: 20_000 }))).toThrow(
    'task 1 ("tasks#work"): concurrency must be from 1 to 10000',
  );
  expect(() => parseSetupArgs(args({}, { retry: { attempts: 0, backoffMs: 1 } }))).toThrow(
    "retry.attempts must be at least 1",
  );
  expect(() => parseSetupArgs(args({}, { retry: { attempts: 2, backoffMs: -5 } }))).toThrow("retry.backoffMs must be");
  expect(() => parseSetupArgs(args({}, { retry: { attempts: 2, backoffMs: 1, when: [3] } }))).toThrow(/retry.*when/);
  expect(() => parseSetupArgs(args({}, { concurrency: -1 }))).toThrow(/concurrency/);
});
