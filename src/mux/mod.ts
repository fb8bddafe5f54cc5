/**
 * The stream multiplexer shared by the client and the agent (PROTOCOL.md §5): a Session runs
 * many Streams over one Transport.
 *
 * - `session.ts`: Session (stream table, read loop, heartbeats, go-away)
 * - `stream.ts`: Stream (flow control, half-close, reset)
 * - `stream_state.ts`: StreamState, a stream's lifecycle and its transitions
 * - `_frame_writer.ts`: the frame writer: control first, DATA round-robin per stream, batched
 *   (private)
 * - `buffers.ts`: read buffers of the relay loops (small per connection, large ones pooled)
 * - `errors.ts`: error classes and the RESET / GO_AWAY reasons
 * - `options.ts`: SessionOptions and defaults
 * - `transport.ts`: the byte pipe a Session runs over
 *
 * @module
 */

export { Session } from "./session.ts";
export { Stream } from "./stream.ts";
export { StreamState } from "./stream_state.ts";
export type { SessionOptions } from "./options.ts";
export {
  GoAwayReason,
  isGoAwayRefusal,
  ResetReason,
  SessionClosedError,
  StreamRejectedError,
  StreamResetError,
} from "./errors.ts";
export { connTransport, prefixedTransport, type Transport } from "./transport.ts";
