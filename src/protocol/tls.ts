/**
 * TLS for a client (a root, `pcluster status`): `true` to verify nodes against the system's CAs, or
 * options — `ca` (PEM of a certificate to trust), `rejectUnauthorized`, `serverName`, and `cert` /
 * `key` for a client certificate. Written out here rather than as Bun's `TLSOptions`, so that
 * pcluster's public types stand without Bun's; PEM as text or bytes (`readFileSync` gives either).
 */
export type ClientTls =
  | boolean
  | {
      ca?: Pem | Pem[];
      cert?: Pem | Pem[];
      key?: Pem | Pem[];
      rejectUnauthorized?: boolean;
      serverName?: string;
    };

/** PEM text, or its bytes. */
export type Pem = string | Uint8Array;
