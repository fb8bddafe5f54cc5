import type { PortSpec } from "../spec/ports.ts";
import type { RelayStream } from "./pipe.ts";

/**
 * A relayed stream as a listener gets it: it takes writes at once (early data), before the
 * agent has reached the destination.
 */
export interface OpenedStream extends RelayStream {
  /** Resolves once the destination was reached; rejects with the error to show the user. */
  readonly ready: Promise<void>;
}

/** What a listener needs from the rest of the client. */
export interface ForwardContext {
  /**
   * Opens a relayed stream for one new local connection / UDP flow of this port. Resolves as soon
   * as the open is sent; fails only if no stream can be opened at all (no tunnel).
   */
  open(spec: PortSpec): Promise<OpenedStream>;
  /** `Handling connection for 8080` and similar lines (stdout). */
  out: (line: string) => void;
  /** Per-connection errors (stderr), e.g. `error: dial tcp 1.2.3.4:80: connection refused`. */
  err: (line: string) => void;
  log: (level: number, line: string) => void;
}

/** A bound local listener. */
export interface Listener {
  readonly address: string;
  readonly port: number;
  readonly protocol: "tcp" | "udp";
  /** Stops accepting; open connections are left to finish (or be closed by close()). */
  stopAccepting(): void;
  /** Number of connections / flows in progress. */
  readonly active: number;
  /** Closes everything. */
  close(): void;
}
