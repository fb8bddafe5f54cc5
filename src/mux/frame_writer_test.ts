/**
 * The frame writer's scheduling, on a fake transport that records each write and completes it
 * only when the test says so: fairness (a stream's first frame waits behind at most one quantum
 * of each flooding stream), per-stream byte order, control frames ahead of DATA, HALF_CLOSE
 * never ahead of its stream's DATA, RESET dropping queued DATA, bytes in = bytes out, bounded
 * queues.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { setImmediate } from "node:timers";
import { decodeFrame, encodeFrame, type Frame } from "../protocol/mux.ts";
import { FrameWriter } from "./_frame_writer.ts";
import { BATCH_SIZE, QUEUE_HIGH_WATER, SCHEDULER_QUANTUM, STREAM_HIGH_WATER } from "./options.ts";
import type { Transport } from "./transport.ts";

/** A transport whose writes are recorded and complete only on `complete()`. */
class FakeTransport implements Transport {
  readonly coalesceWrites: boolean;
  /** Every write, copied, with the frames it held. */
  writes: Frame[][] = [];
  #pending: (() => void) | null = null;

  constructor(coalesceWrites = false) {
    this.coalesceWrites = coalesceWrites;
  }

  /** True while a write is in progress. */
  get busy(): boolean {
    return this.#pending !== null;
  }

