/**
 * The status reply: after a Header the agent answers with exactly one status
 * byte. `0` means the destination was reached and relaying begins; any other
 * value means the request failed and the agent ends that stream.
 *
 * @module
 */

/** Status byte values sent by the agent after a Header. */
export enum Status {
  Ok = 0,
  /** The Header was invalid (see `HeaderError`). */
  BadRequest = 1,
  /** The hostname does not resolve. */
  NoSuchHost = 2,
  /** Resolving the hostname took too long. */
  ResolveTimeout = 3,
  /** The destination actively refused the connection. */
  ConnectionRefused = 4,
  /** Connecting took too long. */
  ConnectTimeout = 5,
  /** No route to the destination. */
  NetworkUnreachable = 6,
  /** Any other failure. */
  UnknownError = 7,
}

/**
 * Go-like text for a status, as used in `dial tcp redis:6379: <message>`.
 * Unknown values give `unknown status N`.
 */
export function statusMessage(s: number): string {
  switch (s) {
    case Status.Ok:
      return "ok";
    case Status.BadRequest:
      return "bad request";
    case Status.NoSuchHost:
      return "no such host";
    case Status.ResolveTimeout:
      return "lookup timeout";
    case Status.ConnectionRefused:
      return "connection refused";
    case Status.ConnectTimeout:
      return "i/o timeout";
    case Status.NetworkUnreachable:
      return "network is unreachable";
    case Status.UnknownError:
      return "unknown error";
    default:
      return `unknown status ${s}`;
  }
}
