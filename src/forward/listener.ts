/**
 * What a local listener is: bound first (`BoundSocket`), then served (`Listener`) with a
 * `ForwardContext` that opens one relayed stream per local connection or UDP flow.
 *
 * @module
 */

import { hostPort } from "../protocol/addr.ts";
import type { RelayStream } from "./pipe.ts";

/**
 * A relayed stream as a listener gets it: it takes writes at once (early data), before the
 * agent has reached the destination.
 */
export interface OpenedStream extends RelayStream {
  /** Resolves once the destination was reached; rejects with the error to show the user. */
  readonly ready: Promise<void>;
  /**
   * For a destination that follows pods (a workload, a headless Service, a pod): calls `onGone`
   * once the pod this stream reached (after `ready`) stops serving (deleted, not Ready, replaced;
   * not while it is terminating but still Ready), as kube-proxy drops the UDP conntrack entries of
   * an endpoint that stops serving.
   * Returns a function that cancels the watch. Absent when the destination does not go away.
   */
  onTargetGone?(onGone: () => void): () => void;
}

/** What a listener needs from the rest of the client. */
export interface ForwardContext {
  /**
   * Opens a relayed stream for one new local connection / UDP flow of this socket. Resolves as
   * soon as the open is sent; fails only if no stream can be opened at all (no tunnel).
   */
  open(): Promise<OpenedStream>;
  /** `Handling connection for 8080` and similar lines (stdout). */
  out: (line: string) => void;
  /** Per-connection errors (stderr), e.g. `error: dial tcp 1.2.3.4:80: connection refused`. */
  err: (line: string) => void;
  log: (level: number, line: string) => void;
}

/**
 * A local socket that is bound but not served yet (`bindTcp`, `bindUdp`): connections and
 * datagrams arriving now wait in the kernel until `serve`. Binding first lets a port clash fail
 * before anything is created in the cluster.
 */
export interface BoundSocket {
  readonly address: string;
  /** The bound port (the kernel's choice when 0 was asked for). */
  readonly port: number;
  readonly protocol: "tcp" | "udp";
  /** Starts accepting; each new connection / UDP flow gets a stream from `ctx.open`. Once. */
  serve(ctx: ForwardContext): Listener;
  /** Releases the socket without serving it. */
  close(): void;
}

/** A serving local listener. */
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

/**
 * The BoundSocket of a bound `socket` (a TCP listener or a UDP socket): `serve(ctx, port)` may
 * run once; `close` releases the socket unserved.
 */
export function boundSocket(
  socket: { readonly addr: Deno.Addr; close(): void },
  address: string,
  protocol: "tcp" | "udp",
  serve: (ctx: ForwardContext, port: number) => Listener,
): BoundSocket {
  const port = (socket.addr as Deno.NetAddr).port;
  let served = false;
  return {
    address,
    port,
    protocol,
    serve(ctx) {
      if (served) {
        throw new Error(`${protocol} socket ${hostPort(address, port)} is served already`);
      }
      served = true;
      return serve(ctx, port);
    },
    close() {
      try {
        socket.close();
      } catch {
        // closed
      }
    },
  };
}
