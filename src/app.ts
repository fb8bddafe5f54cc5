import type { Command } from "./cli/command.ts";
import type { Flags } from "./cli/flags.ts";
import type { PortSpec } from "./cli/ports.ts";
import { UsageError } from "./cli/errors.ts";
import { KubeApiError, KubeClient, KubeConnectionError } from "./kube/client.ts";
import { kubeAccess } from "./kube/config.ts";
import { AGENT_PORT, type AgentHandle, AgentManager, parsePatch } from "./kube/agent.ts";
import { type ResolvedTarget, resolveTarget } from "./kube/resolve.ts";
import { encodeHeader, formatDestination, type Header } from "./protocol/header.ts";
import { Status, statusMessage } from "./protocol/status.ts";
import { openPortForward } from "./tunnel/portforward.ts";
import { StreamRejectedError, StreamResetError } from "./tunnel/session.ts";
import { Tunnel } from "./tunnel/tunnel.ts";
import {
  type ForwardContext,
  hostPort,
  type Listener,
  type OpenedStream,
} from "./forward/listener.ts";
import { type EarlyStream, RetryingStream } from "./forward/retrying_stream.ts";
import { forwardingLine, listenTcp } from "./forward/tcp.ts";
import { listenUdp } from "./forward/udp.ts";
import { DEFAULT_AGENT_IMAGE } from "./version.ts";

/** Opens of one local connection, first one included, before its error is reported. */
const MAX_OPEN_ATTEMPTS = 3;

/** Dial failures after which a connection to a pod is retried on another ready pod. */
const RETRYABLE = new Set<number>([
  Status.ConnectionRefused,
  Status.ConnectTimeout,
  Status.NetworkUnreachable,
]);

/** Output sinks (injected so tests and the demo can capture them). */
export interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
}

/** Console output, kubectl-style: data lines on stdout, progress and errors on stderr. */
export const consoleIo: Io = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
};

/** A running relay: its agent, tunnel and listeners. */
export interface Relay {
  listeners: { listener: Listener; remote: string }[];
  agent: AgentHandle;
  /** Graceful stop: stop accepting, let streams finish (bounded), delete the agent. */
  shutdown(graceMs?: number): Promise<void>;
}

function logger(flags: Flags, io: Io) {
  return (level: number, line: string) => {
    if (flags.verbosity >= level) io.err(`I${new Date().toISOString().slice(11, 23)} ${line}`);
  };
}

/** Maps a rejected stream to the line a user expects: `dial tcp 1.2.3.4:80: connection refused`. */
export function dialError(header: Header, status: number): Error {
  return new Error(
    `dial ${header.protocol} ${formatDestination(header)}: ${statusMessage(status)}`,
  );
}

/** An agent and the tunnel to it, reconnecting (and recreating the agent) when lost. */
export interface AgentConnection {
  agents: AgentManager;
  tunnel: Tunnel;
  agent(): AgentHandle;
}

