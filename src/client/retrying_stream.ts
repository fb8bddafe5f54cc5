import { EARLY_WINDOW } from "../protocol/mux.ts";
import type { RelayStream } from "../forward/pipe.ts";

/**
 * A stream opened with early data: it takes writes at once, and `opened` says later whether the
 * agent accepted it. `Stream` from src/mux satisfies it.
 */
export interface EarlyStream extends RelayStream {
  /** Resolves when the agent accepted the stream; rejects with its refusal. */
  readonly opened: Promise<void>;
}

/**
 * Bytes kept for replay while an open is unconfirmed; beyond this, writes wait for the answer.
 * The tunnel takes no more before STATUS anyway (its early window).
 */
const MAX_REPLAY = EARLY_WINDOW;

/**
 * A relayed stream that can move to another stream while its open is unconfirmed: if the agent
 * refuses it (say, a pod that is going away) and `retry(err)` gives a new stream, the bytes
 * written so far are replayed on it, so early data is never lost or duplicated. Once a stream is
 * accepted it behaves as that stream. `retry` throws the error to report when it gives up; reads,
 * writes and `ready` then fail with it. After a local `reset()` nothing is retried.
 */
export class RetryingStream implements RelayStream {
  #current: EarlyStream;
  #retry: (err: unknown) => Promise<EarlyStream>;
  #kept: Uint8Array[] = [];
  #keptBytes = 0;
  #halfClosed = false;
  #confirmed = false;
  #aborted = false;
  #failed: unknown;
  /** Woken when `#current` is replaced or the open finally fails. */
  #switchWaiters: (() => void)[] = [];
  /** Resolves once some stream is accepted; rejects with the final error. Never unhandled. */
  readonly ready: Promise<void>;

  constructor(first: EarlyStream, retry: (err: unknown) => Promise<EarlyStream>) {
    this.#current = first;
    this.#retry = retry;
    this.ready = this.#settle();
    this.ready.catch((e) => {
      this.#failed = e;
      this.#wakeSwitch();
    });
  }

  async #settle(): Promise<void> {
    for (;;) {
      try {
        await this.#current.opened;
        this.#confirmed = true;
        this.#kept = [];
        return;
      } catch (err) {
        if (this.#aborted) throw err;
        const next = await this.#retry(err);
        if (this.#aborted) {
          next.reset("aborted");
          throw err;
        }
        // Replay before switching: writes arriving meanwhile fail on the refused stream, wait
        // for the switch, and are in `#kept` already, so this loop (which sees appended chunks)
        // sends them in order exactly once.
        for (const chunk of this.#kept) await next.write(chunk);
        if (this.#halfClosed) await next.closeWrite();
        this.#current = next;
        this.#wakeSwitch();
      }
    }
  }

  #wakeSwitch(): void {
    const ws = this.#switchWaiters;
    this.#switchWaiters = [];
    ws.forEach((w) => w());
  }

  /** After `target` failed: waits until it is replaced (true) or the open failed for good (false). */
  async #replaced(target: EarlyStream): Promise<boolean> {
    while (this.#current === target && this.#failed === undefined) {
      await new Promise<void>((r) => this.#switchWaiters.push(r));
    }
    return this.#current !== target;
  }

  read(): Promise<Uint8Array | null> {
    if (this.#confirmed) return this.#current.read();
    return this.ready.then(() => this.#current.read());
  }

  async write(data: Uint8Array): Promise<void> {
    if (this.#confirmed) return await this.#current.write(data);
    if (this.#keptBytes + data.length > MAX_REPLAY) {
      await this.ready;
      return await this.#current.write(data);
    }
    this.#kept.push(data.slice());
    this.#keptBytes += data.length;
    const target = this.#current;
    try {
      await target.write(data);
    } catch (err) {
      // Refused while writing: the replacement (if any) gets these bytes from the replay.
      if (!(await this.#replaced(target))) throw this.#failed ?? err;
    }
  }

  async closeWrite(): Promise<void> {
    this.#halfClosed = true;
    const target = this.#current;
    try {
      await target.closeWrite();
    } catch (err) {
      if (!(await this.#replaced(target))) throw this.#failed ?? err;
    }
  }

  reset(reason: string): void {
    this.#aborted = true;
    this.#current.reset(reason);
  }
}
