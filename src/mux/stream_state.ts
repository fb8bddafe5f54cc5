/**
 * The lifecycle of one Stream (PROTOCOL.md §5.5, §5.3): its states, the transitions between
 * them, and the facts the Stream reads off a state.
 *
 * ```
 *  Opening ───FIN sent───► OpeningLocalClosed          client: OPEN sent
 *     │ STATUS 0 recvd             │ STATUS 0 recvd
 *     ▼                            ▼
 *    Open ─────FIN sent────────► LocalClosed ───FIN recvd──┐
 *     ├────────FIN recvd───────► RemoteClosed ──FIN sent───┴──► Closed
 *     ▲ accept()                   ▲ accept()
 *  Accepting ──FIN recvd──► AcceptingRemoteClosed       server: OPEN received
 *
 *  Opening*, Accepting* ──── STATUS ≠ 0 recvd / reject() ─────► Rejected
 *  any state before Closed ── reset() / RESET recvd ──────────► Reset
 *  any state before Closed ── the session ends ───────────────► SessionEnded, or
 *                         SessionEndedRemoteClosed if the peer's FIN had arrived
 *  Closed, SessionEnded* ──── reset() (nothing sent) ─────────► Reset
 * ```
 *
 * FIN is a HALF_CLOSE frame. `write()` and `closeWrite()` on a server stream that is not answered
 * yet accept it first. Closed, Reset, Rejected and the SessionEnded states are _ended_: the
 * session forgot the stream and its receive window went back to the session's budget; Reset and
 * Rejected are final.
 *
 * @module
 */

/** Where a Stream is in its lifecycle (see the diagram in `stream_state.ts`). */
export enum StreamState {
  /**
   * Client: OPEN sent, no STATUS yet. Writes go out as early data (up to EARLY_WINDOW bytes);
   * reads wait; `opened` is pending.
   */
  Opening,
  /** Client: OPEN and HALF_CLOSE sent (early half-close), no STATUS yet. */
  OpeningLocalClosed,
  /**
   * Server: OPEN received, STATUS not sent yet. Early data from the client is buffered and
   * readable; `accept()`, `reject()`, `write()` or `closeWrite()` answers.
   */
  Accepting,
  /** Server: OPEN and the client's early HALF_CLOSE received, STATUS not sent yet. */
  AcceptingRemoteClosed,
  /** Accepted (STATUS 0 sent or received): data flows both ways. */
  Open,
  /** We sent HALF_CLOSE: writes fail, reads continue until the peer half-closes too. */
  LocalClosed,
  /** The peer sent HALF_CLOSE: reads return what is buffered, then null; writes continue. */
  RemoteClosed,
  /** Both sides sent HALF_CLOSE: finished cleanly. Buffered data stays readable, then null. */
  Closed,
  /**
   * Aborted both ways by `reset()` or a RESET from the peer: buffered data is discarded, reads
   * and writes throw StreamResetError.
   */
  Reset,
  /**
   * Refused with a nonzero STATUS (client: received, reads and writes throw
   * StreamRejectedError; server: `reject()`, they throw StreamResetError).
   */
  Rejected,
  /**
   * The session ended first: reads return what is buffered, then throw SessionClosedError;
   * writes throw SessionClosedError.
   */
  SessionEnded,
  /**
   * The session ended after the peer's HALF_CLOSE: reads return what is buffered, then null;
   * writes throw SessionClosedError.
   */
  SessionEndedRemoteClosed,
}

/** @internal A set of states as a bit mask (bit `s` = state `s`); test with `has`. */
export type StateSet = number;

function setOf(...states: StreamState[]): StateSet {
  let mask = 0;
  for (const s of states) mask |= 1 << s;
  return mask;
}

/** @internal True if `state` is in `set` (one shift, no allocation: used per frame). */
export function has(set: StateSet, state: StreamState): boolean {
  return ((set >>> state) & 1) === 1;
}

const S = StreamState;

/** @internal Client, waiting for STATUS: `opened` is pending; DATA or FIN from the peer is an error. */
export const AWAITING_STATUS: StateSet = setOf(S.Opening, S.OpeningLocalClosed);
/** @internal Server, STATUS not sent: `accept()` / `reject()` still answer. */
export const UNANSWERED: StateSet = setOf(S.Accepting, S.AcceptingRemoteClosed);
/** @internal We sent HALF_CLOSE and the stream has not ended otherwise: writes fail. */
export const LOCAL_FIN: StateSet = setOf(S.OpeningLocalClosed, S.LocalClosed, S.Closed);
/** @internal The peer sent HALF_CLOSE: nothing more arrives; reads end with null. */
export const REMOTE_FIN: StateSet = setOf(
  S.AcceptingRemoteClosed,
  S.RemoteClosed,
  S.Closed,
  S.SessionEndedRemoteClosed,
);
/** @internal Reset or refused: reads and writes throw the stream's error. */
export const FAILED: StateSet = setOf(S.Reset, S.Rejected);
/** @internal Ended by the session: writes throw SessionClosedError. */
export const SESSION_ENDED: StateSet = setOf(S.SessionEnded, S.SessionEndedRemoteClosed);
/** @internal Ended: the session forgot the stream; it sends nothing more. */
export const ENDED: StateSet = setOf(S.Closed) | FAILED | SESSION_ENDED;

/** Every transition a Stream makes, by the state it leaves. */
const TRANSITIONS: Readonly<Record<StreamState, readonly StreamState[]>> = {
  [S.Opening]: [S.OpeningLocalClosed, S.Open, S.Rejected, S.Reset, S.SessionEnded],
  [S.OpeningLocalClosed]: [S.LocalClosed, S.Rejected, S.Reset, S.SessionEnded],
  [S.Accepting]: [S.AcceptingRemoteClosed, S.Open, S.Rejected, S.Reset, S.SessionEnded],
  [S.AcceptingRemoteClosed]: [S.RemoteClosed, S.Rejected, S.Reset, S.SessionEndedRemoteClosed],
  [S.Open]: [S.LocalClosed, S.RemoteClosed, S.Reset, S.SessionEnded],
  [S.LocalClosed]: [S.Closed, S.Reset, S.SessionEnded],
  [S.RemoteClosed]: [S.Closed, S.Reset, S.SessionEndedRemoteClosed],
  [S.Closed]: [S.Reset],
  [S.Reset]: [],
  [S.Rejected]: [],
  [S.SessionEnded]: [S.Reset],
  [S.SessionEndedRemoteClosed]: [S.Reset],
};

/** TRANSITIONS as one StateSet per state, indexed by state. */
const NEXT: StateSet[] = [];
for (const [from, to] of Object.entries(TRANSITIONS)) NEXT[Number(from)] = setOf(...to);

/** @internal True if a Stream may go from `from` to `to`. */
export function canTransition(from: StreamState, to: StreamState): boolean {
  return has(NEXT[from], to);
}
