/**
 * One `kubectl relay proxy` run: start the agent, then a SOCKS5 / HTTP CONNECT proxy on each
 * listen address, its connections dialled through the tunnel.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { parsePatch, preloadAgentTemplate } from "../kube/agent.ts";
import { proxyListeningMessage, type ProxyServer, startProxy } from "../proxy/server.ts";
import { expandAddresses } from "../spec/request.ts";
import { connectAgent, kubeClient } from "./connect.ts";
import { type ClientOptions, type Io, logger } from "./options.ts";
import type { Relay } from "./relay.ts";

/** Where the proxy listens: `--address` values (default 127.0.0.1) and `--port` (default 1080). */
export interface ProxyListen {
  address?: string[];
  port?: number;
}

/** Starts the agent, then a SOCKS5 / HTTP CONNECT proxy on each address. */
export async function startProxyRelay(
  opts: ClientOptions,
  listen: ProxyListen,
  io: Io,
): Promise<Relay> {
  const log = logger(opts.verbosity, io);
  log(1, "startup: started");
  preloadAgentTemplate();
  const patch = parsePatch(opts.patch, opts.patchFile);
  const port = listen.port ?? 1080;
  if (port > 65535) throw new UsageError(`invalid port ${port}`);
  const addresses = expandAddresses(listen.address);
  const client = await kubeClient(opts.kube, log);
  log(1, "startup: credentials loaded");
  const conn = await connectAgent(client, opts, io, patch);
  const servers: ProxyServer[] = [];
  try {
    for (const hostname of addresses) {
      servers.push(
        await startProxy({
          hostname,
          port,
          openStream: (header) => conn.tunnel.openStream(header),
          log: (line) => io.out(line),
          logError: io.err,
          verbose: opts.verbosity,
        }),
      );
    }
  } catch (e) {
    await Promise.all(servers.map((s) => s.close()));
    conn.tunnel.close();
    await conn.agents.deleteAll();
    if (e instanceof Deno.errors.AddrInUse) {
      throw new UsageError(`unable to listen on port ${port}: address already in use`);
    }
    throw e;
  }
  for (const s of servers) io.out(proxyListeningMessage(s.addr));
  let stopping: Promise<void> | undefined;
  return {
    listeners: [],
    get agent() {
      return conn.agent();
    },
    shutdown() {
      stopping ??= (async () => {
        await Promise.all(servers.map((s) => s.close()));
        conn.tunnel.close();
        await conn.agents.deleteAll();
      })();
      return stopping;
    },
  };
}
