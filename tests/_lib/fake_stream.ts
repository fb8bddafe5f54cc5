/**
 * An in-memory relayed stream for tests of what sits above the tunnel (listeners, the opener):
 * it records what is written, plays back what the test pushes, and settles `ready` when told.
 *
 * @module
 */

import type { OpenedStream } from "../../src/forward/listener.ts";
import { concat } from "./net.ts";

/** A fake OpenedStream. With `echo`, every write is read back and closeWrite() ends the reads. */
export class FakeStream implements OpenedStream {
  /** Chunks written, in order (copies). */
  readonly written: Uint8Array[] = [];
  /** True after closeWrite(). */
  halfClosed = false;
  /** The reason given to reset(), if any. */
  resetReason: string | undefined;
  /** Callbacks given to onTargetGone() and not cancelled. */
  readonly goneWatchers = new Set<() => void>();
  readonly ready: Promise<void>;
  #settle!: (e?: unknown) => void;
  #incoming: (Uint8Array | null)[] = [];
  #reader: (() => void) | undefined;
  #echo: boolean;
  #writeWaiters: (() => void)[] = [];
  #failed: Error | undefined;

  constructor(opts: { echo?: boolean; accepted?: boolean } = {}) {
    this.#echo = opts.echo ?? false;
    this.ready = new Promise<void>((resolve, reject) => {
      this.#settle = (e) => (e === undefined ? resolve() : reject(e));
    });
    this.ready.catch(() => {});
    if (opts.accepted ?? true) this.accept();
  }

  /** The agent accepted the stream. */
  accept(): void {
    this.#settle();
  }

  /** The agent refused the stream: `ready` rejects with `err`, reads fail with it. */
  refuse(err: Error): void {
    this.#settle(err);
    this.#failed = err;
    this.#wake();
  }

  /** The pod this stream reached went away: calls (and drops) the onTargetGone() callbacks. */
  targetGone(): void {
    const ws = [...this.goneWatchers];
    this.goneWatchers.clear();
    ws.forEach((w) => w());
  }

  onTargetGone(onGone: () => void): () => void {
    this.goneWatchers.add(onGone);
    return () => this.goneWatchers.delete(onGone);
  }

  /** Queues a chunk for read() (null: end of stream). */
  push(chunk: Uint8Array | null): void {
    this.#incoming.push(chunk);
    this.#wake();
  }

  /** All bytes written so far, as one array. */
  bytes(): Uint8Array {
    return concat(this.written);
  }

  /** Resolves once at least `n` bytes were written. */
  async waitWritten(n: number): Promise<void> {
    while (this.bytes().length < n) await new Promise<void>((r) => this.#writeWaiters.push(r));
  }

  #wake(): void {
    const r = this.#reader;
    this.#reader = undefined;
    r?.();
  }

  async read(): Promise<Uint8Array | null> {
    for (;;) {
      if (this.resetReason !== undefined) throw new Error(`stream reset: ${this.resetReason}`);
      if (this.#incoming.length > 0) return this.#incoming.shift()!;
      if (this.#failed) throw this.#failed;
      await new Promise<void>((r) => (this.#reader = r));
    }
  }

  write(data: Uint8Array): Promise<void> {
    if (this.resetReason !== undefined) {
      return Promise.reject(new Error(`stream reset: ${this.resetReason}`));
    }
    this.written.push(data.slice());
    if (this.#echo) this.push(data.slice());
    const ws = this.#writeWaiters;
    this.#writeWaiters = [];
    ws.forEach((w) => w());
    return Promise.resolve();
  }

  closeWrite(): Promise<void> {
    this.halfClosed = true;
    if (this.#echo) this.push(null);
    return Promise.resolve();
  }

  reset(reason: string): void {
    this.resetReason ??= reason;
    this.#wake();
  }
}
