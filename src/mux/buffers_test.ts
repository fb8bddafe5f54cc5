/**
 * RelayReader and BufferPool: which buffer each read uses, and that bytes come out intact.
 * SizedChunkPool: which size a chunk has, and where it goes back to.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  BufferPool,
  ChunkPool,
  RelayReader,
  SizedChunkPool,
  SMALL_READ_BUFFER,
} from "./buffers.ts";
import { scriptedSource } from "../../tests/_lib/byte_source.ts";

async function readAll(r: RelayReader): Promise<Uint8Array> {
  const parts: number[] = [];
  for (let c = await r.read(); c !== null; c = await r.read()) parts.push(...c);
  return new Uint8Array(parts);
}

const bytes = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 255);

Deno.test("buffers: small reads stay in the small buffer; the pool lends nothing", async () => {
  const pool = new BufferPool(64 * 1024, 4);
  const src = scriptedSource(bytes(5000), [100, 1000, 3]);
  const r = new RelayReader(src, pool);
  assert.deepEqual(await readAll(r), bytes(5000));
  assert.ok(src.sizes.every((s) => s === SMALL_READ_BUFFER));
  assert.equal(pool.lent, 0);
});

Deno.test("buffers: a full read borrows a large buffer until a read the small one could take", async () => {
  const pool = new BufferPool(64 * 1024, 4);
  const data = bytes(SMALL_READ_BUFFER + 40_000 + 30_000 + 500);
  const src = scriptedSource(data, [Infinity, 40_000, 30_000, 500]);
  const r = new RelayReader(src, pool);
  assert.equal((await r.read())?.length, SMALL_READ_BUFFER);
  assert.equal(pool.lent, 0);
  assert.equal((await r.read())?.length, 40_000);
  assert.equal(pool.lent, 1);
  assert.equal((await r.read())?.length, 30_000);
  assert.equal(pool.lent, 1);
  const last = await r.read(); // 500 bytes: copied into the small buffer, large one given back
  assert.deepEqual(last, data.subarray(data.length - 500));
  assert.equal(pool.lent, 0);
  assert.equal(await r.read(), null);
  assert.deepEqual(src.sizes, [
    SMALL_READ_BUFFER,
    64 * 1024,
    64 * 1024,
    64 * 1024,
    SMALL_READ_BUFFER,
  ]);
});

Deno.test("buffers: when the pool is empty, a loop keeps reading with its small buffer", async () => {
  const pool = new BufferPool(64 * 1024, 1);
  const held = pool.take()!;
  const src = scriptedSource(bytes(200_000), [Infinity]);
  const r = new RelayReader(src, pool);
  assert.deepEqual(await readAll(r), bytes(200_000));
  assert.ok(src.sizes.every((s) => s === SMALL_READ_BUFFER));
  pool.give(held);
  assert.equal(pool.lent, 0);
});

Deno.test("buffers: a failed read gives the large buffer back", async () => {
  const pool = new BufferPool(64 * 1024, 2);
  let calls = 0;
  const r = new RelayReader({
    read(p) {
      if (++calls === 1) return Promise.resolve(p.length);
      return Promise.reject(new Error("reset"));
    },
  }, pool);
  await r.read();
  await assert.rejects(r.read(), /reset/);
  assert.equal(pool.lent, 0);
});

Deno.test("buffers: release() during a read takes effect when the read ends; no borrowing after it", async () => {
  const pool = new BufferPool(64 * 1024, 2);
  let finish: (n: number) => void = () => {};
  let fill = true;
  const r = new RelayReader({
    read(p) {
      if (fill) return Promise.resolve(p.length); // a full read: the next one borrows
      return new Promise((resolve) => {
        finish = (n) => {
          p.fill(7, 0, n);
          resolve(n);
        };
      });
    },
  }, pool);
  await r.read();
  fill = false;
  const pending = r.read(); // reads into a borrowed large buffer
  assert.equal(pool.lent, 1);
  r.release();
  assert.equal(pool.lent, 1, "still being read into");
  finish(40_000);
  const got = await pending;
  assert.equal(got?.length, 40_000);
  assert.ok(got?.every((b) => b === 7));
  assert.equal(pool.lent, 0);
  fill = true;
  await r.read();
  await r.read();
  assert.equal(pool.lent, 0, "a released reader borrows no more");
});

Deno.test("buffers: any read pattern delivers the bytes in order and returns every buffer", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 300_000 }),
      fc.array(fc.oneof(fc.integer({ min: 1, max: 70_000 }), fc.constant(Infinity)), {
        minLength: 1,
        maxLength: 10,
      }),
      fc.integer({ min: 0, max: 2 }),
      async (n, limits, max) => {
        const pool = new BufferPool(64 * 1024, max);
        const data = bytes(n);
        const r = new RelayReader(scriptedSource(data, limits), pool);
        assert.deepEqual(await readAll(r), data);
        assert.equal(pool.lent, 0);
      },
    ),
    { numRuns: 100 },
  );
});

Deno.test("sized chunks: the smallest size that holds the bytes, the largest when none does", () => {
  const lists = [new ChunkPool(4096, 8), new ChunkPool(8192, 8), new ChunkPool(16384, 8)];
  const pool = new SizedChunkPool(lists);
  assert.equal(pool.size, 16384);
  const sizes = [1, 4096, 4097, 8192, 8193, 16384, 70_000].map((n) => pool.take(n).length);
  assert.deepEqual(sizes, [4096, 4096, 8192, 8192, 16384, 16384, 16384]);
  // A chunk goes back to the list of its size, and is handed out again from there.
  const c = pool.take(5000);
  pool.give(c);
  assert.deepEqual(lists.map((l) => l.free), [0, 1, 0]);
  assert.equal(pool.take(6000), c);
  assert.throws(() => new SizedChunkPool([lists[1], lists[0]]), RangeError);
  assert.throws(() => new SizedChunkPool([]), RangeError);
});
