/**
 * One bidirectional byte stream inside a Session: receive buffer and window (with auto-tuning),
 * send credit, half-close and reset (PROTOCOL.md §5.5, §5.6). Its lifecycle is a StreamState
 * (`stream_state.ts`), changed only by `#transition`.
 *
 * @module
 */

import {
  EARLY_WINDOW,
  encodeFrame,
  type Frame,
  MAX_DATA_PAYLOAD,
  MAX_WINDOW,
} from "../protocol/mux.ts";
import type { FrameWriter } from "./_frame_writer.ts";
import {
  ProtocolError,
  type SessionClosedError,
  StreamRejectedError,
  StreamResetError,
} from "./errors.ts";
import { ReceiveBuffer } from "./_receive_buffer.ts";
import {
  AWAITING_STATUS,
  canTransition,
  ENDED,
  FAILED,
  has,
  LOCAL_FIN,
  REMOTE_FIN,
  SESSION_ENDED,
  StreamState,
  UNANSWERED,
} from "./stream_state.ts";

/** @internal Session internals a Stream talks to. */
export interface StreamHost {
  readonly writer: FrameWriter;
  /** Largest receive window auto-tuning may grow a stream to. */
  readonly maxWindow: number;
  /** Smallest round-trip time in ms measured with PING/PONG; 0 = not known yet. */
  rtt(): number;
  /** A stream's fair share of the session's receive budget now (budget / open streams). */
  fairWindow(): number;
  /** Takes `n` bytes of window from the session's receive budget; false if not available. */
  reserveWindow(n: number): boolean;
  /** Returns `n` bytes of window to the session's receive budget. */
  releaseWindow(n: number): void;
  send(frame: Frame): void;
  remove(stream: Stream): void;
  log(line: string): void;
}
/**
 * One bidirectional byte stream inside a Session.
 *
 * At most one `read()` and one `write()` should be outstanding at a time (concurrent writes are
 * serialized, in call order).
 */
export class Stream {
  /** Stream id (odd, chosen by the client). */
  readonly id: number;
  /** The raw Header bytes carried by the OPEN frame. */
  readonly header: Uint8Array;
  /**
   * Client: resolves when the agent accepts the stream (STATUS 0); rejects with
   * StreamRejectedError (nonzero STATUS), StreamResetError or SessionClosedError. Until then the
   * stream already takes writes (early data, up to EARLY_WINDOW bytes) and reads wait. Server:
   * resolved. Never an unhandled rejection.
   */
  readonly opened: Promise<void>;

  #host: StreamHost;
  // Receive side.
  #recv = new ReceiveBuffer();
  #recvAvailable: number; // bytes the peer may still send
  #unannounced = 0; // consumed bytes not yet returned to the peer via WINDOW_UPDATE
  #window: number; // current receive window: buffered + recvAvailable + unannounced
  #openingWindow: number; // the window announced in OPEN / STATUS
  #windowReleased = false; // #window went back to the session's budget
  #bytesRead = 0;
  #epochStart = performance.now();
  #epochOffset = 0;
  #readWaiters: (() => void)[] = [];
  // Send side.
  #sendCredit = 0;
  #writeLocked = false;
  #writeQueue: (() => void)[] = [];
  #sendWaiters: (() => void)[] = [];
  // Lifecycle.
  #state: StreamState;
  /** Why reads and writes fail: set on entering Reset, Rejected or a SessionEnded state. */
  #error: StreamResetError | StreamRejectedError | SessionClosedError | null = null;
  /** Client: settles `opened`; called (once) when the stream leaves Opening / OpeningLocalClosed. */
  #settleOpen: ((error?: Error) => void) | null = null;

  /**
   * @internal Created by Session only, with the receive window `window` it took from its
   * receive budget.
   */
  constructor(host: StreamHost, id: number, header: Uint8Array, server: boolean, window: number) {
    this.#host = host;
    this.id = id;
    this.header = header;
    this.#recvAvailable = window;
    this.#window = window;
    this.#openingWindow = window;
    this.#state = server ? StreamState.Accepting : StreamState.Opening;
    if (server) {
      this.opened = Promise.resolve();
    } else {
      this.#sendCredit = EARLY_WINDOW;
      this.opened = new Promise<void>((resolve, reject) => {
        this.#settleOpen = (error) => (error ? reject(error) : resolve());
      });
      this.opened.catch(() => {});
    }
  }

  /** Where the stream is in its lifecycle (see StreamState). */
  get state(): StreamState {
    return this.#state;
  }

