/**
 * A TCP server that hands each accepted connection to a handler. Termination as a graceful
 * server does it: {@link TcpServer.stopAccepting} releases the listener (new connections are
 * refused) while established connections go on; {@link TcpServer.drained} resolves when the last
 * one has ended; {@link TcpServer.close} ends everything (a kill). Shared by the echo servers and
 * the pod HTTP server's front.
 *
 * @module
 */

/** A running TCP server. */
export interface TcpServer {
  readonly port: number;
  /** Stop accepting (resolves once the listener is released); open connections go on. */
  stopAccepting(): Promise<void>;
  /** Resolves once no connection is open (never before stopAccepting() in practice). */
  drained(): Promise<void>;
  /** Stop accepting, close open connections, wait for their handlers. */
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

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Copy src → dst until EOF, then half-close dst. Errors end the copy and close both. */
async function pump(src: Deno.Conn, dst: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await src.read(buf);
      if (n === null) break;
      await writeAll(dst, buf.subarray(0, n));
    }
    await dst.closeWrite().catch(() => {});
  } catch {
    safeClose(src);
    safeClose(dst);
  }
}

/** Relay two connections both ways (half-close passed on) until both directions end. */
export async function pipeConns(a: Deno.Conn, b: Deno.Conn): Promise<void> {
  try {
    await Promise.all([pump(a, b), pump(b, a)]);
  } finally {
    safeClose(a);
    safeClose(b);
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
  let idle: (() => void)[] = [];
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        const p = handle(conn).catch(() => {}).finally(() => {
          conns.delete(conn);
          inflight.delete(p);
          if (inflight.size === 0) {
            const w = idle;
            idle = [];
            w.forEach((f) => f());
          }
        });
        inflight.add(p);
      }
    } catch {
      // closed
    }
  })();
  let stopping: Promise<void> | undefined;
  const stopAccepting = () => {
    stopping ??= (async () => {
      safeClose(listener);
      await accepting;
    })();
    return stopping;
  };
  let closing: Promise<void> | undefined;
  return Promise.resolve({
    port: (listener.addr as Deno.NetAddr).port,
    stopAccepting,
    drained: () => inflight.size === 0 ? Promise.resolve() : new Promise<void>((r) => idle.push(r)),
    close() {
      closing ??= (async () => {
        await stopAccepting();
        for (const c of conns) safeClose(c);
        await Promise.all(inflight);
      })();
      return closing;
    },
  });
}
