/**
 * The frame writer of a Session: a scheduler that decides which frames go into the next
 * transport write. Private to src/mux (Session and Stream use it).
 *
 * - **Control frames** (OPEN, STATUS, WINDOW_UPDATE, PING/PONG, RESET, GO_AWAY, and HALF_CLOSE
 *   of a stream with nothing queued) wait in one FIFO and always go first in the next write,
 *   ahead of any DATA still queued. They never wait for space; past QUEUE_OVERFLOW queued bytes
 *   (a peer that sends PINGs/OPENs without reading the answers) the session ends.
 * - **DATA** waits in per-stream queues (payload copied at queue time into pooled chunks, the
 *   smallest that hold it, so the caller may reuse its buffer at once). Streams with queued DATA
 *   are served round-robin, at most SCHEDULER_QUANTUM payload bytes per turn, and the frame
 *   headers are made when a turn is served: several small writes of one stream travel as one
 *   DATA frame, a large one as several. So a stream's first frame waits behind at most one
 *   quantum of each other active stream, plus the transport write already in progress (at most
 *   BATCH_SIZE bytes).
 * - **Ordering**: control frames are written in the order queued; a stream's HALF_CLOSE queued
 *   while it still has DATA waiting goes right after that DATA (never before); a RESET drops the
 *   stream's queued DATA (the peer discards it anyway) and goes out as a control frame. A stream's
 *   OPEN (client) or STATUS (server) is queued before its first DATA, so it is written before it.
 * - **Backpressure**: a stream may queue DATA while the session has fewer than QUEUE_HIGH_WATER
 *   payload bytes queued and the stream fewer than STREAM_HIGH_WATER (so one stream cannot fill
 *   the shared queue), and a stream with nothing queued may always queue IDLE_ALLOWANCE (4 KiB),
 *   so an interactive stream's request never waits for space. One `data()` call adds at most
 *   `room()` bytes, so queued DATA stays below QUEUE_HIGH_WATER + STREAM_HIGH_WATER + 4 KiB per
 *   stream.
 * - **Latency** it cannot help: bytes already handed to the transport (socket buffers, proxies
 *   on the way) are FIFO; how much of a stream is there is bounded by its flow-control window.
 *
 * @module
 */

import { FRAME_HEADER_LENGTH, MAX_DATA_PAYLOAD, putDataFrameHeader } from "../protocol/mux.ts";
import { setImmediate } from "node:timers";
import {
  BATCH_SIZE,
  EARLY_DATA_WAIT_MS,
  QUEUE_HIGH_WATER,
  QUEUE_OVERFLOW,
  SCHEDULER_QUANTUM,
  STREAM_HIGH_WATER,
} from "./options.ts";
import type { Transport } from "./transport.ts";
import { ChunkPool, chunkPool, SizedChunkPool } from "./buffers.ts";

/** Size of the small pooled chunks (payloads up to this size start in one). */
const SMALL_CHUNK = 1024;
/** Small pooled chunks kept for reuse (larger ones come from the process-wide chunkPool). */
const POOL_SMALL = 256;
/** What a stream with nothing queued may queue even when the shared queue is full. */
const IDLE_ALLOWANCE = 4 * 1024;
/** A turn is not started in a batch with less room than this (unless the stream's DATA fits). */
const MIN_PIECE = 1024;
const EMPTY = new Uint8Array(0);

/** DATA queued for one stream: payload in chunks, plus a HALF_CLOSE to follow it. */
interface StreamQueue {
  id: number;
  chunks: Uint8Array[];
  /** Read offset in chunks[0]. */
  head: number;
  /** Bytes used in the last chunk. */
  tail: number;
  /** Payload bytes queued. */
  bytes: number;
  /** HALF_CLOSE frame to write once the queued DATA is written. */
  fin: Uint8Array | null;
  /** In the round-robin ring. */
  inRing: boolean;
  /** Writers of this stream waiting for its queue to shrink. */
  waiters: (() => void)[];
}

