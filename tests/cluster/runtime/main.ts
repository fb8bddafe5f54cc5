/**
 * Entry point of the test cluster's pod runtime (started by tests/cluster/cluster.ts):
 *
 *   deno run -A tests/cluster/runtime/main.ts --kubeconfig FILE --state-dir DIR --repo DIR
 *     [--agent PATH] [--dns HOST:PORT]
 *
 * Prints `runtime ready` once the first lists are done and the servers run; exits cleanly
 * (agents and servers stopped) on SIGTERM/SIGINT.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { CLUSTER_DNS_IP, Runtime } from "./runtime.ts";

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
      dns: { type: "string" },
    },
  });
  if (!values.kubeconfig || !values["state-dir"]) {
    console.error(
      "usage: main.ts --kubeconfig FILE --state-dir DIR --repo DIR [--agent PATH] [--dns HOST:PORT]",
    );
    return 2;
  }
  const repo = values.repo ?? new URL("../../../", import.meta.url).pathname;
  const [dnsIP, dnsPort] = values.dns
    ? [values.dns.replace(/:\d+$/, ""), Number(values.dns.match(/:(\d+)$/)?.[1] ?? 53)]
    : [CLUSTER_DNS_IP, 53];
  const stateDir = `${values["state-dir"]}`;
  await Deno.mkdir(`${stateDir}/agents`, { recursive: true });
  const log = (line: string) => console.log(`${ts()} ${line}`);
  const rt = new Runtime({
    kubeconfig: values.kubeconfig,
    stateDir,
    agentPath: values.agent ?? `${repo.replace(/\/$/, "")}/agent.ts`,
    dnsIP,
    dnsPort,
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
  const info = { dns: `${rt.dnsIP}:${dnsPort}`, pid: Deno.pid, cgroup: rt.agentCgroupDir };
  await Deno.writeTextFile(`${stateDir}/runtime.json`, JSON.stringify(info, null, 2) + "\n");
  log(`cluster DNS ${info.dns}; pod processes under ${stateDir}/agents`);
  log("runtime ready");
  await new Promise(() => {}); // until a signal
  return 0;
}

Deno.exit(await main());
