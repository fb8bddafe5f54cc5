/**
 * Reads a destination socket for the relay back to the client, no further than the client side
 * can take at once.
 *
 * Deno's `read(buf)` holds `buf` until data comes, so a per-connection read buffer costs its
 * size for as long as the connection is open, busy or idle; and bytes read before the tunnel can
 * send them wait in the agent's memory. Here each connection waits for data with a small probe
 * buffer (PROBE_SIZE) and nothing else. When a probe comes back full, more is waiting in the
 * socket: the reader then asks the client side how much it can take now (`Endpoint.writable()`,
 * which waits for flow-control credit and tunnel queue space) and reads that much into a buffer
 * borrowed from a bounded pool, which goes back as soon as the next read starts (the relay has
 * written the bytes by then; a tunnel write copies them). So bytes the tunnel cannot take yet
 * stay in the destination socket, where TCP flow control slows the destination, and the agent's
 * read memory is `connections × PROBE_SIZE` plus the pools, however many connections are busy.
 *
 * A borrowed read that finds the socket empty (the probe took the last bytes) waits with its
 * buffer like any read, until data or EOF. When a pool is empty the reader goes on with probe
 * reads (slower, never stuck).
 *
 * @module
 */

import type { BufferPool, ByteSource } from "../mux/buffers.ts";

/** Size of the buffer each connection waits for data with. */
export const PROBE_SIZE = 1024;

/** The pools a DestinationReader borrows from. */
export interface ReadPools {
  /** Buffers for reads of more than `small.size` bytes (bulk transfers); larger than `small`'s. */
  large: BufferPool;
  /** Buffers for smaller reads (many busy connections sharing the tunnel). */
  small: BufferPool;
}

/** The client side as a DestinationReader sees it (an Endpoint). */
export interface WritableSide {
  /** Resolves with how many bytes the client side takes now without waiting (> 0). */
  writable(): Promise<number>;
}

/** Reads one destination socket; one `read()` at a time. */
export class DestinationReader {
  #source: ByteSource;
  #pools: ReadPools;
  #probe = new Uint8Array(PROBE_SIZE);
  /** The last read filled what it asked for: more is probably waiting. */
  #more = false;
  /** The buffer of the last pooled read (its pool follows from its size). */
  #borrowed: Uint8Array | undefined;
  #reading = false;
  #released = false;

  constructor(source: ByteSource, pools: ReadPools) {
    this.#source = source;
    this.#pools = pools;
  }

  /**
   * The next bytes from the socket, or null at EOF. `client.writable()` resolves with how many
   * bytes the client side takes now (see `Endpoint.writable`); it is asked only when more bytes
   * are waiting than a probe holds. The view is valid until the next `read()` or `release()`.
   */
  async read(client: WritableSide): Promise<Uint8Array | null> {
    this.#giveBack();
    if (this.#more && !this.#released) {
      const room = await client.writable();
      const buf = room > PROBE_SIZE ? this.#borrow(room) : undefined;
      if (buf) {
        this.#borrowed = buf;
        const want = Math.min(room, buf.length);
        const n = await this.#readInto(buf.subarray(0, want));
        if (n === null) return null;
        this.#more = n === want;
        return buf.subarray(0, n);
      }
    }
    const n = await this.#source.read(this.#probe);
    if (n === null) return null;
    this.#more = n === PROBE_SIZE;
    return this.#probe.subarray(0, n);
  }

  /**
   * Gives a borrowed buffer back and borrows no more; call when the relay ends. Idempotent.
   * During a read it takes effect when the read ends (the socket still writes into the buffer).
   */
  release(): void {
    this.#released = true;
    if (!this.#reading) this.#giveBack();
  }

  /** A buffer for a read of `room` bytes: a large one for large reads when there is one. */
  #borrow(room: number): Uint8Array | undefined {
    const { large, small } = this.#pools;
    return (room > small.size ? large.take() : undefined) ?? small.take();
  }

  /** Reads into a borrowed buffer; gives it back if the read ends the stream or fails. */
  async #readInto(buf: Uint8Array): Promise<number | null> {
    let n: number | null = null;
    this.#reading = true;
    try {
      n = await this.#source.read(buf);
    } finally {
      this.#reading = false;
      if (n === null || this.#released) this.#giveBack();
    }
    return n;
  }

  #giveBack(): void {
    const buf = this.#borrowed;
    if (!buf) return;
    const { large, small } = this.#pools;
    (buf.length === large.size ? large : small).give(buf);
    this.#borrowed = undefined;
  }
}
