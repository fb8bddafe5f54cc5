/**
 * One port-forwarding run: bind the local ports, resolve the targets, start the agent and its
 * tunnel, then relay each local connection through a stream.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import type { AgentHandle, AgentManager } from "../kube/agent.ts";
import { parsePatch, preloadAgentTemplate } from "../kube/agent.ts";
import { type ResolvedTarget, resolveTarget } from "../kube/resolve.ts";
import {
  type ForwardContext,
  hostPort,
  type Listener,
  type OpenedStream,
} from "../forward/listener.ts";
import { forwardingLine, listenTcp } from "../forward/tcp.ts";
import { listenUdp } from "../forward/udp.ts";
import type { PortSpec } from "../spec/ports.ts";
import type { ForwardRequest } from "../spec/request.ts";
import { kubeClient, launchAgent } from "./connect.ts";
import { streamOpener } from "./opener.ts";
import { type ClientOptions, type Io, logger } from "./options.ts";
import type { Tunnel } from "./tunnel.ts";

/** A running relay (or proxy): its agent, tunnel and listeners. */
export interface Relay {
  listeners: { listener: Listener; remote: string }[];
  agent: AgentHandle;
  /** Graceful stop: stop accepting, let streams finish (bounded), delete the agent. */
  shutdown(graceMs?: number): Promise<void>;
}

/**
 * Starts a relay for the forwarding requests. Errors are thrown (UsageError for user mistakes);
 * whatever was created in the cluster is deleted first.
 */
export async function startRelay(
  opts: ClientOptions,
  requests: ForwardRequest[],
  io: Io,
): Promise<Relay> {
  const log = logger(opts.verbosity, io);
  // `startup:` lines (-v=1) time each phase of the start (bench/ reads them).
  log(1, "startup: started");
  preloadAgentTemplate();
  const patch = parsePatch(opts.patch, opts.patchFile);

  // Bind every local port first, so a port clash fails before anything is created in the cluster.
  const bound: { listener: Listener; spec: PortSpec; req: number }[] = [];
  // Listeners are bound before the tunnel exists: their first connections wait for the opener.
  type RequestOpener = (req: number, spec: PortSpec) => Promise<OpenedStream>;
  let setOpener!: (o: RequestOpener) => void;
  const opener = new Promise<RequestOpener>((resolve) => (setOpener = resolve));
  const ctxFor = (req: number): ForwardContext => ({
    open: async (spec) => (await opener)(req, spec),
    out: io.out,
    err: io.err,
    log,
  });
  try {
    requests.forEach((r, i) => {
      for (const spec of r.ports) {
        for (const addr of r.addresses) {
          const port = bound.find((b) => b.spec === spec)?.listener.port ?? spec.local;
          try {
            const l = spec.protocol === "udp"
              ? listenUdp(addr, port, spec, ctxFor(i))
              : listenTcp(addr, port, spec, ctxFor(i));
            bound.push({ listener: l, spec, req: i });
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
    bound.forEach((b) => b.listener.close());
    throw e;
  }

  const resolved: ResolvedTarget[] = [];
  let agents: AgentManager | undefined;
  let tunnel: Tunnel | undefined;
  const cleanup = async () => {
    tunnel?.close();
    bound.forEach((b) => b.listener.close());
    resolved.forEach((r) => r.stop());
    await agents?.deleteAll();
  };
  try {
    const client = await kubeClient(opts.kube, log);
    log(1, "startup: credentials loaded");
    const access = client.access;
    const note = (line: string) => io.err(line);
    // The agent takes longest: its Job is created while the targets are resolved, and deleted
    // again if one of them is wrong.
    const launch = launchAgent(client, opts, io, patch);
    try {
      for (const r of requests) {
        resolved.push(
          await resolveTarget(client, r, r.namespace || access.namespace, {
            podRunningTimeoutMs: opts.podRunningTimeoutMs,
            log: note,
          }),
        );
      }
    } catch (e) {
      await launch.cancel();
      throw e;
    }
    log(1, "startup: targets resolved");
    const conn = await launch.connect();
    agents = conn.agents;
    tunnel = conn.tunnel;
    const open = streamOpener(conn.tunnel, log);
    setOpener((req, spec) => open(resolved[req], spec));
    const listeners = bound.map((b) => ({
      listener: b.listener,
      remote: resolved[b.req].remoteLabel(b.spec),
    }));
    for (const { listener, remote } of listeners) io.out(forwardingLine(listener, remote));
    let stopping: Promise<void> | undefined;
    return {
      listeners,
      get agent() {
        return conn.agent();
      },
      shutdown(graceMs = 2000) {
        stopping ??= (async () => {
          bound.forEach((b) => b.listener.stopAccepting());
          tunnel?.goAway();
          const deadline = Date.now() + graceMs;
          while (Date.now() < deadline && bound.some((b) => b.listener.active > 0)) {
            await new Promise((r) => setTimeout(r, 50));
          }
          await cleanup();
        })();
        return stopping;
      },
    };
  } catch (e) {
    await cleanup().catch(() => {});
    throw e;
  }
}
