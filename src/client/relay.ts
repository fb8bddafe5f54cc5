/**
 * One port-forwarding run: bind the local ports, resolve the targets, start the agent and its
 * tunnel, then serve each local port, one stream per connection. In direct mode (`--direct`, or a
 * user who may not create the agent's Job) there is no agent: each connection is a port-forward
 * to the target pod (src/client/direct.ts).
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { accessAllowed, forbiddenMessage, type ResourceAttributes } from "../kube/access_review.ts";
import { preloadAgentTemplate } from "../kube/agent.ts";
import type { KubeClient } from "../kube/client.ts";
import { type ResolvedTarget, resolveTarget } from "../kube/resolve.ts";
import type { BoundSocket, OpenedStream } from "../forward/listener.ts";
import { bindTcp, forwardingLine } from "../forward/tcp.ts";
import { bindUdp } from "../forward/udp.ts";
import { hostPort } from "../protocol/addr.ts";
import type { PortSpec } from "../spec/ports.ts";
import type { ForwardRequest } from "../spec/request.ts";
import { type AgentConnection, kubeClient, launchAgent } from "./connect.ts";
import { directOpener, directProblem } from "./direct.ts";
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
  // `startup:` lines (-v=1) time each phase of the start; bench/ reads them.
  log(1, "startup: started");
  preloadAgentTemplate();
  let direct = opts.direct ?? false;
  if (direct) {
    const problem = directProblem(requests);
    if (problem) throw new UsageError(problem);
  }
  // Bind every local port first, so a port clash fails before anything is created in the cluster.
  const bound = bindAll(requests);
  const resolved: ResolvedTarget[] = [];
  const release = () => resolved.forEach((r) => r.stop());
  let namespaces: string[];
  let conn: AgentConnection | undefined;
  let client: KubeClient;
  try {
    client = await kubeClient(opts.kube, log);
    log(1, "startup: credentials loaded");
    namespaces = requests.map((r) => r.namespace || client.access.namespace);
    // The agent takes longest: a shared agent is looked up (and its port-forward opened) while
    // the access check chooses between agent and direct mode, then the Job is created while the
    // targets are resolved; it is deleted again if a target is wrong.
    const jobsAllowed = direct || directProblem(requests) !== undefined
      ? Promise.resolve(undefined)
      : accessAllowed(client, agentJobAccess(opts));
    let launch = direct ? undefined : launchAgent(
      client,
      opts,
      io,
      opts.agentPatch,
      jobsAllowed.then((allowed) => allowed !== false),
    );
    try {
      direct = await chooseDirect(client, opts, namespaces, direct, io, jobsAllowed);
      if (direct && launch) {
        await launch.cancel();
        launch = undefined;
      }
      for (const [i, r] of requests.entries()) {
        resolved.push(
          await resolveTarget(client, r, namespaces[i], {
            podRunningTimeoutMs: opts.podRunningTimeoutMs,
            log: io.err,
            direct,
          }),
        );
      }
    } catch (e) {
      await launch?.cancel();
      throw e;
    }
    log(1, "startup: targets resolved");
    conn = await launch?.connect();
  } catch (e) {
    bound.forEach((b) => b.socket.close());
    release();
    throw e;
  }
  let open: (req: number, spec: PortSpec) => Promise<OpenedStream>;
  if (conn === undefined) {
    const openDirect = directOpener(client!, log);
    open = (req, spec) => openDirect(resolved[req], namespaces![req], spec);
  } else {
    const openStream = streamOpener(conn.tunnel, log);
    open = (req, spec) => openStream(resolved[req], spec);
  }
  for (const { socket, spec, req } of bound) {
    io.out(forwardingLine(socket, resolved[req].remoteLabel(spec)));
  }
  const listeners = bound.map(({ socket, spec, req }) =>
    socket.serve({ open: () => open(req, spec), out: io.out, err: io.err, log })
  );
  return runOf(conn, listeners, release);
}

/** Creating the agent's Job, as a SelfSubjectAccessReview asks about it. */
function agentJobAccess(opts: ClientOptions): ResourceAttributes {
  return { namespace: opts.agentNamespace, verb: "create", group: "batch", resource: "jobs" };
}

/**
 * Whether this run goes direct: as asked (`--direct`), or because every port is TCP to a pod
 * target and the user may not create the agent's Job (`jobsAllowed`, the review of
 * `agentJobAccess`; then one line says so). In direct mode the right to port-forward to pods in
 * each namespace is checked before anything starts.
 */
async function chooseDirect(
  client: KubeClient,
  opts: ClientOptions,
  namespaces: readonly string[],
  direct: boolean,
  io: Io,
  jobsAllowed: Promise<boolean | undefined>,
): Promise<boolean> {
  // Undefined when the review was not asked (`--direct`, or ports only the agent can serve).
  if (!direct && await jobsAllowed === false) {
    direct = true;
    io.err(
      `Direct mode: you cannot create the agent's Job in namespace "${opts.agentNamespace}", so each connection is a port-forward to the target pod (as kubectl port-forward does)`,
    );
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
  return direct;
}
