/**
 * The agent's token and its failure reports on the local control plane: an agent Job built as the
 * client builds it, reached through the apiserver's pod port-forward (the path every client takes),
 * refuses connections with no token, a wrong or a truncated one, and keeps serving the good
 * client; the pod log API shows one line per refusal. `kubectl relay` reports an agent that fails
 * to start with the agent's last log line, and an agent OOM-killed at start with its memory limit.
 */
import assert from "node:assert/strict";
import { sharedCluster } from "../cluster/cluster.ts";
import { NS, setup } from "./fixtures.ts";
import { agentJobs, kubectl, runRelay } from "../_lib/relay.ts";
import { concat } from "../_lib/net.ts";
import { poll } from "../_lib/poll.ts";
import { agentContainerPatch } from "../_lib/agent_patch.ts";
import { agentJob } from "../../src/kube/agent.ts";
import { KubeClient } from "../../src/kube/client.ts";
import { accessFrom } from "../../src/kube/config.ts";
import { loadCredentials } from "../../src/kube/credentials.ts";
import { openPortForward } from "../../src/kube/portforward.ts";
import { encodeAuth } from "../../src/protocol/auth.ts";
import { encodeHeader } from "../../src/protocol/header.ts";
import { encodeFrame, PREFACE } from "../../src/protocol/mux.ts";
import { Session, type Transport } from "../../src/mux/mod.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ascii = (s: string) => new TextEncoder().encode(s);
const cat = (...parts: Uint8Array[]) => concat(parts);

/** `web.relay-e2e:8080` (the fixtures' Service): answers HTTP with the serving pod's name. */
const webHeader = () =>
  encodeHeader({
    requestId: crypto.randomUUID(),
    protocol: "tcp",
    port: 8080,
    address: { type: "hostname", name: `web.${NS}` },
  });

/**
 * Sends `bytes` on a port-forward, then one byte every 100 ms until the port-forward ends (at most
 * 10 s), and returns what arrived. The extra bytes make kwok notice a connection the pod side has
 * closed: it ends a forward only when both directions have (a containerd kubelet ends it within
 * a second of either); they come after the bytes the agent judges, so they change nothing there.
 */
async function answerUntilClosed(t: Transport, bytes: Uint8Array): Promise<Uint8Array> {
  await t.write(bytes);
  const got: Uint8Array[] = [];
  let ended = false;
  const reading = (async () => {
    try {
      for (let c = await t.read(); c !== null; c = await t.read()) got.push(c);
    } catch {
      // the kubelet reported the closed connection on the error channel
    }
    ended = true;
  })();
  for (let i = 0; i < 100 && !ended; i++) {
    await sleep(100);
    if (!ended) await t.write(new Uint8Array(1)).catch(() => {});
  }
  t.close();
  await reading;
  return cat(...got);
}

/** Reads from `t` until `done(bytes so far)` (at most 30 s); returns the bytes. */
async function readUntil(t: Transport, done: (b: Uint8Array) => boolean): Promise<Uint8Array> {
  let buf = new Uint8Array(0);
  const end = Date.now() + 30_000;
  while (!done(buf)) {
    if (Date.now() > end) throw new Error(`timed out; got ${new TextDecoder().decode(buf)}`);
    const c = await t.read();
    if (c === null) break;
    buf = cat(buf, c);
  }
  return buf;
}

/** Whether `b` (after `skip` bytes) holds a whole HTTP response with a Content-Length body. */
function wholeResponse(b: Uint8Array, skip = 0): boolean {
  const text = new TextDecoder().decode(b.subarray(skip));
  const i = text.indexOf("\r\n\r\n");
  if (i < 0) return false;
  const len = Number(/content-length: *(\d+)/i.exec(text.slice(0, i))?.[1] ?? 0);
  return text.length - i - 4 >= len;
}

/** HTTP GET / over a tunnel stream to the web Service; returns the body (a pod name). */
async function getWeb(session: Session): Promise<string> {
  const s = await session.openStream(webHeader());
  await s.write(ascii(`GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n`));
  await s.closeWrite();
  let text = "";
  for (let c = await s.read(); c !== null; c = await s.read()) text += new TextDecoder().decode(c);
  return text.split("\r\n\r\n")[1]?.trim() ?? text;
}

