import { statSync } from "node:fs";
import { UsageError } from "../errors.ts";
import { dottedIPv4FirstOctet, ipaddrLibrary, parseAddress } from "../protocol/address.ts";

/**
 * Every kind of value a flag can take, and the one check each kind gets. A flag declares its kind
 * (`{ type: "port" }`) and arrives in a command's `run` already checked and converted: a command never
 * parses a flag's text itself, so every command refuses a bad value with the same words.
 */
export interface ValueKinds {
  /** Any text but the empty one. */
  string: string;
  /** A TCP port to listen on or connect to: 0 to 65535 (0: any free port, where listening). */
  port: number;
  /** An IPv4 or IPv6 address (brackets allowed) or a DNS name. */
  host: string;
  /** A whole number of at least 1 (workers, items). */
  count: number;
  /** A whole number of at least 0 (bytes). */
  integer: number;
  /** A whole number of MB, at least 1, given to `run` in bytes. */
  megabytes: number;
  /** A path to a file that exists. */
  file: string;
  /** One or more node addresses, "host:port,host:port". */
  nodes: string[];
}

export type ValueKind = keyof ValueKinds;

/** What each kind expects, in a user's words (for "--port needs a value: …"). */
export const expected: { [K in ValueKind]: string } = {
  string: "some text",
  port: "a port from 0 to 65535",
  host: "an IP address or a host name",
  count: "a whole number of at least 1",
  integer: "a non-negative integer",
  megabytes: "a whole number of MB",
  file: "the path of a file",
  nodes: "host:port[,host:port…]",
};

const HOSTNAME =
  /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*\.?$/i;

function wholeNumber(text: string): number | undefined {
  return /^\d+$/.test(text) ? Number(text) : undefined;
}

/** Checks and converts one flag's text; throws a `UsageError` naming the flag and the value. */
export const checkValue: { [K in ValueKind]: (text: string, flag: string) => ValueKinds[K] } = {
  string: (text) => text,
  port(text, flag) {
    const port = wholeNumber(text);
    if (port === undefined || port > 65535)
      throw new UsageError(`${flag} must be a port from 0 to 65535, got "${text}"`);
    return port;
  },
  host(text, flag) {
    const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
    const valid = dottedIPv4FirstOctet(bare) !== undefined || HOSTNAME.test(bare) || ipaddrLibrary().isValid(bare);
    if (!valid) {
      throw new UsageError(`${flag} must be an IP address or a host name, got "${text}"`);
    }
    return bare;
  },
  count(text, flag) {
    const count = wholeNumber(text);
    if (count === undefined || count < 1)
      throw new UsageError(`${flag} must be a whole number of at least 1, got "${text}"`);
    return count;
  },
  integer(text, flag) {
    const value = wholeNumber(text);
    if (value === undefined || !Number.isSafeInteger(value)) {
      throw new UsageError(`${flag} must be a non-negative integer, got "${text}"`);
    }
    return value;
  },
  megabytes(text, flag) {
    const mb = wholeNumber(text);
    if (mb === undefined || mb < 1)
      throw new UsageError(`${flag} must be a positive whole number of MB, got "${text}"`);
    return mb * 1024 * 1024;
  },
  file(text, flag) {
    let isFile = false;
    try {
      isFile = statSync(text).isFile();
    } catch {
      throw new UsageError(`${flag}: no such file ${text}`);
    }
    if (!isFile) throw new UsageError(`${flag}: ${text} is not a file`);
    return text;
  },
  nodes(text, flag) {
    const nodes = text
      .split(",")
      .map((node) => node.trim())
      .filter(Boolean);
    if (nodes.length === 0) throw new UsageError(`${flag} names no node; give host:port[,host:port…]`);
    for (const node of nodes) {
      try {
        parseAddress(node);
      } catch {
        throw new UsageError(`${flag}: "${node}" is not host:port (e.g. 127.0.0.1:6000 or [::1]:6000)`);
      }
    }
    return nodes;
  },
};
