/**
 * Byte-level helpers for the proxy's handshakes: a buffered reader with exact
 * and delimited reads. (The relay loop itself is src/forward/pipe.ts.)
 *
 * @module
 */

/** Something with Deno's `read(p)` contract. */
export interface ByteSource {
  read(p: Uint8Array): Promise<number | null>;
}

/** Thrown by {@link ByteReader.readUntil} when the delimiter is not found within the limit. */
export class LimitExceededError extends Error {
  constructor(limit: number) {
    super(`no delimiter within ${limit} bytes`);
    this.name = "LimitExceededError";
  }
}

/**
 * A small buffered reader used only during handshakes. Whatever it read past
 * the handshake is returned by {@link ByteReader.leftover}, to be relayed first.
 */
export class ByteReader {
  #src: ByteSource;
  #buf = new Uint8Array(0);

  /** Wraps a byte source. */
  constructor(src: ByteSource) {
    this.#src = src;
  }

  /** Reads more bytes into the buffer; false on EOF. */
  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(4096);
    const n = await this.#src.read(chunk);
    if (n === null) return false;
    const next = new Uint8Array(this.#buf.length + n);
    next.set(this.#buf, 0);
    next.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = next;
    return true;
  }

  /** Returns the buffered bytes without consuming them, reading until at least `n` are there (fewer on EOF). */
  async peek(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) {
      if (!await this.#fill()) break;
    }
    return this.#buf.subarray(0, Math.min(n, this.#buf.length));
  }

  /** Reads exactly `n` bytes; null if EOF comes first. */
  async readExact(n: number): Promise<Uint8Array | null> {
    const got = await this.peek(n);
    if (got.length < n) return null;
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /**
   * Reads up to and including `delim`; null on EOF first.
   * Throws {@link LimitExceededError} if `limit` bytes arrive without it.
   */
  async readUntil(delim: Uint8Array, limit: number): Promise<Uint8Array | null> {
    let searchFrom = 0;
    for (;;) {
      const idx = indexOf(this.#buf, delim, searchFrom);
      if (idx >= 0) {
        const end = idx + delim.length;
        if (end > limit) throw new LimitExceededError(limit);
        const out = this.#buf.slice(0, end);
        this.#buf = this.#buf.subarray(end);
        return out;
      }
      if (this.#buf.length >= limit) throw new LimitExceededError(limit);
      searchFrom = Math.max(0, this.#buf.length - delim.length + 1);
      if (!await this.#fill()) return null;
    }
  }

  /** Bytes read past the consumed part (and removes them from the reader). */
  leftover(): Uint8Array {
    const out = this.#buf.slice();
    this.#buf = new Uint8Array(0);
    return out;
  }
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = from; i <= hay.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (hay[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}
