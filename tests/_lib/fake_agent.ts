/**
 * An agent played in memory for tests of the client's tunnel and opener: `connect` (a Tunnel's
 * `connect`) gives a fresh in-memory transport to a new server Session each time, and `answer`
 * decides each stream's fate from its decoded Header.
 *
 * @module
 */

import { decodeHeader, type Header } from "../../src/protocol/header.ts";
import { ResetReason, Session, type Stream, type Transport } from "../../src/mux/mod.ts";
import { memoryTransportPair } from "./memory_transport.ts";
import { concat } from "./net.ts";
import { acceptPreface } from "./session.ts";

/**
 * What the fake agent does with a stream: `echo` accepts it and sends every byte back (then
 * half-closes after the client's); a number refuses it with that status; `go-away` answers as an
 * agent that started going away as the OPEN arrived (RESET "going away", then GO_AWAY); `hold`
 * accepts and leaves it open until the session ends.
 */
export type Answer = "echo" | "go-away" | "hold" | number;

/** One stream as the fake agent saw it. */
export interface SeenStream {
  header: Header;
  /** Index of the session (connection) it arrived on, from 0. */
  session: number;
  answer: Answer;
  /** What the client sent on it, once it half-closed (accepted streams only). */
  received?: Promise<Uint8Array>;
}

/** An in-memory agent: sessions, the streams they saw, and a way to drop a connection. */
export class FakeAgent {
  /** Server sessions, one per `connect()`, in order. */
  readonly sessions: Session[] = [];
  /** Every stream opened to the agent, in order of arrival. */
  readonly streams: SeenStream[] = [];
  /** Calls of `connect()` (failed ones included). */
  connects = 0;
  #answer: (header: Header, session: number) => Answer;
  #refuseConnect: (n: number) => boolean;
  #transports: Transport[] = [];

  /**
   * `answer` decides each stream; `refuseConnect(n)` (n counts connects from 0) makes a connect
   * fail, as a port-forward to a pod that is not there would.
   */
  constructor(
    answer: (header: Header, session: number) => Answer = () => "echo",
    refuseConnect: (n: number) => boolean = () => false,
  ) {
    this.#answer = answer;
    this.#refuseConnect = refuseConnect;
  }

  /** A Tunnel's `connect`: a new in-memory connection to a new agent session. */
  connect = (): Promise<Transport> => {
    const n = this.connects++;
    if (this.#refuseConnect(n)) {
      return Promise.reject(new Error(`port-forward ${n} refused`));
    }
    const [client, server] = memoryTransportPair();
    this.#transports.push(server);
    const index = this.sessions.length;
    const ready = acceptPreface(server).then((t) => {
      this.sessions[index] = new Session(t, {
        role: "server",
        onStream: (s) => this.#onStream(s, index),
      });
    });
    this.sessions.length = index + 1;
    ready.catch(() => {});
    return Promise.resolve(client);
  };

  #onStream(stream: Stream, session: number): void {
    const decoded = decodeHeader(stream.header);
    if (decoded.kind !== "ok") throw new Error(`bad header: ${decoded.kind}`);
    const answer = this.#answer(decoded.header, session);
    const seen: SeenStream = { header: decoded.header, session, answer };
    this.streams.push(seen);
    if (answer === "go-away") {
      stream.reset(ResetReason.GoingAway);
      this.sessions[session].goAway();
    } else if (typeof answer === "number") {
      stream.reject(answer);
    } else if (answer === "hold") {
      stream.accept();
    } else {
      stream.accept();
      seen.received = echo(stream);
      seen.received.catch(() => {});
    }
  }

  /** Drops connection `n` (the transport closes under both sessions), as a dead port-forward. */
  drop(n: number): void {
    this.#transports[n].close();
  }

  /** Closes every session. */
  async close(): Promise<void> {
    for (const s of this.sessions) s?.close("test done");
    await Promise.all(this.sessions.map((s) => s?.closed));
  }
}

/** Echoes a stream until the client half-closes; resolves with everything it received. */
async function echo(stream: Stream): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for (;;) {
    const chunk = await stream.read();
    if (chunk === null) break;
    parts.push(chunk.slice());
    await stream.write(chunk);
  }
  await stream.closeWrite();
  return concat(parts);
}