  write(chunk: Uint8Array): Promise<void> {
    assert.equal(this.#pending, null, "one write at a time");
    assert.ok(chunk.length <= BATCH_SIZE, `write of ${chunk.length} bytes`);
    const copy = chunk.slice();
    const frames: Frame[] = [];
    let off = 0;
    while (off < copy.length) {
      const r = decodeFrame(copy.subarray(off));
      assert.equal(r.kind, "ok", "writes hold whole, valid frames");
      if (r.kind !== "ok") break;
      frames.push(r.frame);
      off += r.length;
    }
    this.writes.push(frames);
    return new Promise((resolve) => (this.#pending = resolve));
  }

  /** Completes the write in progress (if any). */
  complete(): void {
    const p = this.#pending;
    this.#pending = null;
    p?.();
  }

  read(): Promise<Uint8Array | null> {
    return new Promise(() => {});
  }

  close(): void {}
}

/** Lets microtasks and immediates run (the writer's loop and its kick). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Payload byte `i` of stream `id`: tells streams and positions apart. */
function payloadByte(id: number, i: number): number {
  return (id * 31 + i * 7 + (i >>> 8)) & 0xff;
}

/** A stream as a producer: queues its bytes in order, within the writer's room. */
class Producer {
  sent = 0;
  constructor(readonly id: number, readonly writer: FrameWriter) {}

  /** Queues up to `n` bytes if the writer has space for this stream; returns bytes queued. */
  offer(n: number): number {
    if (!this.writer.hasSpace(this.id)) return 0;
    const k = Math.min(n, this.writer.room(this.id), 65536);
    const data = new Uint8Array(k);
    for (let i = 0; i < k; i++) data[i] = payloadByte(this.id, this.sent + i);
    this.writer.data(this.id, data);
    data.fill(0); // the writer copied it: reusing the buffer must not matter
    this.sent += k;
    return k;
  }
}

/** All frames written, in order, each with the index of its write. */
function written(t: FakeTransport): { frame: Frame; write: number }[] {
  return t.writes.flatMap((frames, write) => frames.map((frame) => ({ frame, write })));
}

/** Checks each stream's DATA bytes arrived complete and in order; returns bytes per stream. */
function checkStreams(t: FakeTransport, producers: Producer[]): void {
  for (const p of producers) {
    let i = 0;
    for (const { frame } of written(t)) {
      if (frame.type !== "data" || frame.streamId !== p.id) continue;
      for (const b of frame.data) {
        assert.equal(b, payloadByte(p.id, i), `stream ${p.id} byte ${i}`);
        i++;
      }
    }
    assert.equal(i, p.sent, `stream ${p.id}: bytes in = bytes out`);
  }
}

async function drain(t: FakeTransport, w: FrameWriter): Promise<void> {
  let idle = false;
  void w.idle().then(() => (idle = true));
  for (let i = 0; i < 10_000 && !idle; i++) {
    t.complete();
    await settle();
  }
  assert.ok(idle, "the writer drains");
}

const step = fc.oneof(
  fc.record({
    op: fc.constant("data" as const),
    s: fc.nat(3),
    n: fc.integer({ min: 1, max: 70_000 }),
  }),
  fc.record({
    op: fc.constant("small" as const),
    s: fc.nat(3),
    n: fc.integer({ min: 1, max: 100 }),
  }),
  fc.record({ op: fc.constant("control" as const), s: fc.nat(3) }),
  fc.record({ op: fc.constant("fin" as const), s: fc.nat(3) }),
  fc.record({ op: fc.constant("complete" as const) }),
);

Deno.test("frame writer property: per-stream order, bytes in = out, control first, HALF_CLOSE after its DATA", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(step, { maxLength: 60 }), fc.boolean(), async (steps, coalesce) => {
      const t = new FakeTransport(coalesce);
      const w = new FrameWriter(t, (e) => assert.fail(`writer failed: ${e}`));
      const producers = [1, 3, 5, 7].map((id) => new Producer(id, w));
      const finned = new Set<number>();
      /** Control frames queued: the write they must be in (the next one to start). */
      const controls: { increment: number; streamId: number; write: number }[] = [];
      let increment = 0;
      for (const s of steps) {
        const p = s.op === "complete" ? undefined : producers[s.s];
        switch (s.op) {
          case "data":
          case "small":
            if (!finned.has(p!.id)) p!.offer(s.n);
            break;
          case "control": {
            const frame = {
              type: "window_update",
              streamId: p!.id,
              increment: ++increment,
            } as const;
            // The loop may start a write before this frame, in the same turn, only if no
            // write is in progress now; either way it is in the first write that starts after.
            controls.push({ increment, streamId: p!.id, write: t.writes.length });
            w.control(encodeFrame(frame));
            break;
          }
          case "fin":
            if (!finned.has(p!.id)) {
              finned.add(p!.id);
              w.halfClose(p!.id, encodeFrame({ type: "half_close", streamId: p!.id }));
            }
            break;
          case "complete":
            t.complete();
            await settle();
            break;
        }
        // The shared mark, one write past it, and a small allowance per idle stream.
        assert.ok(
          w.queuedData <= QUEUE_HIGH_WATER + STREAM_HIGH_WATER + producers.length * 4096,
          "queue bounded",
        );
      }
      await drain(t, w);
      checkStreams(t, producers);
      const frames = written(t);
      // Control frames: in the first write started after they were queued, ahead of its DATA.
      for (const c of controls) {
        const at = frames.find((f) =>
          f.frame.type === "window_update" && f.frame.increment === c.increment
        );
        assert.ok(at, `WINDOW_UPDATE ${c.increment} written`);
        assert.equal(at.write, c.write, `WINDOW_UPDATE ${c.increment}: write`);
        const batch = t.writes[at.write];
        const pos = batch.indexOf(at.frame);
        assert.ok(
          batch.slice(0, pos).every((f) => f.type !== "data"),
          `WINDOW_UPDATE ${c.increment} behind DATA`,
        );
      }
      // HALF_CLOSE: exactly once per finished stream, after all of its DATA.
      for (const id of finned) {
        const fins = frames.flatMap((f, i) =>
          f.frame.type === "half_close" && f.frame.streamId === id ? [i] : []
        );
        assert.equal(fins.length, 1, `stream ${id}: one HALF_CLOSE`);
        const lastData = frames.findLastIndex((f) =>
          f.frame.type === "data" && f.frame.streamId === id
        );
        assert.ok(lastData < fins[0], `stream ${id}: DATA after HALF_CLOSE`);
      }
    }),
    { numRuns: 150 },
  );
});

Deno.test("frame writer property: with streams flooding, another stream's frame waits behind at most one quantum of each", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 0, max: 40 }),
      fc.integer({ min: 1, max: 2000 }),
      fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 8 }),
      fc.boolean(),
      async (flooders, at, size, chunks, coalesce) => {
        const t = new FakeTransport(coalesce);
        const w = new FrameWriter(t, (e) => assert.fail(`writer failed: ${e}`));
        const floods = Array.from({ length: flooders }, (_, i) => new Producer(1 + 2 * i, w));
        const small = new Producer(99, w);
        let c = 0;
        const refill = () => {
          for (const f of floods) while (f.offer(chunks[c++ % chunks.length]) > 0);
        };
        refill();
        await settle();
        for (let i = 0; i < at; i++) {
          t.complete();
          await settle();
          refill();
        }
        // The small frame is queued now; the write in progress (if any) is already handed over.
        const before = t.writes.length;
        small.offer(size);
        assert.equal(small.sent, size);
        let found = -1;
        for (let i = 0; i < 1000 && found < 0; i++) {
          refill();
          t.complete();
          await settle();
          found = t.writes.findIndex((frames) =>
            frames.some((f) => f.type === "data" && f.streamId === 99)
          );
        }
        assert.ok(found >= before, "the small frame was written");
        // DATA of the flooding streams written after it was queued, ahead of it.
        const ahead = new Map<number, number>();
        for (let i = before; i <= found; i++) {
          for (const f of t.writes[i]) {
            if (f.type !== "data") continue;
            if (f.streamId === 99) break;
            ahead.set(f.streamId, (ahead.get(f.streamId) ?? 0) + f.data.length);
          }
        }
        for (const [id, n] of ahead) {
          assert.ok(n <= SCHEDULER_QUANTUM, `stream ${id}: ${n} bytes ahead of the small frame`);
        }
        await drain(t, w);
        checkStreams(t, [...floods, small]);
      },
    ),
    { numRuns: 100 },
  );
});

