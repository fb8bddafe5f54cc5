/**
 * DestinationReader: reads no further than the client side takes, waits for data with the probe
 * only, and bytes come out intact whatever the pools have left.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { BufferPool, type ByteSource } from "../mux/buffers.ts";
import { DestinationReader, PROBE_SIZE, type ReadPools } from "./dest_reader.ts";
import { scriptedSource } from "../../tests/_lib/byte_source.ts";

const KiB = 1024;

function pools(large = 2, small = 2): ReadPools {
  return { large: new BufferPool(64 * KiB, large), small: new BufferPool(16 * KiB, small) };
}

const bytes = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 13 + 5) & 255);

/** Reads to EOF, with `room(i)` as the client side's room before read i; checks each read. */
async function readAll(
  r: DestinationReader,
  room: (i: number) => number,
): Promise<{ data: Uint8Array; sizes: number[] }> {
  const parts: number[] = [];
  const sizes: number[] = [];
  let i = 0;
  let allowed = Infinity;
  const writable = () => {
    allowed = room(i);
    return Promise.resolve(allowed);
  };
  for (;;) {
    allowed = Infinity;
    const c = await r.read({ writable });
    if (c === null) break;
    assert.ok(c.length <= Math.max(PROBE_SIZE, allowed), `read ${c.length} > room ${allowed}`);
    parts.push(...c);
    sizes.push(c.length);
    i++;
  }
  r.release();
  return { data: new Uint8Array(parts), sizes };
}

Deno.test("dest reader: small messages go through the probe alone; nothing is borrowed", async () => {
  const p = pools();
  const src = scriptedSource(bytes(3000), [100, 700, 1]);
  let asked = 0;
  const got = await readAll(new DestinationReader(src, p), () => (asked++, 64 * KiB));
  assert.deepEqual(got.data, bytes(3000));
  assert.ok(src.sizes.every((s) => s === PROBE_SIZE));
  assert.equal(asked, 0, "the client side is asked only when more than a probe is waiting");
});

Deno.test("dest reader: after a full probe it reads only what the client side takes", async () => {
  const p = pools();
  const data = bytes(200 * KiB);
  const src = scriptedSource(data, [Infinity]);
  const r = new DestinationReader(src, p);
  assert.equal(
    (await r.read({ writable: () => Promise.reject(new Error("not asked")) }))?.length,
    PROBE_SIZE,
  );
  // 3,000 bytes of room: a small buffer, 3,000 bytes read.
  assert.equal((await r.read({ writable: () => Promise.resolve(3000) }))?.length, 3000);
  assert.equal(p.small.lent, 1);
  assert.equal(p.large.lent, 0);
  // 100 KiB of room: a large buffer (64 KiB); the small one went back when this read started.
  assert.equal((await r.read({ writable: () => Promise.resolve(100 * KiB) }))?.length, 64 * KiB);
  assert.equal(p.small.lent, 0);
  assert.equal(p.large.lent, 1);
  assert.deepEqual(src.sizes, [PROBE_SIZE, 3000, 64 * KiB]);
  const rest = await readAll(r, () => 100 * KiB);
  assert.equal(rest.data.length, data.length - PROBE_SIZE - 3000 - 64 * KiB);
  assert.equal(p.small.lent + p.large.lent, 0);
});

Deno.test("dest reader: while the client side cannot take more, the socket is not read", async () => {
  const src = scriptedSource(bytes(100 * KiB), [Infinity]);
  const r = new DestinationReader(src, pools());
  assert.equal((await r.read({ writable: () => Promise.resolve(1) }))?.length, PROBE_SIZE);
  let open!: (n: number) => void;
  const next = r.read({ writable: () => new Promise<number>((resolve) => (open = resolve)) });
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(src.sizes, [PROBE_SIZE], "no read while the tunnel has no room");
  open(8000);
  assert.equal((await next)?.length, 8000);
});

Deno.test("dest reader: with both pools lent out it goes on with probe reads", async () => {
  const p = pools(1, 1);
  const hold = [p.large.take()!, p.small.take()!];
  const data = bytes(20 * KiB + 7);
  const src = scriptedSource(data, [Infinity]);
  const got = await readAll(new DestinationReader(src, p), () => 64 * KiB);
  assert.deepEqual(got.data, data);
  assert.ok(src.sizes.every((s) => s === PROBE_SIZE));
  for (const b of hold) (b.length === 64 * KiB ? p.large : p.small).give(b);
});

Deno.test("dest reader: a read error gives the borrowed buffer back", async () => {
  const p = pools();
  let reads = 0;
  const failing: ByteSource = {
    read(buf) {
      if (reads++ === 0) return Promise.resolve(buf.length); // a full probe
      return Promise.reject(new Deno.errors.ConnectionReset("reset"));
    },
  };
  const r = new DestinationReader(failing, p);
  await r.read({ writable: () => Promise.resolve(10 * KiB) });
  await assert.rejects(
    r.read({ writable: () => Promise.resolve(10 * KiB) }),
    Deno.errors.ConnectionReset,
  );
  assert.equal(p.small.lent + p.large.lent, 0);
});

Deno.test("dest reader: release during a read takes effect when the read ends", async () => {
  const p = pools();
  let finish!: (n: number) => void;
  let reads = 0;
  const slow: ByteSource = {
    read(buf) {
      if (reads++ === 0) return Promise.resolve(buf.length);
      return new Promise((resolve) => (finish = resolve));
    },
  };
  const r = new DestinationReader(slow, p);
  await r.read({ writable: () => Promise.resolve(10 * KiB) });
  const pending = r.read({ writable: () => Promise.resolve(10 * KiB) });
  await new Promise((resolve) => setTimeout(resolve, 0));
  r.release();
  assert.equal(p.small.lent, 1, "the socket still writes into the buffer");
  finish(10);
  await pending;
  assert.equal(p.small.lent, 0);
});

Deno.test("dest reader: any chunking and any room: bytes intact, no read past the room", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 300 * KiB }),
      fc.array(fc.integer({ min: 1, max: 100 * KiB }), { minLength: 1, maxLength: 8 }),
      fc.array(fc.integer({ min: 1, max: 200 * KiB }), { minLength: 1, maxLength: 8 }),
      fc.integer({ min: 0, max: 2 }),
      async (size, limits, rooms, poolSize) => {
        const p = pools(poolSize, poolSize);
        const data = bytes(size);
        const got = await readAll(
          new DestinationReader(scriptedSource(data, limits), p),
          (i) => rooms[i % rooms.length],
        );
        assert.deepEqual(got.data, data);
        assert.equal(p.small.lent + p.large.lent, 0);
      },
    ),
    { numRuns: 200 },
  );
});
