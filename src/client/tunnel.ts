import { Session, SessionClosedError, type Stream } from "../mux/mod.ts";
import type { Transport } from "../mux/mod.ts";

/** How long a re-established session must stay up before it counts as reconnected. */
const PROBATION_MS = 1000;

/** Options for a Tunnel. */
export interface TunnelOptions {
  /** Opens a fresh transport to an agent (recreating the agent if it is gone). */
  connect: () => Promise<Transport>;
  /** Dead-session detection bound (heartbeats). */
  heartbeatTimeoutMs: number;
  /** How long a new stream waits for a (re)connected session before failing. */
  waitForSessionMs: number;
  /** User-visible notes (tunnel lost / restored). */
  note: (line: string) => void;
  /** Debug log (-v). */
  log: (line: string) => void;
  /**
   * How long `start()` keeps trying until the agent answers (it may still be starting: a
   * port-forward to a pod whose agent does not listen yet fails right after it opens).
   * 0 (default): one attempt.
   */
  startTimeoutMs?: number;
  /** Whether an error of `connect` during `start()` is worth another attempt (default: no). */
  retryable?: (e: unknown) => boolean;
}

/**
 * The wait after a failed start attempt: 50 ms for the first ten (an agent whose container runs
 * usually listens within a few hundred ms, and each attempt is one port-forward), then doubling
 * up to 500 ms.
 */
function nextStartBackoff(attempt: number, backoff: number): number {
  return attempt < 10 ? 50 : Math.min(backoff * 2, 500);
}

/** A transport that tells when the peer first sent something (the agent is there). */
class AnsweredTransport implements Transport {
  readonly answered: Promise<void>;
  readonly coalesceWrites?: boolean;
  #inner: Transport;
  #resolve!: () => void;

