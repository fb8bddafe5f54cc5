/**
 * Fault test: an agent whose memory limit is lowered with `--patch` is OOM-killed under load (the
 * harness enforces the limit with a memory cgroup, as a kubelet does). The agent sizes its stream
 * cap to its limit, so under 32Mi it would refuse most of this load instead; the patch lifts the
 * cap (`--max-streams`), as an admin overriding it would. The user sees one clear
 * line naming the limit, and the relay recovers by starting a new agent. Load is bounded in
 * connections, rounds and time.
 */
import assert from "node:assert/strict";
import { sharedCluster } from "../cluster/cluster.ts";
import { agentJobs, startRelay } from "../_lib/relay.ts";
import { applyRolledOut, webManifest } from "../_lib/workloads.ts";
import { agentContainerPatch } from "../_lib/agent_patch.ts";

const NS = "relay-oom";
const LIMIT = "32Mi";
const opts = { sanitizeOps: false, sanitizeResources: false };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup(): Promise<string> {
  const cluster = await sharedCluster();
  await applyRolledOut(cluster.kubeconfig, NS, webManifest(NS, 1), ["deploy/web"]);
  return cluster.kubeconfig;
}

/**
 * `--patch` (a pod spec) with the manifest's agent container under a memory limit of `limit`,
 * and the stream cap lifted.
 */
function limitPatch(limit: string): Promise<string> {
  return agentContainerPatch({
    resources: { limits: { memory: limit }, requests: { memory: limit, cpu: "10m" } },
  }, ["--max-streams", "4096"]);
}

/** GET /bytes/<n> through the relay; resolves with the byte count, or -1 on any failure. */
async function download(port: number, n: number): Promise<number> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/bytes/${n}`, {
      signal: AbortSignal.timeout(20_000),
    });
    return (await res.arrayBuffer()).byteLength;
  } catch {
    return -1;
  }
}

Deno.test({
  name:
    `faults: an agent OOM-killed under load (--patch, ${LIMIT}) is one clear line; a new agent serves`,
  ...opts,
}, async () => {
  const kc = await setup();
  const relay = await startRelay(kc, [
    "-n",
    NS,
    "--patch",
    await limitPatch(LIMIT),
    "deploy/web",
    ":80",
  ]);
  const oomLine = new RegExp(
    `^Agent pod (\\S+) was OOMKilled \\(exit code 137\\): it used more than its memory limit of ${LIMIT}; starting a new agent$`,
  );
  try {
    const port = relay.ports[0];
    await relay.waitFor(/^Agent .* \(pod (\S+)\) ready/);
    const readyPods = () =>
      relay.err.flatMap((l) => l.match(/^Agent .* \(pod (\S+)\) ready/)?.[1] ?? []);
    assert.equal(await download(port, 1000), 1000);
    // Rounds of 400 concurrent 1 MiB downloads (at most 5 rounds, 2 minutes) until the kernel
    // kills the agent.
    const t0 = Date.now();
    let killed = false;
    relay.waitFor(oomLine, 150_000).then(() => killed = true, () => {});
    for (let round = 0; round < 5 && !killed && Date.now() - t0 < 120_000; round++) {
      const got = await Promise.all(
        Array.from({ length: 400 }, () => download(port, 1 << 20)),
      );
      const failed = got.filter((n) => n !== 1 << 20).length;
      console.log(`round ${round + 1}: ${400 - failed} of 400 downloads complete`);
      await sleep(500);
    }
    const line = await relay.waitFor(oomLine, 60_000);
    // The killed agent is the first one, or (when the load outlives it) a replacement: either
    // way, one the user saw start.
    const killedPod = line.match(oomLine)![1];
    assert.ok(
      readyPods().includes(killedPod),
      `the OOM line names an agent pod that ran:\n${relay.err.join("\n")}`,
    );
    console.log(`${line} (after ${((Date.now() - t0) / 1000).toFixed(1)} s of load)`);
    // (The line comes from the pod status: terminated, reason OOMKilled, exit code 137; the
    // client then deletes that Job, so the pod is gone by now.)
    // Recovery: a new agent, and requests are served again.
    await relay.waitFor(/^Reconnected to the agent/, 90_000);
    const pods = readyPods();
    assert.ok(pods.length >= 2 && pods.at(-1) !== killedPod, pods.join(" "));
    const t1 = Date.now();
    let ok = false;
    while (!ok && Date.now() - t1 < 30_000) {
      ok = (await download(port, 1000)) === 1000;
      if (!ok) await sleep(200);
    }
    assert.ok(ok, "served again after the new agent started");
    console.log(`what the user saw:\n  ${relay.err.join("\n  ")}`);
    // One line per kill: the user is told once, clearly (no stack trace, no repeated notes).
    assert.equal(relay.err.filter((l) => l.includes(`${killedPod} was OOMKilled`)).length, 1);
    assert.doesNotMatch(relay.err.join("\n"), /^\s+at /m);
  } finally {
    assert.equal(await relay.stop(), 0, relay.err.join("\n"));
  }
  assert.deepEqual(await agentJobs(kc), []);
});
