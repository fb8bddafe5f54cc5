/**
 * Fault test: the agent survives 1,000 concurrent connections × 1 MiB echoed under the manifest's
 * own memory limit (128Mi, enforced by the harness with a memory cgroup as a kubelet does; no
 * `--patch`). Every connection gets back exactly the bytes it sent (each sends its own rotation of
 * a pseudo-random block, so a byte from another stream or out of place is caught), the agent pod
 * is not OOM-killed and is still the one the relay started (no replacement), and the agent's
 * memory peaks (cgroup peak, sampled RSS and anonymous RSS) are printed. Loopback only; bounded in
 * connections and time.
 */
import assert from "node:assert/strict";
import { sharedCluster } from "../cluster/cluster.ts";
import { agentJobs, kubectl, startRelay } from "../_lib/relay.ts";
import { applyRolledOut, deploymentManifest } from "../_lib/workloads.ts";
import { pseudoRandom } from "../_lib/session.ts";
import { PeakRss } from "../_lib/rss.ts";
import { poll } from "../_lib/poll.ts";
import { detectMemoryController, PodCgroup } from "../cluster/runtime/cgroup.ts";

const NS = "relay-memory";
const ECHO_PORT = 7000;
const CONNS = 1000;
const EACH = 1 << 20;
/** The whole load (connect, echo, verify) ends within this, whatever happens. */
const LOAD_TIMEOUT_MS = 180_000;
/** The limit the manifest gives the agent (the test checks its cgroup has it). */
const MANIFEST_LIMIT = 128 * 2 ** 20;
const opts = { sanitizeOps: false, sanitizeResources: false };
const MiB = (n: number | undefined) => n === undefined ? "?" : (n / 2 ** 20).toFixed(1);

const MANIFEST = deploymentManifest(NS, "echo", 1, "relay-test/echo", "echo", ECHO_PORT);

/** EACH pseudo-random bytes; connection k sends it rotated by k × STRIDE. */
const BLOCK = pseudoRandom(EACH, 0x2545f491);
const STRIDE = 4099;

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/**
 * One connection: sends BLOCK rotated by `k` × STRIDE, half-closes, reads until EOF and checks
 * every byte. Resolves with an error description, or undefined when all EACH bytes came back.
 */
async function echoOne(port: number, k: number, signal: AbortSignal): Promise<string | undefined> {
  let conn: Deno.Conn | undefined;
  const onAbort = () => {
    try {
      conn?.close();
    } catch {
      // closed
    }
  };
  signal.addEventListener("abort", onAbort);
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    if (signal.aborted) return "timed out";
    const c = conn;
    const r = (k * STRIDE) % EACH;
    const writer = (async () => {
      await writeAll(c, BLOCK.subarray(r));
      await writeAll(c, BLOCK.subarray(0, r));
      await c.closeWrite();
    })();
    const buf = new Uint8Array(64 * 1024);
    let got = 0;
    let bad = -1;
    while (true) {
      const n = await c.read(buf);
      if (n === null) break;
      if (bad < 0) {
        for (let i = 0; i < n && got + i < EACH; i++) {
          if (buf[i] !== BLOCK[(r + got + i) % EACH]) {
            bad = got + i;
            break;
          }
        }
      }
      got += n;
    }
    await writer;
    if (got !== EACH) return `${got} of ${EACH} bytes came back`;
    if (bad >= 0) return `byte ${bad} differs`;
    return undefined;
  } catch (e) {
    return signal.aborted ? "timed out" : String(e);
  } finally {
    signal.removeEventListener("abort", onAbort);
    onAbort();
  }
}

/** Lines with runs of the same line shown once, with their count. */
function collapse(lines: string[]): string {
  const out: string[] = [];
  for (let i = 0; i < lines.length;) {
    let j = i;
    while (j < lines.length && lines[j] === lines[i]) j++;
    out.push(j - i > 1 ? `${lines[i]} (×${j - i})` : lines[i]);
    i = j;
  }
  return out.join("\n");
}

/** The agent pod's container state (kubectl), e.g. `running` or `terminated OOMKilled 137`. */
async function containerState(kc: string, ns: string, pod: string): Promise<string> {
  const out = await kubectl(kc, "-n", ns, "get", "pod", pod, "-o", "json").catch(() => "");
  if (!out) return "gone";
  const p = JSON.parse(out) as {
    status?: {
      containerStatuses?: {
        restartCount?: number;
        state?: { running?: unknown; terminated?: { reason?: string; exitCode?: number } };
      }[];
    };
  };
  const s = p.status?.containerStatuses?.[0];
  if (s?.state?.terminated) {
    return `terminated ${s.state.terminated.reason ?? ""} ${s.state.terminated.exitCode}`;
  }
  return s?.state?.running ? `running, restarts ${s.restartCount ?? 0}` : "not running";
}

