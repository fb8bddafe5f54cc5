/**
 * Maps the agent's per-stream status (and other open failures) to SOCKS5 reply
 * codes, HTTP CONNECT responses and user-facing error text.
 *
 * @module
 */

import { Status, statusMessage } from "../protocol/status.ts";
import { Reply } from "./wire.ts";

/**
 * Extracts the agent status from an `openStream` rejection, if it is one.
 * Duck-typed on a numeric `status` property so that both `StreamRejectedError`
 * from src/mux and equivalent errors are recognised.
 */
export function rejectionStatus(err: unknown): number | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const s = (err as { status?: unknown }).status;
  return typeof s === "number" && Number.isInteger(s) && s > 0 ? s : undefined;
}

/** SOCKS5 reply code for an `openStream` failure. */
export function socksReplyFor(err: unknown): number {
  switch (rejectionStatus(err)) {
    case Status.BadRequest:
      return Reply.GeneralFailure;
    case Status.NoSuchHost:
    case Status.ResolveTimeout:
      return Reply.HostUnreachable;
    case Status.ConnectionRefused:
      return Reply.ConnectionRefused;
    case Status.ConnectTimeout:
      return Reply.TtlExpired;
    case Status.NetworkUnreachable:
      return Reply.NetworkUnreachable;
    default:
      return Reply.GeneralFailure;
  }
}

/** HTTP status line (code and reason) for an `openStream` failure on CONNECT. */
export function httpStatusFor(err: unknown): { code: number; reason: string } {
  switch (rejectionStatus(err)) {
    case Status.BadRequest:
      return { code: 400, reason: "Bad Request" };
    case Status.ResolveTimeout:
    case Status.ConnectTimeout:
      return { code: 504, reason: "Gateway Timeout" };
    case undefined:
      // The tunnel itself failed (session closed, agent gone).
      return { code: 502, reason: "Bad Gateway" };
    default:
      return { code: 502, reason: "Bad Gateway" };
  }
}

/**
 * User-facing error text, Go-style: `dial tcp redis:6379: connection refused`.
 * For failures that are not agent statuses, the error's own message is used.
 */
export function dialErrorMessage(
  protocol: "tcp" | "udp",
  destination: string,
  err: unknown,
): string {
  const s = rejectionStatus(err);
  const detail = s !== undefined
    ? statusMessage(s)
    : err instanceof Error
    ? err.message
    : String(err);
  return `dial ${protocol} ${destination}: ${detail}`;
}
