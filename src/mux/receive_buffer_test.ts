/**
 * ReceiveBuffer: bytes come out in order and intact, a lent view is never overwritten before the
 * reader is done with it (not even after a reset, by another stream), chunks go back to the pool,
 * and a stream holds at most its bytes plus one partly filled chunk.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { ChunkPool } from "./buffers.ts";
import {
  LARGE_RECEIVE_CHUNK,
  ReceiveBuffer,
  type ReceivePools,
  SMALL_RECEIVE_CHUNK,
} from "./_receive_buffer.ts";

/** Pools that keep every chunk given back, and count the chunks they allocated. */
function pools(): ReceivePools & { allocated: () => number; held: () => number } {
  let allocated = 0;
  const counting = (size: number) => {
    const pool = new ChunkPool(size, Infinity);
    const take = pool.take.bind(pool);
    pool.take = () => {
      if (pool.free === 0) allocated++;
      return take();
    };
    return pool;
  };
  const small = counting(SMALL_RECEIVE_CHUNK);
  const large = counting(LARGE_RECEIVE_CHUNK);
  return {
    small,
    large,
    allocated: () => allocated,
    held: () => allocated - small.free - large.free,
  };
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
  const large = new ReceiveBuffer(p);
  large.push(bytes(0, 100_000), 4 * 1024 * 1024);
  assert.equal(large.take()?.length, LARGE_RECEIVE_CHUNK);
  assert.equal(large.take()?.length, 100_000 - LARGE_RECEIVE_CHUNK);
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
  const before = p.small.free;
  a.release();
  assert.equal(p.small.free, before + 1);
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
          // Held: the buffered bytes' chunks, one partly filled, one lent to the reader.
          const chunk = window >= 2 * LARGE_RECEIVE_CHUNK
            ? LARGE_RECEIVE_CHUNK
            : SMALL_RECEIVE_CHUNK;
          assert.ok(p.held() <= Math.ceil(b.length / chunk) + 2, `${p.held()} chunks held`);
        }
        // Drain, then every chunk is back in the pools.
        for (let v = b.take(); v; v = b.take()) {
          assert.deepEqual(v, bytes(read, v.length));
          read += v.length;
        }
        b.release();
        assert.equal(read, pushed);
        assert.equal(p.held(), 0, "chunks not given back");
      },
    ),
    { numRuns: 300 },
  );
});
