/**
 * Entry point of the test cluster's pod runtime (started by tests/cluster/cluster.ts):
 *
 *   deno run -A tests/cluster/runtime/main.ts --kubeconfig FILE --state-dir DIR --repo DIR
 *     [--agent PATH] [--cluster-dns IP] [--propagation-delay-ms N] [--max-grace-seconds N]
 *
 * Prints `runtime ready` once the first lists are done and the servers run; exits cleanly
 * (agents and servers stopped) on SIGTERM/SIGINT.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Runtime } from "./runtime.ts";

function ts(): string {
  return new Date().toISOString().slice(11, 23);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      kubeconfig: { type: "string" },
      "state-dir": { type: "string" },
      repo: { type: "string" },
      agent: { type: "string" },
      "cluster-dns": { type: "string" },
      "propagation-delay-ms": { type: "string" },
      "max-grace-seconds": { type: "string" },
    },
  });
  if (!values.kubeconfig || !values["state-dir"]) {
    console.error(
      "usage: main.ts --kubeconfig FILE --state-dir DIR --repo DIR [--agent PATH] [--cluster-dns IP] [--propagation-delay-ms N] [--max-grace-seconds N]",
    );
    return 2;
  }
  const repo = values.repo ?? new URL("../../../", import.meta.url).pathname;
  const stateDir = `${values["state-dir"]}`;
  await Deno.mkdir(`${stateDir}/agents`, { recursive: true });
  const log = (line: string) => console.log(`${ts()} ${line}`);
  const rt = new Runtime({
    kubeconfig: values.kubeconfig,
    stateDir,
    agentPath: values.agent ?? `${repo.replace(/\/$/, "")}/agent.ts`,
    clusterDNS: values["cluster-dns"],
    maxGraceSeconds: values["max-grace-seconds"] === undefined
      ? undefined
      : Number(values["max-grace-seconds"]),
    propagationDelayMs: values["propagation-delay-ms"] === undefined
      ? undefined
      : Number(values["propagation-delay-ms"]),
    log,
  });
  let stopping: Promise<void> | undefined;
  const stop = (sig: string) => {
    stopping ??= (async () => {
      log(`${sig}: stopping`);
      await rt.stop().catch((e) => log(`stop: ${e}`));
      log("runtime stopped");
      Deno.exit(0);
    })();
  };
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  try {
    await rt.start();
  } catch (e) {
    log(`runtime failed to start: ${e instanceof Error ? e.message : e}`);
    await rt.stop().catch(() => {});
    return 1;
  }
  const info = { clusterDNS: rt.clusterDNS ?? null, pid: Deno.pid, cgroup: rt.agentCgroupDir };
  await Deno.writeTextFile(`${stateDir}/runtime.json`, JSON.stringify(info, null, 2) + "\n");
  log(`cluster DNS ${info.clusterDNS}; pod processes under ${stateDir}/agents`);
  log("runtime ready");
  await new Promise(() => {}); // until a signal
  return 0;
}

Deno.exit(await main());