Deno.test({
  name:
    "e2e agent token: through the apiserver port-forward, no/wrong/truncated tokens are refused, the good client is served throughout",
  ...opts,
}, async () => {
  const kc = await setup();
  // The client's own REST and port-forward code, with credentials loaded in this process.
  const flags = {
    kubeconfig: kc,
    requestTimeoutMs: 20_000,
    insecureSkipTlsVerify: false,
    asGroups: [],
  };
  const client = new KubeClient(
    accessFrom(await loadCredentials(flags), flags, () => loadCredentials(flags)),
  );
  const token = crypto.getRandomValues(new Uint8Array(32));
  const job = await agentJob({
    namespace: NS,
    image: "kubectl-relay-agent:test",
    readyTimeoutMs: 60_000,
    log: () => {},
  }, token);
  const file = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(file, JSON.stringify(job));
  const jobName = (await kubectl(kc, "create", "-f", file, "-o", "jsonpath={.metadata.name}"))
    .trim();
  await Deno.remove(file);
  try {
    // Ready comes from the tcpSocket probe on the health port (the harness runs it).
    const pod = await poll("agent pod Ready", 60_000, async () => {
      const out = JSON.parse(
        await kubectl(kc, "-n", NS, "get", "pods", "-l", `job-name=${jobName}`, "-o", "json"),
      );
      const p = out.items[0];
      return p?.status?.containerStatuses?.[0]?.ready ? p.metadata.name as string : null;
    });
    const podLog = () => client.getText(`/api/v1/namespaces/${NS}/pods/${pod}/log?container=agent`);

    const goodPipe = await openPortForward(client, NS, pod, 9527);
    await goodPipe.write(encodeAuth(token));
    const good = new Session(goodPipe, { role: "client" });
    try {
      const servedBy = await getWeb(good);
      assert.match(servedBy, /^web-/, "the good client reaches web through the agent");

      const wrong = token.slice();
      wrong[0] ^= 0xff;
      const block = encodeAuth(token);
      // Each bad request names a destination with its own request id: the id must never show up
      // in the agent's log (it would, with `connected to` or an error, had it been dialed).
      const ids: string[] = [];
      const badHeader = () => {
        const h = webHeader();
        ids.push([...h.subarray(3, 19)].map((b) => b.toString(16).padStart(2, "0")).join(""));
        return h;
      };
      const cases: { name: string; bytes: Uint8Array; log: RegExp }[] = [
        {
          name: "no token (a bare raw Header)",
          bytes: cat(badHeader(), ascii("GET / HTTP/1.0\r\n\r\n")),
          log: /no token \(a raw-mode Header came first\)/,
        },
        {
          name: "no token (a bare PREFACE and OPEN)",
          bytes: cat(
            PREFACE,
            encodeFrame({
              type: "open",
              streamId: 1,
              window: 256 * 1024,
              header: badHeader(),
            }),
          ),
          log: /no token \(the tunnel preface came first\)/,
        },
        {
          name: "a wrong token",
          bytes: cat(encodeAuth(wrong), badHeader()),
          log: /wrong token/,
        },
        {
          name: "a truncated token followed by a Header",
          bytes: cat(block.subarray(0, 30), badHeader()),
          log: /wrong token/,
        },
      ];
      for (const c of cases) {
        const before = (await podLog()).split("\n").filter((l) => / - connection /.test(l));
        const pipe = await openPortForward(client, NS, pod, 9527);
        assert.deepEqual(
          await answerUntilClosed(pipe, c.bytes),
          new Uint8Array(0),
          `${c.name}: no answer`,
        );
        assert.match(await getWeb(good), /^web-/, `${c.name}: the good client is still served`);
        const lines = await poll(`${c.name}: its log line`, 10_000, async () => {
          const now = (await podLog()).split("\n").filter((l) => / - connection /.test(l));
          return now.length > before.length ? now.slice(before.length) : null;
        });
        assert.equal(lines.length, 1, `${c.name}: one line\n${lines.join("\n")}`);
        assert.match(lines[0], c.log, c.name);
      }
      const log = await podLog();
      const dashed = (id: string) =>
        `${id.slice(0, 8)}-${id.slice(8, 12)}-${id.slice(12, 16)}-${id.slice(16, 20)}-${
          id.slice(20)
        }`;
      for (const id of ids) assert.ok(!log.includes(dashed(id)), `request ${id} was not served`);

      // A truncated token, then nothing more: refused when the pipe ends or, at the latest, at the
      // agent's 10-second deadline for a connection's first bytes.
      const cut = await openPortForward(client, NS, pod, 9527);
      await cut.write(block.subarray(0, 12));
      await sleep(200); // let the bytes through before the close
      cut.close();
      await poll("the incomplete token's log line", 20_000, async () => {
        const log = await podLog();
        return /incomplete token \(12 of 40 bytes\), closing/.test(log) ? true : null;
      });

      // The health port carries nothing, even for the right token.
      const health = await openPortForward(client, NS, pod, 9528);
      assert.deepEqual(await answerUntilClosed(health, cat(block, badHeader())), new Uint8Array(0));

      // The right token on a second pipe: raw mode, byte-exact after the block.
      const raw = await openPortForward(client, NS, pod, 9527);
      try {
        await raw.write(
          cat(
            block,
            webHeader(),
            ascii("GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"),
          ),
        );
        const answer = await readUntil(raw, (b) => wholeResponse(b, 1));
        assert.equal(answer[0], 0, "status Ok");
        assert.match(new TextDecoder().decode(answer.subarray(1)), /^HTTP\/1\.1 200/);
      } finally {
        raw.close();
      }
      assert.match(await getWeb(good), /^web-/);
      assert.ok(
        !(await podLog()).includes([...token].map((b) => b.toString(16).padStart(2, "0")).join("")),
      );
    } finally {
      good.close("done");
      await good.closed;
    }
  } finally {
    await kubectl(kc, "-n", NS, "delete", "job", jobName, "--cascade=foreground", "--wait=true");
  }
});

