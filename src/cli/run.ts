import { type Command, parseCommand } from "./command.ts";
import { consoleIo, formatError } from "./format.ts";
import { helpText, HINT } from "./help.ts";
import type { ClientOptions, Io } from "../client/options.ts";
import { startRelay } from "../client/relay.ts";
import { UsageError } from "../errors.ts";
import { agentNamespaceOf, LEGACY_PATCH_WARNING, readAgentPatch } from "../kube/agent_patch.ts";
import { kubeFlagsOf } from "../kube/flags.ts";
import { InsecureTlsRequired, rerunInsecure } from "../kube/insecure.ts";
import { DEFAULT_AGENT_IMAGE, VERSION } from "../version.ts";

/**
 * The settings of a relay or proxy run, from the parsed flags: reads and checks the patch
 * (a contradiction with `--server.namespace` is a UsageError, before anything is created).
 */
function clientOptions(cmd: Command, io: Io): ClientOptions {
  const f = cmd.flags;
  const agentPatch = readAgentPatch(f.patch, f.patchFile);
  if (agentPatch?.legacy) io.err(LEGACY_PATCH_WARNING);
  return {
    kube: kubeFlagsOf(f),
    verbosity: f.verbosity,
    agentNamespace: agentNamespaceOf(f.serverNamespace, agentPatch),
    agentImage: f.serverImage,
    agentPatch,
    direct: f.direct,
    podRunningTimeoutMs: f.podRunningTimeoutMs,
    heartbeatTimeoutMs: f.heartbeatTimeoutMs,
    reuseAgent: f.reuseAgent,
  };
}

/** Waits for SIGINT or SIGTERM (the first one). */
function nextSignal(): Promise<Deno.Signal> {
  return new Promise((resolve) => {
    const sigs: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
    const handlers = sigs.map((s) => {
      const h = () => {
        handlers.forEach(([sig, fn]) => Deno.removeSignalListener(sig, fn));
        resolve(s);
      };
      Deno.addSignalListener(s, h);
      return [s, h] as const;
    });
  });
}

/** Runs `kubectl relay` with arguments; returns the process exit code. */
export async function run(argv: string[], io: Io = consoleIo): Promise<number> {
  let cmd;
  try {
    cmd = parseCommand(argv);
  } catch (e) {
    io.err(formatError(e));
    if (e instanceof UsageError && e.showHint) io.err(HINT);
    return 1;
  }
  cmd.warnings.forEach((w) => io.err(w));
  if (cmd.kind === "help") {
    io.out(helpText());
    return 0;
  }
  if (cmd.kind === "version") {
    io.out(
      JSON.stringify({
        clientVersion: VERSION,
        agentImage: cmd.flags.serverImage ?? DEFAULT_AGENT_IMAGE,
      }),
    );
    return 0;
  }
  let opts: ClientOptions;
  try {
    opts = clientOptions(cmd, io);
  } catch (e) {
    io.err(formatError(e));
    return 1;
  }
  const signal = nextSignal();
  try {
    const start = cmd.kind === "proxy"
      ? (await import("../client/proxy.ts")).startProxyRelay(opts, cmd.flags, io)
      : startRelay(opts, cmd.requests, io);
    const raced = await Promise.race([
      start.then((r) => ({ relay: r })),
      signal.then((s) => ({ signal: s })),
    ]);
    if ("signal" in raced) {
      // Interrupted while starting: let startup finish its own cleanup, then exit.
      const relay = await start.catch(() => undefined);
      await relay?.shutdown(0);
      return 0;
    }
    // The relay runs (reconnecting as needed) until Ctrl-C or SIGTERM.
    await signal;
    await raced.relay.shutdown();
    return 0;
  } catch (e) {
    if (e instanceof InsecureTlsRequired) {
      const code = await rerunInsecure(e.host, argv);
      if (code !== undefined) return code;
      io.err(
        "error: --insecure-skip-tls-verify is not supported by this binary; give the cluster's CA (--certificate-authority) or run from source",
      );
      return 1;
    }
    io.err(formatError(e));
    return 1;
  }
}
