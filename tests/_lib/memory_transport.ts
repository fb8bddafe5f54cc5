/**
 * An in-memory pair of connected Transports for tests of the mux Session and what runs over it.
 *
 * @module
 */

import type { Transport } from "../../src/mux/mod.ts";

/** Bytes a memory transport buffers before `write()` waits for the peer to read. */
const MEMORY_HIGH_WATER = 1024 * 1024;

/** One direction of an in-memory pipe. */
class MemoryPipe {
  chunks: Uint8Array[] = [];
  buffered = 0;
  ended = false;
  readerWaiter: (() => void) | null = null;
  writerWaiters: (() => void)[] = [];

  wakeReader(): void {
    const w = this.readerWaiter;
    this.readerWaiter = null;
    w?.();
  }

  wakeWriters(): void {
    const ws = this.writerWaiters;
    this.writerWaiters = [];
    for (const w of ws) w();
  }
}

/**
 * Creates two connected in-memory transports (for tests): bytes written to one are read from
 * the other (`coalesceWrites` sets the transports' hint of that name). Writes copy their chunk
 * and wait while more than 1 MiB is unread. Closing either end ends both directions: the closer
 * reads EOF at once, the peer after draining what was sent.
 */
export function memoryTransportPair(
  opts: { coalesceWrites?: boolean } = {},
): [Transport, Transport] {
  const ab = new MemoryPipe();
  const ba = new MemoryPipe();
  const end = (rx: MemoryPipe, tx: MemoryPipe): Transport => {
    let closed = false;
    return {
      coalesceWrites: opts.coalesceWrites,
      async read(): Promise<Uint8Array | null> {
        while (true) {
          if (closed) return null;
          const chunk = rx.chunks.shift();
          if (chunk) {
            rx.buffered -= chunk.length;
            if (rx.buffered <= MEMORY_HIGH_WATER) rx.wakeWriters();
            return chunk;
          }
          if (rx.ended) return null;
          await new Promise<void>((resolve) => (rx.readerWaiter = resolve));
        }
      },
      async write(chunk: Uint8Array): Promise<void> {
        while (!closed && !tx.ended && tx.buffered > MEMORY_HIGH_WATER) {
          await new Promise<void>((resolve) => tx.writerWaiters.push(resolve));
        }
        if (closed || tx.ended) throw new Deno.errors.BrokenPipe("memory transport is closed");
        if (chunk.length === 0) return;
        tx.chunks.push(chunk.slice());
        tx.buffered += chunk.length;
        tx.wakeReader();
      },
      close(): void {
        if (closed) return;
        closed = true;
        tx.ended = true;
        rx.ended = true;
        rx.chunks = [];
        rx.buffered = 0;
        for (const p of [rx, tx]) {
          p.wakeReader();
          p.wakeWriters();
        }
      },
    };
  };
  return [end(ba, ab), end(ab, ba)];
}
