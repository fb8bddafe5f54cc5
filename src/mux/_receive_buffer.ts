/**
 * A stream's receive buffer: the bytes the peer sent that the reader has not taken yet.
 *
 * DATA payloads arrive as views of the transport's read buffer, which the next read overwrites,
 * so they must be copied. Copying each one into a new array made garbage at the rate of the
 * traffic (1 GiB of arrays per GiB received), and a busy process held tens of MiB of it between
 * collections. Here payloads are copied into chunks from a process-wide free list instead, and a
 * chunk goes back to it when the reader is done with it: memory is the buffered bytes plus at
 * most one partly filled chunk per stream, whatever the garbage collector does.
 *
 * `take()` lends the reader a view of the oldest chunk; the chunk is reused only after the reader
 * calls `take()` or `release()` again (a reader that read a stream's bytes may still be writing
 * them somewhere, so a chunk is never recycled under it, not even when the stream is reset).
 *
 * @module
 */

import { CHUNK_SIZE, ChunkPool, chunkPool, type SizedChunkPool } from "./buffers.ts";

/**
 * Largest chunk size for streams with small receive windows (most of them when there are many);
 * less data takes a smaller chunk (4 or 8 KiB, see SizedChunkPool).
 */
export const SMALL_RECEIVE_CHUNK = CHUNK_SIZE;
/** Chunk size for streams with large windows (bulk transfers); also the most one read returns. */
export const LARGE_RECEIVE_CHUNK = 64 * 1024;
/** Streams whose window is at least this buffer in large chunks. */
const LARGE_WINDOW = 2 * LARGE_RECEIVE_CHUNK;

/** The free lists a ReceiveBuffer takes its chunks from. */
export interface ReceivePools {
  small: SizedChunkPool;
  large: ChunkPool;
}

/** The process-wide free lists (small: shared with the frame writers; large: at most 2 MiB kept). */
export const receivePools: ReceivePools = {
  small: chunkPool,
  large: new ChunkPool(LARGE_RECEIVE_CHUNK, 32),
};

/** Bytes received and not yet read, in pooled chunks (FIFO). */
export class ReceiveBuffer {
  #pools: ReceivePools;
  /** Chunks in arrival order; all full except the last. */
  #chunks: Uint8Array[] = [];
  /** Bytes used in the last chunk. */
  #tailFill = 0;
  #length = 0;
  /** The chunk the last `take()` lent to the reader. */
  #lent: Uint8Array | null = null;

  constructor(pools: ReceivePools = receivePools) {
    this.#pools = pools;
  }

  /** Bytes buffered. */
  get length(): number {
    return this.#length;
  }

  /**
   * Copies `data` in, filling the last chunk first. New chunks are large when the stream's
   * receive `window` is at least twice a large chunk; otherwise the smallest pooled chunk that
   * holds the rest of `data` (at most SMALL_RECEIVE_CHUNK). So a stream never holds much more than
   * its window, and a stream holding a few KiB holds a few KiB of chunks.
   */
  push(data: Uint8Array, window: number): void {
    let off = 0;
    const last = this.#chunks.length - 1;
    if (last >= 0) {
      const tail = this.#chunks[last];
      off = Math.min(tail.length - this.#tailFill, data.length);
      tail.set(data.subarray(0, off), this.#tailFill);
      this.#tailFill += off;
    }
    const large = window >= LARGE_WINDOW;
    while (off < data.length) {
      const chunk = large ? this.#pools.large.take() : this.#pools.small.take(data.length - off);
      const n = Math.min(chunk.length, data.length - off);
      chunk.set(data.subarray(off, off + n));
      this.#chunks.push(chunk);
      this.#tailFill = n;
      off += n;
    }
    this.#length += data.length;
  }

  /**
   * The oldest buffered bytes, at most one chunk's worth, or null when nothing is buffered. The
   * view stays valid until the next `take()` or `release()`; `clear()` leaves it alone.
   */
  take(): Uint8Array | null {
    this.release();
    const chunk = this.#chunks.shift();
    if (!chunk) return null;
    const n = this.#chunks.length === 0 ? this.#tailFill : chunk.length;
    if (this.#chunks.length === 0) this.#tailFill = 0;
    this.#length -= n;
    this.#lent = chunk;
    return chunk.subarray(0, n);
  }

  /** The reader is done with the last view `take()` returned: its chunk may be reused. */
  release(): void {
    if (!this.#lent) return;
    this.#give(this.#lent);
    this.#lent = null;
  }

  /** Drops everything buffered (a reset). The view lent by the last `take()` stays valid. */
  clear(): void {
    for (const chunk of this.#chunks) this.#give(chunk);
    this.#chunks = [];
    this.#tailFill = 0;
    this.#length = 0;
  }

  #give(chunk: Uint8Array): void {
    if (chunk.length === this.#pools.large.size) this.#pools.large.give(chunk);
    else this.#pools.small.give(chunk);
  }
}
