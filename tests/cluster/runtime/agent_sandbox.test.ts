/**
 * The agent sandbox on the real kernel (root and a memory cgroup controller needed): a stand-in
 * agent spawned by PodPlayer exactly as the runtime does runs in its own memory cgroup as the
 * pod's uid/gid, is OOM-killed above its limit and reported as OOMKilled/137, and its cgroup goes.
 */

import assert from "node:assert/strict";
import { agentLeftovers, AgentSandbox } from "./agent_sandbox.ts";
import { detectMemoryController } from "./cgroup.ts";
import { type PlayerEnv, PodPlayer } from "./pod_player.ts";
import type { V1Pod } from "./kube.ts";

const CAN = Deno.uid() === 0 && detectMemoryController() !== undefined;
const POD_IP = "127.0.78.9";

// A stand-in for agent.ts: on each connection it sends its view of itself (one JSON line), then
// on "A" allocates (and touches) 4 MiB chunks up to 1 GiB and answers "survived" if it could.
const FAKE_AGENT = `
const i = Deno.args.indexOf("--listen");
const [host, port] = Deno.args[i + 1].split(":");
const l = Deno.listen({ hostname: host, port: Number(port) });
console.log("listening on " + host + ":" + port);
const enc = new TextEncoder();
for await (const c of l) {
  const me = { uid: Deno.uid(), gid: Deno.gid(), env: Deno.env.toObject() };
  await c.write(enc.encode(JSON.stringify(me) + "\\n"));
  const b = new Uint8Array(1);
  if ((await c.read(b)) === 1 && b[0] === 65) {
    const keep = [];
    for (let n = 0; n < 256; n++) keep.push(new Uint8Array(4 << 20).fill(n & 255 || 1));
    await c.write(enc.encode("survived " + keep.length + "\\n"));
  }
  c.close();
}
`;

function agentPod(name: string, limit: string | undefined, sc: object, csc: object = {}): V1Pod {
  return {
    metadata: {
      name,
      namespace: "team",
      uid: crypto.randomUUID(),
      labels: { "app.kubernetes.io/name": "kubectl-relay-agent" },
    },
    spec: {
      nodeName: "n",
      securityContext: sc,
      containers: [{
        name: "agent",
        args: ["--listen", "0.0.0.0:9531"],
        env: [{ name: "RELAY_TOKEN", value: "t0k" }],
        resources: limit ? { limits: { memory: limit } } : undefined,
        securityContext: csc,
      }],
    },
    status: { phase: "Running", podIP: POD_IP },
  };
}

interface Harness {
  dir: string;
  sandbox: AgentSandbox;
  env: PlayerEnv;
  finished: Promise<{ code: number; reason?: string }>;
}

async function harness(): Promise<Harness> {
  // Readable by the pod's uid, as the repo is (makeTempDir makes 0700 dirs).
  const dir = await Deno.makeTempDir({ prefix: "rt-sandbox-" });
  await Deno.chmod(dir, 0o755);
  await Deno.writeTextFile(`${dir}/fake_agent.ts`, FAKE_AGENT);
  const lines: string[] = [];
  const sandbox = await AgentSandbox.create({
    stateDir: dir,
    log: (l) => lines.push(l),
    denoDirRoot: `${dir}/deno`, // not the shared cache: uids of these tests only
  });
  let finish!: (v: { code: number; reason?: string }) => void;
  const finished = new Promise<{ code: number; reason?: string }>((r) => finish = r);
  const env: PlayerEnv = {
    agentPath: `${dir}/fake_agent.ts`,
    stateDir: dir,
    dnsServer: "127.0.78.53",
    agentSandbox: sandbox,
    log: (l) => lines.push(l),
    publishPorts: () => Promise.resolve(),
    unpublish: () => Promise.resolve(),
    markReady: () => Promise.resolve(),
    markFinished: (_pod, code, reason) => {
      finish({ code, reason });
      return Promise.resolve();
    },
  };
  return { dir, sandbox, env, finished };
}

