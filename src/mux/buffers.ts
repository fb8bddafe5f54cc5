/**
 * Read buffers for the relay loops of the client and the agent (a local or destination socket
 * read into a buffer, then written to a Stream).
 *
 * A relay loop owns one small buffer for its whole life, which is all an idle or interactive
 * connection needs. When a read fills the buffer to the brim, more is waiting in the socket: the
 * next reads borrow a large buffer from a process-wide pool, and give it back as soon as a read
 * comes back short (the burst is over) or the loop ends. The pool lends at most a fixed number of
 * large buffers at once; when they are all out, a loop keeps reading with its small buffer. So
 * relay buffers take at most `connections × SMALL_READ_BUFFER + lent large buffers` bytes,
 * however many connections move data at once, and bulk transfers still read in large pieces.
 *
 * @module
 */

/** Size of the buffer every relay loop owns. */
export const SMALL_READ_BUFFER = 16 * 1024;
/** Size of a buffer borrowed from the pool during a burst. */
export const LARGE_READ_BUFFER = 64 * 1024;
/** Large buffers lent at once by the default pool (8 MiB). */
export const LARGE_READ_BUFFERS = 128;

/**
 * A free list of equal-size chunks: `take()` always returns one (a kept one, or a new one), and
 * `give()` keeps at most `keep` for reuse (the rest are left to the garbage collector). Unlike a
 * BufferPool it never refuses: its users' memory is bounded elsewhere (by windows and queues), and
 * the free list only spares them one allocation, and its garbage, per chunk.
 */
export class ChunkPool {
  readonly size: number;
  readonly keep: number;
  #free: Uint8Array[] = [];

  constructor(size: number, keep: number) {
    this.size = size;
    this.keep = keep;
  }

  /** Chunks kept for reuse now. */
  get free(): number {
    return this.#free.length;
  }

  /** A chunk of `size` bytes (its content is whatever it held before). */
  take(): Uint8Array {
    return this.#free.pop() ?? new Uint8Array(this.size);
  }

  /** Returns a chunk from `take()` (the caller no longer reads or writes it). */
  give(chunk: Uint8Array): void {
    if (this.#free.length < this.keep) this.#free.push(chunk);
  }
}

/** Lends large read buffers, at most `max` at once; keeps returned ones for reuse. */
export class BufferPool {
  readonly size: number;
  readonly max: number;
  // Never more than `max` out, so never more than `max` to keep.
  #free: ChunkPool;
  #lent = 0;

  constructor(size = LARGE_READ_BUFFER, max = LARGE_READ_BUFFERS) {
    this.size = size;
    this.max = max;
    this.#free = new ChunkPool(size, max);
  }

  /** Large buffers currently lent out. */
  get lent(): number {
    return this.#lent;
  }

  /** A buffer of `size` bytes, or undefined when `max` are lent out. */
  take(): Uint8Array | undefined {
    if (this.#lent >= this.max) return undefined;
    this.#lent++;
    return this.#free.take();
  }

  /** Returns a buffer from `take()`. */
  give(buf: Uint8Array): void {
    this.#lent--;
    this.#free.give(buf);
  }
}

/** Size of the largest chunks the frame writer queues DATA in and streams keep received bytes in. */
export const CHUNK_SIZE = 16 * 1024;

/**
 * Free lists of chunks in a few sizes, smallest first. `take(need)` returns a chunk of the
 * smallest size that holds `need` bytes (of the largest size when none does), so a few KiB of
 * data do not pin a whole chunk of the largest size: with a thousand busy streams, each holding
 * a small DATA payload (a window update's worth, a short read) in a CHUNK_SIZE chunk, most of the
 * chunk memory was empty.
 */
export class SizedChunkPool {
  /** The free lists, by ascending chunk size. */
  readonly pools: readonly ChunkPool[];

  constructor(pools: readonly ChunkPool[]) {
    if (pools.length === 0 || pools.some((p, i) => i > 0 && p.size <= pools[i - 1].size)) {
      throw new RangeError("SizedChunkPool needs free lists of ascending sizes");
    }
    this.pools = pools;
  }

  /** The largest chunk size. */
  get size(): number {
    return this.pools[this.pools.length - 1].size;
  }

  /** A chunk of the smallest size that holds `need` bytes (of the largest size if none does). */
  take(need: number): Uint8Array {
    for (const pool of this.pools) {
      if (need <= pool.size) return pool.take();
    }
    return this.pools[this.pools.length - 1].take();
  }

