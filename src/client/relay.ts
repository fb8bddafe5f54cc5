/**
 * One port-forwarding run: bind the local ports, resolve the targets, start the agent and its
 * tunnel, then serve each local port, one stream per connection.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { parsePatch } from "../kube/agent.ts";
import { type ResolvedTarget, resolveTarget } from "../kube/resolve.ts";
import type { BoundSocket } from "../forward/listener.ts";
import { bindTcp, forwardingLine } from "../forward/tcp.ts";
import { bindUdp } from "../forward/udp.ts";
import { hostPort } from "../protocol/addr.ts";
import type { PortSpec } from "../spec/ports.ts";
import type { ForwardRequest } from "../spec/request.ts";
import { connectAgent, kubeClient } from "./connect.ts";
import { streamOpener } from "./opener.ts";
import { type ClientOptions, type Io, logger } from "./options.ts";
import { type Run, runOf } from "./run.ts";

/** One bound local socket and what it forwards to. */
export interface BoundPort {
  socket: BoundSocket;
  spec: PortSpec;
  /** Index of its request (and of the request's resolved target). */
  req: number;
}

/**
 * Binds every local socket of the requests. The same port spec on several addresses gets the same
 * port (the first one's, when the kernel chose it). A port that cannot be bound is a UsageError;
 * the sockets bound so far are released.
 */
export function bindAll(requests: readonly ForwardRequest[]): BoundPort[] {
  const bound: BoundPort[] = [];
  try {
    requests.forEach((r, req) => {
      for (const spec of r.ports) {
        for (const addr of r.addresses) {
          const port = bound.find((b) => b.spec === spec)?.socket.port ?? spec.local;
          try {
            const socket = spec.protocol === "udp" ? bindUdp(addr, port) : bindTcp(addr, port);
            bound.push({ socket, spec, req });
          } catch (e) {
            if (
              !(e instanceof Deno.errors.AddrInUse || e instanceof Deno.errors.AddrNotAvailable ||
                e instanceof Deno.errors.PermissionDenied)
            ) throw e;
            const why = (e as Error).message.replace(/ \(os error \d+\)/, "").toLowerCase();
            throw new UsageError(
              `unable to listen on ${hostPort(addr, port)} (${spec.protocol}): ${why}`,
            );
          }
        }
      }
    });
  } catch (e) {
    bound.forEach((b) => b.socket.close());
    throw e;
  }
  return bound;
}

/**
 * Starts a relay for the forwarding requests. Errors are thrown (UsageError for user mistakes);
 * whatever was created in the cluster is deleted first.
 */
export async function startRelay(
  opts: ClientOptions,
  requests: ForwardRequest[],
  io: Io,
): Promise<Run> {
  const log = logger(opts.verbosity, io);
  const patch = parsePatch(opts.patch, opts.patchFile);
  // Bind every local port first, so a port clash fails before anything is created in the cluster.
  const bound = bindAll(requests);
  const resolved: ResolvedTarget[] = [];
  const release = () => resolved.forEach((r) => r.stop());
  let conn;
  try {
    const client = await kubeClient(opts.kube);
    for (const r of requests) {
      resolved.push(
        await resolveTarget(client, r, r.namespace || client.access.namespace, {
          podRunningTimeoutMs: opts.podRunningTimeoutMs,
          log: io.err,
        }),
      );
    }
    conn = await connectAgent(client, opts, io, patch);
  } catch (e) {
    bound.forEach((b) => b.socket.close());
    release();
    throw e;
  }
  const open = streamOpener(conn.tunnel, log);
  for (const { socket, spec, req } of bound) {
    io.out(forwardingLine(socket, resolved[req].remoteLabel(spec)));
  }
  const listeners = bound.map(({ socket, spec, req }) =>
    socket.serve({ open: () => open(resolved[req], spec), out: io.out, err: io.err, log })
  );
  return runOf(conn, listeners, release);
}