  /**
   * The one place the state changes (allowed moves: `stream_state.ts`). Set `#error` first when
   * entering Reset, Rejected or SessionEnded*. Leaving Opening* settles `opened`: resolved on
   * STATUS 0, rejected with `#error` otherwise. Transition before sending the frame that
   * announces it: a send can end the session synchronously (control queue overflow), and
   * `onSessionClosed` must then see the new state.
   */
  #transition(to: StreamState): void {
    const from = this.#state;
    if (!canTransition(from, to)) {
      throw new Error(
        `stream ${this.id}: no transition from ${StreamState[from]} to ${StreamState[to]}`,
      );
    }
    this.#state = to;
    if (has(AWAITING_STATUS, from) && !has(AWAITING_STATUS, to)) {
      const settle = this.#settleOpen!;
      this.#settleOpen = null;
      if (has(ENDED, to)) settle(this.#error!);
      else settle();
    }
  }

  /** Bytes received and not yet read (never more than `receiveWindow`). */
  get bufferedAmount(): number {
    return this.#recv.length;
  }

  /**
   * Current receive window (starts at what the session could give it, up to `initialWindow`;
   * auto-tuning may grow it, a busy session may shrink it).
   */
  get receiveWindow(): number {
    return this.#window;
  }

  /**
   * Next chunk of data from the peer (at most LARGE_RECEIVE_CHUNK bytes); `null` once the peer
   * half-closed and everything was read. The chunk is a view of pooled memory, valid until the
   * next `read()`: a reader that keeps bytes longer copies them. Throws StreamResetError if the
   * stream was reset (buffered data is discarded), or SessionClosedError (after buffered data is
   * read) if the session ended first.
   */
  async read(): Promise<Uint8Array | null> {
    this.#recv.release();
    while (true) {
      const state = this.#state;
      if (has(FAILED, state)) throw this.#error!;
      if (this.#recv.length > 0) return this.#take();
      if (has(REMOTE_FIN, state)) return null;
      if (state === StreamState.SessionEnded) throw this.#error!;
      await new Promise<void>((resolve) => this.#readWaiters.push(resolve));
    }
  }

  #take(): Uint8Array {
    const out = this.#recv.take()!;
    this.#bytesRead += out.length;
    if (!has(REMOTE_FIN | ENDED, this.#state)) {
      this.#unannounced += out.length;
      this.#shrinkToFairShare();
      if (this.#unannounced >= Math.max(1, this.#window >>> 2)) {
        const increment = this.#unannounced + this.#autoTune();
        this.#unannounced = 0;
        this.#recvAvailable += increment;
        this.#host.send({ type: "window_update", streamId: this.id, increment });
      }
    }
    return out;
  }

  /**
   * A window above the stream's fair share of the session's receive budget (other streams opened
   * meanwhile) gives back less credit than was consumed, until it is down to the fair share.
   */
  #shrinkToFairShare(): void {
    const excess = this.#window - this.#host.fairWindow();
    if (excess <= 0 || this.#unannounced === 0) return;
    const cut = Math.min(excess, this.#unannounced);
    this.#unannounced -= cut;
    this.#window -= cut;
    this.#host.releaseWindow(cut);
  }

  /**
   * Receive-window auto-tuning: when the reader consumed more than half the window in less
   * than ~4 round trips' worth of time, the window (not the reader) limits throughput, so it
   * doubles, up to `maxWindow` and the stream's fair share of the session's receive budget, and
   * only from what is left of that budget. Returns the growth (extra credit to grant the peer).
   */
  #autoTune(): number {
    const readInEpoch = this.#bytesRead - this.#epochOffset;
    if (readInEpoch <= this.#window / 2) return 0;
    const now = performance.now();
    const rtt = this.#host.rtt();
    let grow = 0;
    const fast = now - this.#epochStart < 2 * (readInEpoch / this.#window) * rtt;
    const limit = Math.min(this.#host.maxWindow, this.#host.fairWindow());
    if (rtt > 0 && fast && this.#window < limit) {
      grow = Math.min(this.#window * 2, limit) - this.#window;
      if (this.#host.reserveWindow(grow)) this.#window += grow;
      else grow = 0;
    }
    this.#epochStart = now;
    this.#epochOffset = this.#bytesRead;
    return grow;
  }

  /**
   * Writes `data` to the peer. Resolves once all of it is queued for the transport within the
   * peer's credit (backpressure: waits for WINDOW_UPDATE and transport queue space). The caller
   * may reuse `data` afterwards. Throws StreamResetError / SessionClosedError if the stream
   * ends, or Error after closeWrite(). On the server side, writing implies `accept()`.
   */
  async write(data: Uint8Array): Promise<void> {
    await this.#lock();
    try {
      if (has(UNANSWERED, this.#state)) this.accept();
      let off = 0;
      while (true) {
        this.#checkWritable();
        if (off >= data.length) return;
        const room = this.#roomNow();
        if (room === 0) {
          await this.#roomChanged();
          continue;
        }
        const n = Math.min(room, data.length - off, MAX_DATA_PAYLOAD);
        this.#host.writer.data(this.id, data.subarray(off, off + n));
        this.#sendCredit -= n;
        off += n;
      }
    } finally {
      this.#unlock();
    }
  }

  /**
   * Resolves with how many bytes `write()` would queue right now without waiting (> 0), once
   * there are any: the peer's credit and the frame writer's room for this stream. A relay calls
   * it before it reads its source, so that bytes the tunnel cannot take yet stay in the source
   * (a socket's kernel buffer, where TCP flow control slows the sender) instead of this
   * process's memory. Meant for the stream's only writer (a concurrent write takes the room).
   * Rejects like `write()` when the stream can no longer be written.
   */
  async writable(): Promise<number> {
    while (true) {
      this.#checkWritable();
      const room = this.#roomNow();
      if (room > 0) return room;
      await this.#roomChanged();
    }
  }

  /** Bytes this stream may queue now: within its credit and the writer's room (0: none). */
  #roomNow(): number {
    if (this.#sendCredit === 0) return 0;
    const writer = this.#host.writer;
    if (!writer.hasSpace(this.id)) return 0;
    return Math.min(this.#sendCredit, writer.room(this.id));
  }

  /** Resolves when the credit or the writer's room may have grown (or the stream ended). */
  #roomChanged(): Promise<void> {
    if (this.#sendCredit === 0) {
      return new Promise<void>((resolve) => this.#sendWaiters.push(resolve));
    }
    return this.#host.writer.waitSpace(this.id);
  }

  #checkWritable(): void {
    const state = this.#state;
    if (has(FAILED | SESSION_ENDED, state)) throw this.#error!;
    if (has(LOCAL_FIN, state)) throw new Error("write after closeWrite");
  }

  async #lock(): Promise<void> {
    if (!this.#writeLocked) {
      this.#writeLocked = true;
      return;
    }
    await new Promise<void>((resolve) => this.#writeQueue.push(resolve));
  }

  #unlock(): void {
    const next = this.#writeQueue.shift();
    if (next) next();
    else this.#writeLocked = false;
  }

  /**
   * Half-closes our side (sends HALF_CLOSE after all earlier writes). Reads continue until the
   * peer half-closes too. A no-op if already half-closed, reset or the session ended.
   */
  async closeWrite(): Promise<void> {
    await this.#lock();
    try {
      if (has(LOCAL_FIN | ENDED, this.#state)) return;
      if (has(UNANSWERED, this.#state)) this.accept(); // STATUS may end the session
      const from = this.#state;
      let to: StreamState;
      if (from === StreamState.Opening) to = StreamState.OpeningLocalClosed;
      else if (from === StreamState.Open) to = StreamState.LocalClosed;
      else if (from === StreamState.RemoteClosed) to = StreamState.Closed;
      else return; // the session ended
      // After this stream's queued DATA, never before it. Queued before the transition: if it
      // ends the session (control queue overflow), the stream is SessionEnded*, not Closed.
      this.#host.writer.halfClose(this.id, encodeFrame({ type: "half_close", streamId: this.id }));
      if (this.#state !== from) return;
      this.#transition(to);
      if (to === StreamState.Closed) this.#finish();
    } finally {
      this.#unlock();
    }
  }

  /** Aborts the stream both ways and tells the peer why (RESET). Idempotent. */
  reset(reason: string): void {
    const from = this.#state;
    if (has(FAILED, from)) return;
    this.#error = new StreamResetError(reason);
    this.#transition(StreamState.Reset);
    this.#recv.clear();
    if (!has(ENDED, from)) {
      this.#host.writer.discard(this.id); // the peer drops DATA of a reset stream anyway
      this.#host.send({ type: "reset", streamId: this.id, reason });
      this.#host.log(`stream ${this.id}: reset (${reason})`);
      this.#finish();
    }
    this.#wakeAll();
  }

  /** Server side: accepts the stream (STATUS 0). Idempotent. */
  accept(): void {
    const from = this.#state;
    if (!has(UNANSWERED, from)) return;
    this.#transition(
      from === StreamState.Accepting ? StreamState.Open : StreamState.RemoteClosed,
    );
    this.#host.send({
      type: "status",
      streamId: this.id,
      status: 0,
      window: this.#openingWindow,
    });
  }

  /** Server side: refuses the stream with a nonzero status and ends it. */
  reject(status: number): void {
    if (!Number.isInteger(status) || status < 1 || status > 255) {
      throw new TypeError(`reject() needs a status 1..255, got ${status}`);
    }
    if (!has(UNANSWERED, this.#state)) return;
    this.#error = new StreamResetError(`rejected with status ${status}`);
    this.#transition(StreamState.Rejected);
    this.#recv.clear();
    this.#host.send({ type: "status", streamId: this.id, status, window: 0 });
    this.#finish();
    this.#wakeAll();
  }

  // ---- called by Session ----

  /** @internal */
  onData(data: Uint8Array): void {
    const state = this.#state;
    if (has(AWAITING_STATUS, state)) {
      throw new ProtocolError(`DATA on stream ${this.id} before its STATUS`);
    }
    if (has(REMOTE_FIN, state)) {
      throw new ProtocolError(`DATA on stream ${this.id} after HALF_CLOSE`);
    }
    if (data.length > this.#recvAvailable) {
      throw new ProtocolError(
        `stream ${this.id}: DATA of ${data.length} bytes exceeds credit ${this.#recvAvailable}`,
      );
    }
    this.#recvAvailable -= data.length;
    if (data.length === 0 || has(FAILED, state)) return;
    // The frame is a view of the transport's read buffer, valid only until its next read.
    this.#recv.push(data, this.#window);
    this.#wakeReaders();
  }

  /** @internal */
  onWindowUpdate(increment: number): void {
    if (this.#sendCredit + increment > MAX_WINDOW) {
      throw new ProtocolError(`stream ${this.id}: window overflow`);
    }
    this.#sendCredit += increment;
    this.#wakeSenders();
  }

  /** @internal */
  onHalfClose(): void {
    const state = this.#state;
    if (has(AWAITING_STATUS, state)) {
      throw new ProtocolError(`HALF_CLOSE on stream ${this.id} before its STATUS`);
    }
    if (state === StreamState.Accepting) this.#transition(StreamState.AcceptingRemoteClosed);
    else if (state === StreamState.Open) this.#transition(StreamState.RemoteClosed);
    else if (state === StreamState.LocalClosed) {
      this.#transition(StreamState.Closed);
      this.#finish();
    } else return; // a duplicate HALF_CLOSE, or the stream ended
    this.#wakeReaders();
  }

  /** @internal */
  onReset(reason: string): void {
    this.#host.log(`stream ${this.id}: reset by peer (${reason})`);
    this.#host.writer.discard(this.id); // DATA still queued for it would be ignored
    this.#releaseWindow();
    if (!has(FAILED, this.#state)) {
      this.#error = new StreamResetError(reason, true);
      this.#transition(StreamState.Reset);
      this.#recv.clear();
    }
    this.#wakeAll();
  }

  /**
   * @internal Client: STATUS arrived. The agent's window counts from the start of the stream,
   * so the early-data credit already spent comes out of it.
   */
  onStatus(status: number, window: number): void {
    const state = this.#state;
    if (!has(AWAITING_STATUS, state)) return; // duplicate STATUS: ignored
    if (status === 0) {
      if (window < EARLY_WINDOW) {
        throw new ProtocolError(`stream ${this.id}: STATUS window ${window} below early window`);
      }
      this.#sendCredit += window - EARLY_WINDOW;
      this.#transition(
        state === StreamState.Opening ? StreamState.Open : StreamState.LocalClosed,
      );
      this.#wakeSenders();
    } else {
      this.#error = new StreamRejectedError(status);
      this.#transition(StreamState.Rejected);
      this.#host.writer.discard(this.id); // early DATA still queued would be ignored
      this.#releaseWindow();
      this.#wakeAll();
    }
  }

  /** @internal Server: OPEN arrived with the peer's receive window. */
  setInitialCredit(window: number): void {
    this.#sendCredit = window;
  }

  /** @internal The session ended. */
  onSessionClosed(error: SessionClosedError): void {
    const state = this.#state;
    if (!has(ENDED, state)) {
      this.#error = error;
      this.#transition(
        has(REMOTE_FIN, state) ? StreamState.SessionEndedRemoteClosed : StreamState.SessionEnded,
      );
    }
    this.#releaseWindow();
    this.#wakeAll();
  }

  /** Just ended on this side (Closed, Reset, Rejected): the session forgets the stream. */
  #finish(): void {
    this.#releaseWindow();
    this.#host.remove(this);
  }

  /** Returns the stream's whole window to the session's receive budget, once. */
  #releaseWindow(): void {
    if (this.#windowReleased) return;
    this.#windowReleased = true;
    this.#host.releaseWindow(this.#window);
  }

  #wakeReaders(): void {
    if (this.#readWaiters.length === 0) return;
    const ws = this.#readWaiters;
    this.#readWaiters = [];
    for (const w of ws) w();
  }

  #wakeSenders(): void {
    if (this.#sendWaiters.length === 0) return;
    const ws = this.#sendWaiters;
    this.#sendWaiters = [];
    for (const w of ws) w();
  }

  #wakeAll(): void {
    this.#wakeReaders();
    this.#wakeSenders();
  }
}
