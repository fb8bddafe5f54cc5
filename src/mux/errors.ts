/**
 * The errors a Session and its Streams report, and the reasons this implementation writes in
 * RESET and GO_AWAY frames.
 *
 * @module
 */

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
/** @internal A peer violated the protocol; ends the session. */
export class ProtocolError extends Error {}

/**
 * Reasons this implementation writes in GO_AWAY frames (free UTF-8 text on the wire,
 * PROTOCOL.md §5.8). A peer's own reason is shown to the user as text.
 */
export const GoAwayReason = {
  /** An orderly stop (`Session.goAway()`): no new streams, open ones finish. */
  Normal: "going away",
} as const;

/** Reasons this implementation writes in RESET frames (PROTOCOL.md §5.3, §5.8). */
export const ResetReason = {
  /** An OPEN that arrived after a go-away was sent or received: it was never acted on. */
  GoingAway: "going away",
  /** An OPEN beyond the `maxStreams` limit. */
  TooManyStreams: "too many streams",
  /** An OPEN to a server session that has no `onStream` handler. */
  NoStreamHandler: "no stream handler",
} as const;

/**
 * True when the peer answered an OPEN with RESET "going away" (§5.8): the stream was never acted
 * on, so it can be opened again on a new session.
 */
export function isGoAwayRefusal(e: unknown): e is StreamResetError {
  return e instanceof StreamResetError && e.byPeer && e.reason === ResetReason.GoingAway;
}
