import { hostname } from "node:os";
import {
  AuthError,
  ListenError,
  PclusterError,
  ProtocolError,
  TimeoutError,
  VersionMismatchError,
  errorFromWire,
} from "../errors.ts";
import { VERSION } from "../version.ts";
import { formatAddress } from "./address.ts";
import { Admission, type AdmissionLimits } from "./admission.ts";
import {
  type ClientTls,
  type Connection,
  type ConnectionOptions,
  type ServerTls,
  connect,
  listen,
} from "./connection.ts";
import { DEFAULT_MAX_HANDSHAKE_FRAME_BYTES } from "./frame.ts";
import { type HelloMessage, type Message, PROTOCOL_VERSION } from "./messages.ts";

/**
 * The handshake every connection starts with:
 *
 *   server → hello   { protocol, service, version, auth, nonce: 32 random bytes }
 *   client → auth    { protocol, nonce: 32 random bytes, mac: HMAC-SHA256(token, "client" ‖ server nonce) }
 *   server → welcome { mac: HMAC-SHA256(token, "server" ‖ client nonce) }   or   err, then close
 *
 * The token itself never crosses the wire. Both sides prove they know it, so a root does not ship
 * code to an impostor node. Version mismatches are refused by both sides with a clear message.
 */
const HANDSHAKE_TIMEOUT_MS = 10_000;
const NONCE_BYTES = 32;

// Bun's own HMAC and random bytes, not node:crypto: importing that costs every process about 20 ms of
// CPU at start (it loads Node's stream modules), and every node, log server and root shakes hands.
function mac(token: string, role: "client" | "server", nonce: Uint8Array): Uint8Array {
  return new Bun.CryptoHasher("sha256", token).update(`pcluster-v${PROTOCOL_VERSION}-${role}`).update(nonce).digest();
}

function macMatches(expected: Uint8Array, got: Uint8Array | undefined): boolean {
  return got !== undefined && got.length === expected.length && crypto.timingSafeEqual(expected, got);
}

function randomNonce(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
}

/** Resolves with the next message on the connection, or rejects on timeout, close or a peer error. */
function nextMessage(
  connection: Connection,
  timeoutMs: number,
  waitingFor: string,
  timeoutMessage = `no ${waitingFor} from ${connection.remoteAddress} within ${timeoutMs} ms`,
): Promise<Message> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new TimeoutError(timeoutMessage)), timeoutMs);
    connection.onMessage = (message) => {
      clearTimeout(timer);
      connection.onMessage = () => {};
      if (message.t === "err") reject(errorFromWire(message.code, message.message));
      else resolve(message);
    };
    connection.closed.then((reason) => {
      clearTimeout(timer);
      reject(reason ?? new AuthError(`${connection.remoteAddress} closed the connection during the handshake`));
    });
  });
}

export interface AcceptOptions {
  service: "node" | "log";
  /** When set, clients must prove they know it. */
  token?: string;
  timeoutMs?: number;
}

/** Runs the server side of the handshake. On failure the client is told why and the connection closed. */
async function acceptHandshake(connection: Connection, options: AcceptOptions): Promise<{ client?: string }> {
  const nonce = randomNonce();
  const token = options.token || undefined;
  connection.send({
    t: "hello",
    protocol: PROTOCOL_VERSION,
    service: options.service,
    version: VERSION,
    auth: token !== undefined,
    nonce,
    maxFrame: connection.maxFrameBytes,
  });
  try {
    const message = await nextMessage(connection, options.timeoutMs ?? HANDSHAKE_TIMEOUT_MS, "handshake");
    if (message.t !== "auth") {
      throw new ProtocolError(`expected an "auth" message to open the connection, got "${message.t}"`);
    }
    if (message.protocol !== PROTOCOL_VERSION) {
      throw new VersionMismatchError(
        `protocol version mismatch: the client speaks v${message.protocol}, this ${options.service} speaks ` +
          `v${PROTOCOL_VERSION} (pcluster ${VERSION}); run the same pcluster version on root and nodes`,
      );
    }
    let proof: Uint8Array | undefined;
    if (token !== undefined) {
      if (message.mac === undefined) {
        throw new AuthError(
          `this ${options.service} requires a token: pass --token or set PCLUSTER_TOKEN on the client`,
        );
      }
      if (!macMatches(mac(token, "client", nonce), message.mac)) {
        throw new AuthError(`wrong token: the client's proof does not match this ${options.service}'s token`);
      }
      proof = mac(token, "server", message.nonce);
    }
    connection.trust(); // before the welcome: the client's next frame may be large
    connection.send({ t: "welcome", mac: proof });
    if (message.maxFrame !== undefined) connection.peerMaxFrameBytes = message.maxFrame;
    return { client: message.client };
  } catch (error) {
    connection.fail(error);
    throw error;
  }
}

export interface HandshakeOptions {
  token?: string;
  /** The service the client expects to reach; anything else is refused. */
  service?: "node" | "log";
  timeoutMs?: number;
  /** A name for this client in the server's logs. */
  client?: string;
  /** "host:port" as the user gave it, for messages (default: the peer's IP). */
  address?: string;
}

