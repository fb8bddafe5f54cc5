/**
 * Reaching the agent: credentials → API client → agent Job → pod port-forward → Token block →
 * tunnel session.
 *
 * @module
 */

import { KubeClient } from "../kube/client.ts";
import { kubeAccess } from "../kube/config.ts";
import type { KubeFlags } from "../kube/flags.ts";
import { AGENT_PORT, type AgentHandle, AgentManager, newAgentToken } from "../kube/agent.ts";
import type { AgentPatch } from "../kube/agent_patch.ts";
import {
  type AgentIdentity,
  canonicalJson,
  findReusableAgent,
  type ReusableAgent,
  templateDigest,
  userDigest,
} from "../kube/agent_reuse.ts";
import { agentCacheKey, cachedAgent, rememberAgent } from "./agent_cache.ts";
import { openPortForward, PortForwardError } from "../kube/portforward.ts";
import { encodeAuth } from "../protocol/auth.ts";
import type { Transport } from "../mux/mod.ts";
import { UsageError } from "../errors.ts";
import { DEFAULT_AGENT_IMAGE } from "../version.ts";
import { type ClientOptions, type Io, type Log, logger } from "./options.ts";
import { Tunnel } from "./tunnel.ts";

/**
 * A transport whose first write is preceded by `block`, in the same write: where the apiserver
 * connection keeps Nagle's algorithm on (see src/kube/nodelay.ts), a separate small write would
 * wait for the apiserver's acknowledgement of the previous one.
 */
function tokenFirst(inner: Transport, block: Uint8Array): Transport {
  let first: Uint8Array | undefined = block;
  return {
    coalesceWrites: inner.coalesceWrites,
    read: () => inner.read(),
    write(chunk: Uint8Array): Promise<void> {
      if (!first) return inner.write(chunk);
      const joined = new Uint8Array(first.length + chunk.length);
      joined.set(first);
      joined.set(chunk, first.length);
      first = undefined;
      return inner.write(joined);
    },
    close: () => inner.close(),
  };
}

/** What `--reuse-agent` found before the agent is connected. */
interface Lookup {
  identity?: AgentIdentity;
  reusable?: ReusableAgent;
  /** agent_cache.ts key of this run's template. */
  key?: string;
  /** A port-forward opened early to the agent used last (taken by the first connect, or closed). */
  early?: { pod: string; transport: Promise<Transport>; taken?: boolean };
}

/** An agent and the tunnel to it, reconnecting (and recreating the agent) when lost. */
export interface AgentConnection {
  agents: AgentManager;
  tunnel: Tunnel;
  agent(): AgentHandle;
}

/** Resolves the user's credentials and builds an API client (user errors become UsageError). */
export async function kubeClient(kube: KubeFlags, log?: Log): Promise<KubeClient> {
  return new KubeClient(await kubeAccess(kube, (line) => log?.(4, line)));
}

/** An agent being created while the run does other work (resolving its targets). */
export interface AgentLaunch {
  /**
   * Waits for the agent and connects the tunnel through the pod port-forward; the user sees
   * progress from here on. Errors are the access check's first, then the Job's.
   */
  connect(): Promise<AgentConnection>;
  /** The run ends before `connect`: deletes whatever was created. */
  cancel(): Promise<void>;
}

/**
 * Starts creating the agent at once: the access check (SelfSubjectAccessReviews) and the Job's
 * creation run side by side, so the pod is scheduled while the caller resolves its targets.
 * A failed check deletes the Job again. With `--reuse-agent`, a live shared agent of the same
 * user and template is looked for first (agent_reuse.ts) and used instead of a new Job; a Job
 * this run creates is then shared too, and no run deletes a shared agent once it ran (it exits
 * when idle). `mayCreate`, when given, is awaited before a Job is created: false creates none
 * (the caller goes direct and cancels), so a user without the right sends no refused create.
 */
