/**
 * One port-forwarding run: bind the local ports, resolve the targets, start the agent and its
 * tunnel, then relay each local connection through a stream. In direct mode (`--direct`, or a
 * user who may not create the agent's Job) there is no agent: each connection is a port-forward
 * to the target pod (src/client/direct.ts).
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import type { AgentHandle, AgentManager } from "../kube/agent.ts";
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
import { accessAllowed, forbiddenMessage } from "../kube/access_review.ts";
import { connectAgent, kubeClient } from "./connect.ts";
import { directOpener, directProblem } from "./direct.ts";
import { streamOpener } from "./opener.ts";
import { type ClientOptions, type Io, logger } from "./options.ts";
import type { Tunnel } from "./tunnel.ts";

/** A running relay (or proxy): its agent, tunnel and listeners. */
export interface Relay {
  listeners: { listener: Listener; remote: string }[];
  /** The agent; none in direct mode. */
  agent: AgentHandle | undefined;
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
  // `startup:` lines (-v=1) time each phase of the start; bench/ reads them.
  log(1, "startup: started");
  const patch = opts.agentPatch;
  let direct = opts.direct ?? false;
  if (direct) {
    const problem = directProblem(requests);
    if (problem) throw new UsageError(problem);
  }

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
    const client = await kubeClient(opts.kube);
    log(1, "startup: credentials loaded");
    const access = client.access;
    const note = (line: string) => io.err(line);
    const namespaces = requests.map((r) => r.namespace || access.namespace);
    if (!direct && directProblem(requests) === undefined) {
      // Without the right to create the agent, go direct where kubectl port-forward would work.
      const jobs = {
        namespace: opts.agentNamespace,
        verb: "create",
        group: "batch",
        resource: "jobs",
      };
      if (await accessAllowed(client, jobs) === false) {
        direct = true;
        note(
          `Direct mode: you cannot create the agent's Job in namespace "${opts.agentNamespace}", so each connection is a port-forward to the target pod (as kubectl port-forward does)`,
        );
      }
    }
    if (direct) {
      for (const namespace of new Set(namespaces)) {
        const pf = {
          namespace,
          verb: "create",
          group: "",
          resource: "pods",
          subresource: "portforward",
        };
        if (await accessAllowed(client, pf) === false) throw new UsageError(forbiddenMessage(pf));
      }
    }
    for (const [i, r] of requests.entries()) {
      resolved.push(
        await resolveTarget(client, r, namespaces[i], {
          podRunningTimeoutMs: opts.podRunningTimeoutMs,
          log: note,
          direct,
        }),
      );
    }
    log(1, "startup: targets resolved");
    let agent: () => AgentHandle | undefined = () => undefined;
    if (direct) {
      const open = directOpener(client, log);
      setOpener((req, spec) => open(resolved[req], namespaces[req], spec));
    } else {
      const conn = await connectAgent(client, opts, io, patch);
      agents = conn.agents;
      tunnel = conn.tunnel;
      agent = conn.agent;
      const open = streamOpener(conn.tunnel, log);
      setOpener((req, spec) => open(resolved[req], spec));
    }
    const listeners = bound.map((b) => ({
      listener: b.listener,
      remote: resolved[b.req].remoteLabel(b.spec),
    }));
    for (const { listener, remote } of listeners) io.out(forwardingLine(listener, remote));
    let stopping: Promise<void> | undefined;
    return {
      listeners,
      get agent() {
        return agent();
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