  /** Returns a chunk from `take()` to the free list of its size. */
  give(chunk: Uint8Array): void {
    for (const pool of this.pools) {
      if (chunk.length === pool.size) return pool.give(chunk);
    }
  }
}

/**
 * The process-wide free lists of 4 KiB, 8 KiB and CHUNK_SIZE chunks (at most 1, 1 and 4 MiB
 * kept), shared by every session's frame writer (DATA of more than 1 KiB) and the streams with
 * small receive windows. Shared because with many streams, chunks go back from one stream's queue
 * as fast as another's takes them: per-session lists of a few dozen made a new chunk (and
 * garbage) for almost every 16 KiB sent.
 */
export const chunkPool: SizedChunkPool = new SizedChunkPool([
  new ChunkPool(4 * 1024, 256),
  new ChunkPool(8 * 1024, 128),
  new ChunkPool(CHUNK_SIZE, 256),
]);

/** The pool shared by every relay loop of this process. */
export const defaultBufferPool: BufferPool = new BufferPool();

/** Something with Deno's `read(p)` contract. */
export interface ByteSource {
  read(p: Uint8Array): Promise<number | null>;
}

/**
 * The read buffer of one relay loop: `read()` returns a view of the bytes read, valid until the
 * next `read()` or `release()`. Call `release()` when the loop ends (returns a borrowed buffer).
 */
export class RelayReader {
  #source: ByteSource;
  #pool: BufferPool;
  #small: Uint8Array;
  #large: Uint8Array | undefined;
  #wantLarge = false;
  #reading = false;
  /** release() was called: no more borrowing (reads go on with the small buffer). */
  #released = false;

  /** `first`: a small buffer the caller already reads into (its pending read), if any. */
  constructor(source: ByteSource, pool: BufferPool = defaultBufferPool, first?: Uint8Array) {
    this.#source = source;
    this.#pool = pool;
    this.#small = first ?? new Uint8Array(SMALL_READ_BUFFER);
  }

  /** The small buffer (for a read issued before the loop started). */
  get smallBuffer(): Uint8Array {
    return this.#small;
  }

  /**
   * Accounts for a read of `n` bytes into the small buffer that the caller issued itself
   * (see `smallBuffer`); returns the bytes read, or null at EOF.
   */
  took(n: number | null): Uint8Array | null {
    if (n === null) return null;
    this.#wantLarge = n === this.#small.length;
    return this.#small.subarray(0, n);
  }

  /**
   * Reads the next chunk; null at EOF. A large buffer, once borrowed, is kept while reads return
   * more than the small buffer holds, and given back after the first read that the small buffer
   * could have taken (its bytes are copied into the small buffer first).
   */
  async read(): Promise<Uint8Array | null> {
    if (this.#wantLarge && !this.#large && !this.#released) this.#large = this.#pool.take();
    const buf = this.#large ?? this.#small;
    let n: number | null;
    this.#reading = true;
    try {
      n = await this.#source.read(buf);
    } catch (e) {
      this.#endBurst(); // the read is over: nothing writes into the buffer any more
      throw e;
    } finally {
      this.#reading = false;
    }
    if (n === null) {
      this.#endBurst();
      return null;
    }
    if (buf === this.#small) {
      this.#wantLarge = n === buf.length;
      return buf.subarray(0, n);
    }
    if (n > this.#small.length && !this.#released) return buf.subarray(0, n);
    const out = this.#copyToSmall(buf, n);
    this.#endBurst();
    return out;
  }

  /** Gives a borrowed buffer back and reads with the small one again. */
  #endBurst(): void {
    this.#wantLarge = false;
    this.#giveBack();
  }

  /** The `n` bytes read into `buf`, in the small buffer if they fit there, else a copy. */
  #copyToSmall(buf: Uint8Array, n: number): Uint8Array {
    if (buf === this.#small) return buf.subarray(0, n);
    if (n > this.#small.length) return buf.slice(0, n);
    this.#small.set(buf.subarray(0, n));
    return this.#small.subarray(0, n);
  }

  /**
   * Returns a borrowed buffer to the pool, and borrows no more. Idempotent. Called while a
   * `read()` is in progress (the read still fills the buffer), it takes effect when that read
   * ends. A read that ends with EOF or an error releases by itself.
   */
  release(): void {
    this.#released = true;
    if (!this.#reading) this.#endBurst();
  }

  #giveBack(): void {
    if (!this.#large) return;
    this.#pool.give(this.#large);
    this.#large = undefined;
  }
}