  constructor(inner: Transport) {
    this.#inner = inner;
    this.coalesceWrites = inner.coalesceWrites;
    this.answered = new Promise((r) => (this.#resolve = r));
  }

  async read(): Promise<Uint8Array | null> {
    const chunk = await this.#inner.read();
    if (chunk?.length) this.#resolve();
    return chunk;
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.#inner.write(chunk);
  }

  close(): void {
    this.#inner.close();
  }
}

/**
 * One multiplexed session to the agent that survives loss: when the session dies, streams
 * that were open end, and a new session is connected with backoff while new streams wait.
 */
export class Tunnel {
  #opts: TunnelOptions;
  #session: Session | undefined;
  #waiters: (() => void)[] = [];
  #closed = false;
  /** Set by goAway(): the session ending after it is expected, not a loss. */
  #closing = false;
  #reconnecting: Promise<void> | undefined;
  /** Set while `start()` tries its first sessions: their loss is not reported. */
  #starting = false;

  constructor(opts: TunnelOptions) {
    this.#opts = opts;
  }

  /**
   * Connects the first session and waits until the agent answers on it (the client's session
   * sends a ping first), trying again after a short wait until `startTimeoutMs`; errors
   * propagate (the caller reports them and exits).
   */
  async start(): Promise<void> {
    const deadline = Date.now() + (this.#opts.startTimeoutMs ?? 0);
    let backoff = 50;
    this.#starting = true;
    try {
      for (let attempt = 1;; attempt++) {
        let connected: Transport;
        try {
          connected = await this.#opts.connect();
        } catch (e) {
          if (!this.#opts.retryable?.(e) || Date.now() + backoff >= deadline) throw e;
          this.#opts.log(`start attempt ${attempt}: ${(e as Error).message}; trying again`);
          await new Promise((r) => setTimeout(r, backoff));
          backoff = nextStartBackoff(attempt, backoff);
          continue;
        }
        const transport = new AnsweredTransport(connected);
        const session = this.#install(transport);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const outcome = await Promise.race([
          transport.answered.then(() => undefined),
          session.closed,
          new Promise<string>((r) => {
            const wait = this.#opts.heartbeatTimeoutMs;
            timer = setTimeout(() => r(`no answer from the agent in ${wait} ms`), wait);
          }),
        ]).finally(() => clearTimeout(timer));
        if (outcome === undefined && this.#session === session) return;
        const reason = outcome ?? "the session ended at once";
        session.close(reason);
        if (this.#session === session) this.#session = undefined;
        if (Date.now() + backoff >= deadline) throw new SessionClosedError(reason);
        this.#opts.log(`start attempt ${attempt}: ${reason}; trying again`);
        await new Promise((r) => setTimeout(r, backoff));
        backoff = nextStartBackoff(attempt, backoff);
      }
    } finally {
      this.#starting = false;
    }
  }

  /** The current session's open stream count (0 while reconnecting). */
  get activeStreams(): number {
    return this.#session?.activeStreams ?? 0;
  }

  #install(transport: Transport): Session {
    const session = new Session(transport, {
      role: "client",
      pingIntervalMs: Math.max(250, Math.floor(this.#opts.heartbeatTimeoutMs / 3)),
      pingTimeoutMs: this.#opts.heartbeatTimeoutMs,
      log: this.#opts.log,
      // The agent is going away (e.g. shutting down): open streams finish on this session,
      // new ones go to a fresh one.
      onGoAway: (reason) => {
        if (this.#session !== session || this.#closed) return;
        this.#session = undefined;
        this.#opts.log(`agent sent go-away (${reason}); connecting a new session`);
        this.#startReconnect();
      },
    });
    this.#session = session;
    const ws = this.#waiters;
    this.#waiters = [];
    ws.forEach((w) => w());
    session.closed.then((reason) => {
      if (this.#session !== session) return;
      if (this.#closing) return;
      if (this.#starting) {
        this.#session = undefined; // start() tries again or fails
        return;
      }
      this.#session = undefined;
      if (this.#closed || this.#reconnecting) return; // a reconnect loop in progress handles it
      const open = session.activeStreams;
      this.#opts.note(
        `Lost connection to the agent (${reason})${
          open ? `; ${open} open connection(s) closed` : ""
        }; reconnecting…`,
      );
      this.#startReconnect();
    });
    return session;
  }

  #startReconnect(): void {
    if (this.#reconnecting || this.#closed) return;
    this.#reconnecting = this.#reconnect().finally(() => {
      this.#reconnecting = undefined;
      // The session may have died in the instant between probation and here.
      if (!this.#session) this.#startReconnect();
    });
  }

  async #reconnect(): Promise<void> {
    let backoff = 250;
    const t0 = performance.now();
    while (!this.#closed) {
      try {
        const transport = await this.#opts.connect();
        if (this.#closed) {
          transport.close();
          return;
        }
        const session = this.#install(transport);
        // A port-forward can open and fail right after (the kubelet cannot reach the pod yet):
        // only a session that stays up for a moment counts as a reconnection.
        const died = await Promise.race([
          session.closed.then(() => true),
          new Promise<false>((r) => setTimeout(() => r(false), PROBATION_MS)),
        ]);
        if (died) throw new Error("the new session ended at once");
        this.#opts.note(
          `Reconnected to the agent after ${((performance.now() - t0) / 1000).toFixed(1)}s`,
        );
        return;
      } catch (e) {
        this.#opts.log(`reconnect failed: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }

  async #currentSession(): Promise<Session> {
    const deadline = Date.now() + this.#opts.waitForSessionMs;
    while (!this.#session) {
      if (this.#closed) throw new SessionClosedError("relay is shutting down");
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new SessionClosedError("no connection to the agent (still reconnecting)");
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.#session;
  }

  /**
   * Opens a stream for an encoded Header and waits for the agent's answer, waiting (bounded) for
   * a session if reconnecting. If the session dies before the answer, it tries once more on the
   * next one.
   */
  async openStream(header: Uint8Array): Promise<Stream> {
    for (let attempt = 0;; attempt++) {
      const stream = await this.openEarlyStream(header);
      try {
        await stream.opened;
        return stream;
      } catch (e) {
        if (e instanceof SessionClosedError && attempt === 0 && !this.#closed) continue;
        throw e;
      }
    }
  }

  /**
   * Opens a stream without waiting for the agent's answer (early data, see
   * `Session.openEarlyStream`); waits (bounded) only for a session if reconnecting.
   */
  async openEarlyStream(header: Uint8Array): Promise<Stream> {
    for (let attempt = 0;; attempt++) {
      const session = await this.#currentSession();
      try {
        return session.openEarlyStream(header);
      } catch (e) {
        // The session is ending under us: once more on the next one.
        if (e instanceof SessionClosedError && attempt === 0 && !this.#closed) continue;
        throw e;
      }
    }
  }

  /** Stops accepting streams; open ones may finish. */
  goAway(): void {
    this.#closing = true;
    this.#session?.goAway();
  }

  /** Closes the session for good. */
  close(): void {
    this.#closed = true;
    this.#session?.close("client exiting");
    const ws = this.#waiters;
    this.#waiters = [];
    ws.forEach((w) => w());
  }
}
