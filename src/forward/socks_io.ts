/**
 * Byte-level helpers for the proxy: a buffered reader for handshakes, a
 * write-all helper, and the bidirectional relay between a local TCP
 * connection and a tunnel stream.
 *
 * @module
 */

/** Relay buffer size (see NOTES.md: a 64 KiB manual loop is the fast path). */
export const RELAY_BUFFER_SIZE = 64 * 1024;

/**
 * The part of a tunnel stream the proxy uses. `Stream` from
 * src/tunnel/session.ts satisfies it structurally.
 */
export interface RelayStream {
  /** Next chunk; null when the peer half-closed. Throws if the stream was reset. */
  read(): Promise<Uint8Array | null>;
  /** Writes a chunk (may wait for flow-control credit). */
  write(data: Uint8Array): Promise<void>;
  /** Half-closes our side. */
  closeWrite(): Promise<void>;
  /** Aborts the stream in both directions. */
  reset(reason: string): void;
}

/** Something with Deno's `read(p)` contract. */
export interface ByteSource {
  read(p: Uint8Array): Promise<number | null>;
}

/** Something with Deno's `write(p)` contract (may write partially). */
export interface ByteSink {
  write(p: Uint8Array): Promise<number>;
}

/** Writes all of `data` to `sink`, looping over partial writes. */
export async function writeAll(sink: ByteSink, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) {
    off += await sink.write(data.subarray(off));
  }
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

/**
 * Relays bytes between a local TCP connection and a tunnel stream until both
 * directions end. EOF is propagated as a half-close each way; an error on one
 * side aborts the other. `leftover` (bytes the client sent after its
 * handshake) is written to the stream first. Never throws.
 */
export async function relay(
  conn: Deno.Conn,
  stream: RelayStream,
  leftover: Uint8Array = new Uint8Array(0),
): Promise<void> {
  let failed = false;
  const abort = (reason: string) => {
    if (failed) return;
    failed = true;
    try {
      stream.reset(reason);
    } catch { /* already gone */ }
    try {
      conn.close();
    } catch { /* already closed */ }
  };

  const up = async () => {
    try {
      if (leftover.length > 0) await stream.write(leftover);
      const buf = new Uint8Array(RELAY_BUFFER_SIZE);
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        await stream.write(buf.slice(0, n));
      }
      await stream.closeWrite();
    } catch (err) {
      abort(`local connection: ${errorText(err)}`);
    }
  };

  const down = async () => {
    try {
      for (;;) {
        const chunk = await stream.read();
        if (chunk === null) break;
        await writeAll(conn, chunk);
      }
      await conn.closeWrite();
    } catch (err) {
      abort(`remote stream: ${errorText(err)}`);
    }
  };

  await Promise.all([up(), down()]);
  try {
    conn.close();
  } catch { /* already closed */ }
}

/** Best-effort message of an unknown error. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