/** A FIFO of stream queues with O(1) push and shift. */
class Ring {
  #items: (StreamQueue | undefined)[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  peek(): StreamQueue | undefined {
    return this.#items[this.#head];
  }

  push(q: StreamQueue): void {
    this.#items.push(q);
  }

  shift(): StreamQueue | undefined {
    const q = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return q;
  }

  clear(): void {
    this.#items = [];
    this.#head = 0;
  }
}

/**
 * Bounded, fair frame writer: control frames first, then DATA of the streams round-robin, one
 * quantum per turn, written to the transport one batch at a time by a single loop.
 */
export class FrameWriter {
  #transport: Transport;
  #onError: (e: unknown) => void;
  /** Control frames queued: `#control` from index `#controlHead` on. */
  #control: Uint8Array[] = [];
  #controlHead = 0;
  #controlBytes = 0;
  #streams = new Map<number, StreamQueue>();
  #ring = new Ring();
  /** Payload bytes queued in stream queues. */
  #dataBytes = 0;
  #batch: Uint8Array | null = null;
  /** This writer's small chunks, then the process-wide sizes: the smallest that holds the data. */
  #chunks = new SizedChunkPool([new ChunkPool(SMALL_CHUNK, POOL_SMALL), ...chunkPool.pools]);
  #running = false;
  #failed = false;
  #sharedWaiters: (() => void)[] = [];
  #idleWaiters: (() => void)[] = [];

  constructor(transport: Transport, onError: (e: unknown) => void) {
    this.#transport = transport;
    this.#onError = onError;
  }

  /** Payload bytes of DATA queued (all streams), not yet handed to the transport. */
  get queuedData(): number {
    return this.#dataBytes;
  }

