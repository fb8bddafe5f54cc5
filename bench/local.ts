/**
 * `deno task bench:local [--rate MiB/s] [--bulk MiB] [--conns N] [--each KiB]
 * [--phases idle,thr,lul,many] [--agent-flags "…"]`: the relay's own parts on loopback, without the
 * cluster, for quick A/B measurements of the tunnel code (not a replacement for `deno task
 * bench`, which goes through the apiserver and the node).
 *
 * Four processes: a TCP echo server, the real agent (agent.ts, with its token), a stand-in for
 * the apiserver/kubelet hop (a TCP proxy moving at most `--rate` MiB/s each way, so queues build
 * in front of it as they do in front of the real one; `--rate 0`: no hop), and a client (a Session over that proxy
 * with the real TCP listener and early-data opener). Phases: `thr` one bulk echo (MiB/s, CPU
 * seconds per GiB of client and agent), `lul` 1-byte echoes idle and while a bulk echo runs,
 * `many` N concurrent connections × `--each` KiB (errors, wall time, peak RSS); `idle` (only when
 * asked for) N connections held open after one echoed byte each, and the agent's JavaScript heap
 * after a full collection before and while they are open (read through the agent's inspector):
 * what each open connection costs the agent in JavaScript objects, without the noise of RSS.
 * CPU and RSS come from `/proc`. Loopback only; every loop is bounded in count and time.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { manyConnections, throughput } from "./measure.ts";
import { poll } from "../tests/_lib/poll.ts";
import { freePort } from "../tests/cluster/proc.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    role: { type: "string", default: "" },
    rate: { type: "string", default: "80" },
    bulk: { type: "string", default: "256" },
    conns: { type: "string", default: "1000" },
    each: { type: "string", default: "1024" },
    phases: { type: "string", default: "thr,lul,many" },
    target: { type: "string", default: "" },
    echo: { type: "string", default: "" },
    token: { type: "string", default: "" },
    "agent-flags": { type: "string", default: "" },
  },
});

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

function listenPrint(): Deno.TcpListener {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(`port ${(l.addr as Deno.NetAddr).port}`);
  return l;
}

async function echoRole(): Promise<void> {
  const { echoConn } = await import("../tests/_lib/echo.ts");
  for await (const conn of listenPrint()) void echoConn(conn);
}

/** A proxy that moves at most `rate` MiB/s each way (a token bucket with 1 ms granularity). */
async function throttleRole(): Promise<void> {
  const [host, port] = values.target.split(":");
  const bytesPerMs = (Number(values.rate) * 1024 * 1024) / 1000;
  for await (const a of listenPrint()) {
    const b = await Deno.connect({ hostname: host, port: Number(port) });
    const pump = async (from: Deno.Conn, to: Deno.Conn) => {
      const buf = new Uint8Array(32 * 1024);
      let credit = 0;
      let last = performance.now();
      try {
        while (true) {
          const now = performance.now();
          credit = Math.min(credit + (now - last) * bytesPerMs, 256 * 1024);
          last = now;
          if (credit < 1) {
            await new Promise((r) => setTimeout(r, 1));
            continue;
          }
          const n = await from.read(buf.subarray(0, Math.min(buf.length, Math.floor(credit))));
          if (n === null) break;
          credit -= n;
          await writeAll(to, buf.subarray(0, n));
        }
        await to.closeWrite();
      } catch { /* gone */ }
    };
    void Promise.all([pump(a, b), pump(b, a)]).finally(() => {
      for (const c of [a, b]) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    });
  }
}

