/**
 * kubectl-relay agent: runs in the cluster, accepts raw-mode and tunnel connections
 * from the client and dials the destinations they name.
 *
 * `deno run -A agent.ts [--listen HOST:PORT] [--idle-exit DURATION] [--udp-idle DURATION]
 * [--connect-timeout DURATION] [--resolve-timeout DURATION] [--ping-timeout DURATION] [-v N]`
 * (`--idle-timeout` is krelay's name for `--idle-exit`).
 *
 * Needs the unstable net API for UDP (`--unstable-net`, or `"unstable": ["net"]` in
 * deno.json). Prints `listening on HOST:PORT` on stdout once ready; logs on stderr.
 *
 * @module
 */

import { AgentUsageError, parseAgentArgs } from "./src/agent/options.ts";
import { stderrLogger } from "./src/agent/log.ts";
import { listeningLine, startAgent } from "./src/agent/server.ts";

if (import.meta.main) {
  let opts;
  try {
    opts = parseAgentArgs(Deno.args);
  } catch (e) {
    if (!(e instanceof AgentUsageError)) throw e;
    console.error(`error: ${e.message}`);
    Deno.exit(2);
  }
  if (typeof Deno.listenDatagram !== "function") {
    console.error("error: UDP needs the unstable net API: run with --unstable-net");
    Deno.exit(2);
  }
  const log = stderrLogger(opts.verbosity);
  // Bad input on one stream must never take the agent down: log stray rejections instead.
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    log.log(
      0,
      "-",
      `unhandled rejection: ${e.reason instanceof Error ? e.reason.stack : e.reason}`,
    );
  });
  const agent = startAgent({ ...opts, log });
  console.log(listeningLine(agent.addr));
  const onSignal = () => agent.close("signal");
  Deno.addSignalListener("SIGTERM", onSignal);
  Deno.addSignalListener("SIGINT", onSignal);
  const reason = await agent.done;
  log.log(0, "-", `exiting: ${reason}`);
  Deno.exit(0);
}
