/**
 * A multiplexed tunnel session: many bidirectional streams over one Transport, with per-stream
 * credit-based flow control, half-close, reset, heartbeats and go-away. Wire format: see
 * `src/protocol/mux.ts` and PROTOCOL.md.
 *
 * @module
 */

import {
  encodeFrame,
  type Frame,
  FrameDecoder,
  MAX_STREAM_ID,
  PING_PAYLOAD_LENGTH,
  PREFACE,
} from "../protocol/mux.ts";
import { errorText } from "../errors.ts";
import { FrameWriter } from "./_frame_writer.ts";
import { GoAwayReason, ProtocolError, ResetReason, SessionClosedError } from "./errors.ts";
import {
  DRAIN_GRACE_MS,
  EARLY_RTT_SAMPLE_GAP_MS,
  EARLY_RTT_SAMPLES,
  MIN_STREAM_WINDOW,
  sessionLimits,
  type SessionOptions,
} from "./options.ts";
import { Stream, type StreamHost } from "./stream.ts";
import type { Transport } from "./transport.ts";

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
  #receiveBudget: number;
  /** Sum of the receive windows of open streams (PROTOCOL.md §5.6; SessionOptions.receiveBudget). */
  #committed = 0;
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
  /** RTT samples taken so far, and the timer of the next early one (see #onPong). */
  #rttSamples = 0;
  #sampleTimer: ReturnType<typeof setTimeout> | undefined;
  #resolveClosed!: (reason: string) => void;
  /** Resolves with a reason when the session ends. Never rejects. */
  readonly closed: Promise<string>;

  constructor(transport: Transport, opts: SessionOptions) {
    this.#transport = transport;
    this.#role = opts.role;
    this.#onStream = opts.onStream;
    this.#onGoAway = opts.onGoAway;
    const limits = sessionLimits(opts);
    this.#pingIntervalMs = limits.pingIntervalMs;
    this.#pingTimeoutMs = limits.pingTimeoutMs;
    this.#maxStreams = limits.maxStreams;
    this.#initialWindow = limits.initialWindow;
    this.#maxWindow = limits.maxWindow;
    this.#receiveBudget = limits.receiveBudget;
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
      maxWindow: this.#maxWindow,
      rtt: () => this.#rtt,
      fairWindow: () =>
        Math.min(
          this.#maxWindow,
          Math.max(
            MIN_STREAM_WINDOW,
            Math.floor(this.#receiveBudget / Math.max(1, this.#streams.size)),
          ),
        ),
      reserveWindow: (n) => {
        if (this.#committed + n > this.#receiveBudget) return false;
        this.#committed += n;
        return true;
      },
      releaseWindow: (n) => {
        this.#committed -= n;
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

  /** Sum of the receive windows of the open streams (at most the budget + MIN_STREAM_WINDOW per stream). */
  get receiveWindows(): number {
    return this.#committed;
  }

  /**
   * The receive window of a new stream: what is left of the budget, at most `initialWindow`, at
   * least MIN_STREAM_WINDOW (or `initialWindow` if that is smaller). Counted as committed.
   */
  #openingWindow(): number {
    const floor = Math.min(MIN_STREAM_WINDOW, this.#initialWindow);
    const w = Math.min(this.#initialWindow, Math.max(floor, this.#receiveBudget - this.#committed));
    this.#committed += w;
    return w;
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
    const window = this.#openingWindow();
    const open = encodeFrame({ type: "open", streamId: id, window, header });
    this.#nextId += 2;
    const stream = new Stream(this.#host, id, header.slice(), false, window);
    this.#streams.set(id, stream);
    if (early) this.#writer.deferredControl(open);
    else this.#writer.control(open);
    return stream;
  }

  /** No new streams (either side); existing ones finish, then the session closes. */
  goAway(): void {
    if (this.#isClosed || this.#localGoAway) return;
    this.#localGoAway = true;
    this.#send({ type: "go_away", reason: GoAwayReason.Normal });
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
      this.#shutdown(said && said !== GoAwayReason.Normal ? `go away: ${said}` : "go away", true);
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
    clearTimeout(this.#sampleTimer);
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
    // The smallest sample: the path's own round trip, without the queueing that a busy session
    // adds (a queue-inflated RTT would make auto-tuning grow windows, and so the queues, further).
    this.#rtt = this.#rtt === 0 ? sample : Math.min(this.#rtt, sample);
    // The first samples come from a session that is just starting (both processes busy), so a
    // few more follow quickly; after that, one per ping interval.
    if (++this.#rttSamples < EARLY_RTT_SAMPLES && !this.#isClosed) {
      this.#sampleTimer = setTimeout(() => {
        if (!this.#isClosed && this.#pingSentAt < 0) this.#ping();
      }, EARLY_RTT_SAMPLE_GAP_MS);
    }
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
            `connection closed by peer${said && said !== GoAwayReason.Normal ? ` (${said})` : ""}`,
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
      this.#send({ type: "reset", streamId: id, reason: ResetReason.GoingAway });
      return;
    }
    if (this.#streams.size >= this.#maxStreams) {
      this.#log(`stream ${id}: refused, too many streams (${this.#streams.size})`);
      this.#send({ type: "reset", streamId: id, reason: ResetReason.TooManyStreams });
      return;
    }
    if (!this.#onStream) {
      this.#send({ type: "reset", streamId: id, reason: ResetReason.NoStreamHandler });
      return;
    }
    const stream = new Stream(this.#host, id, header.slice(), true, this.#openingWindow());
    stream.setInitialCredit(window);
    this.#streams.set(id, stream);
    try {
      this.#onStream(stream);
    } catch (e) {
      stream.reset(`stream handler failed: ${errorText(e)}`);
    }
  }
}