Deno.test("frame writer: RESET drops the stream's queued DATA and HALF_CLOSE, others continue", async () => {
  const t = new FakeTransport();
  const w = new FrameWriter(t, (e) => assert.fail(`writer failed: ${e}`));
  const a = new Producer(1, w);
  const b = new Producer(3, w);
  while (a.offer(65536) > 0);
  while (b.offer(65536) > 0);
  w.halfClose(1, encodeFrame({ type: "half_close", streamId: 1 }));
  await settle(); // the first batch is in progress
  const inProgress = t.writes.length;
  w.discard(1);
  w.control(encodeFrame({ type: "reset", streamId: 1, reason: "gone" }));
  await drain(t, w);
  const after = t.writes.slice(inProgress).flat();
  assert.deepEqual(after[0], { type: "reset", streamId: 1, reason: "gone" });
  assert.ok(
    after.every((f) => !("streamId" in f) || f.streamId !== 1 || f.type === "reset"),
    "nothing of stream 1",
  );
  assert.equal(w.queuedData, 0);
  const bBytes = t.writes.flat().reduce(
    (n, f) => n + (f.type === "data" && f.streamId === 3 ? f.data.length : 0),
    0,
  );
  assert.equal(bBytes, b.sent);
});

Deno.test("frame writer: a writer waiting for its own queue, or the shared one, is woken as it drains", async () => {
  const t = new FakeTransport();
  const w = new FrameWriter(t, (e) => assert.fail(`writer failed: ${e}`));
  const streams = Array.from({ length: 8 }, (_, i) => new Producer(1 + 2 * i, w));
  for (const p of streams) while (p.offer(65536) > 0);
  assert.ok(w.queuedData >= QUEUE_HIGH_WATER, "the shared queue is full");
  assert.ok(w.queuedData < QUEUE_HIGH_WATER + STREAM_HIGH_WATER);
  const waiting = streams.filter((p) => !w.hasSpace(p.id));
  assert.ok(waiting.length >= 2, `${waiting.length} streams waiting`);
  // A stream with nothing queued may still queue a small write.
  const idle = new Producer(99, w);
  assert.ok(w.hasSpace(99));
  assert.ok(idle.offer(100_000) <= 4096);
  streams.push(idle);
  let woken = 0;
  for (const p of waiting) void w.waitSpace(p.id).then(() => woken++);
  await drain(t, w);
  assert.equal(woken, waiting.length);
  checkStreams(t, streams);
});

Deno.test("frame writer: a deferred OPEN shares the write with the DATA queued right after it", async () => {
  const t = new FakeTransport(true);
  const w = new FrameWriter(t, (e) => assert.fail(`writer failed: ${e}`));
  w.deferredControl(
    encodeFrame({ type: "open", streamId: 1, window: 65536, header: new Uint8Array([1]) }),
  );
  await Promise.resolve();
  assert.equal(t.writes.length, 0, "the OPEN waits for DATA");
  w.data(1, new Uint8Array([7]));
  await settle();
  assert.deepEqual(t.writes[0].map((f) => f.type), ["open", "data"]);
  // Alone, it goes out once the wait is over.
  t.complete();
  w.deferredControl(
    encodeFrame({ type: "open", streamId: 3, window: 65536, header: new Uint8Array([1]) }),
  );
  for (let i = 0; i < 1000 && t.writes.length < 2; i++) await settle();
  assert.deepEqual(t.writes[1].map((f) => f.type), ["open"]);
  await drain(t, w);
});
