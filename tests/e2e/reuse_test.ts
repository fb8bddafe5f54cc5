/**
 * End-to-end: `--reuse-agent`. A second run uses the first one's agent (no second Job), the
 * first run's exit does not take the agent from the second, a run without the option keeps to
 * its own agent, and a shared agent nobody uses exits by itself.
 */
import assert from "node:assert/strict";
import { NS, podNames, setup } from "./fixtures.ts";
import { agentJobs, curl, kubectl, kubectlCreate, startRelay } from "../_lib/relay.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
/** The agents' namespace in this test (nothing else runs agents there). */
const AGENTS = "relay-reuse";

async function jobsHere(kc: string): Promise<string[]> {
  return (await agentJobs(kc)).filter((j) => j.startsWith(`${AGENTS}/`));
}

async function agentPodPhase(kc: string, job: string): Promise<string> {
  return await kubectl(
    kc,
    "-n",
    AGENTS,
    "get",
    "pods",
    "-l",
    `job-name=${job}`,
    "-o",
    "jsonpath={.items[*].status.phase}",
  );
}

Deno.test({
  name: "e2e: --reuse-agent: a second run reuses the agent; the first run's exit leaves it",
  ...opts,
}, async () => {
  const kc = await setup();
  const [pod] = await podNames(kc, "app=web");
  await kubectlCreate(kc, "create", "namespace", AGENTS);
  // The shared agent exits 3 s after its last tunnel (instead of 5 minutes).
  const idle = JSON.stringify({
    spec: { containers: [{ name: "agent", args: ["--idle-exit", "3s"] }] },
  });
  const args = [
    "--reuse-agent",
    "--patch",
    idle,
    "--server.namespace",
    AGENTS,
    "-n",
    NS,
    `pod/${pod}`,
    ":80",
  ];
  try {
    const first = await startRelay(kc, args);
    let job: string;
    try {
      assert.match(first.err.join("\n"), new RegExp(`Starting agent in namespace ${AGENTS}`));
      job = /^Agent (\S+) \(pod /m.exec(first.err.join("\n"))?.[1] ?? "";
      assert.ok(job, first.err.join("\n"));
      assert.deepEqual(await jobsHere(kc), [`${AGENTS}/${job}`]);
      assert.equal((await curl(`http://127.0.0.1:${first.ports[0]}/`)).trim(), pod);

      const second = await startRelay(kc, args);
      try {
        const said = second.err.join("\n");
        assert.doesNotMatch(said, /Starting agent/, said);
        assert.match(
          said,
          new RegExp(`^Reusing agent ${job} \\(pod \\S+\\) in namespace ${AGENTS}$`, "m"),
        );
        assert.deepEqual(await jobsHere(kc), [`${AGENTS}/${job}`], "no second Job");
        assert.equal((await curl(`http://127.0.0.1:${second.ports[0]}/`)).trim(), pod);

        // A connection through the second run, opened before the first run exits.
        const open = await Deno.connect({ hostname: "127.0.0.1", port: second.ports[0] });
        try {
          assert.equal(await first.stop("SIGINT"), 0, first.err.join("\n"));
          assert.deepEqual(await jobsHere(kc), [`${AGENTS}/${job}`], "the first exit left it");
          await open.write(new TextEncoder().encode("GET / HTTP/1.0\r\nHost: web\r\n\r\n"));
          const got: Uint8Array[] = [];
          const buf = new Uint8Array(4096);
          const deadline = setTimeout(() => open.close(), 10_000);
          for (let n; (n = await open.read(buf).catch(() => null)) !== null;) {
            got.push(buf.slice(0, n));
          }
          clearTimeout(deadline);
          const text = new TextDecoder().decode(new Uint8Array(got.flatMap((c) => [...c])));
          assert.match(text, new RegExp(`\\r\\n\\r\\n${pod}\\s*$`), text);
        } finally {
          try {
            open.close();
          } catch {
            // closed by the server
          }
        }
        // New connections too.
        assert.equal((await curl(`http://127.0.0.1:${second.ports[0]}/`)).trim(), pod);

        // A run without the option does not touch the shared agent: it has its own, and
        // deletes it when it ends.
        const own = await startRelay(kc, args.filter((a) => a !== "--reuse-agent"));
        try {
          assert.match(own.err.join("\n"), /Starting agent/);
          assert.equal((await jobsHere(kc)).length, 2);
          assert.equal((await curl(`http://127.0.0.1:${own.ports[0]}/`)).trim(), pod);
        } finally {
          assert.equal(await own.stop(), 0);
        }
        assert.deepEqual(await jobsHere(kc), [`${AGENTS}/${job}`]);
        assert.equal((await curl(`http://127.0.0.1:${second.ports[0]}/`)).trim(), pod);
      } finally {
        assert.equal(await second.stop("SIGINT"), 0, second.err.join("\n"));
      }
    } catch (e) {
      await first.stop().catch(() => {});
      throw e;
    }
    // Nobody uses it any more: the agent exits by itself (after 3 s idle here).
    const deadline = Date.now() + 30_000;
    let phase = await agentPodPhase(kc, job);
    while (phase !== "Succeeded" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      phase = await agentPodPhase(kc, job);
    }
    assert.equal(phase, "Succeeded", "the idle shared agent exited");
  } finally {
    // Its Job would go after ttlSecondsAfterFinished; other tests expect no agent Jobs at all.
    await kubectl(
      kc,
      "-n",
      AGENTS,
      "delete",
      "jobs",
      "-l",
      "app.kubernetes.io/name=kubectl-relay-agent",
      "--wait=true",
    ).catch(() => "");
  }
});