export function launchAgent(
  client: KubeClient,
  opts: ClientOptions,
  io: Io,
  patch: AgentPatch | undefined,
  mayCreate?: Promise<boolean>,
): AgentLaunch {
  const log = logger(opts.verbosity, io);
  const note = (line: string) => io.err(line);
  const ns = opts.agentNamespace;
  // What the agent's pod template is made of (the early port-forward's cache key).
  const template = {
    image: opts.agentImage ?? DEFAULT_AGENT_IMAGE,
    patch,
  };
  const agents = new AgentManager(client, {
    namespace: ns,
    ...template,
    readyTimeoutMs: Math.max(opts.podRunningTimeoutMs, 60_000),
    log: note,
    debug: (line) => log(1, `startup: ${line}`),
  });
  const reuseLog = (line: string) => log(4, `reuse: ${line}`);
  const lookup: Promise<Lookup> = opts.reuseAgent
    ? (async () => {
      const key = agentCacheKey(client.access.server, ns, canonicalJson(template));
      // The port-forward to the agent used last opens while the lookup checks that it may be
      // used; nothing is sent on it before (the token comes from the checked Job).
      const hint = cachedAgent(key);
      let early: Lookup["early"];
      if (hint) {
        reuseLog(`opening a port-forward to ${hint.pod} (used last) meanwhile`);
        const transport = openPortForward(client, ns, hint.pod, AGENT_PORT, 30_000);
        transport.catch(() => {});
        early = { pod: hint.pod, transport };
      }
      const body = agents.jobBody(newAgentToken());
      const user = userDigest(client);
      const reusable = await findReusableAgent(client, ns, body, user, reuseLog);
      const u = await user;
      if (!u) reuseLog("the apiserver did not say who you are: not sharing");
      const identity = u ? { spec: await templateDigest(await body), user: u } : undefined;
      return { identity, reusable, key, early };
    })()
    : Promise.resolve({});
  /** Closes the early port-forward unless `connect` took it (without waiting for it to open). */
  const dropEarly = async () => {
    const early = (await lookup).early;
    if (!early || early.taken) return;
    early.taken = true;
    early.transport.then((t) => t.close(), () => {});
  };
  // Reusing needs no Job: then the access check runs only if the port-forward is refused.
  const checked = lookup.then(({ reusable }) =>
    reusable ? undefined : agents.preflight().then(() => log(1, "startup: access checked"))
  );
  const created = lookup.then(async ({ identity, reusable }) => {
    if (reusable || (mayCreate && !(await mayCreate))) return undefined;
    return agents.create(identity);
  });
  const settled = Promise.allSettled([checked, created]);
  const reused = (r: ReusableAgent): AgentHandle => {
    note(`Reusing agent ${r.job} (pod ${r.pod}) in namespace ${ns}`);
    log(1, `startup: agent Job ${r.job} reused`);
    return { job: r.job, namespace: ns, pod: r.pod, token: r.token, startedAt: performance.now() };
  };
  return {
    async cancel() {
      await settled;
      await dropEarly();
      // A shared agent may already serve another run: it is left to exit when idle.
      if ((await lookup).identity) {
        const job = await created.catch(() => undefined);
        if (job) agents.release(job.job);
      }
      await agents.deleteAll().catch(() => {});
    },
    async connect() {
      const [check, job] = await settled;
      if (check.status === "rejected") {
        await agents.deleteAll().catch(() => {});
        throw check.reason;
      }
      const { identity, reusable, key, early } = await lookup;
      let agent: AgentHandle;
      if (reusable) agent = reused(reusable);
      else {
        note(`Starting agent in namespace ${ns}…`);
        if (job.status === "rejected") throw job.reason;
        agent = await agents.waitRunning(job.value!);
      }
      log(1, `startup: agent pod ${agent.pod} ready`); // running: ready for a port-forward
      const ready = (a: AgentHandle) => {
        const secs = ((performance.now() - a.startedAt) / 1000).toFixed(1);
        note(`Agent ${a.job} (pod ${a.pod}) ready in ${secs}s`);
      };
      /** A new agent after a loss: a shared one of the user if there is one, else a new Job. */
      const replace = async (): Promise<AgentHandle> => {
        if (identity) {
          const r = await findReusableAgent(
            client,
            ns,
            agents.jobBody(newAgentToken()),
            Promise.resolve(identity.user),
            reuseLog,
          );
          if (r) return reused(r);
        }
        const a = await agents.start(identity);
        ready(a);
        return a;
      };
      // While the tunnel starts, the agent may not listen yet: a failed attempt asks whether the
      // pod has ended (then that is the error, with the reason) and otherwise tries again. Later,
      // a lost tunnel whose pod is gone gets a new agent.
      let tunnelUp = false;
      let attempts = 0;
      const connect = async (): Promise<Transport> => {
        attempts++;
        if (attempts === 1 && early && !early.taken && early.pod === agent.pod) {
          early.taken = true;
          const transport = await early.transport.catch(() => undefined);
          if (transport) return tokenFirst(transport, encodeAuth(agent.token));
        }
        // The pod was just seen running: the first attempt does not ask again.
        const gone = attempts > 1 ? await agents.gone(agent) : undefined;
        if (gone) {
          if (!tunnelUp) throw new UsageError(gone);
          note(`${gone[0].toUpperCase()}${gone.slice(1)}; starting a new agent`);
          await agents.delete(agent.job).catch(() => {});
          agent = await replace();
          if (identity) agents.release(agent.job);
        }
        let transport: Transport;
        try {
          transport = await portForward();
        } catch (e) {
          // The agent may have died under the port-forward: that is the better explanation.
          const why = tunnelUp ? undefined : await agents.gone(agent).catch(() => undefined);
          if (why) throw new UsageError(why);
          throw e;
        }
        // Every connection presents the agent's token first (PROTOCOL.md §0); the Session's
        // PREFACE follows it on the same pipe, in the same write.
        return tokenFirst(transport, encodeAuth(agent.token));
      };
      const portForward = async (): Promise<Transport> => {
        // The port-forward itself may fail to open for a moment: retry briefly, but not when the
        // apiserver has said no (forbidden, not found).
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
      const tunnel = () =>
        new Tunnel({
          connect,
          heartbeatTimeoutMs: opts.heartbeatTimeoutMs,
          waitForSessionMs: 60_000,
          startTimeoutMs: Math.max(opts.podRunningTimeoutMs, 60_000),
          // The agent does not listen yet (the kubelet's "connection refused" arrives right
          // after the port-forward opens); not when the apiserver said no or the pod ended.
          retryable: (e) =>
            e instanceof PortForwardError && !/^Error from server \(/.test((e as Error).message),
          note,
          log: (l) => log(4, l),
        });
      let up: Tunnel;
      try {
        try {
          up = tunnel();
          await up.start();
        } catch (e) {
          if (!reusable) throw e;
          // Refused: the access check words it as for a new agent.
          await agents.preflight();
          // The shared agent went away under us (it may have just exited when idle): a new one.
          note(`Agent ${agent.job} did not answer (${(e as Error).message}); starting a new agent`);
          attempts = 0;
          agent = await agents.start(identity);
          up = tunnel();
          await up.start();
        }
        tunnelUp = true;
      } catch (e) {
        await dropEarly();
        await agents.deleteAll().catch(() => {});
        throw e;
      }
      await dropEarly();
      if (agent.job !== reusable?.job) ready(agent);
      if (identity && key) rememberAgent(key, { job: agent.job, pod: agent.pod });
      // A shared agent stays when this run ends: other runs may use it; it exits when idle.
      if (identity) agents.release(agent.job);
      log(1, "startup: tunnel up");
      return { agents, tunnel: up, agent: () => agent };
    },
  };
}

/** Creates the agent Job, waits for it, and connects the tunnel through the pod port-forward. */
export function connectAgent(
  client: KubeClient,
  opts: ClientOptions,
  io: Io,
  patch: AgentPatch | undefined,
): Promise<AgentConnection> {
  return launchAgent(client, opts, io, patch).connect();
}
