/**
 * A TCP server that hands each accepted connection to a handler and, on close, stops accepting,
 * closes open connections and waits for their handlers. Shared by the echo servers and the
 * Service forwarders.
 *
 * @module
 */

/** A running TCP server. */
export interface TcpServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Closes anything closable, ignoring "already closed". */
export function safeClose(c: { close(): void }): void {
  try {
    c.close();
  } catch {
    // already closed
  }
}

/** Listens on hostname:port (0 = any port) and runs `handle` for every connection. */
export function serveTcp(
  hostname: string,
  port: number,
  handle: (conn: Deno.TcpConn) => Promise<void>,
): Promise<TcpServer> {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname, port, transport: "tcp" });
  } catch (e) {
    return Promise.reject(e);
  }
  const conns = new Set<Deno.Conn>();
  const inflight = new Set<Promise<void>>();
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        const p = handle(conn).finally(() => {
          conns.delete(conn);
          inflight.delete(p);
        });
        inflight.add(p);
      }
    } catch {
      // closed
    }
  })();
  let closing: Promise<void> | undefined;
  return Promise.resolve({
    port: (listener.addr as Deno.NetAddr).port,
    close() {
      closing ??= (async () => {
        safeClose(listener);
        await accepting;
        for (const c of conns) safeClose(c);
        await Promise.all(inflight);
      })();
      return closing;
    },
  });
}
