/**
 * ReceiveBuffer: bytes come out in order and intact, a lent view is never overwritten before the
 * reader is done with it (not even after a reset, by another stream), chunks go back to the pool,
 * and a stream holds at most its bytes plus one partly filled chunk (the smallest that held the
 * rest of the data that started it) and the chunk lent to its reader.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { ChunkPool, SizedChunkPool } from "./buffers.ts";
import {
  LARGE_RECEIVE_CHUNK,
  ReceiveBuffer,
  type ReceivePools,
  SMALL_RECEIVE_CHUNK,
} from "./_receive_buffer.ts";

/**
 * Pools like the process-wide ones (4, 8 and 16 KiB chunks for small windows, 64 KiB for large)
 * that keep every chunk given back, and count what they allocated and what is held (taken, not
 * given back), in chunks and bytes.
 */
function pools(): ReceivePools & {
  allocated: () => number;
  held: () => number;
  heldBytes: () => number;
} {
  let allocated = 0;
  let heldBytes = 0;
  const counting = (size: number) => {
    const pool = new ChunkPool(size, Infinity);
    const take = pool.take.bind(pool);
    const give = pool.give.bind(pool);
    pool.take = () => {
      if (pool.free === 0) allocated++;
      heldBytes += size;
      return take();
    };
    pool.give = (chunk) => {
      heldBytes -= size;
      give(chunk);
    };
    return pool;
  };
  const sized = [counting(4 * 1024), counting(8 * 1024), counting(SMALL_RECEIVE_CHUNK)];
  const large = counting(LARGE_RECEIVE_CHUNK);
  const all = [...sized, large];
  return {
    small: new SizedChunkPool(sized),
    large,
    allocated: () => allocated,
    held: () => allocated - all.reduce((n, p) => n + p.free, 0),
    heldBytes: () => heldBytes,
  };
}

/**
 * The size of the chunk a view of `n` bytes was lent from (`max`: the largest size). Exact,
 * because a view is a chunk's whole fill, and a chunk starts with more bytes than the next smaller
 * size holds.
 */
function chunkOf(n: number, max: number): number {
  if (max === LARGE_RECEIVE_CHUNK) return max;
  return [4 * 1024, 8 * 1024].find((size) => n <= size) ?? max;
}

/** `n` bytes counting up from `start` (mod 251, so runs are easy to tell apart). */
function bytes(start: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (start + i) % 251;
  return out;
}

Deno.test("receive buffer: small frames share a chunk; a read returns one chunk's bytes", () => {
  const b = new ReceiveBuffer(pools());
  for (let i = 0; i < 4; i++) b.push(bytes(i * 100, 100), 32 * 1024);
  assert.equal(b.length, 400);
  assert.deepEqual(b.take(), bytes(0, 400));
  assert.equal(b.take(), null);
  assert.equal(b.length, 0);
});

Deno.test("receive buffer: chunk size follows the window", () => {
  const p = pools();
  const small = new ReceiveBuffer(p);
  small.push(bytes(0, 20_000), 32 * 1024);
  assert.equal(small.take()?.length, SMALL_RECEIVE_CHUNK);
  assert.equal(small.take()?.length, 20_000 - SMALL_RECEIVE_CHUNK);
  small.release();
  assert.equal(p.heldBytes(), 0);
  const large = new ReceiveBuffer(p);
  large.push(bytes(0, 100_000), 4 * 1024 * 1024);
  assert.equal(large.take()?.length, LARGE_RECEIVE_CHUNK);
  assert.equal(large.take()?.length, 100_000 - LARGE_RECEIVE_CHUNK);
});

Deno.test("receive buffer: a few KiB take a chunk of a few KiB, later bytes fill it first", () => {
  const p = pools();
  const b = new ReceiveBuffer(p);
  b.push(bytes(0, 3000), 32 * 1024);
  assert.equal(p.heldBytes(), 4 * 1024);
  b.push(bytes(3000, 1000), 32 * 1024); // fills the 4 KiB chunk up to 4,000
  assert.equal(p.heldBytes(), 4 * 1024);
  b.push(bytes(4000, 6000), 32 * 1024); // 96 bytes into it, 5,904 into an 8 KiB chunk
  assert.equal(p.heldBytes(), 12 * 1024);
  assert.deepEqual(b.take(), bytes(0, 4096));
  assert.deepEqual(b.take(), bytes(4096, 5904));
  b.release();
  assert.equal(p.heldBytes(), 0);
});

Deno.test("receive buffer: a view lent before a reset survives another stream's data", () => {
  const p = pools();
  const a = new ReceiveBuffer(p);
  const b = new ReceiveBuffer(p);
  a.push(bytes(7, 1000), 32 * 1024);
  a.push(bytes(9, 1000), 32 * 1024);
  const view = a.take()!;
  const copy = view.slice();
  a.clear(); // reset while the reader still writes `view` somewhere
  for (let i = 0; i < 8; i++) b.push(new Uint8Array(SMALL_RECEIVE_CHUNK).fill(0xee), 32 * 1024);
  assert.deepEqual(view, copy);
  // Once the reader reads again, the chunk is free for reuse.
  const before = p.heldBytes();
  a.release();
  assert.equal(p.heldBytes(), before - 4 * 1024);
});

Deno.test("receive buffer: property: bytes intact, views stable until the next take, chunks returned", () => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant("push" as const), n: fc.integer({ min: 1, max: 70_000 }) }),
    fc.record({ kind: fc.constant("take" as const) }),
  );
  fc.assert(
    fc.property(
      fc.array(op, { maxLength: 60 }),
      fc.constantFrom(16 * 1024, 32 * 1024, 256 * 1024),
      (ops, window) => {
        const p = pools();
        const b = new ReceiveBuffer(p);
        let pushed = 0;
        let read = 0;
        let view: Uint8Array | null = null;
        let viewCopy: Uint8Array | null = null;
        const checkView = () => {
          if (view) assert.deepEqual(view, viewCopy, "a lent view changed before the next take");
        };
        for (const o of ops) {
          if (o.kind === "push") {
            b.push(bytes(pushed, o.n), window);
            pushed += o.n;
            checkView();
          } else {
            checkView();
            view = b.take();
            viewCopy = view?.slice() ?? null;
            if (view) {
              assert.ok(view.length <= LARGE_RECEIVE_CHUNK);
              assert.deepEqual(view, bytes(read, view.length), "bytes out of order");
              read += view.length;
            }
          }
          assert.equal(b.length, pushed - read);
          // Held: the buffered bytes, less than one chunk of the largest size left empty (every
          // chunk but the last is full), and the chunk lent to the reader.
          const chunk = window >= 2 * LARGE_RECEIVE_CHUNK
            ? LARGE_RECEIVE_CHUNK
            : SMALL_RECEIVE_CHUNK;
          const lent = view ? chunkOf(view.length, chunk) : 0;
          assert.ok(
            p.heldBytes() < b.length + chunk + lent,
            `${p.heldBytes()} bytes held for ${b.length} buffered`,
          );
        }
        // Drain, then every chunk is back in the pools.
        for (let v = b.take(); v; v = b.take()) {
          assert.deepEqual(v, bytes(read, v.length));
          read += v.length;
        }
        b.release();
        assert.equal(read, pushed);
        assert.equal(p.held(), 0, "chunks not given back");
        assert.equal(p.heldBytes(), 0);
      },
    ),
    { numRuns: 300 },
  );
});