Deno.test({
  name:
    `faults: the agent echoes ${CONNS} concurrent connections × 1 MiB under its manifest limit (128Mi), intact, not OOM-killed`,
  ...opts,
}, async () => {
  const cluster = await sharedCluster();
  const kc = cluster.kubeconfig;
  await applyRolledOut(kc, NS, MANIFEST, ["deploy/echo"]);
  const relay = await startRelay(kc, ["-n", NS, "deploy/echo", `:${ECHO_PORT}`]);
  const readyRe = /^Agent .* \(pod (\S+)\) ready/;
  let rss: PeakRss | undefined;
  let anon: PeakRss | undefined;
  let cgTimer: ReturnType<typeof setInterval> | undefined;
  try {
    const pod = (await relay.waitFor(readyRe)).match(readyRe)![1];
    // The agent's files in the harness's state dir: <ns>_<pod>.pid, .cgroup, and .peak at its end.
    const base = await poll("agent pid file", 30_000, () => {
      for (const e of Deno.readDirSync(`${cluster.dir}/agents`)) {
        if (e.name.endsWith(`_${pod}.pid`)) {
          return Promise.resolve(`${cluster.dir}/agents/${e.name.slice(0, -4)}`);
        }
      }
      return Promise.resolve(null);
    });
    const agentNs = base.slice(base.lastIndexOf("/") + 1, -(pod.length + 1));
    const pid = Number(Deno.readTextFileSync(`${base}.pid`).trim());
    const controller = detectMemoryController();
    assert.ok(controller, "no memory cgroup controller");
    const cg = new PodCgroup(controller, Deno.readTextFileSync(`${base}.cgroup`).trim());
    assert.equal(cg.stats()?.limit, MANIFEST_LIMIT, "the agent runs under the manifest's limit");
    // The container's env reaches the process (the manifest's V8 heap flags among it).
    const environ = Deno.readTextFileSync(`/proc/${pid}/environ`).split("\0");
    console.log(
      `agent ${agentNs}/${pod} pid ${pid}, ${
        environ.filter((e) => e.startsWith("DENO_V8_FLAGS="))
      }`,
    );
    rss = new PeakRss(() => [pid]);
    anon = new PeakRss(() => [pid], "RssAnon");
    let cgUsage = 0;
    cgTimer = setInterval(() => cgUsage = Math.max(cgUsage, cg.stats()?.usage ?? 0), 100);

    const port = relay.ports[0];
    const t0 = performance.now();
    const signal = AbortSignal.timeout(LOAD_TIMEOUT_MS);
    const results = await Promise.all(
      Array.from({ length: CONNS }, (_, k) => echoOne(port, k, signal)),
    );
    const wallS = (performance.now() - t0) / 1000;
    const rssPeak = rss.stop();
    const anonPeak = anon!.stop();
    clearInterval(cgTimer);
    // The kernel's peak of the cgroup; once the agent is gone, the one the harness recorded.
    const cgPeak = cg.stats()?.peak ??
      await poll(
        "agent .peak file",
        15_000,
        async () => Number((await Deno.readTextFile(`${base}.peak`)).trim()) || null,
      ).catch(() => undefined);
    const errors = results.flatMap((e, k) => e === undefined ? [] : [`conn ${k}: ${e}`]);
    const state = await containerState(kc, agentNs, pod);
    console.log(
      `${CONNS} × 1 MiB echoed in ${wallS.toFixed(1)} s, ${errors.length} errors; agent memory: ` +
        `cgroup peak ${MiB(cgPeak)} MiB (highest sampled ${MiB(cgUsage)} MiB, limit ${
          MiB(MANIFEST_LIMIT)
        } MiB), RSS peak ${rssPeak.toFixed(1)} MiB, anonymous ${
          anonPeak.toFixed(1)
        } MiB (sampled every 100 ms); agent pod ${state}`,
    );
    const what = `\n${errors.slice(0, 5).join("\n")}\nrelay:\n${collapse(relay.err)}`;
    const oom = relay.err.find((l) => /OOMKilled/.test(l));
    assert.equal(oom, undefined, `the agent was OOM-killed${what}`);
    assert.match(state, /^running, restarts 0$/, `the agent pod is ${state}${what}`);
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
    assert.ok(cmdline.includes("--listen"), `agent process ${pid} is gone${what}`);
    assert.equal(
      relay.err.filter((l) => readyRe.test(l)).length,
      1,
      `a replacement agent was started${what}`,
    );
    assert.doesNotMatch(relay.err.join("\n"), /Lost connection|Reconnect/, what);
    assert.equal(errors.length, 0, `${errors.length} of ${CONNS} connections failed${what}`);
  } finally {
    rss?.stop();
    anon?.stop();
    clearInterval(cgTimer);
    assert.equal(await relay.stop(), 0, collapse(relay.err));
  }
  assert.deepEqual(await agentJobs(kc), []);
  await kubectl(kc, "delete", "namespace", NS, "--wait=false").catch(() => "");
});
