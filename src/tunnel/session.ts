/**
 * A multiplexed tunnel session: many bidirectional streams over one Transport, with per-stream
 * credit-based flow control, half-close, reset, heartbeats and go-away. Wire format: see
 * `src/protocol/mux.ts` and PROTOCOL.md.
 *
 * @module
 */

import {
  EARLY_WINDOW,
  encodeFrame,
  type Frame,
  FRAME_HEADER_LENGTH,
  FrameDecoder,
  MAX_DATA_PAYLOAD,
  MAX_STREAM_ID,
  MAX_WINDOW,
  PING_PAYLOAD_LENGTH,
  PREFACE,
  putDataFrameHeader,
} from "../protocol/mux.ts";
import { setImmediate } from "node:timers";
import type { Transport } from "./transport.ts";

/** Options of a Session. */
export interface SessionOptions {
  /** "client" opens streams (and sends the PREFACE); "server" accepts them. */
  role: "client" | "server";
  /** Server: a peer opened a stream (`stream.header` = raw Header bytes from the OPEN frame). */
  onStream?: (stream: Stream) => void;
  /** Interval between PINGs; default 5000. */
  pingIntervalMs?: number;
  /** The session is declared dead if nothing arrives from the peer for this long; default 15000. */
  pingTimeoutMs?: number;
  /** Concurrently open streams accepted from the peer; default 4096. */
  maxStreams?: number;
  /**
   * Per-stream receive window in bytes; default 256 KiB. The server role never uses less than
   * EARLY_WINDOW (64 KiB), the credit clients have for early data before STATUS.
   */
  initialWindow?: number;
  /**
   * Largest receive window auto-tuning may grow a fast-read stream to; default
   * max(initialWindow, 4 MiB). Set equal to initialWindow to disable growth. Growth across all
   * streams of a session is capped at 64 MiB in total, so receive buffers stay bounded by
   * streams × initialWindow + 64 MiB.
   */
  maxWindow?: number;
  /**
   * Called once when the peer sends GO_AWAY: this session accepts no new streams any more
   * (open ones continue), so a client should start using a new session for new streams.
   */
  onGoAway?: (reason: string) => void;
  /** Debug log, one line per event. */
  log?: (line: string) => void;
}

/** The server answered an OPEN with a nonzero status (see `src/protocol/status.ts`). */
export class StreamRejectedError extends Error {
  /** The status code from the STATUS frame. */
  readonly status: number;
  constructor(status: number, message?: string) {
    super(message ?? `stream rejected with status ${status}`);
    this.name = "StreamRejectedError";
    this.status = status;
  }
}

/** The stream was reset, by the peer (RESET frame) or locally (`Stream.reset`). */
export class StreamResetError extends Error {
  /** The reset reason text. */
  readonly reason: string;
  /** True when the peer sent the RESET; false for a local `Stream.reset`. */
  readonly byPeer: boolean;
  constructor(reason: string, byPeer = false) {
    super(`stream reset: ${reason}`);
    this.name = "StreamResetError";
    this.reason = reason;
    this.byPeer = byPeer;
  }
}

/** The session ended (or refuses new streams after go-away). */
export class SessionClosedError extends Error {
  constructor(message = "session closed") {
    super(message);
    this.name = "SessionClosedError";
  }
}

/** A peer violated the protocol; ends the session. */
class ProtocolError extends Error {}

const DEFAULT_PING_INTERVAL_MS = 5000;
const DEFAULT_PING_TIMEOUT_MS = 15000;
const DEFAULT_MAX_STREAMS = 4096;
const DEFAULT_INITIAL_WINDOW = 256 * 1024;
const DEFAULT_MAX_WINDOW = 4 * 1024 * 1024;
/** Total extra window auto-tuning may hand out across all streams of a session. */
const SESSION_GROWTH_BUDGET = 64 * 1024 * 1024;