async function clientRole(): Promise<void> {
  const { Session, connTransport } = await import("../src/mux/mod.ts");
  const { bindTcp } = await import("../src/forward/tcp.ts");
  const { RetryingStream } = await import("../src/client/retrying_stream.ts");
  const { encodeHeader } = await import("../src/protocol/header.ts");
  const { encodeAuth, parseToken } = await import("../src/protocol/auth.ts");
  const [host, port] = values.target.split(":");
  const conn = await Deno.connect({ hostname: host, port: Number(port) });
  await writeAll(conn, encodeAuth(parseToken(values.token)!));
  // Like the client's WebSocket (no TCP_NODELAY there), batches start at once.
  const session = new Session({ ...connTransport(conn), coalesceWrites: false }, {
    role: "client",
  });
  const echoPort = Number(values.echo);
  const l = bindTcp("127.0.0.1", 0).serve({
    open: () => {
      const header = encodeHeader({
        requestId: crypto.randomUUID(),
        protocol: "tcp",
        port: echoPort,
        address: { type: "ipv4", ip: "127.0.0.1" },
      });
      return Promise.resolve(
        new RetryingStream(session.openEarlyStream(header), (e) => Promise.reject(e)),
      );
    },
    out: () => {},
    err: (line) => console.error(line),
    log: () => {},
  });
  console.log(`port ${l.port}`);
  console.error(`session closed: ${await session.closed}`);
}

async function spawn(
  args: string[],
  env?: Record<string, string>,
): Promise<{ child: Deno.ChildProcess; port: number }> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdout: "piped",
    stderr: Deno.env.get("LOCAL_STDERR") ? "inherit" : "null",
    env,
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`no port from ${args.join(" ")}: ${text}`);
    text += value;
    const m = /(?:port |listening on 127\.0\.0\.1:)(\d+)/.exec(text);
    if (m) {
      (async () => {
        while (!(await reader.read()).done) { /* drain */ }
      })();
      return { child, port: Number(m[1]) };
    }
  }
}

function cpuSeconds(pid: number): number {
  const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

function rss(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]) / 1024;
}

/** 1-byte echoes on one connection, one per ms, until `until` settles or `max` samples. */
async function echoLoop(port: number, until: Promise<unknown>, max: number): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  let done = false;
  until.then(() => done = true, () => done = true);
  const one = new Uint8Array([42]);
  const buf = new Uint8Array(16);
  const times: number[] = [];
  await conn.write(one);
  await conn.read(buf);
  const deadline = Date.now() + 120_000;
  while (!done && times.length < max && Date.now() < deadline) {
    const t0 = performance.now();
    await conn.write(one);
    await conn.read(buf);
    times.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 1));
  }
  conn.close();
  times.sort((a, b) => a - b);
  const p = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
  return `n=${times.length} p50=${p(0.5).toFixed(2)} p99=${p(0.99).toFixed(2)} max=${
    times[times.length - 1].toFixed(2)
  } ms`;
}

/** The agent's JavaScript heap in use after a full collection, through its inspector. */
async function heapUsed(inspectPort: number): Promise<number> {
  const url = await poll("the agent's inspector", 10_000, async () => {
    const list = await (await fetch(`http://127.0.0.1:${inspectPort}/json/list`)).json();
    return (list[0]?.webSocketDebuggerUrl as string | undefined) ?? null;
  });
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  const answers = new Map<number, (result: Record<string, number>) => void>();
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    answers.get(m.id)?.(m.result);
  };
  let id = 0;
  const call = (method: string) =>
    new Promise<Record<string, number>>((resolve) => {
      answers.set(++id, resolve);
      ws.send(JSON.stringify({ id, method }));
    });
  try {
    await call("HeapProfiler.collectGarbage");
    return (await call("Runtime.getHeapUsage")).usedSize;
  } finally {
    ws.close();
  }
}

/** `n` connections through the relay, each with one byte echoed; the caller closes them. */
async function holdConnections(port: number, n: number): Promise<Deno.Conn[]> {
  const conns: Deno.Conn[] = [];
  const one = new Uint8Array([1]);
  const buf = new Uint8Array(1);
  for (let i = 0; i < n; i++) {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    conns.push(c);
    await writeAll(c, one);
    if ((await c.read(buf)) !== 1) throw new Error(`connection ${i}: no echo`);
  }
  return conns;
}

