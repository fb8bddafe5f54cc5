/**
 * Byte transports: a reliable, ordered byte pipe that a tunnel Session runs over.
 *
 * Implementations: a TCP connection (`connTransport`) and a pod port-forward WebSocket data
 * channel (see `src/kube/portforward.ts`); tests add an in-memory pair
 * (`tests/_lib/memory_transport.ts`).
 *
 * @module
 */

/**
 * A reliable ordered byte pipe (a TCP conn, or a port-forward WebSocket data channel).
 *
 * Contract:
 * - at most one `read()` and one `write()` are outstanding at a time (a Session guarantees this);
 * - `read()` resolves with the next chunk, or `null` at end of stream or after `close()`; it may
 *   reject on a transport error. The chunk is valid only until the next `read()` (a transport
 *   may read into one reused buffer), so a reader copies what it keeps;
 * - `write()` resolves once the transport no longer needs `chunk` (the caller may then reuse
 *   it); it rejects if the transport is closed or broken;
 * - `close()` is idempotent and makes a pending `read()` resolve with `null` (or reject).
 */
export interface Transport {
  /** Next chunk; `null` = EOF. */
  read(): Promise<Uint8Array | null>;
  /** Writes the whole chunk. */
  write(chunk: Uint8Array): Promise<void>;
  /** Closes both directions; idempotent. */
  close(): void;
  /**
   * True when the pipe sends small writes at once (TCP_NODELAY). A Session then starts each
   * write batch at the end of the event-loop turn (`setImmediate`) rather than from a
   * microtask, so frames produced by I/O that has already arrived (a burst of datagrams)
   * share one write. Unset (false) for pipes whose small writes the kernel may hold back
   * (Nagle): there, deferring measurably stalled bursts of datagrams by ~40 ms (delayed ACKs).
   */
  readonly coalesceWrites?: boolean;
}

/** Size of the read buffer used by `connTransport`. */
const CONN_READ_BUFFER = 256 * 1024;

/**
 * Wraps a Deno connection (TCP or Unix) as a Transport.
 *
 * Reads go through one reused buffer and return a view of it (valid until the next read: no
 * allocation per read). Errors after `close()` are reported as EOF. TCP connections get TCP_NODELAY
 * (the Session batches small frames itself).
 */
export function connTransport(conn: Deno.Conn): Transport {
  const buf = new Uint8Array(CONN_READ_BUFFER);
  let closed = false;
  // The Session coalesces frames itself; Nagle would only add delay to small frames.
  if ("setNoDelay" in conn && typeof conn.setNoDelay === "function") {
    try {
      conn.setNoDelay(true);
    } catch {
      // not a TCP socket after all
    }
  }
  return {
    // TCP_NODELAY is set above (Unix sockets have no Nagle either).
    coalesceWrites: true,
    async read(): Promise<Uint8Array | null> {
      if (closed) return null;
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch (e) {
        if (closed) return null;
        throw e;
      }
      if (n === null) return null;
      return buf.subarray(0, n);
    },
    async write(chunk: Uint8Array): Promise<void> {
      if (closed) throw new Deno.errors.BadResource("transport is closed");
      let off = 0;
      while (off < chunk.length) {
        off += await conn.write(off === 0 ? chunk : chunk.subarray(off));
      }
    },
    close(): void {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed
      }
    },
  };
}

/**
 * A transport whose first `read()` returns `leftover` (when non-empty) and then delegates to
 * `inner`. Used after sniffing a connection's first bytes (e.g. the tunnel PREFACE).
 */
export function prefixedTransport(leftover: Uint8Array, inner: Transport): Transport {
  let pending: Uint8Array | null = leftover.length > 0 ? leftover : null;
  return {
    coalesceWrites: inner.coalesceWrites,
    read(): Promise<Uint8Array | null> {
      if (pending) {
        const chunk = pending;
        pending = null;
        return Promise.resolve(chunk);
      }
      return inner.read();
    },
    write(chunk: Uint8Array): Promise<void> {
      return inner.write(chunk);
    },
    close(): void {
      pending = null;
      inner.close();
    },
  };
}