  /**
   * True when stream `id` may queue DATA without waiting (always true once failed): while the
   * shared queue is below QUEUE_HIGH_WATER and the stream's below STREAM_HIGH_WATER, and also,
   * up to IDLE_ALLOWANCE bytes, for a stream with nothing queued (an interactive stream's
   * request never waits for bulk streams' queued DATA to drain).
   */
  hasSpace(id: number): boolean {
    if (this.#failed) return true;
    const mine = this.#streams.get(id)?.bytes ?? 0;
    return mine === 0 || (this.#dataBytes < QUEUE_HIGH_WATER && mine < STREAM_HIGH_WATER);
  }

  /** Bytes stream `id` may queue now (> 0 when `hasSpace(id)`). */
  room(id: number): number {
    const mine = this.#streams.get(id)?.bytes ?? 0;
    if (this.#dataBytes >= QUEUE_HIGH_WATER) return mine === 0 ? IDLE_ALLOWANCE : 0;
    return Math.max(0, STREAM_HIGH_WATER - mine);
  }

  /**
   * Resolves when stream `id` may have space again: its own queue shrank, or the shared queue
   * went below the high-water mark (or the writer failed, or the stream's queue was dropped).
   */
  waitSpace(id: number): Promise<void> {
    if (this.#failed) return Promise.resolve();
    return new Promise((resolve) => {
      const q = this.#streams.get(id);
      if (q && q.bytes >= STREAM_HIGH_WATER) q.waiters.push(resolve);
      else this.#sharedWaiters.push(resolve);
    });
  }

  /** Resolves once everything queued so far is written (or the writer failed). */
  idle(): Promise<void> {
    if (!this.#running && this.#empty()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #empty(): boolean {
    return this.#controlBytes === 0 && this.#ring.length === 0;
  }

  /**
   * Queues an encoded control frame (kept by reference: the caller must not change it). Control
   * frames never wait, but if the queue grows past QUEUE_OVERFLOW (a peer that keeps sending
   * PINGs/OPENs without reading our answers) the writer fails and the session ends.
   */
  control(bytes: Uint8Array): void {
    if (this.#enqueueControl(bytes)) this.#kick();
  }

  #enqueueControl(bytes: Uint8Array): boolean {
    if (this.#failed) return false;
    if (this.#controlBytes + this.#dataBytes + bytes.length > QUEUE_OVERFLOW) {
      this.fail();
      this.#onError(new Error("write queue overflow: the peer is not reading"));
      return false;
    }
    this.#control.push(bytes);
    this.#controlBytes += bytes.length;
    return true;
  }

  /**
   * Queues an encoded control frame but writes it only with the next frame queued, or once
   * EARLY_DATA_WAIT_MS passed without one (checked after each I/O poll of the event loop, via
   * `setImmediate`): an OPEN then shares its transport write with the stream's first DATA when
   * the local client sends it right after connecting (one packet instead of two, so Nagle's
   * algorithm on the transport cannot hold the DATA back for a round trip).
   */
  deferredControl(bytes: Uint8Array): void {
    if (!this.#enqueueControl(bytes)) return;
    const until = performance.now() + EARLY_DATA_WAIT_MS;
    const check = () => {
      if (this.#failed || this.#running || this.#empty()) return; // written meanwhile
      if (performance.now() >= until) this.#kick();
      else setImmediate(check);
    };
    setImmediate(check);
  }

  /**
   * Queues DATA payload for stream `id`, copying it (the caller may reuse `payload` at once).
   * The caller keeps within `room(id)` and the stream's credit; frame boundaries are chosen by
   * the scheduler.
   */
  data(id: number, payload: Uint8Array): void {
    if (this.#failed || payload.length === 0) return;
    let q = this.#streams.get(id);
    if (!q) {
      q = { id, chunks: [], head: 0, tail: 0, bytes: 0, fin: null, inRing: false, waiters: [] };
      this.#streams.set(id, q);
    }
    let off = 0;
    while (off < payload.length) {
      let last = q.chunks[q.chunks.length - 1];
      if (!last || q.tail === last.length) {
        last = this.#chunks.take(payload.length - off);
        q.chunks.push(last);
        q.tail = 0;
      }
      const n = Math.min(last.length - q.tail, payload.length - off);
      last.set(payload.subarray(off, off + n), q.tail);
      q.tail += n;
      off += n;
    }
    q.bytes += payload.length;
    this.#dataBytes += payload.length;
    if (!q.inRing) {
      q.inRing = true;
      this.#ring.push(q);
    }
    this.#kick();
  }

  /**
   * Queues stream `id`'s HALF_CLOSE frame: after the stream's queued DATA if it has any,
   * otherwise as a control frame.
   */
  halfClose(id: number, frame: Uint8Array): void {
    if (this.#failed) return;
    const q = this.#streams.get(id);
    if (q && q.bytes > 0) q.fin = frame;
    else this.control(frame);
  }

  /** Drops stream `id`'s queued DATA and pending HALF_CLOSE (the stream was reset); wakes it. */
  discard(id: number): void {
    const q = this.#streams.get(id);
    if (!q) return;
    this.#dataBytes -= q.bytes;
    for (const c of q.chunks) this.#chunks.give(c);
    q.chunks = [];
    q.bytes = 0;
    q.head = q.tail = 0;
    q.fin = null;
    this.#streams.delete(id);
    const ws = q.waiters;
    q.waiters = [];
    for (const w of ws) w();
    this.#wakeShared();
    // A queue still in the ring is skipped there once empty.
  }

  /** Stops writing; wakes every waiter. */
  fail(): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#control = [];
    this.#controlHead = 0;
    this.#controlBytes = 0;
    const queues = [...this.#streams.values()];
    this.#streams.clear();
    this.#ring.clear();
    this.#dataBytes = 0;
    for (const q of queues) {
      const ws = q.waiters;
      q.waiters = [];
      for (const w of ws) w();
    }
    this.#wake();
  }

  /** Wakes writers waiting for shared space, about as many as the free space can take. */
  #wakeShared(): void {
    if (this.#sharedWaiters.length === 0 || this.#dataBytes >= QUEUE_HIGH_WATER) return;
    const n = Math.ceil((QUEUE_HIGH_WATER - this.#dataBytes) / SCHEDULER_QUANTUM);
    const ws = this.#sharedWaiters.splice(0, n);
    for (const w of ws) w();
  }

  #wake(): void {
    const ws = this.#sharedWaiters;
    this.#sharedWaiters = [];
    for (const w of ws) w();
    if (!this.#running || this.#failed) {
      const iws = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of iws) w();
    }
  }

  /**
   * Starts the write loop. On a transport that sends small writes at once (`coalesceWrites`)
   * the loop starts once the current event-loop turn has run its I/O callbacks (`setImmediate`,
   * a few µs later), so that frames produced by I/O that has already arrived (a burst of
   * datagrams, several relayed reads) share one transport write; otherwise from a microtask.
   */
  #kick(): void {
    if (this.#running) return;
    this.#running = true;
    if (this.#transport.coalesceWrites) setImmediate(() => void this.#loop());
    else queueMicrotask(() => void this.#loop());
  }

  /**
   * Fills the batch buffer with the next frames: all queued control frames (as many as fit),
   * then DATA turns round-robin. Returns the bytes used; wakes writers whose queue shrank.
   */
  #fill(buf: Uint8Array): number {
    let off = 0;
    const control = this.#control;
    let i = this.#controlHead;
    while (i < control.length && off + control[i].length <= buf.length) {
      const f = control[i];
      control[i++] = EMPTY;
      buf.set(f, off);
      off += f.length;
      this.#controlBytes -= f.length;
    }
    if (i === control.length) {
      this.#control = [];
      this.#controlHead = 0;
    } else {
      this.#controlHead = i;
      return off;
    }
    const ring = this.#ring;
    while (ring.length > 0) {
      const q = ring.peek()!;
      if (q.bytes === 0 && !q.fin) {
        ring.shift();
        q.inRing = false;
        this.#forget(q);
        continue;
      }
      if (q.bytes > 0) {
        const space = buf.length - off - FRAME_HEADER_LENGTH;
        // Alone, a stream is not held to the quantum: nobody waits for its turn to end.
        const turn = ring.length === 1 ? MAX_DATA_PAYLOAD : SCHEDULER_QUANTUM;
        const n = Math.min(turn, q.bytes, space);
        if (n < Math.min(q.bytes, MIN_PIECE)) break; // the next batch starts with this turn
        putDataFrameHeader(buf, off, q.id, n);
        off += FRAME_HEADER_LENGTH;
        this.#take(q, buf, off, n);
        off += n;
        if (q.waiters.length > 0 && q.bytes < STREAM_HIGH_WATER) {
          const ws = q.waiters;
          q.waiters = [];
          for (const w of ws) w();
        }
      }
      if (q.bytes === 0 && q.fin) {
        if (off + q.fin.length > buf.length) break;
        buf.set(q.fin, off);
        off += q.fin.length;
        q.fin = null;
      }
      ring.shift();
      if (q.bytes > 0) ring.push(q);
      else {
        q.inRing = false;
        this.#forget(q);
      }
    }
    this.#wakeShared();
    return off;
  }

  /** Moves `n` queued payload bytes of `q` into `buf` at `off`. */
  #take(q: StreamQueue, buf: Uint8Array, off: number, n: number): void {
    q.bytes -= n;
    this.#dataBytes -= n;
    while (n > 0) {
      const c = q.chunks[0];
      const end = q.chunks.length === 1 ? q.tail : c.length;
      const k = Math.min(n, end - q.head);
      buf.set(c.subarray(q.head, q.head + k), off);
      off += k;
      n -= k;
      q.head += k;
      if (q.head === end) {
        q.chunks.shift();
        this.#chunks.give(c);
        q.head = 0;
        if (q.chunks.length === 0) q.tail = 0;
      }
    }
  }

  /** Forgets an empty queue nobody waits on (a new one is made with the next DATA). */
  #forget(q: StreamQueue): void {
    if (q.bytes === 0 && !q.fin && q.waiters.length === 0 && this.#streams.get(q.id) === q) {
      this.#streams.delete(q.id);
    }
  }

  async #loop(): Promise<void> {
    try {
      while (!this.#failed) {
        const buf = this.#batch ?? new Uint8Array(BATCH_SIZE);
        this.#batch = null;
        const n = this.#fill(buf);
        if (n === 0) {
          this.#batch = buf;
          break;
        }
        await this.#transport.write(buf.subarray(0, n));
        this.#batch = buf;
      }
    } catch (e) {
      if (!this.#failed) {
        this.fail();
        this.#onError(e);
      }
    } finally {
      this.#running = false;
      if (this.#empty() || this.#failed) this.#wake();
    }
  }
}