async function driver(): Promise<void> {
  const me = import.meta.filename!;
  const token = Array.from(crypto.getRandomValues(new Uint8Array(32)))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  const echo = await spawn(["run", "-A", me, "--role", "echo"]);
  const phases = values.phases.split(",");
  const inspectPort = phases.includes("idle") ? freePort() : 0;
  const agentFlags = values["agent-flags"] ? values["agent-flags"].split(" ") : [];
  if (inspectPort) agentFlags.push(`--inspect=127.0.0.1:${inspectPort}`);
  const agent = await spawn([
    "run",
    "-A",
    "--unstable-net",
    ...agentFlags,
    new URL("../agent.ts", import.meta.url).pathname,
    "--listen",
    "127.0.0.1:0",
    ...(Deno.env.get("LOCAL_AGENT_ARGS")?.split(" ").filter(Boolean) ?? []),
  ], {
    KUBECTL_RELAY_TOKEN: token,
    ...Object.fromEntries(
      (Deno.env.get("LOCAL_AGENT_ENV") ?? "").split(" ").filter(Boolean).map((kv) => kv.split("=")),
    ),
  });
  const proxy = values.rate === "0" ? agent : await spawn([
    "run",
    "-A",
    me,
    "--role=throttle",
    `--rate=${values.rate}`,
    `--target=127.0.0.1:${agent.port}`,
  ]);
  const client = await spawn([
    "run",
    "-A",
    "--unstable-net",
    ...(Deno.env.get("LOCAL_CLIENT_FLAGS")?.split(" ").filter(Boolean) ?? []),
    me,
    "--role=client",
    `--target=127.0.0.1:${proxy.port}`,
    `--echo=${echo.port}`,
    `--token=${token}`,
  ]);
  const cpid = client.child.pid, apid = agent.child.pid;
  const bulk = Number(values.bulk) << 20;
  const port = client.port;
  console.log(`idle RSS client ${rss(cpid).toFixed(0)} agent ${rss(apid).toFixed(0)} MiB`);
  try {
    if (phases.includes("idle")) {
      const n = Number(values.conns);
      const before = await heapUsed(inspectPort);
      const conns = await holdConnections(port, n);
      const open = await heapUsed(inspectPort);
      for (const c of conns) c.close();
      const mib = (b: number) => (b / 1048576).toFixed(1);
      console.log(
        `${n} idle connections: agent JS heap ${mib(before)} → ${mib(open)} MiB, ${
          ((open - before) / n / 1024).toFixed(2)
        } KiB per connection; RSS agent ${rss(apid).toFixed(0)} MiB`,
      );
    }
    if (phases.includes("thr")) {
      const c0 = cpuSeconds(cpid), a0 = cpuSeconds(apid);
      const mibs = await throughput("127.0.0.1", port, bulk);
      const gib = bulk / (1 << 30);
      console.log(
        `throughput ${mibs.toFixed(0)} MiB/s; CPU s/GiB client ${
          ((cpuSeconds(cpid) - c0) / gib).toFixed(2)
        } agent ${((cpuSeconds(apid) - a0) / gib).toFixed(2)}`,
      );
    }
    if (phases.includes("lul")) {
      console.log(
        `echo idle:       ${await echoLoop(port, new Promise((r) => setTimeout(r, 2000)), 2000)}`,
      );
      const b = throughput("127.0.0.1", port, bulk);
      console.log(
        `echo under load: ${await echoLoop(port, b, 100_000)} (bulk ${(await b).toFixed(0)} MiB/s)`,
      );
    }
    if (phases.includes("many")) {
      let pc = 0, pa = 0;
      const t = setInterval(() => {
        pc = Math.max(pc, rss(cpid));
        pa = Math.max(pa, rss(apid));
      }, 50);
      const c0 = cpuSeconds(cpid), a0 = cpuSeconds(apid);
      const m = await manyConnections(
        "127.0.0.1",
        port,
        Number(values.conns),
        Number(values.each) << 10,
      );
      clearInterval(t);
      console.log(
        `${values.conns} × ${values.each} KiB: ${m.wallS.toFixed(2)} s, ${m.errors} errors; ` +
          `peak RSS client ${pc.toFixed(0)} agent ${pa.toFixed(0)} MiB; CPU client ${
            (cpuSeconds(cpid) - c0).toFixed(1)
          } agent ${(cpuSeconds(apid) - a0).toFixed(1)} s`,
      );
    }
  } finally {
    for (const p of new Set([client, proxy, agent, echo])) {
      try {
        p.child.kill("SIGKILL");
      } catch { /* gone */ }
      await p.child.status;
    }
  }
}

if (values.role === "echo") await echoRole();
else if (values.role === "throttle") await throttleRole();
else if (values.role === "client") await clientRole();
else await driver();
