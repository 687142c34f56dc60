import { afterEach, describe, expect, test } from "bun:test";
import { UsageError } from "../../src/errors.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import { checkValue } from "../../src/cli/values.ts";

/** The flag parser and the value checks, without processes. */

const flags = {
  host: { type: "host", description: "", default: "127.0.0.1" },
  port: { type: "port", description: "", default: "6000" },
  workers: { type: "count", description: "" },
  insecure: { type: "boolean", description: "", default: false },
  token: { type: "string", description: "", env: "PCLUSTER_FLAGS_TEST_TOKEN" },
  "memory-limit": { type: "megabytes", description: "" },
  nodes: { type: "nodes", description: "" },
} as const;

afterEach(() => {
  delete process.env.PCLUSTER_FLAGS_TEST_TOKEN;
});

function refusal(args: string[]): string {
  try {
    parseFlags(args, flags);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as Error).message;
  }
  throw new Error(`${args.join(" ")} was accepted`);
}

describe("parseFlags", () => {
  test("defaults are checked and converted like given values; absent flags without one are undefined", () => {
    expect(parseFlags([], flags)).toEqual({ host: "127.0.0.1", port: 6000, insecure: false });
  });

  test("--name value, --name=value, switches and --no-switch", () => {
    const values = parseFlags(
      ["--port=0", "--workers", "3", "--insecure", "--memory-limit", "2", "--nodes", "a:1, [::1]:2", "--host", "[::1]"],
      flags,
    );
    expect(values).toEqual({
      host: "::1",
      port: 0,
      workers: 3,
      insecure: true,
      "memory-limit": 2 * 1024 * 1024,
      nodes: ["a:1", "[::1]:2"],
    });
    expect(parseFlags(["--no-insecure"], flags).insecure).toBe(false);
    expect(parseFlags(["--insecure=false"], flags).insecure).toBe(false);
  });

  test("an environment variable stands in for an absent flag, and the flag wins over it", () => {
    process.env.PCLUSTER_FLAGS_TEST_TOKEN = "from-env";
    expect(parseFlags([], flags).token).toBe("from-env");
    expect(parseFlags(["--token", "given"], flags).token).toBe("given");
    process.env.PCLUSTER_FLAGS_TEST_TOKEN = "";
    expect(parseFlags([], flags).token).toBeUndefined();
  });

  test("mistakes are refused, each naming the flag", () => {
    expect(refusal(["--prot", "1"])).toBe("unknown flag --prot; did you mean --port?");
    expect(refusal(["--no-port"])).toBe("--port takes a value, so there is no --no-port");
    expect(refusal(["--port"])).toBe("--port needs a value: a port from 0 to 65535");
    expect(refusal(["--port", "--insecure"])).toBe("--port needs a value: a port from 0 to 65535");
    expect(refusal(["--workers", "-2"])).toBe('--workers must be a whole number of at least 1, got "-2"');
    expect(refusal(["--port", "1", "--port=2"])).toBe("--port is given twice");
    expect(refusal(["port"])).toBe('unexpected argument "port": every option is a --flag');
    expect(refusal(["--"])).toBe('unexpected argument "--": every option is a --flag');
  });
});

describe("checkValue", () => {
  test("ports are whole numbers from 0 to 65535", () => {
    expect(checkValue.port("0", "--port")).toBe(0);
    expect(checkValue.port("65535", "--port")).toBe(65535);
    for (const bad of ["65536", "-1", "1e3", "0x10", " 80", "6000a"]) {
      expect(() => checkValue.port(bad, "--port")).toThrow(`--port must be a port from 0 to 65535, got "${bad}"`);
    }
  });

  test("hosts are IP addresses or host names", () => {
    for (const good of ["127.0.0.1", "0.0.0.0", "::", "fe80::1", "localhost", "pcluster-log", "node-1.example.org"]) {
      expect(checkValue.host(good, "--host")).toBe(good);
    }
    for (const bad of ["", "a b", "-lead", "trail-", "x".repeat(64), "under/score", "256.1.1.1.1:"]) {
      expect(() => checkValue.host(bad, "--host")).toThrow("--host must be an IP address or a host name");
    }
  });

  test("files must exist and be files", () => {
    expect(checkValue.file(import.meta.path, "--tls-cert")).toBe(import.meta.path);
    expect(() => checkValue.file("/nope.pem", "--tls-cert")).toThrow("--tls-cert: no such file /nope.pem");
    expect(() => checkValue.file(import.meta.dir, "--tls-cert")).toThrow(
      `--tls-cert: ${import.meta.dir} is not a file`,
    );
  });
});