/** Run `fn` with a fresh harness; always stop the sandbox and remove the dir afterwards. */
async function withHarness(fn: (h: Harness) => Promise<void>): Promise<void> {
  const h = await harness();
  try {
    await fn(h);
  } finally {
    const left = await h.sandbox.close();
    await Deno.remove(h.dir, { recursive: true });
    assert.deepEqual(left, [], "cgroups with processes after close()");
    assert.equal(await exists(h.sandbox.cgroups!.dir), false);
  }
}

async function readLine(conn: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(65536);
  let text = "";
  while (!text.includes("\n")) {
    const n = await conn.read(buf);
    if (n === null) break;
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
  return text;
}

function procStatus(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of Deno.readTextFileSync(`/proc/${pid}/status`).split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

Deno.test({
  name: "agent sandbox: runs as the pod's uid/gid in its own cgroup; OOM → OOMKilled/137",
  ignore: !CAN,
}, () =>
  withHarness(async (h) => {
    // The manifest's securityContext, with a small limit.
    const pod = agentPod(
      "oom",
      "96Mi",
      { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532 },
      {
        allowPrivilegeEscalation: false,
        capabilities: { drop: ["ALL"] },
      },
    );
    const player = new PodPlayer(pod, h.env);
    try {
      await player.start();
      const pid = player.agentPid!;
      const cgDir = (await Deno.readTextFile(`${h.dir}/agents/team_oom.cgroup`)).trim();
      assert.equal(cgDir, `${h.sandbox.cgroups!.dir}/team_oom`);
      // The agent process itself (same pid as spawned) is the cgroup's only member, limit set.
      assert.deepEqual(
        (await Deno.readTextFile(`${cgDir}/cgroup.procs`)).trim().split("\n").map(Number),
        [pid],
      );
      const limitFile = h.sandbox.cgroups!.controller.version === 1
        ? "memory.limit_in_bytes"
        : "memory.max";
      assert.equal((await Deno.readTextFile(`${cgDir}/${limitFile}`)).trim(), String(96 * 2 ** 20));
      // Identity, from /proc: uid/gid 65532 (real, effective, saved, fs), no groups, no caps.
      const st = procStatus(pid);
      assert.equal(st.Uid, "65532\t65532\t65532\t65532");
      assert.equal(st.Gid, "65532\t65532\t65532\t65532");
      assert.equal(st.Groups, "");
      assert.equal(st.CapEff, "0000000000000000");
      assert.equal(st.CapBnd, "0000000000000000");
      assert.equal(st.NoNewPrivs, "1");
      assert.ok((await Deno.readTextFile(`/proc/${pid}/cmdline`)).includes("fake_agent.ts"));

      const conn = await Deno.connect({ hostname: POD_IP, port: 9531 });
      const me = JSON.parse(await readLine(conn));
      assert.deepEqual([me.uid, me.gid], [65532, 65532]);
      // Only the container's env (+ PATH/HOME/HOSTNAME/DENO_DIR/NO_COLOR): nothing of ours.
      assert.deepEqual(Object.keys(me.env).sort(), [
        "DENO_DIR",
        "HOME",
        "HOSTNAME",
        "NO_COLOR",
        "PATH",
        "RELAY_TOKEN",
      ]);
      assert.equal(me.env.RELAY_TOKEN, "t0k");
      assert.equal((await Deno.stat(me.env.DENO_DIR)).uid, 65532);

      await conn.write(new TextEncoder().encode("A"));
      const answer = await readLine(conn).catch((e) => String(e));
      conn.close();
      assert.doesNotMatch(answer, /survived/, "the agent allocated 1 GiB under a 96Mi limit");
      assert.deepEqual(await h.finished, { code: 137, reason: "OOMKilled" });
      // The cgroup is gone, the peak recorded (at most the limit, more than a few MiB).
      assert.equal(await exists(cgDir), false, `${cgDir} still exists`);
      assert.equal(await exists(`${h.dir}/agents/team_oom.cgroup`), false);
      const peak = Number((await Deno.readTextFile(`${h.dir}/agents/team_oom.peak`)).trim());
      assert.ok(peak > 32 * 2 ** 20 && peak <= 96 * 2 ** 20, `peak ${peak}`);
    } finally {
      await player.stop();
    }
  }));

Deno.test({
  name:
    "agent sandbox: under its limit the agent lives; pod stop removes the cgroup, keeps the peak",
  ignore: !CAN,
}, () =>
  withHarness(async (h) => {
    // Another uid, gid from the container, supplementary groups from the pod, a roomy limit.
    const pod = agentPod("roomy", "1536Mi", { runAsUser: 1234, fsGroup: 4321 }, {
      runAsGroup: 2345,
    });
    const player = new PodPlayer(pod, { ...h.env, privateResolv: false });
    try {
      await player.start();
      const pid = player.agentPid!;
      const st = procStatus(pid);
      assert.equal(st.Uid, "1234\t1234\t1234\t1234");
      assert.equal(st.Gid, "2345\t2345\t2345\t2345");
      assert.equal(st.Groups, "4321");
      assert.equal(st.NoNewPrivs, "0");
      const cgDir = (await Deno.readTextFile(`${h.dir}/agents/team_roomy.cgroup`)).trim();
      const conn = await Deno.connect({ hostname: POD_IP, port: 9531 });
      await readLine(conn);
      await conn.write(new TextEncoder().encode("A"));
      assert.match(await readLine(conn), /^survived 256/);
      conn.close();
      // Pod deleted: the agent is stopped, then its cgroup removed and its peak recorded.
      await player.stop();
      assert.equal(await exists(`/proc/${pid}/cmdline`), false);
      assert.equal(await exists(cgDir), false);
      const peak = Number((await Deno.readTextFile(`${h.dir}/agents/team_roomy.peak`)).trim());
      assert.ok(peak >= 1024 * 2 ** 20, `peak ${peak} after touching 1 GiB`);
    } finally {
      await player.stop();
    }
  }));

Deno.test({
  name: "agent sandbox: an agent failing by itself keeps its exit code, reason Error; cgroup gone",
  ignore: !CAN,
}, () =>
  withHarness(async (h) => {
    // An agent that fails by itself (no OOM): exit code as is, no reason (the runtime says Error).
    await Deno.writeTextFile(
      `${h.dir}/exit3.ts`,
      `console.log("listening on x"); setTimeout(() => Deno.exit(3), 100);`,
    );
    const p3 = new PodPlayer(agentPod("three", "96Mi", {}), {
      ...h.env,
      agentPath: `${h.dir}/exit3.ts`,
    });
    try {
      await p3.start();
      assert.deepEqual(await h.finished, { code: 3, reason: undefined });
      assert.equal(await exists(`${h.sandbox.cgroups!.dir}/team_three`), false);
    } finally {
      await p3.stop();
    }
  }));

Deno.test({
  name: "agent sandbox: runAsNonRoot with uid 0 does not start; no cgroup is left",
  ignore: !CAN,
}, () =>
  withHarness(async (h) => {
    const pod = agentPod("root", "96Mi", { runAsNonRoot: true, runAsUser: 0 });
    const player = new PodPlayer(pod, h.env);
    try {
      await assert.rejects(player.start(), /runAsUser breaks non-root policy/);
      assert.deepEqual(h.sandbox.cgroups!.list(), []);
    } finally {
      await player.stop();
    }
  }));

Deno.test({
  name: "agentLeftovers: reports a runtime's remaining agent cgroups and processes",
  ignore: !CAN,
}, () =>
  withHarness(async (h) => {
    const child = new Deno.Command("sh", { args: ["-c", "sleep 30", "--listen"] }).spawn();
    try {
      assert.deepEqual(await agentLeftovers(h.dir), []);
      await h.sandbox.cgroups!.create("team_left", 2 ** 26);
      await Deno.mkdir(`${h.dir}/agents`, { recursive: true });
      await Deno.writeTextFile(`${h.dir}/agents/team_left.pid`, `${child.pid}\n`);
      const left = await agentLeftovers(h.dir);
      assert.equal(left.length, 2, left.join("; "));
      assert.match(left[0], /agent cgroup .*kubectl-relay\/rt-sandbox-.* remains: team_left$/);
      assert.equal(left[1], `agent process ${child.pid} (team_left.pid) still running`);
      // The empty cgroups were removed on the way; the process is only reported.
      assert.equal(await exists(h.sandbox.cgroups!.dir), false);
      child.kill("SIGKILL");
      await child.status;
      assert.deepEqual(await agentLeftovers(h.dir), []);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.status;
    }
  }));