/** Size of one coalescing write buffer. */
const BATCH_SIZE = 256 * 1024;
/** DATA producers wait while this many bytes are queued for the transport. */
const QUEUE_HIGH_WATER = 1024 * 1024;
/** Control frames queued beyond this end the session (the peer does not read). */
const QUEUE_OVERFLOW = 8 * 1024 * 1024;
/** `Stream.read()` merges buffered chunks into one array up to this size. */
const MAX_READ_CHUNK = 1024 * 1024;
/**
 * How long an early OPEN waits for the stream's first DATA to share its transport write (a
 * client's first bytes usually follow its connect within tens of microseconds).
 */
const EARLY_DATA_WAIT_MS = 0.25;
/** How long a draining close (after go-away) waits for queued frames to be written. */
const DRAIN_GRACE_MS = 5000;

/**
 * Bounded, coalescing frame writer: frames are copied into large batch buffers and written to
 * the transport one batch at a time by a single loop. Control frames are always accepted (they
 * are small and must never wait behind DATA); DATA waits for queue space.
 */
class FrameWriter {
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

/** Session internals a Stream talks to. */
interface StreamHost {
  readonly writer: FrameWriter;
  readonly initialWindow: number;
  /** Largest receive window auto-tuning may grow a stream to. */
  readonly maxWindow: number;
  /** Smoothed round-trip time in ms measured with PING/PONG; 0 = not known yet. */
  rtt(): number;
  /** Takes `n` bytes from the session-wide window-growth budget; false if not available. */
  reserveGrowth(n: number): boolean;
  /** Returns window growth to the session-wide budget. */
  releaseGrowth(n: number): void;
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
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #recvAvailable: number; // bytes the peer may still send
  #unannounced = 0; // consumed bytes not yet returned to the peer via WINDOW_UPDATE
  #window: number; // current receive window: buffered + recvAvailable + unannounced
  #bytesRead = 0;
  #epochStart = performance.now();
  #epochOffset = 0;
  #remoteFin = false;
  #readWaiters: (() => void)[] = [];
  // Send side.
  #sendCredit = 0;
  #localFin = false;
  #writeLocked = false;
  #writeQueue: (() => void)[] = [];
  #sendWaiters: (() => void)[] = [];
  // Lifecycle.
  #resetError: StreamResetError | StreamRejectedError | null = null;
  #sessionError: SessionClosedError | null = null;
  #removed = false;
  #answered: boolean; // server: STATUS sent; client: always true
  /** Client: settles `opened`; set until STATUS (or the stream's end) arrives. */
  #settleOpen: ((error?: Error) => void) | null = null;

  /** @internal Created by Session only. */
  constructor(host: StreamHost, id: number, header: Uint8Array, server: boolean) {
    this.#host = host;
    this.id = id;
    this.header = header;
    this.#recvAvailable = host.initialWindow;
    this.#window = host.initialWindow;
    this.#answered = !server;
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

  /** Client: settles `opened` once (no error = accepted). */
  #settle(error?: Error): void {
    const settle = this.#settleOpen;
    this.#settleOpen = null;
    settle?.(error);
  }

  /** Bytes received and not yet read (never more than `receiveWindow`). */
  get bufferedAmount(): number {
    return this.#buffered;
  }

  /** Current receive window (starts at `initialWindow`; auto-tuning may grow it). */
  get receiveWindow(): number {
    return this.#window;
  }

