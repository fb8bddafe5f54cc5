/**
 * Session options, their defaults and the fixed limits of this implementation.
 *
 * @module
 */

import { EARLY_WINDOW, MAX_WINDOW } from "../protocol/mux.ts";
import type { Stream } from "./stream.ts";

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
   * Per-stream receive window in bytes while few streams are open; default 256 KiB. A new stream
   * gets less when the receive budget is shared by many (see `receiveBudget`), but the server role
   * never less than EARLY_WINDOW (16 KiB, the credit clients have for early data before STATUS).
   */
  initialWindow?: number;
  /**
   * Largest receive window auto-tuning may grow a fast-read stream to; default
   * max(initialWindow, 4 MiB). Set equal to initialWindow to disable growth.
   */
  maxWindow?: number;
  /**
   * The session's receive buffer budget in bytes; default 32 MiB. The receive windows of all its
   * streams together stay within it, except that every stream gets at least MIN_STREAM_WINDOW
   * (so a session never buffers more than budget + streams × MIN_STREAM_WINDOW for its peer,
   * whatever the peer does): a new stream starts with what is left (at most `initialWindow`),
   * auto-tuning grows a window only from what is left, and a stream whose window is above its
   * fair share (budget / open streams) gives back less credit than it consumed until it is down
   * to it, so a busy session's windows move to the streams that are still opening.
   */
  receiveBudget?: number;
  /**
   * Called once when the peer sends GO_AWAY: this session accepts no new streams any more
   * (open ones continue), so a client should start using a new session for new streams.
   */
  onGoAway?: (reason: string) => void;
  /** Debug log, one line per event. */
  log?: (line: string) => void;
}
/** Default interval between PINGs. */
export const DEFAULT_PING_INTERVAL_MS = 5000;
/** Default time without anything from the peer after which the session is declared dead. */
export const DEFAULT_PING_TIMEOUT_MS = 15000;
/** Default number of concurrently open streams a server accepts. */
export const DEFAULT_MAX_STREAMS = 4096;
/** Default per-stream receive window. */
export const DEFAULT_INITIAL_WINDOW = 256 * 1024;
/** Default largest window auto-tuning may grow a stream to. */
export const DEFAULT_MAX_WINDOW = 4 * 1024 * 1024;
/** Default receive buffer budget of a session. */
export const DEFAULT_RECEIVE_BUDGET = 32 * 1024 * 1024;
/** A stream's window never shrinks below this (a smaller one would throttle it to a crawl). */
export const MIN_STREAM_WINDOW = 32 * 1024;

/**
 * Most bytes the frame writer hands to the transport in one write (control frames and DATA
 * turns of several streams coalesced). A write in progress delays frames queued after it only
 * while the transport cannot take it (its buffers are full, so they hold more than this anyway);
 * 64 KiB measured 10–20 % more CPU per GiB than 256 KiB on the loopback bench.
 */
export const BATCH_SIZE = 256 * 1024;
/**
 * DATA payload bytes one stream gets per round-robin turn of the frame writer: a stream's next
 * frame waits behind at most this much of each other stream with queued DATA.
 */
export const SCHEDULER_QUANTUM = 16 * 1024;
/** DATA producers wait while this many payload bytes are queued (all streams together). */
export const QUEUE_HIGH_WATER = 256 * 1024;
/** A stream's writer waits while this many of its payload bytes are queued. */
export const STREAM_HIGH_WATER = 128 * 1024;
/** Control frames queued beyond this end the session (the peer does not read). */
export const QUEUE_OVERFLOW = 8 * 1024 * 1024;
/**
 * How long an early OPEN waits for the stream's first DATA to share its transport write (a
 * client's first bytes usually follow its connect within tens of microseconds).
 */
export const EARLY_DATA_WAIT_MS = 0.25;
/**
 * Round-trip samples (PING/PONG) a new session takes EARLY_RTT_SAMPLE_GAP_MS apart, before falling
 * back to one per ping interval: window auto-tuning uses the smallest, the path's own round trip.
 */
export const EARLY_RTT_SAMPLES = 5;
/** Gap between the early round-trip samples of a new session (ms). */
export const EARLY_RTT_SAMPLE_GAP_MS = 100;
/** How long a draining close (after go-away) waits for queued frames to be written. */
export const DRAIN_GRACE_MS = 5000;

/** The numeric options of a Session, validated, with defaults filled in. */
export interface SessionLimits {
  pingIntervalMs: number;
  pingTimeoutMs: number;
  maxStreams: number;
  initialWindow: number;
  maxWindow: number;
  receiveBudget: number;
}

/**
 * Validates the numeric options and fills in defaults (TypeError for a bad value). The server
 * role never uses a receive window below EARLY_WINDOW; windows never exceed MAX_WINDOW.
 */
export function sessionLimits(opts: SessionOptions): SessionLimits {
  const pingIntervalMs = option(
    opts.pingIntervalMs,
    DEFAULT_PING_INTERVAL_MS,
    1,
    "pingIntervalMs",
  );
  const pingTimeoutMs = option(opts.pingTimeoutMs, DEFAULT_PING_TIMEOUT_MS, 1, "pingTimeoutMs");
  const maxStreams = option(opts.maxStreams, DEFAULT_MAX_STREAMS, 0, "maxStreams");
  const initialWindow = Math.min(
    Math.max(
      option(opts.initialWindow, DEFAULT_INITIAL_WINDOW, 1, "initialWindow"),
      opts.role === "server" ? EARLY_WINDOW : 1,
    ),
    MAX_WINDOW,
  );
  const maxWindow = Math.min(
    Math.max(option(opts.maxWindow, DEFAULT_MAX_WINDOW, 1, "maxWindow"), initialWindow),
    MAX_WINDOW,
  );
  const receiveBudget = option(
    opts.receiveBudget,
    DEFAULT_RECEIVE_BUDGET,
    MIN_STREAM_WINDOW,
    "receiveBudget",
  );
  return { pingIntervalMs, pingTimeoutMs, maxStreams, initialWindow, maxWindow, receiveBudget };
}

/** A numeric option: `fallback` when absent; TypeError when not a number ≥ `min`. */
function option(value: number | undefined, fallback: number, min: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || Number.isNaN(value) || value < min) {
    throw new TypeError(`SessionOptions.${name} must be a number >= ${min}, got ${value}`);
  }
  return Math.floor(value);
}
