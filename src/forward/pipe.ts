/**
 * The relay loop between a local TCP connection and a tunnel stream, shared by port forwarding
 * and the proxy.
 *
 * A manual read/write loop, not `pipeTo`: it is faster and keeps half-close (EOF from either side
 * becomes a half-close on the other). Reads go through a `RelayReader` (src/mux/buffers.ts): a
 * small buffer per connection, a large one borrowed from a shared pool only during a burst.
 *
 * @module
 */

import { errorText } from "../errors.ts";
import { RelayReader } from "../mux/buffers.ts";

/**
 * The part of a tunnel stream the relay uses; `Stream` from src/mux satisfies it.
 * `write()` must be done with its bytes when it resolves (the relay reuses its read buffer).
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

/** A read of the local connection issued before the relay started. */
export interface PendingRead {
  /** The read's result (`conn.read(buf)`). */
  n: Promise<number | null>;
  /** The buffer it reads into (SMALL_READ_BUFFER bytes); the relay goes on reading into it. */
  buf: Uint8Array;
}

/** Something with Deno's `write(p)` contract (may write partially). */
export interface ByteSink {
  write(p: Uint8Array): Promise<number>;
}

/** Writes all of `data` to `sink`, looping over partial writes. */
export async function writeAll(sink: ByteSink, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await sink.write(data.subarray(off));
}

/**
 * Relays bytes between a local TCP connection and a tunnel stream until both directions end.
 * `leftover` (bytes the client sent during a proxy handshake) goes to the stream first; so does
 * the result of `firstRead`, a read issued before the stream was opened. An error on one side
 * aborts the other (the stream is reset, the connection closed). Never throws; returns the byte
 * counts.
 */
export async function relay(
  conn: Deno.Conn,
  stream: RelayStream,
  leftover: Uint8Array = new Uint8Array(0),
  firstRead?: PendingRead,
): Promise<{ up: number; down: number }> {
  let up = 0;
  let down = 0;
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

  const reader = new RelayReader(conn, undefined, firstRead?.buf);
  const upstream = async () => {
    try {
      if (leftover.length > 0) await stream.write(leftover);
      let chunk = firstRead ? reader.took(await firstRead.n) : await reader.read();
      while (chunk !== null) {
        up += chunk.length;
        await stream.write(chunk);
        chunk = await reader.read();
      }
      await stream.closeWrite();
    } catch (err) {
      abort(`local connection: ${errorText(err)}`);
    } finally {
      reader.release();
    }
  };

  const downstream = async () => {
    try {
      for (;;) {
        const chunk = await stream.read();
        if (chunk === null) break;
        down += chunk.length;
        await writeAll(conn, chunk);
      }
      await conn.closeWrite();
    } catch (err) {
      abort(`remote stream: ${errorText(err)}`);
    }
  };

  await Promise.all([upstream(), downstream()]);
  try {
    conn.close();
  } catch { /* already closed */ }
  return { up, down };
}
