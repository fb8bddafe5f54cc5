/** Echo servers on 127.0.0.1 for tests: TCP (half-close aware) and UDP. */

/** A running TCP echo server. */
export interface TcpEcho {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections whose client half-closed (the server read EOF). */
  readonly eofs: number;
  /** Stops listening and closes open connections. */
  close(): Promise<void>;
}

/**
 * Echoes every byte of `conn` until the peer half-closes (then calls `onEof`), sends `trailer`
 * (if any), half-closes too and waits for the peer to close, so half-close is observable end to
 * end. Never throws; closes `conn`.
 */
export async function echoConn(
  conn: Deno.Conn,
  opts: { trailer?: Uint8Array; onEof?: () => void } = {},
): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      let off = 0;
      while (off < n) off += await conn.write(buf.subarray(off, n));
    }
    opts.onEof?.();
    const trailer = opts.trailer ?? new Uint8Array(0);
    let off = 0;
    while (off < trailer.length) off += await conn.write(trailer.subarray(off));
    await conn.closeWrite();
    // Wait for the peer to close completely.
    while ((await conn.read(buf)) !== null) { /* discard */ }
  } catch {
    // peer reset or we were closed
  } finally {
    try {
      conn.close();
    } catch {
      // closed
    }
  }
}

/**
 * TCP echo server on 127.0.0.1 (or `hostname`, e.g. ::1) of {@link echoConn}: echoes every byte;
 * when the client half-closes it finishes echoing, sends `trailer` (if any), then half-closes too.
 */
export function startTcpEcho(hostname = "127.0.0.1", trailer?: Uint8Array): TcpEcho {
  const listener = Deno.listen({ hostname, port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  let accepted = 0;
  let eofs = 0;
  const serve = async (conn: Deno.Conn) => {
    await echoConn(conn, { trailer, onEof: () => eofs++ });
    conns.delete(conn);
  };
  const loop = (async () => {
    try {
      for await (const conn of listener) {
        accepted++;
        conns.add(conn);
        const t = serve(conn);
        tasks.add(t);
        t.finally(() => tasks.delete(t));
      }
    } catch {
      // listener closed
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get accepted() {
      return accepted;
    },
    get eofs() {
      return eofs;
    },
    async close() {
      try {
        listener.close();
      } catch {
        // closed
      }
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // closed
        }
      }
      await loop;
      await Promise.all([...tasks]);
    },
  };
}

/** A running UDP echo server. */
export interface UdpEcho {
  readonly port: number;
  /** Datagrams received. */
  readonly received: number;
  close(): Promise<void>;
}

/** UDP echo server on 127.0.0.1 (or `hostname`, e.g. ::1): sends each datagram back to its sender. */
export function startUdpEcho(hostname = "127.0.0.1"): UdpEcho {
  const sock = Deno.listenDatagram({ hostname, port: 0, transport: "udp" });
  let received = 0;
  const loop = (async () => {
    const buf = new Uint8Array(65535);
    try {
      while (true) {
        const [d, from] = await sock.receive(buf);
        received++;
        await sock.send(d, from);
      }
    } catch {
      // closed
    }
  })();
  return {
    port: (sock.addr as Deno.NetAddr).port,
    get received() {
      return received;
    },
    async close() {
      try {
        sock.close();
      } catch {
        // closed
      }
      await loop;
    },
  };
}
