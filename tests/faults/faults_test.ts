/**
 * Fault tests on the local control plane: agent loss, apiserver restart, a frozen agent, signals,
 * and a slow consumer (rolling updates: rollout_test.ts). Every loop is bounded in count and time.
 * Measured recovery times are printed.
 */
import assert from "node:assert/strict";
import { sharedCluster } from "../cluster/cluster.ts";
import { rssMiB } from "../_lib/rss.ts";
import { agentJobs, kubectl, type RelayProcess, startRelay } from "../_lib/relay.ts";
import { applyRolledOut, webManifest } from "../_lib/workloads.ts";

const NS = "relay-faults";
const opts = { sanitizeOps: false, sanitizeResources: false };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let ready: Promise<string> | undefined;
function setup(): Promise<string> {
  ready ??= (async () => {
    const cluster = await sharedCluster();
    await applyRolledOut(cluster.kubeconfig, NS, webManifest(NS, 2), ["deploy/web"]);
    return cluster.kubeconfig;
  })();
  return ready;
}

async function tryGet(port: number): Promise<string | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(3000) });
    return (await res.text()).trim();
  } catch {
    return undefined;
  }
}

/** Polls until a request through the relay succeeds; returns the time it took (ms). */
async function recoveryTime(port: number, limitMs: number): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < limitMs) {
    if (await tryGet(port)) return performance.now() - t0;
    await sleep(200);
  }
  throw new Error(`no successful request within ${limitMs} ms`);
}

async function agentPid(dir: string, relay: RelayProcess): Promise<number> {
  const pod = (await relay.waitFor(/^Agent .* \(pod (\S+)\) ready/)).match(/\(pod (\S+)\)/)![1];
  return Number((await Deno.readTextFile(`${dir}/agents/default_${pod}.pid`)).trim());
}

Deno.test({
  name: "faults: deleting the agent pod; the relay recreates it and serves again",
  ...opts,
}, async () => {
  const kc = await setup();
  const relay = await startRelay(kc, ["-n", NS, "deploy/web", ":80"]);
  try {
    const port = relay.ports[0];
    assert.ok(await tryGet(port));
    const pods = await kubectl(
      kc,
      "get",
      "pods",
      "-l",
      "app.kubernetes.io/name=kubectl-relay-agent",
      "-o",
      "jsonpath={.items[*].metadata.name}",
    );
    await kubectl(kc, "delete", "pod", pods.trim(), "--wait=false");
    await relay.waitFor(/Lost connection to the agent/, 30_000);
    const ms = await recoveryTime(port, 20_000);
    console.log(`agent pod deleted: served again after ${(ms / 1000).toFixed(1)} s`);
    await relay.waitFor(/Reconnected to the agent/, 5000);
  } finally {
    assert.equal(await relay.stop(), 0);
  }
  assert.deepEqual(await agentJobs(kc), []);
});

Deno.test({
  name: "faults: a frozen agent (SIGSTOP) is detected by heartbeats; recovery after SIGCONT",
  ...opts,
}, async () => {
  const kc = await setup();
  const cluster = await sharedCluster();
  const relay = await startRelay(kc, [
    "-n",
    NS,
    "-v",
    "1",
    "--heartbeat-timeout",
    "3s",
    "deploy/web",
    ":80",
  ]);
  try {
    const port = relay.ports[0];
    assert.ok(await tryGet(port));
    const pid = await agentPid(cluster.dir, relay);
    Deno.kill(pid, "SIGSTOP");
    const t0 = performance.now();
    try {
      await relay.waitFor(/Lost connection to the agent/, 15_000);
      const detected = performance.now() - t0;
      console.log(
        `frozen agent detected after ${(detected / 1000).toFixed(1)} s (heartbeat timeout 3 s)`,
      );
      assert.ok(detected < 10_000);
    } finally {
      Deno.kill(pid, "SIGCONT");
    }
    const ms = await recoveryTime(port, 30_000);
    console.log(`frozen agent: served again ${(ms / 1000).toFixed(1)} s after SIGCONT`);
  } finally {
    assert.equal(await relay.stop(), 0);
  }
});