  /**
   * Next chunk of data from the peer; `null` once the peer half-closed and everything was read.
   * Throws StreamResetError if the stream was reset (buffered data is discarded), or
   * SessionClosedError (after buffered data is read) if the session ended first.
   */
  async read(): Promise<Uint8Array | null> {
    while (true) {
      if (this.#resetError) throw this.#resetError;
      if (this.#chunks.length > 0) return this.#take();
      if (this.#remoteFin) return null;
      if (this.#sessionError) throw this.#sessionError;
      await new Promise<void>((resolve) => this.#readWaiters.push(resolve));
    }
  }

  #take(): Uint8Array {
    let out: Uint8Array;
    if (this.#chunks.length === 1 || this.#chunks[0].length >= MAX_READ_CHUNK) {
      out = this.#chunks.shift()!;
    } else {
      // Hand out several small chunks as one (fewer writes for the consumer), up to 1 MiB.
      let n = 0;
      let count = 0;
      while (count < this.#chunks.length && n + this.#chunks[count].length <= MAX_READ_CHUNK) {
        n += this.#chunks[count++].length;
      }
      out = new Uint8Array(n);
      let off = 0;
      for (const c of this.#chunks.splice(0, count)) {
        out.set(c, off);
        off += c.length;
      }
    }
    this.#buffered -= out.length;
    this.#bytesRead += out.length;
    if (!this.#remoteFin && !this.#removed) {
      this.#unannounced += out.length;
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
   * Receive-window auto-tuning: when the reader consumed more than half the window in less
   * than ~4 round trips' worth of time, the window (not the reader) limits throughput, so it
   * doubles, up to `maxWindow`. Returns the growth (extra credit to grant the peer).
   */
  #autoTune(): number {
    const readInEpoch = this.#bytesRead - this.#epochOffset;
    if (readInEpoch <= this.#window / 2) return 0;
    const now = performance.now();
    const rtt = this.#host.rtt();
    let grow = 0;
    const fast = now - this.#epochStart < 4 * (readInEpoch / this.#window) * rtt;
    if (rtt > 0 && fast && this.#window < this.#host.maxWindow) {
      grow = Math.min(this.#window * 2, this.#host.maxWindow) - this.#window;
      if (this.#host.reserveGrowth(grow)) this.#window += grow;
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
      if (!this.#answered) this.accept();
      let off = 0;
      while (true) {
        this.#checkWritable();
        if (off >= data.length) return;
        if (this.#sendCredit === 0) {
          await new Promise<void>((resolve) => this.#sendWaiters.push(resolve));
          continue;
        }
        const writer = this.#host.writer;
        if (!writer.hasSpace) {
          await writer.waitSpace();
          continue;
        }
        const n = Math.min(this.#sendCredit, data.length - off, MAX_DATA_PAYLOAD);
        writer.data(this.id, data.subarray(off, off + n));
        this.#sendCredit -= n;
        off += n;
      }
    } finally {
      this.#unlock();
    }
  }

  #checkWritable(): void {
    if (this.#resetError) throw this.#resetError;
    if (this.#sessionError) throw this.#sessionError;
    if (this.#localFin) throw new Error("write after closeWrite");
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
      if (this.#localFin || this.#resetError || this.#sessionError || this.#removed) return;
      if (!this.#answered) this.accept();
      this.#localFin = true;
      this.#host.send({ type: "half_close", streamId: this.id });
      if (this.#remoteFin) this.#finish();
    } finally {
      this.#unlock();
    }
  }

  /** Aborts the stream both ways and tells the peer why (RESET). Idempotent. */
  reset(reason: string): void {
    if (this.#resetError) return;
    this.#resetError = new StreamResetError(reason);
    this.#chunks = [];
    this.#buffered = 0;
    this.#settle(this.#resetError);
    if (!this.#removed) {
      this.#host.send({ type: "reset", streamId: this.id, reason });
      this.#host.log(`stream ${this.id}: reset (${reason})`);
      this.#finish();
    }
    this.#wakeAll();
  }

  /** Server side: accepts the stream (STATUS 0). Idempotent. */
  accept(): void {
    if (this.#answered || this.#removed) return;
    this.#answered = true;
    this.#host.send({
      type: "status",
      streamId: this.id,
      status: 0,
      window: this.#host.initialWindow,
    });
  }

  /** Server side: refuses the stream with a nonzero status and ends it. */
  reject(status: number): void {
    if (!Number.isInteger(status) || status < 1 || status > 255) {
      throw new TypeError(`reject() needs a status 1..255, got ${status}`);
    }
    if (this.#answered || this.#removed) return;
    this.#answered = true;
    this.#host.send({ type: "status", streamId: this.id, status, window: 0 });
    this.#resetError = new StreamResetError(`rejected with status ${status}`);
    this.#finish();
    this.#wakeAll();
  }

  // ---- called by Session ----

  /** @internal */
  onData(data: Uint8Array): void {
    if (this.#settleOpen) throw new ProtocolError(`DATA on stream ${this.id} before its STATUS`);
    if (this.#remoteFin) throw new ProtocolError(`DATA on stream ${this.id} after HALF_CLOSE`);
    if (data.length > this.#recvAvailable) {
      throw new ProtocolError(
        `stream ${this.id}: DATA of ${data.length} bytes exceeds credit ${this.#recvAvailable}`,
      );
    }
    this.#recvAvailable -= data.length;
    if (data.length === 0 || this.#resetError) return;
    // Do not pin a large transport chunk for a small payload.
    const owned = data.length * 8 < data.buffer.byteLength ? data.slice() : data;
    this.#chunks.push(owned);
    this.#buffered += owned.length;
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
    if (this.#settleOpen) {
      throw new ProtocolError(`HALF_CLOSE on stream ${this.id} before its STATUS`);
    }
    if (this.#remoteFin) return;
    this.#remoteFin = true;
    if (this.#localFin) this.#finish();
    this.#wakeReaders();
  }

  /** @internal */
  onReset(reason: string): void {
    this.#host.log(`stream ${this.id}: reset by peer (${reason})`);
    this.#removed = true;
    this.#releaseGrowth();
    if (!this.#resetError) {
      this.#resetError = new StreamResetError(reason, true);
      this.#chunks = [];
      this.#buffered = 0;
    }
    this.#settle(this.#resetError);
    this.#wakeAll();
  }

  /**
   * @internal Client: STATUS arrived. The agent's window counts from the start of the stream,
   * so the early-data credit already spent comes out of it.
   */
  onStatus(status: number, window: number): void {
    if (!this.#settleOpen) return; // duplicate STATUS: ignored
    if (status === 0) {
      if (window < EARLY_WINDOW) {
        throw new ProtocolError(`stream ${this.id}: STATUS window ${window} below early window`);
      }
      this.#sendCredit += window - EARLY_WINDOW;
      this.#settle();
      this.#wakeSenders();
    } else {
      this.#removed = true;
      this.#resetError ??= new StreamRejectedError(status);
      this.#settle(this.#resetError);
      this.#wakeAll();
    }
  }

  /** @internal Server: OPEN arrived with the peer's receive window. */
  setInitialCredit(window: number): void {
    this.#sendCredit = window;
  }

  /** @internal The session ended. */
  onSessionClosed(error: SessionClosedError): void {
    this.#removed = true;
    this.#settle(error);
    this.#sessionError ??= error;
    this.#wakeAll();
  }

  #finish(): void {
    if (this.#removed) return;
    this.#removed = true;
    this.#releaseGrowth();
    this.#host.remove(this);
  }

  #releaseGrowth(): void {
    const grown = this.#window - this.#host.initialWindow;
    if (grown > 0) this.#host.releaseGrowth(grown);
    this.#window = this.#host.initialWindow;
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

/**
 * A multiplexed session over one Transport.
 *
 * The client role writes the PREFACE first and opens streams; the server role does not read a
 * preface (whoever accepted the connection consumed it) and accepts streams via `onStream`.
 * Never produces unhandled rejections; a protocol error from the peer ends only this session.
 */
export class Session {
  #transport: Transport;
  #role: "client" | "server";
  #onStream?: (stream: Stream) => void;
  #onGoAway?: (reason: string) => void;
  #pingIntervalMs: number;
  #pingTimeoutMs: number;
  #maxStreams: number;
  #initialWindow: number;
  #maxWindow: number;
  #growthLeft = SESSION_GROWTH_BUDGET;
  #rtt = 0;
  #log: (line: string) => void;
  #writer: FrameWriter;
  #host: StreamHost;
  #streams = new Map<number, Stream>();
  #nextId = 1;
  #lastPeerId = 0;
  #isClosed = false;
  #activeAtClose = 0;
  #localGoAway = false;
  #remoteGoAway = false;
  #peerGoAwayReason = "";
  #lastHeard = Date.now();
  #lastPing = 0;
  #pingCounter = 0;
  #pingSentAt = -1;
  #timer: ReturnType<typeof setInterval> | undefined;
  #resolveClosed!: (reason: string) => void;
  /** Resolves with a reason when the session ends. Never rejects. */
  readonly closed: Promise<string>;

  constructor(transport: Transport, opts: SessionOptions) {
    this.#transport = transport;
    this.#role = opts.role;
    this.#onStream = opts.onStream;
    this.#onGoAway = opts.onGoAway;
    this.#pingIntervalMs = option(
      opts.pingIntervalMs,
      DEFAULT_PING_INTERVAL_MS,
      1,
      "pingIntervalMs",
    );
    this.#pingTimeoutMs = option(opts.pingTimeoutMs, DEFAULT_PING_TIMEOUT_MS, 1, "pingTimeoutMs");
    this.#maxStreams = option(opts.maxStreams, DEFAULT_MAX_STREAMS, 0, "maxStreams");
    this.#initialWindow = Math.min(
      Math.max(
        option(opts.initialWindow, DEFAULT_INITIAL_WINDOW, 1, "initialWindow"),
        this.#role === "server" ? EARLY_WINDOW : 1,
      ),
      MAX_WINDOW,
    );
    this.#maxWindow = Math.min(
      Math.max(option(opts.maxWindow, DEFAULT_MAX_WINDOW, 1, "maxWindow"), this.#initialWindow),
      MAX_WINDOW,
    );
    const log = opts.log;
    this.#log = log
      ? (line) => {
        try {
          log(line);
        } catch {
          // a failing logger must not break the session
        }
      }
      : () => {};
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#writer = new FrameWriter(transport, (e) => {
      this.#shutdown(`transport write failed: ${errorText(e)}`, false);
    });
    this.#host = {
      writer: this.#writer,
      initialWindow: this.#initialWindow,
      maxWindow: this.#maxWindow,
      rtt: () => this.#rtt,
      reserveGrowth: (n) => {
        if (n > this.#growthLeft) return false;
        this.#growthLeft -= n;
        return true;
      },
      releaseGrowth: (n) => {
        this.#growthLeft += n;
      },
      send: (frame) => this.#send(frame),
      remove: (stream) => this.#remove(stream),
      log: (line) => this.#log(line),
    };
    if (this.#role === "client") this.#writer.control(PREFACE);
    const tick = Math.max(
      10,
      Math.min(this.#pingIntervalMs, Math.floor(this.#pingTimeoutMs / 10)),
    );
    this.#timer = setInterval(() => this.#tick(), tick);
    this.#ping(); // an early RTT sample for window auto-tuning
    void this.#readLoop();
  }

  /** Open streams (including ones waiting for STATUS); after close, the count at close time. */
  get activeStreams(): number {
    return this.#isClosed ? this.#activeAtClose : this.#streams.size;
  }

  /** False once the session is closed or a go-away was sent or received (openStream fails). */
  get acceptsNewStreams(): boolean {
    return !this.#isClosed && !this.#localGoAway && !this.#remoteGoAway;
  }

  /**
   * Client: opens a stream carrying `header` (raw Header bytes). Resolves when the peer accepts
   * (STATUS 0); rejects with StreamRejectedError (nonzero status), StreamResetError (e.g. "too
   * many streams", "going away") or SessionClosedError.
   */
  async openStream(header: Uint8Array): Promise<Stream> {
    const stream = this.#open(header, false);
    await stream.opened;
    return stream;
  }

  /**
   * Client: opens a stream carrying `header` without waiting for the answer: the OPEN is queued
   * and the stream returned at once, so up to EARLY_WINDOW bytes (and a half-close) can follow it
   * in the same round trip. `stream.opened` tells whether the agent accepted. The OPEN is
   * written together with the first DATA if that is queued within EARLY_DATA_WAIT_MS (0.25 ms).
   * Throws SessionClosedError if the session is closed or going away, TypeError for a bad header.
   */
  openEarlyStream(header: Uint8Array): Stream {
    return this.#open(header, true);
  }

  #open(header: Uint8Array, early: boolean): Stream {
    if (this.#isClosed) throw new SessionClosedError(`session closed`);
    if (this.#role !== "client") throw new TypeError("only the client role opens streams");
    if (this.#localGoAway || this.#remoteGoAway) {
      throw new SessionClosedError("session is going away");
    }
    if (this.#nextId > MAX_STREAM_ID) {
      this.goAway();
      throw new SessionClosedError("stream ids exhausted");
    }
    const id = this.#nextId;
    const open = encodeFrame({ type: "open", streamId: id, window: this.#initialWindow, header });
    this.#nextId += 2;
    const stream = new Stream(this.#host, id, header.slice(), false);
    this.#streams.set(id, stream);
    if (early) this.#writer.deferredControl(open);
    else this.#writer.control(open);
    return stream;
  }

  /** No new streams (either side); existing ones finish, then the session closes. */
  goAway(): void {
    if (this.#isClosed || this.#localGoAway) return;
    this.#localGoAway = true;
    this.#send({ type: "go_away", reason: "going away" });
    this.#log("go-away sent");
    this.#maybeDrained();
  }

  /** Tears everything down at once; open streams see SessionClosedError. Idempotent. */
  close(reason = "closed"): void {
    this.#shutdown(reason, false);
  }

  // ---- internals ----

  #send(frame: Frame): void {
    if (this.#isClosed) return;
    this.#writer.control(encodeFrame(frame));
  }

  #remove(stream: Stream): void {
    if (this.#streams.get(stream.id) === stream) this.#streams.delete(stream.id);
    this.#maybeDrained();
  }

  #maybeDrained(): void {
    if ((this.#localGoAway || this.#remoteGoAway) && this.#streams.size === 0) {
      const said = this.#peerGoAwayReason;
      this.#shutdown(said && said !== "going away" ? `go away: ${said}` : "go away", true);
    }
  }

  /** Ends the session after a protocol violation, telling the peer why (GO_AWAY) first. */
  #protocolError(message: string): void {
    if (this.#isClosed) return;
    const reason = `protocol error: ${message}`;
    this.#writer.control(encodeFrame({ type: "go_away", reason }));
    this.#shutdown(reason, true);
  }

  #shutdown(reason: string, drain: boolean): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#activeAtClose = this.#streams.size;
    clearInterval(this.#timer);
    this.#log(`session closed: ${reason}`);
    const error = new SessionClosedError(`session closed: ${reason}`);
    const streams = [...this.#streams.values()];
    this.#streams.clear();
    for (const s of streams) s.onSessionClosed(error);
    const finish = () => {
      this.#writer.fail();
      try {
        this.#transport.close();
      } catch (e) {
        this.#log(`transport close failed: ${errorText(e)}`);
      }
      this.#resolveClosed(reason);
    };
    if (!drain) {
      finish();
      return;
    }
    // Flush what is queued (final DATA / HALF_CLOSE), bounded in time, then close.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, DRAIN_GRACE_MS)));
    void Promise.race([this.#writer.idle(), grace]).then(() => {
      clearTimeout(timer);
      finish();
    });
  }

  #tick(): void {
    if (this.#isClosed) return;
    const now = Date.now();
    if (now - this.#lastHeard > this.#pingTimeoutMs) {
      this.#shutdown(`ping timeout: nothing from the peer for ${now - this.#lastHeard} ms`, false);
      return;
    }
    if (now - this.#lastPing >= this.#pingIntervalMs) this.#ping();
  }

  #ping(): void {
    this.#lastPing = Date.now();
    this.#pingSentAt = performance.now();
    const data = new Uint8Array(PING_PAYLOAD_LENGTH);
    new DataView(data.buffer).setUint32(4, ++this.#pingCounter);
    this.#send({ type: "ping", data });
  }

  #onPong(data: Uint8Array): void {
    const counter = (data[4] << 24 >>> 0) + (data[5] << 16) + (data[6] << 8) + data[7];
    if (counter !== this.#pingCounter || this.#pingSentAt < 0) return;
    const sample = Math.max(0.05, performance.now() - this.#pingSentAt);
    this.#pingSentAt = -1;
    this.#rtt = this.#rtt === 0 ? sample : (this.#rtt * 7 + sample) / 8;
  }

  async #readLoop(): Promise<void> {
    const decoder = new FrameDecoder();
    try {
      while (!this.#isClosed) {
        let chunk: Uint8Array | null;
        try {
          chunk = await this.#transport.read();
        } catch (e) {
          this.#shutdown(`transport read failed: ${errorText(e)}`, false);
          return;
        }
        if (this.#isClosed) return;
        if (chunk === null) {
          const said = this.#peerGoAwayReason;
          this.#shutdown(
            `connection closed by peer${said && said !== "going away" ? ` (${said})` : ""}`,
            false,
          );
          return;
        }
        this.#lastHeard = Date.now();
        const batch = decoder.push(chunk);
        for (const frame of batch.frames) {
          this.#handle(frame);
          if (this.#isClosed) return;
        }
        if (batch.error) {
          this.#protocolError(batch.error.message);
          return;
        }
      }
    } catch (e) {
      if (e instanceof ProtocolError) this.#protocolError(e.message);
      else this.#shutdown(`internal error: ${errorText(e)}`, false);
    }
  }

  #handle(frame: Frame): void {
    switch (frame.type) {
      case "data":
        this.#streams.get(frame.streamId)?.onData(frame.data);
        return;
      case "window_update":
        this.#streams.get(frame.streamId)?.onWindowUpdate(frame.increment);
        return;
      case "open":
        this.#onOpen(frame.streamId, frame.window, frame.header);
        return;
      case "status": {
        if (this.#role !== "client") throw new ProtocolError("STATUS sent to the server");
        const s = this.#streams.get(frame.streamId);
        if (!s) return;
        s.onStatus(frame.status, frame.window);
        if (frame.status !== 0) this.#remove(s);
        return;
      }
      case "half_close":
        this.#streams.get(frame.streamId)?.onHalfClose();
        return;
      case "reset": {
        const s = this.#streams.get(frame.streamId);
        if (!s) return;
        this.#streams.delete(s.id);
        s.onReset(frame.reason);
        this.#maybeDrained();
        return;
      }
      case "ping":
        this.#send({ type: "pong", data: frame.data.slice() });
        return;
      case "pong":
        this.#onPong(frame.data);
        return;
      case "go_away":
        this.#peerGoAwayReason = frame.reason;
        if (!this.#remoteGoAway) {
          this.#remoteGoAway = true;
          this.#log(`go-away received (${frame.reason})`);
          try {
            this.#onGoAway?.(frame.reason);
          } catch (e) {
            this.#log(`onGoAway handler failed: ${errorText(e)}`);
          }
          this.#maybeDrained();
        }
        return;
    }
  }

  #onOpen(id: number, window: number, header: Uint8Array): void {
    if (this.#role !== "server") throw new ProtocolError("OPEN sent to the client");
    if (id % 2 !== 1 || id <= this.#lastPeerId) {
      throw new ProtocolError(`OPEN with stream id ${id} (last was ${this.#lastPeerId})`);
    }
    this.#lastPeerId = id;
    if (this.#localGoAway || this.#remoteGoAway) {
      this.#send({ type: "reset", streamId: id, reason: "going away" });
      return;
    }
    if (this.#streams.size >= this.#maxStreams) {
      this.#log(`stream ${id}: refused, too many streams (${this.#streams.size})`);
      this.#send({ type: "reset", streamId: id, reason: "too many streams" });
      return;
    }
    if (!this.#onStream) {
      this.#send({ type: "reset", streamId: id, reason: "no stream handler" });
      return;
    }
    const stream = new Stream(this.#host, id, header.slice(), true);
    stream.setInitialCredit(window);
    this.#streams.set(id, stream);
    try {
      this.#onStream(stream);
    } catch (e) {
      stream.reset(`stream handler failed: ${errorText(e)}`);
    }
  }
}

/** A numeric option: `fallback` when absent; TypeError when not a number ≥ `min`. */
function option(value: number | undefined, fallback: number, min: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || Number.isNaN(value) || value < min) {
    throw new TypeError(`SessionOptions.${name} must be a number >= ${min}, got ${value}`);
  }
  return Math.floor(value);
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
