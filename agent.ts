/**
 * kubectl-relay agent: runs in the cluster, accepts raw-mode and tunnel connections
 * from the client and dials the destinations they name.
 *
 * `deno run -A agent.ts [--listen HOST:PORT] [--health HOST:PORT] [--idle-exit DURATION]
 * [--udp-idle DURATION] [--connect-timeout DURATION] [--resolve-timeout DURATION]
 * [--ping-timeout DURATION] [--max-streams N] [-v N]`
 * (`--idle-timeout` is krelay's name for `--idle-exit`).
 *
 * Needs its token in the environment variable `KUBECTL_RELAY_TOKEN` (64 hex digits, see
 * PROTOCOL.md §0): every connection must present it first. Needs the unstable net API for UDP
 * (`--unstable-net`, or `"unstable": ["net"]` in deno.json). Prints `listening on HOST:PORT` on
 * stdout once ready; logs on stderr. Exits with 2 on bad usage (flags, token), 1 when it cannot
 * start (e.g. its port is taken) or its listener fails, 0 when it stops by request or idleness.
 *
 * @module
 */

import { AgentUsageError, parseAgentArgs } from "./src/agent/options.ts";
import { stderrLogger } from "./src/agent/log.ts";
import { AgentStartError, listeningLine, startAgent } from "./src/agent/server.ts";
import { hostPort } from "./src/protocol/addr.ts";
import { parseToken, TOKEN_ENV } from "./src/protocol/auth.ts";

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
  const tokenText = Deno.env.get(TOKEN_ENV);
  const token = tokenText === undefined ? undefined : parseToken(tokenText);
  if (!token) {
    console.error(
      `error: ${TOKEN_ENV} ${
        tokenText === undefined ? "is not set" : "is not 64 hexadecimal digits"
      }: the agent serves only clients that present its token (kubectl relay sets it in the agent's Job)`,
    );
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
  let agent;
  try {
    agent = startAgent({ ...opts, token, log });
  } catch (e) {
    if (!(e instanceof AgentStartError)) throw e;
    console.error(`error: ${e.message}`);
    Deno.exit(1);
  }
  if (agent.healthAddr) {
    log.log(0, "-", `health port on ${hostPort(agent.healthAddr.hostname, agent.healthAddr.port)}`);
  }
  console.log(listeningLine(agent.addr));
  const onSignal = () => agent.close("signal");
  Deno.addSignalListener("SIGTERM", onSignal);
  Deno.addSignalListener("SIGINT", onSignal);
  const stop = await agent.done;
  log.log(0, "-", `exiting: ${stop.reason}`);
  Deno.exit(stop.failed ? 1 : 0);
}
