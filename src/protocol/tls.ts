/**
 * TLS for a client (a root, `pcluster status`): `true` to verify nodes against the system's CAs, or
 * options — `ca` (PEM text of a certificate to trust), `rejectUnauthorized`, `serverName`. Written
 * out here rather than as Bun's `TLSOptions`, so that pcluster's public types stand without Bun's.
 */
export type ClientTls =
  | boolean
  | {
      ca?: string | string[];
      cert?: string;
      key?: string;
      rejectUnauthorized?: boolean;
      serverName?: string;
    };
