/**
 * The open-and-retry policy of forwarded connections: each local connection (or UDP flow) gets
 * a stream opened with early data; an open the agent never acted on is replayed on a new stream.
 *
 * @module
 */

import type { OpenedStream } from "../forward/listener.ts";
import type { Destination, ResolvedTarget } from "../kube/resolve.ts";
import { isGoAwayRefusal, StreamRejectedError } from "../mux/mod.ts";
import { encodeHeader, formatDestination, type Header } from "../protocol/header.ts";
import { Status, statusMessage } from "../protocol/status.ts";
import type { PortSpec } from "../spec/ports.ts";
import type { Log } from "./options.ts";
import { type EarlyStream, RetryingStream } from "./retrying_stream.ts";

/** Opens of one local connection, first one included, before its error is reported. */
export const MAX_OPEN_ATTEMPTS = 3;

/** Dial failures after which a connection to a pod is retried on another ready pod. */
const RETRYABLE = new Set<number>([
  Status.ConnectionRefused,
  Status.ConnectTimeout,
  Status.NetworkUnreachable,
]);

/** Where streams are opened (a Tunnel). */
export interface StreamSource {
  /** Opens a stream for an encoded Header without waiting for the agent's answer. */
  openEarlyStream(header: Uint8Array): Promise<EarlyStream>;
}

/** Opens a relayed stream for one new local connection to a target's port. */
export type Opener = (target: ResolvedTarget, spec: PortSpec) => Promise<OpenedStream>;

/**
 * Maps a rejected stream to the line a user expects: `dial tcp 1.2.3.4:80: connection refused`,
 * with a `hint` in parentheses after it when there is one.
 */
export function dialError(header: Header, status: number, hint?: string): Error {
  return new Error(
    `dial ${header.protocol} ${formatDestination(header)}: ${statusMessage(status)}${
      hint ? ` (${hint})` : ""
    }`,
  );
}

/**
 * The hint for a pod that refused a port it declares: its server most likely listens only on
 * the pod's localhost, which the agent (dialling the pod IP) cannot reach but `--direct` can.
 */
export function refusedHint(target: ResolvedTarget, dest: Destination, spec: PortSpec): string {
  if (spec.protocol !== "tcp" || !dest.pod || !target.declaresPort?.(dest, spec.protocol)) {
    return "";
  }
  return `pod ${dest.pod} declares port ${dest.port}: if its server listens only on localhost, use --direct`;
}

/**
 * The opener of a relay. Each stream is opened with early data: its first bytes travel with the
 * OPEN. An open the agent never acted on is replayed, bytes included, on a new stream (at most
 * MAX_OPEN_ATTEMPTS opens in all): a pod that refused with a RETRYABLE status (usually one being
 * replaced) is reported to the target and another ready pod is tried; a session going away
 * (RESET "going away") is retried on the next session. Anything else is reported as is. Where the
 * target follows pods, the stream's `onTargetGone` watches the pod it reached.
 */
export function streamOpener(source: StreamSource, log: Log): Opener {
  return async (target, spec) => {
    let attempt = 0;
    const open = async () => {
      attempt++;
      const dest = await target.destination(spec);
      const header: Header = {
        requestId: crypto.randomUUID(),
        protocol: spec.protocol,
        port: dest.port,
        address: dest.address,
      };
      log(
        2,
        `${header.requestId} ${spec.protocol} -> ${formatDestination(header)}${
          dest.pod ? ` (pod ${dest.pod})` : ""
        }`,
      );
      return { dest, header, stream: await source.openEarlyStream(encodeHeader(header)) };
    };
    let current = await open();
    const retry = async (e: unknown): Promise<EarlyStream> => {
      const { dest, header } = current;
      const again = attempt < MAX_OPEN_ATTEMPTS;
      if (e instanceof StreamRejectedError) {
        // A pod that refuses is usually one being replaced: try another ready pod.
        if (!again || !dest.pod || !RETRYABLE.has(e.status)) {
          const hint = e.status === Status.ConnectionRefused ? refusedHint(target, dest, spec) : "";
          throw dialError(header, e.status, hint);
        }
        log(
          2,
          `${header.requestId} pod ${dest.pod} refused (${
            statusMessage(e.status)
          }); trying another pod`,
        );
        target.reportFailure(dest);
      } else if (!(again && isGoAwayRefusal(e))) {
        throw e;
      }
      current = await open();
      return current.stream;
    };
    const stream: OpenedStream = new RetryingStream(current.stream, retry);
    const watchPod = target.watchPod?.bind(target);
    if (!watchPod) return stream;
    // The pod of the stream accepted last: `current` once `ready` has resolved.
    return Object.assign(stream, {
      onTargetGone: (onGone: () => void) => watchPod(current.dest, onGone),
    });
  };
}
