/**
 * The handle of one running relay or proxy, and its one shutdown.
 *
 * @module
 */

import type { AgentConnection } from "./connect.ts";

/** How long `shutdown()` lets open connections finish by default. */
export const SHUTDOWN_GRACE_MS = 2000;

/** A running relay or proxy, as the CLI holds it until Ctrl-C. */
export interface Run {
  /**
   * Graceful stop: stop accepting, send go-away, let open connections finish (at most `graceMs`),
   * then close the tunnel and the local sockets and delete the agent. Idempotent.
   */
  shutdown(graceMs?: number): Promise<void>;
}

/** A local server of a run (a forwarding listener or a proxy), as shutdown sees it. */
export interface LocalServer {
  stopAccepting(): void;
  /** Connections / flows still in progress. */
  readonly active: number;
  close(): void | Promise<void>;
}

/**
 * The Run of local servers serving through `conn` (none in direct mode). `release` frees what else
 * the run holds (pod watches); it is called after the servers are closed, before the agent is
 * deleted.
 */
export function runOf(
  conn: AgentConnection | undefined,
  servers: readonly LocalServer[],
  release: () => void = () => {},
): Run {
  let stopping: Promise<void> | undefined;
  return {
    shutdown(graceMs = SHUTDOWN_GRACE_MS) {
      stopping ??= (async () => {
        servers.forEach((s) => s.stopAccepting());
        conn?.tunnel.goAway();
        const deadline = Date.now() + graceMs;
        while (Date.now() < deadline && servers.some((s) => s.active > 0)) {
          await new Promise((r) => setTimeout(r, 50));
        }
        conn?.tunnel.close();
        await Promise.all(servers.map((s) => s.close()));
        release();
        await conn?.agents.deleteAll();
      })();
      return stopping;
    },
  };
}
