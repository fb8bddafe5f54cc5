/**
 * The client side of one relayed request, as seen by the agent: a raw-mode TCP
 * connection or a tunnel Stream, behind one interface.
 *
 * @module
 */

import type { Status } from "../protocol/status.ts";
import { LARGE_READ_BUFFER, RelayReader } from "../mux/buffers.ts";
import type { Stream } from "../mux/mod.ts";
import { AGENT_READ_BUFFER, agentBufferPool } from "./memory.ts";

/** One request's client side. */
export interface Endpoint {
  /**
   * Next chunk from the client, `null` at EOF (client half-closed). The chunk is only
   * valid until the next `read()`.
   */
  read(): Promise<Uint8Array | null>;
  /** Sends bytes to the client; resolves when the caller may reuse `data`. */
  write(data: Uint8Array): Promise<void>;
  /**
   * Resolves with how many bytes `write()` takes now without waiting (> 0): a tunnel stream's
   * credit and queue space (`Stream.writable()`); a raw connection is always writable (the
   * kernel's socket buffer is its queue).
   */
  writable(): Promise<number>;
  /** Half-closes towards the client (it reads EOF). */
  closeWrite(): Promise<void>;
  /** Answers the Header with status 0. */
  accept(): Promise<void>;
  /** Answers the Header with a nonzero status and ends the request. */
  reject(status: Status): Promise<void>;
  /** Ends the request abnormally (tunnel: RESET with `reason`; raw: close). Idempotent. */
  abort(reason: string): void;
  /** Ends the request after both directions finished. Idempotent. */
  close(): void;
}

/** Bytes and time a lingering close discards before closing anyway. */
const LINGER_BYTES = 1024 * 1024;
const LINGER_MS = 2000;

async function drainBounded(conn: Deno.Conn, buf: Uint8Array): Promise<void> {
  const deadline = Date.now() + LINGER_MS;
  let total = 0;
  while (total < LINGER_BYTES) {
    const left = deadline - Date.now();
    if (left <= 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      conn.read(buf),
      new Promise<null>((r) => timer = setTimeout(() => r(null), left)),
    ]).finally(() => clearTimeout(timer));
    if (n === null) return;
    total += n;
  }
}

/**
 * A raw-mode connection after its Header: `leftover` holds bytes that followed the
 * Header in the same read (payload).
 */
export function connEndpoint(conn: Deno.Conn, leftover: Uint8Array): Endpoint {
  return new ConnEndpoint(conn, leftover);
}

/** A tunnel Stream (server side). */
export function streamEndpoint(stream: Stream): Endpoint {
  return new StreamEndpoint(stream);
}

// Classes rather than object literals of closures: the agent holds one Endpoint per open
// connection, and methods on a prototype cost each of them nothing.

class ConnEndpoint implements Endpoint {
  #conn: Deno.Conn;
  #reader: RelayReader;
  #pending: Uint8Array | null;
  #closed = false;

  constructor(conn: Deno.Conn, leftover: Uint8Array) {
    this.#conn = conn;
    this.#reader = new RelayReader(conn, agentBufferPool, new Uint8Array(AGENT_READ_BUFFER));
    this.#pending = leftover.length > 0 ? leftover : null;
  }

  read(): Promise<Uint8Array | null> {
    const p = this.#pending;
    if (p) {
      this.#pending = null;
      return Promise.resolve(p);
    }
    if (this.#closed) return Promise.resolve(null);
    return this.#reader.read();
  }

  async write(data: Uint8Array): Promise<void> {
    let off = 0;
    while (off < data.length) off += await this.#conn.write(data.subarray(off));
  }

  /** A write waits for the kernel's socket buffer; one large read buffer's worth at a time. */
  writable(): Promise<number> {
    return Promise.resolve(LARGE_READ_BUFFER);
  }

  async closeWrite(): Promise<void> {
    if (!this.#closed) await this.#conn.closeWrite();
  }

  accept(): Promise<void> {
    return this.write(new Uint8Array([0]));
  }

  async reject(status: Status): Promise<void> {
    try {
      await this.write(new Uint8Array([status]));
      // Lingering close: FIN first, then discard what the client already sent (bounded), so
      // that unread payload does not turn our close into a RST that could destroy the status.
      await this.#conn.closeWrite();
      await drainBounded(this.#conn, this.#reader.smallBuffer);
    } catch {
      // the client is gone: nothing to tell it
    } finally {
      this.close();
    }
  }

  abort(): void {
    this.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reader.release(); // a read still in progress gives its buffer back when it ends
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}

class StreamEndpoint implements Endpoint {
  #stream: Stream;
  #done = false;

  constructor(stream: Stream) {
    this.#stream = stream;
  }

  read(): Promise<Uint8Array | null> {
    return this.#stream.read();
  }

  write(data: Uint8Array): Promise<void> {
    return this.#stream.write(data);
  }

  writable(): Promise<number> {
    return this.#stream.writable();
  }

  closeWrite(): Promise<void> {
    return this.#stream.closeWrite();
  }

  accept(): Promise<void> {
    this.#stream.accept();
    return Promise.resolve();
  }

  reject(status: Status): Promise<void> {
    this.#done = true;
    this.#stream.reject(status);
    return Promise.resolve();
  }

  abort(reason: string): void {
    if (this.#done) return;
    this.#done = true;
    this.#stream.reset(reason);
  }

  close(): void {
    // Both directions already ended by half-closes; the session forgets the stream.
    this.#done = true;
  }
}