/** Creates the agent Job, waits for it, and connects the tunnel through the pod port-forward. */
export async function connectAgent(
  client: KubeClient,
  flags: Flags,
  io: Io,
  patch: ReturnType<typeof parsePatch>,
): Promise<AgentConnection> {
  const log = logger(flags, io);
  const note = (line: string) => io.err(line);
  const agents = new AgentManager(client, {
    namespace: flags.serverNamespace,
    image: flags.serverImage ?? DEFAULT_AGENT_IMAGE,
    patch,
    args: Deno.env.get("KUBECTL_RELAY_AGENT_ARGS")?.split(" ").filter((a) => a),
    readyTimeoutMs: Math.max(flags.podRunningTimeoutMs, 60_000),
    log: note,
    debug: (line) => log(1, `startup: ${line}`),
  });
  await agents.preflight();
  log(1, "startup: access checked");
  let agent = await agents.start();
  log(1, `startup: agent pod ${agent.pod} ready`);
  const connect = async () => {
    if (!(await agents.alive(agent))) {
      note(`Agent pod ${agent.pod} is gone; starting a new agent`);
      await agents.delete(agent.job).catch(() => {});
      agent = await agents.start();
    }
    // A pod that just became ready may not accept port-forwards for a moment: retry briefly,
    // but not when the apiserver has said no (forbidden, not found).
    for (let attempt = 1;; attempt++) {
      try {
        return await openPortForward(client, agent.namespace, agent.pod, AGENT_PORT, 30_000);
      } catch (e) {
        if (
          attempt >= 5 ||
          /^Error from server \((NotFound|Forbidden|Unauthorized)\)/.test((e as Error).message)
        ) {
          throw e;
        }
        log(4, `port-forward attempt ${attempt} failed: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
  };
  const tunnel = new Tunnel({
    connect,
    heartbeatTimeoutMs: flags.heartbeatTimeoutMs,
    waitForSessionMs: 60_000,
    note,
    log: (l) => log(4, l),
  });
  try {
    await tunnel.start();
  } catch (e) {
    await agents.deleteAll().catch(() => {});
    throw e;
  }
  log(1, "startup: tunnel up");
  return { agents, tunnel, agent: () => agent };
}

/** Resolves the user's credentials and builds an API client (user errors become UsageError). */
export async function kubeClient(cmd: Command): Promise<KubeClient> {
  return new KubeClient(await kubeAccess(cmd.flags, cmd.argv));
}

/** Starts a relay for a parsed `forward` command. Errors are thrown (UsageError for user mistakes). */
export async function startRelay(cmd: Command, io: Io = consoleIo): Promise<Relay> {
  const flags = cmd.flags;
  const log = logger(flags, io);
  // `startup:` lines (-v=1) time each phase of the start; bench/ reads them.
  log(1, "startup: started");
  const patch = parsePatch(flags.patch, flags.patchFile);

  // Bind every local port first, so a port clash fails before anything is created in the cluster.
  const bound: { listener: Listener; spec: PortSpec; req: number }[] = [];
  type Opener = (req: number, spec: PortSpec) => Promise<OpenedStream>;
  let setOpener!: (o: Opener) => void;
  const opener = new Promise<Opener>((resolve) => (setOpener = resolve));
  const ctxFor = (req: number): ForwardContext => ({
    open: async (spec) => (await opener)(req, spec),
    out: io.out,
    err: io.err,
    log,
  });
  try {
    cmd.requests.forEach((r, i) => {
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
    const client = await kubeClient(cmd);
    log(1, "startup: credentials loaded");
    const access = client.access;
    const note = (line: string) => io.err(line);
    for (const r of cmd.requests) {
      resolved.push(
        await resolveTarget(client, r, r.namespace || access.namespace, {
          podRunningTimeoutMs: flags.podRunningTimeoutMs,
          log: note,
        }),
      );
    }
    log(1, "startup: targets resolved");
    const conn = await connectAgent(client, flags, io, patch);
    agents = conn.agents;
    tunnel = conn.tunnel;
    const t = tunnel;
    // Each local connection's stream is opened with early data: its first bytes travel with the
    // OPEN, and an open the agent never acted on (a refusing pod, a session going away) is
    // replayed, bytes included, on a new stream.
    setOpener(async (req, spec) => {
      const target = resolved[req];
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
        return { dest, header, stream: await t.openEarlyStream(encodeHeader(header)) };
      };
      let current = await open();
      const retry = async (e: unknown): Promise<EarlyStream> => {
        const { dest, header } = current;
        const again = attempt < MAX_OPEN_ATTEMPTS;
        if (e instanceof StreamRejectedError) {
          // A pod that refuses is usually one being replaced: try another ready pod.
          if (!again || !dest.pod || !RETRYABLE.has(e.status)) throw dialError(header, e.status);
          log(
            2,
            `${header.requestId} pod ${dest.pod} refused (${
              statusMessage(e.status)
            }); trying another pod`,
          );
          target.reportFailure(dest);
        } else if (
          !(again && e instanceof StreamResetError && e.byPeer && e.reason === "going away")
        ) {
          throw e;
        }
        current = await open();
        return current.stream;
      };
      return new RetryingStream(current.stream, retry);
    });
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

/** Formats any error the way kubectl would print it (no stack traces for expected failures). */
export function formatError(e: unknown): string {
  if (e instanceof KubeApiError) return e.display;
  if (e instanceof KubeConnectionError || e instanceof UsageError) return `error: ${e.message}`;
  return `error: ${(e as Error)?.message ?? String(e)}`;
}