Deno.test({
  name: "faults: SIGTERM deletes the agent and exits 0; after SIGKILL the agent exits when idle",
  ...opts,
}, async () => {
  const kc = await setup();
  const cluster = await sharedCluster();
  const term = await startRelay(kc, ["-n", NS, "-v", "4", "deploy/web", ":80"]);
  try {
    assert.ok(await recoveryTime(term.ports[0], 10_000) >= 0);
  } finally {
    assert.equal(await term.stop("SIGTERM"), 0);
  }
  assert.deepEqual(await agentJobs(kc), [], term.err.join("\n"));

  // The agent's idle exit, shortened through --patch (container args merged by name).
  const killed = await startRelay(kc, [
    "-n",
    NS,
    "--patch",
    '{"spec":{"containers":[{"name":"agent","args":["--idle-exit","3s"]}]}}',
    "deploy/web",
    ":80",
  ]);
  const pid = await agentPid(cluster.dir, killed);
  assert.equal(await killed.stop("SIGKILL"), 137);
  const t0 = performance.now();
  let alive = true;
  while (alive && performance.now() - t0 < 30_000) {
    await sleep(250);
    try {
      Deno.kill(pid, "SIGCONT"); // signal 0 is not available; SIGCONT is harmless to a running process
    } catch {
      alive = false;
    }
  }
  console.log(
    `orphaned agent exited ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s after its client was killed (idle exit 3 s)`,
  );
  assert.equal(alive, false, "agent process exited by itself");
  for (const job of await agentJobs(kc)) {
    const [ns, name] = job.split("/");
    await kubectl(kc, "-n", ns, "delete", "job", name, "--wait=false");
  }
});

Deno.test({
  name: "faults: a slow consumer does not stall a 64 MiB transfer; RSS stays bounded",
  ...opts,
}, async () => {
  const kc = await setup();
  const cluster = await sharedCluster();
  // A local sink/source on loopback that the agent (a local process here) can reach as ip/127.0.0.1.
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serverPort = (server.addr as Deno.NetAddr).port;
  const TOTAL = 64 * 1024 * 1024;
  const serve = (async () => {
    for await (const conn of server) {
      (async () => {
        // Every connection gets TOTAL bytes of a deterministic pattern.
        const block = new Uint8Array(64 * 1024).map((_, i) => i % 251);
        try {
          for (let sent = 0; sent < TOTAL; sent += block.length) {
            for (let off = 0; off < block.length;) off += await conn.write(block.subarray(off));
          }
        } catch {
          // the slow reader's connection is closed by the test
        }
        conn.close();
      })();
    }
  })();
  const relay = await startRelay(kc, ["ip/127.0.0.1", `:${serverPort}`]);
  try {
    const port = relay.ports[0];
    const slow = await Deno.connect({ hostname: "127.0.0.1", port });
    const one = new Uint8Array(1024);
    await slow.read(one); // reads 1 KiB, then stalls
    const fast = await Deno.connect({ hostname: "127.0.0.1", port });
    const t0 = performance.now();
    let got = 0;
    const buf = new Uint8Array(256 * 1024);
    let ok = true;
    while (got < TOTAL) {
      const n = await fast.read(buf);
      if (n === null) break;
      for (let i = 0; i < n; i += 4099) if (buf[i] !== (got + i) % (64 * 1024) % 251) ok = false;
      got += n;
    }
    const secs = (performance.now() - t0) / 1000;
    fast.close();
    const pid = await agentPid(cluster.dir, relay);
    const clientRss = rssMiB(relay.child.pid) ?? 0;
    const agentRss = rssMiB(pid) ?? 0;
    console.log(
      `slow consumer: 64 MiB on the other stream in ${secs.toFixed(2)} s (${
        (64 / secs).toFixed(0)
      } MiB/s); RSS client ${clientRss.toFixed(0)} MiB, agent ${agentRss.toFixed(0)} MiB`,
    );
    slow.close();
    assert.equal(got, TOTAL);
    assert.ok(ok, "data arrived intact");
    assert.ok(clientRss < 400 && agentRss < 400, "RSS bounded");
  } finally {
    assert.equal(await relay.stop(), 0);
    server.close();
    await serve.catch(() => {});
  }
});

// Last: after an apiserver restart kwok takes a while to resync its PortForward informer, which
// would slow down the agents of the tests that follow.
Deno.test(
  { name: "faults: kube-apiserver restart; recovery after it is back", ...opts },
  async () => {
    const kc = await setup();
    const cluster = await sharedCluster();
    const relay = await startRelay(kc, [
      "-n",
      NS,
      "--heartbeat-timeout",
      "5s",
      "deploy/web",
      ":80",
    ]);
    try {
      const port = relay.ports[0];
      assert.ok(await tryGet(port));
      await cluster.stopApiserver();
      await relay.waitFor(/Lost connection to the agent/, 30_000);
      await sleep(2000);
      await cluster.startApiserver();
      const ms = await recoveryTime(port, 30_000);
      console.log(
        `apiserver restarted: served again ${(ms / 1000).toFixed(1)} s after it was back`,
      );
    } finally {
      assert.equal(await relay.stop(), 0);
    }
    assert.deepEqual(await agentJobs(kc), []);
  },
);
