import type { Command } from "./command.ts";
import { expandAddresses } from "./command.ts";
import { UsageError } from "./errors.ts";
import { connectAgent, type Io, kubeClient, type Relay } from "../app.ts";
import { parsePatch } from "../kube/agent.ts";
import { proxyListeningMessage, type ProxyServer, startProxy } from "../forward/socks.ts";

/** Starts `kubectl relay proxy`: the agent, then a SOCKS5 / HTTP CONNECT proxy on each address. */
export async function startProxyCommand(cmd: Command, io: Io): Promise<Relay> {
  const flags = cmd.flags;
  const patch = parsePatch(flags.patch, flags.patchFile);
  const port = flags.port ?? 1080;
  if (port > 65535) throw new UsageError(`invalid port ${port}`);
  const addresses = expandAddresses(flags.address);
  const client = await kubeClient(cmd);
  const conn = await connectAgent(client, flags, io, patch);
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
          verbose: flags.verbosity,
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