Deno.test({
  name:
    "e2e agent start: a port taken in the pod is one error line with the agent's last log line, exit 1, no agent left",
  ...opts,
}, async () => {
  const kc = await setup();
  // The health port on the tunnel's port: the agent cannot bind it and exits 1.
  const patch = await agentContainerPatch({
    args: ["--listen", "127.0.0.1:9527", "--health", "0.0.0.0:9527", "--idle-exit", "5m"],
  });
  const res = await runRelay(kc, ["-n", NS, "--patch", patch, "deploy/web", ":80"]);
  assert.equal(res.code, 1, res.stderr);
  const errors = res.stderr.split("\n").filter((l) => l.startsWith("error:"));
  assert.equal(errors.length, 1, res.stderr);
  assert.match(
    errors[0],
    /^error: agent pod kubectl-relay-agent-\S+ failed \(exit code 1\): cannot listen on [\d.]+:9527 \(health\): Address already in use \(os error 98\)$/,
  );
  assert.doesNotMatch(res.stderr, /^\s+at /m);
  assert.deepEqual(await agentJobs(kc), []);
  // The harness ran that container once, as a kubelet does with restartPolicy Never.
  const pod = /agent pod (\S+) failed/.exec(errors[0])![1];
  const runtimeLog = await Deno.readTextFile(`${(await sharedCluster()).dir}/logs/runtime.log`);
  const starts = runtimeLog.split("\n").filter((l) => l.includes(`/${pod}: agent pid `));
  assert.equal(starts.length, 1, starts.join("\n"));
});

Deno.test({
  name: "e2e agent start: an agent OOM-killed before the tunnel is up is one line naming the limit",
  ...opts,
}, async () => {
  const kc = await setup();
  // Deno alone needs more than 8 MiB: the harness's memory cgroup kills it while it starts.
  const patch = await agentContainerPatch({
    resources: { limits: { memory: "8Mi" }, requests: { memory: "8Mi", cpu: "10m" } },
  });
  const res = await runRelay(kc, ["-n", NS, "--patch", patch, "deploy/web", ":80"]);
  assert.equal(res.code, 1, res.stderr);
  const errors = res.stderr.split("\n").filter((l) => l.startsWith("error:"));
  assert.equal(errors.length, 1, res.stderr);
  assert.match(
    errors[0],
    /^error: agent pod kubectl-relay-agent-\S+ was OOMKilled \(exit code 137\): it used more than its memory limit of 8Mi$/,
  );
  assert.deepEqual(await agentJobs(kc), []);
  // The cluster is still usable for the next test.
  assert.ok((await sharedCluster()).kubeconfig);
});