/** Runs the client side of the handshake; resolves with the server's hello. */
async function clientHandshake(connection: Connection, options: HandshakeOptions = {}): Promise<HelloMessage> {
  const timeoutMs = options.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  const address = connection.remoteAddress;
  try {
    // A silent peer is, to a user, a server that could not be reached (a black-holed address, a firewall
    // that accepts and drops, or another program on that port): say it in those words.
    const silent =
      `could not connect to ${options.address ?? address} within ${timeoutMs} ms: the connection opened, but no pcluster ` +
      "server answered (is something else listening there?)";
    const hello = await nextMessage(connection, timeoutMs, "hello", silent);
    if (hello.t !== "hello") throw new ProtocolError(`expected "hello" from ${address}, got "${hello.t}"`);
    if (options.service !== undefined && hello.service !== options.service) {
      throw new ProtocolError(`${address} is a pcluster ${hello.service} server, not a ${options.service}`);
    }
    const token = options.token || undefined;
    const nonce = randomNonce();
    if (hello.auth && token === undefined) {
      throw new AuthError(`${address} requires a token: pass one (or set PCLUSTER_TOKEN)`);
    }
    connection.send({
      t: "auth",
      protocol: PROTOCOL_VERSION,
      nonce,
      mac: hello.auth && token !== undefined ? mac(token, "client", hello.nonce) : undefined,
      client: options.client ?? `${hostname()}:${process.pid}`,
      maxFrame: connection.maxFrameBytes,
    });
    if (hello.protocol !== PROTOCOL_VERSION) {
      throw new VersionMismatchError(
        `protocol version mismatch: ${address} speaks v${hello.protocol} (pcluster ${hello.version}), this client ` +
          `speaks v${PROTOCOL_VERSION} (pcluster ${VERSION}); run the same pcluster version on root and nodes`,
      );
    }
    const welcome = await nextMessage(connection, timeoutMs, "welcome");
    if (welcome.t !== "welcome") throw new ProtocolError(`expected "welcome" from ${address}, got "${welcome.t}"`);
    if (hello.auth && !macMatches(mac(token!, "server", nonce), welcome.mac)) {
      throw new AuthError(`${address} could not prove it knows the token; refusing to talk to it`);
    }
    if (hello.maxFrame !== undefined) connection.peerMaxFrameBytes = hello.maxFrame;
    return hello;
  } catch (error) {
    connection.destroy(error instanceof PclusterError ? error : undefined);
    throw error;
  }
}

// ---- servers and clients ------------------------------------------------------------------------

/**
 * A server's connections: until the handshake passes, frames are at most `maxHandshakeFrameBytes`
 * (default 4 KiB), and `maxConnections` / `maxUnauthenticated` (default: no cap) bound how many a peer
 * can open; one beyond a cap is told why and closed.
 */
export interface ServeOptions extends ConnectionOptions, AdmissionLimits {
  hostname: string;
  port: number;
  service: "node" | "log";
  token?: string;
  tls?: ServerTls;
  /** Largest message a client may send in parts once past the handshake (default: one frame). */
  maxMessageBytes?: number;
  /** Called with each connection that passed the handshake. */
  onPeer: (connection: Connection, client: string | undefined) => void;
  /** Called when a client is refused (bad bytes, version, token), with why. */
  onRefused?: (remoteAddress: string, error: unknown) => void;
}

export interface Server {
  readonly hostname: string;
  readonly port: number;
  /** Stops listening; with `closeActive` (the default) also closes every open connection at once. */
  stop(closeActive?: boolean): void;
}

/** Listens and runs the server handshake on every connection. */
export function serve(options: ServeOptions): Server {
  const admission = new Admission(options.service, options);
  const handshakeFrames = options.maxHandshakeFrameBytes ?? DEFAULT_MAX_HANDSHAKE_FRAME_BYTES;
  let listener: ReturnType<typeof listen>;
  try {
    listener = listen({ ...options, maxHandshakeFrameBytes: handshakeFrames }, (connection) => {
      const refusal = admission.admit(connection);
      if (refusal !== undefined) {
        connection.fail(refusal);
        if (admission.shouldTell()) options.onRefused?.(connection.remoteAddress, refusal);
        return;
      }
      acceptHandshake(connection, { service: options.service, token: options.token }).then(
        ({ client }) => {
          admission.authenticated(connection);
          if (options.maxMessageBytes !== undefined) connection.maxMessageBytes = options.maxMessageBytes;
          options.onPeer(connection, client);
        },
        (error) => options.onRefused?.(connection.remoteAddress, error),
      );
    });
  } catch (error) {
    throw listenError(formatAddress(options.hostname, options.port), error);
  }
  return {
    hostname: listener.hostname,
    port: listener.port,
    stop: (closeActive = true) => listener.stop(closeActive),
  };
}

/** Bun says only "Failed to listen at HOST": name the port, and say why in a user's words. */
function listenError(address: string, error: unknown): ListenError {
  const code = (error as { code?: string }).code;
  const why =
    code === "EADDRINUSE"
      ? `${address} is already in use (another server listens there; choose another --port, or 0 for any free one)`
      : code === "EADDRNOTAVAIL"
        ? `cannot listen on ${address}: that address is not one of this machine's`
        : code === "EACCES"
          ? `cannot listen on ${address}: permission denied (ports below 1024 need privileges)`
          : `cannot listen on ${address}: ${(error as Error).message}`;
  return new ListenError(why, { cause: error });
}

export interface DialOptions extends ConnectionOptions, HandshakeOptions {
  hostname: string;
  port: number;
  tls?: ClientTls;
  connectTimeoutMs?: number;
  /** Largest message the server may send in parts once past the handshake (default: one frame). */
  maxMessageBytes?: number;
}

/** Connects and runs the client handshake; resolves with a ready connection and the server's hello. */
export async function dial(options: DialOptions): Promise<{ connection: Connection; hello: HelloMessage }> {
  let handshake: Promise<HelloMessage> | undefined;
  const connection = await connect({
    ...options,
    // Start listening for the hello before any byte can arrive.
    onOpen: (opened) => {
      handshake = clientHandshake(opened, { address: formatAddress(options.hostname, options.port), ...options });
      handshake.catch(() => {});
    },
  });
  const hello = await handshake!;
  if (options.maxMessageBytes !== undefined) connection.maxMessageBytes = options.maxMessageBytes;
  return { connection, hello };
}
