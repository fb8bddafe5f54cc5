/**
 * One `kubectl relay proxy` run: bind the proxy's sockets, start the agent, then serve SOCKS5 /
 * HTTP CONNECT on each listen address, its connections dialled through the tunnel.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { preloadAgentTemplate } from "../kube/agent.ts";
import { bindProxy, type BoundProxy, proxyListeningMessage } from "../proxy/server.ts";
import { expandAddresses } from "../spec/request.ts";
import { connectAgent, kubeClient } from "./connect.ts";
import { type ClientOptions, type Io, logger } from "./options.ts";
import { type Run, runOf } from "./run.ts";

/** Where the proxy listens: `--address` values (default 127.0.0.1) and `--port` (default 1080). */
export interface ProxyListen {
  address?: string[];
  port?: number;
}

/** Binds the proxy on each address (before anything is created in the cluster), then serves. */
export async function startProxyRelay(
  opts: ClientOptions,
  listen: ProxyListen,
  io: Io,
): Promise<Run> {
  const log = logger(opts.verbosity, io);
  log(1, "startup: started");
  preloadAgentTemplate();
  const patch = opts.agentPatch;
  const port = listen.port ?? 1080;
  if (port > 65535) throw new UsageError(`invalid port ${port}`);
  const bound: BoundProxy[] = [];
  const release = () => bound.forEach((b) => b.close());
  try {
    for (const hostname of expandAddresses(listen.address)) {
      bound.push(bindProxy(hostname, port));
    }
  } catch (e) {
    release();
    if (e instanceof Deno.errors.AddrInUse) {
      throw new UsageError(`unable to listen on port ${port}: address already in use`);
    }
    throw e;
  }
  let conn;
  try {
    const client = await kubeClient(opts.kube, log);
    log(1, "startup: credentials loaded");
    conn = await connectAgent(client, opts, io, patch);
  } catch (e) {
    release();
    throw e;
  }
  const tunnel = conn.tunnel;
  const servers = bound.map((b) =>
    b.serve({
      openStream: (header) => tunnel.openStream(header),
      log: io.out,
      logError: io.err,
      verbose: opts.verbosity,
    })
  );
  for (const s of servers) io.out(proxyListeningMessage(s.addr));
  return runOf(conn, servers);
}
