/**
 * The frame writer of a Session: frames are copied into large batch buffers and written to the
 * transport one batch at a time by a single loop. Private to src/mux (Session and Stream use it).
 *
 * @module
 */

import { FRAME_HEADER_LENGTH, putDataFrameHeader } from "../protocol/mux.ts";
import { setImmediate } from "node:timers";
import { BATCH_SIZE, EARLY_DATA_WAIT_MS, QUEUE_HIGH_WATER, QUEUE_OVERFLOW } from "./options.ts";
import type { Transport } from "./transport.ts";

/**
 * Bounded, coalescing frame writer: frames are copied into large batch buffers and written to
 * the transport one batch at a time by a single loop. Control frames are always accepted (they
 * are small and must never wait behind DATA); DATA waits for queue space.
 */
export class FrameWriter {
  #transport: Transport;
  #onError: (e: unknown) => void;
  #ready: { buf: Uint8Array; used: number }[] = [];
  #current: { buf: Uint8Array; used: number } | null = null;
  #pool: Uint8Array[] = [];
  #queued = 0;
  #running = false;
  #failed = false;
  #spaceWaiters: (() => void)[] = [];
  #idleWaiters: (() => void)[] = [];

  constructor(transport: Transport, onError: (e: unknown) => void) {
    this.#transport = transport;
    this.#onError = onError;
  }

  /** True when DATA may be queued without waiting. */
  get hasSpace(): boolean {
    return this.#queued < QUEUE_HIGH_WATER || this.#failed;
  }

  /** Resolves when there is queue space (or the writer failed). */
  waitSpace(): Promise<void> {
    return new Promise((resolve) => this.#spaceWaiters.push(resolve));
  }

  /** Resolves once everything queued so far is written (or the writer failed). */
  idle(): Promise<void> {
    if (!this.#running && this.#queued === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Reserves `n` contiguous bytes in the current batch; returns [buffer, offset]. Starts the
   * write loop unless `kick` is false.
   */
  #reserve(n: number, kick = true): [Uint8Array, number] {
    let cur = this.#current;
    if (cur && cur.used + n > cur.buf.length) {
      this.#ready.push(cur);
      cur = null;
    }
    if (!cur) {
      const buf = n <= BATCH_SIZE
        ? (this.#pool.pop() ?? new Uint8Array(BATCH_SIZE))
        : new Uint8Array(n);
      cur = { buf, used: 0 };
      this.#current = cur;
    }
    const off = cur.used;
    cur.used += n;
    this.#queued += n;
    if (kick) this.#kick();
    return [cur.buf, off];
  }

  /**
   * Queues an encoded control frame. Control frames never wait, but if the queue grows past
   * QUEUE_OVERFLOW (a peer that keeps sending PINGs/OPENs without reading our answers) the
   * writer fails and the session ends.
   */
  control(bytes: Uint8Array): void {
    if (this.#failed) return;
    if (this.#queued + bytes.length > QUEUE_OVERFLOW) {
      this.fail();
      this.#onError(new Error("write queue overflow: the peer is not reading"));
      return;
    }
    const [buf, off] = this.#reserve(bytes.length);
    buf.set(bytes, off);
  }

  /**
   * Queues an encoded control frame but writes it only with the next frame queued, or once
   * EARLY_DATA_WAIT_MS passed without one (checked after each I/O poll of the event loop, via
   * `setImmediate`): an OPEN then shares its transport write with the stream's first DATA when
   * the local client sends it right after connecting (one packet instead of two, so Nagle's
   * algorithm on the transport cannot hold the DATA back for a round trip).
   */
  deferredControl(bytes: Uint8Array): void {
    if (this.#failed) return;
    const [buf, off] = this.#reserve(bytes.length, false);
    buf.set(bytes, off);
    const until = performance.now() + EARLY_DATA_WAIT_MS;
    const check = () => {
      if (this.#failed || this.#running || this.#queued === 0) return; // written meanwhile
      if (performance.now() >= until) this.#kick();
      else setImmediate(check);
    };
    setImmediate(check);
  }

  /** Queues a DATA frame (payload ≤ MAX_DATA_PAYLOAD), copying the payload. */
  data(streamId: number, payload: Uint8Array): void {
    if (this.#failed) return;
    const [buf, off] = this.#reserve(FRAME_HEADER_LENGTH + payload.length);
    putDataFrameHeader(buf, off, streamId, payload.length);
    buf.set(payload, off + FRAME_HEADER_LENGTH);
  }

  /** Stops writing; wakes every waiter. */
  fail(): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#ready = [];
    this.#current = null;
    this.#queued = 0;
    this.#wake();
  }

  #wake(): void {
    const ws = this.#spaceWaiters;
    this.#spaceWaiters = [];
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

  async #loop(): Promise<void> {
    try {
      while (!this.#failed) {
        let batch = this.#ready.shift();
        if (!batch) {
          batch = this.#current ?? undefined;
          this.#current = null;
        }
        if (!batch || batch.used === 0) break;
        await this.#transport.write(batch.buf.subarray(0, batch.used));
        if (this.#failed) break;
        this.#queued -= batch.used;
        if (batch.buf.length === BATCH_SIZE && this.#pool.length < 2) this.#pool.push(batch.buf);
        if (this.#queued < QUEUE_HIGH_WATER && this.#spaceWaiters.length > 0) {
          const ws = this.#spaceWaiters;
          this.#spaceWaiters = [];
          for (const w of ws) w();
        }
      }
    } catch (e) {
      if (!this.#failed) {
        this.fail();
        this.#onError(e);
      }
    } finally {
      this.#running = false;
      if (this.#queued === 0 || this.#failed) this.#wake();
    }
  }
}
