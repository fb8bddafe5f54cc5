/**
 * The agent as a real process, tunnel mode: a client-role Session over a TCP
 * connection to the agent, against echo servers on 127.0.0.1.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { encodeHeader, type Header } from "../../src/protocol/header.ts";
import { PREFACE } from "../../src/protocol/mux.ts";
import { Status } from "../../src/protocol/status.ts";
import { encodeUdpFrame, UdpFrameDecoder } from "../../src/protocol/udp.ts";
import { Session, type Stream, StreamRejectedError } from "../../src/mux/mod.ts";
import { connTransport } from "../../src/mux/mod.ts";
import { type AgentProcess, startAgentProcess } from "../_lib/agent.ts";
import { startTcpEcho, startUdpEcho, type TcpEcho } from "../_lib/echo.ts";
import { closedPort, readAll, readExactly, writeAll } from "../_lib/net.ts";

const ascii = (s: string) => new TextEncoder().encode(s);

function tcpHeader(port: number, ip = "127.0.0.1"): Uint8Array {
  const h: Header = {
    requestId: crypto.randomUUID(),
    protocol: "tcp",
    port,
    address: { type: "ipv4", ip },
  };
  return encodeHeader(h);
}

/** A client Session on a connection that presented the agent's token. */
async function openSession(agent: AgentProcess): Promise<Session> {
  const conn = await agent.connect();
  return new Session(connTransport(conn), { role: "client" });
}

/** Reads a stream to EOF. */
async function drain(s: Stream): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  while (true) {
    const c = await s.read();
    if (c === null) break;
    parts.push(c.slice());
    n += c.length;
  }
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** A test still running after this long is declared hung. */
const WATCHDOG_MS = 120_000;

async function withTunnel(
  fn: (session: Session, echo: TcpEcho, agent: AgentProcess) => Promise<void>,
  args: string[] = [],
): Promise<void> {
  const echo = startTcpEcho();
  const agent = await startAgentProcess({ args });
  const session = await openSession(agent);
  // Watchdog: a hang (e.g. a lost EOF) fails the test instead of blocking the run; killing the
  // agent makes every pending read end.
  let hung = false;
  const watchdog = setTimeout(() => {
    hung = true;
    agent.stop();
  }, WATCHDOG_MS);
  try {
    await fn(session, echo, agent);
  } finally {
    clearTimeout(watchdog);
    session.close("test done");
    await session.closed;
    await agent.stop();
    await echo.close();
  }
  assert.equal(hung, false, `test hung for ${WATCHDOG_MS} ms`);
  const bad = agent.logs.filter((l) => /unhandled rejection|internal error/.test(l));
  assert.deepEqual(bad, [], "the agent logged no internal errors");
}

/** Echoes `data` through a new stream: write, half-close, read all back. */
async function echoOnce(session: Session, port: number, data: Uint8Array): Promise<Uint8Array> {
  const s = await session.openStream(tcpHeader(port));
  const [, back] = await Promise.all([
    (async () => {
      await s.write(data);
      await s.closeWrite();
    })(),
    drain(s),
  ]);
  return back;
}

Deno.test("agent tunnel: half-close reaches the destination and the reply still arrives", async () => {
  await withTunnel(async (session, echo) => {
    const s = await session.openStream(tcpHeader(echo.port));
    await s.write(ascii("request"));
    await s.closeWrite();
    // The echo server only half-closes after reading EOF, so EOF here proves it saw ours.
    assert.equal(new TextDecoder().decode(await drain(s)), "request");
    assert.equal(echo.eofs, 1);
  });
});

Deno.test("agent tunnel: early data (64 KiB and a half-close sent with the OPEN) arrives intact", async () => {
  await withTunnel(async (session, echo) => {
    const data = new Uint8Array(64 * 1024);
    crypto.getRandomValues(data);
    const s = session.openEarlyStream(tcpHeader(echo.port));
    await s.write(data);
    await s.closeWrite();
    await s.opened;
    const back = await drain(s);
    assert.equal(Buffer.compare(back, data), 0);
    // An early stream to a closed port: the bytes are dropped, the status comes back.
    const refused = session.openEarlyStream(tcpHeader(closedPort()));
    await refused.write(ascii("nobody listens"));
    await assert.rejects(
      refused.opened,
      (e) => e instanceof StreamRejectedError && e.status === Status.ConnectionRefused,
    );
    await assert.rejects(refused.read(), StreamRejectedError);
    assert.equal(echo.accepted, 1);
  });
});

Deno.test("agent tunnel: 1,000 concurrent streams each echo their own data", async () => {
  await withTunnel(async (session, echo) => {
    const N = 1000;
    const results = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const data = ascii(`stream ${i} `.repeat(50));
        const back = await echoOnce(session, echo.port, data);
        return Buffer.compare(back, data) === 0;
      }),
    );
    assert.equal(results.filter((ok) => ok).length, N);
    assert.equal(echo.accepted, N);
  });
});

Deno.test("agent tunnel: 256 MiB echoed through one stream, SHA-256 equal on both ends", async () => {
  await withTunnel(async (session, echo) => {
    const TOTAL = 256 * 1024 * 1024;
    const CHUNK = 1024 * 1024;
    const block = new Uint8Array(CHUNK);
    for (let off = 0; off < CHUNK; off += 65536) {
      crypto.getRandomValues(block.subarray(off, off + 65536));
    }
    const s = await session.openStream(tcpHeader(echo.port));
    const sentHash = createHash("sha256");
    const recvHash = createHash("sha256");
    let received = 0;
    await Promise.all([
      (async () => {
        for (let i = 0; i < TOTAL / CHUNK; i++) {
          // Vary every chunk so reordering or duplication would change the digest.
          new DataView(block.buffer).setUint32(0, i);
          sentHash.update(block);
          await s.write(block);
        }
        await s.closeWrite();
      })(),
      (async () => {
        while (true) {
          const c = await s.read();
          if (c === null) break;
          recvHash.update(c);
          received += c.length;
        }
      })(),
    ]);
    assert.equal(received, TOTAL);
    assert.equal(recvHash.digest("hex"), sentHash.digest("hex"));
  });
});

Deno.test("agent tunnel: a stalled reader on one stream does not stall another", async () => {
  await withTunnel(async (session, echo) => {
    // Stream A: tries to write 64 MiB but never reads its echo, so its windows and the
    // socket buffers on the way fill up (well under 64 MiB: buffering is bounded).
    const a = await session.openStream(tcpHeader(echo.port));
    const chunk = new Uint8Array(64 * 1024).fill(0x61);
    let aWritten = 0;
    const aWriter = (async () => {
      try {
        for (let i = 0; i < 1024; i++) {
          await a.write(chunk);
          aWritten += chunk.length;
        }
      } catch {
        // reset at the end of the test
      }
    })();
    // Stream B: a complete 32 MiB echo while A is stuck.
    const data = new Uint8Array(32 * 1024 * 1024);
    for (let off = 0; off < data.length; off += 65536) {
      crypto.getRandomValues(data.subarray(off, off + 65536));
    }
    const back = await echoOnce(session, echo.port, data);
    assert.equal(back.length, data.length);
    assert.equal(
      createHash("sha256").update(back).digest("hex"),
      createHash("sha256").update(data).digest("hex"),
    );
    // A is still blocked (its writer could not finish: nobody reads its echo).
    assert.ok(aWritten < 1024 * chunk.length, `stream A wrote ${aWritten} bytes`);
    a.reset("test done");
    await aWriter;
  });
});

Deno.test("agent tunnel: refused and invalid requests get their status; the session goes on", async () => {
  await withTunnel(async (session, echo) => {
    await assert.rejects(
      session.openStream(tcpHeader(closedPort())),
      (e) => e instanceof StreamRejectedError && e.status === Status.ConnectionRefused,
    );
    const bad = tcpHeader(echo.port);
    bad[21] = 0;
    bad[20] = 0; // port 0
    await assert.rejects(
      session.openStream(bad),
      (e) => e instanceof StreamRejectedError && e.status === Status.BadRequest,
    );
    await assert.rejects(
      session.openStream(new Uint8Array([0, 0, 3])),
      (e) => e instanceof StreamRejectedError && e.status === Status.BadRequest,
    );
    const back = await echoOnce(session, echo.port, ascii("after errors"));
    assert.equal(new TextDecoder().decode(back), "after errors");
  });
});

Deno.test("agent tunnel: UDP flow carries framed datagrams both ways", async () => {
  const udp = startUdpEcho();
  try {
    await withTunnel(async (session) => {
      const s = await session.openStream(
        encodeHeader({
          requestId: crypto.randomUUID(),
          protocol: "udp",
          port: udp.port,
          address: { type: "ipv4", ip: "127.0.0.1" },
        }),
      );
      const dec = new UdpFrameDecoder();
      const got: Uint8Array[] = [];
      for (const d of [ascii("a"), new Uint8Array(9000).fill(1), ascii("ccc")]) {
        await s.write(encodeUdpFrame(d));
        while (got.length === 0) {
          const c = await s.read();
          assert.ok(c !== null, "flow ended early");
          got.push(...dec.push(c));
        }
        assert.deepEqual(got.shift(), d);
      }
      await s.closeWrite();
      assert.equal(await s.read(), null);
      assert.equal(udp.received, 3);
    });
  } finally {
    await udp.close();
  }
});

function ipv6Available(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "agent tunnel: IPv6 destinations ([::1]) for TCP and UDP",
  ignore: !ipv6Available(),
  async fn() {
    const tcp6 = startTcpEcho("::1");
    const udp6 = startUdpEcho("::1");
    try {
      await withTunnel(async (session) => {
        const h = (protocol: "tcp" | "udp", port: number) =>
          encodeHeader({
            requestId: crypto.randomUUID(),
            protocol,
            port,
            address: { type: "ipv6", ip: "0:0:0:0:0:0:0:1" },
          });
        const s = await session.openStream(h("tcp", tcp6.port));
        await s.write(ascii("six"));
        await s.closeWrite();
        assert.equal(new TextDecoder().decode(await drain(s)), "six");

        const u = await session.openStream(h("udp", udp6.port));
        await u.write(encodeUdpFrame(ascii("udp six")));
        const dec = new UdpFrameDecoder();
        const got: Uint8Array[] = [];
        while (got.length === 0) {
          const c = await u.read();
          assert.ok(c !== null, "flow ended early");
          got.push(...dec.push(c));
        }
        assert.equal(new TextDecoder().decode(got[0]), "udp six");
        await u.closeWrite();
        assert.equal(await u.read(), null);
      });
    } finally {
      await tcp6.close();
      await udp6.close();
    }
  },
});

/** Deterministic PRNG (xorshift32) so a failing fuzz run can be replayed from its seed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

Deno.test("agent fuzz: 200 garbage connections leave it serving, an open session untouched", async () => {
  await withTunnel(async (session, echo, agent) => {
    // A stream open across the whole fuzz run.
    const live = await session.openStream(tcpHeader(echo.port));
    const seed = Date.now() & 0xffffffff;
    const next = rng(seed);
    for (let i = 0; i < 200; i++) {
      const len = next() % 400;
      const body = new Uint8Array(len);
      for (let j = 0; j < len; j++) body[j] = next() & 0xff;
      let bytes: Uint8Array;
      switch (i % 4) {
        case 0: // raw mode garbage
          bytes = new Uint8Array([0, ...body]);
          break;
        case 1: // preface, then garbage frames
          bytes = new Uint8Array([...PREFACE, ...body]);
          break;
        case 2: // near-valid header with random fields
          bytes = tcpHeader(echo.port);
          bytes.set(body.subarray(0, Math.min(body.length, 8)), 19);
          break;
        default: // pure noise
          bytes = body;
      }
      const c = await agent.connect();
      try {
        await writeAll(c, bytes).catch(() => {});
        await c.closeWrite().catch(() => {});
        await readAll(c).catch(() => {});
      } finally {
        c.close();
      }
      if (i % 50 === 49) {
        // The live stream still works mid-fuzz.
        await live.write(ascii(`tick ${i}`));
        const want = `tick ${i}`;
        let got = "";
        while (got.length < want.length) {
          const chunk = await live.read();
          assert.ok(chunk, `live stream ended (seed ${seed})`);
          got += new TextDecoder().decode(chunk);
        }
        assert.equal(got, want, `seed ${seed}`);
      }
    }
    await live.closeWrite();
    assert.equal(await live.read(), null);
    // New sessions and raw connections are still served.
    const fresh = await openSession(agent);
    try {
      const back = await echoOnce(fresh, echo.port, ascii("fresh"));
      assert.equal(new TextDecoder().decode(back), "fresh");
    } finally {
      fresh.close();
      await fresh.closed;
    }
    const raw = await agent.connect();
    try {
      await writeAll(raw, tcpHeader(echo.port));
      assert.deepEqual(await readExactly(raw, 1), new Uint8Array([0]));
    } finally {
      raw.close();
    }
  });
});

Deno.test("agent: an open tunnel session keeps it alive past --idle-exit; it exits after", async () => {
  const agent = await startAgentProcess({ args: ["--idle-exit", "300ms"] });
  try {
    const session = await openSession(agent);
    await new Promise((r) => setTimeout(r, 900));
    let exitedEarly = false;
    agent.exited.then(() => exitedEarly = true);
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(exitedEarly, false);
    session.close("done");
    await session.closed;
    assert.equal(await agent.exited, 0);
  } finally {
    await agent.stop();
  }
});

Deno.test("agent: a silent client (preface, then nothing) is declared dead and the agent exits", async () => {
  const agent = await startAgentProcess({
    args: ["--idle-exit", "300ms", "--ping-timeout", "1s", "-v", "1"],
  });
  const conn = await agent.connect();
  try {
    // A crashed client: it opened a tunnel and then neither reads nor answers pings.
    await writeAll(conn, PREFACE);
    const watchdog = setTimeout(() => agent.stop(), 30_000);
    const code = await agent.exited;
    clearTimeout(watchdog);
    assert.equal(code, 0);
    assert.ok(agent.logs.some((l) => /ping timeout/.test(l)), agent.logs.join("\n"));
  } finally {
    conn.close();
    await agent.stop();
  }
});

Deno.test("agent: a live but quiet session is kept (it answers pings) past --ping-timeout", async () => {
  const agent = await startAgentProcess({
    args: ["--idle-exit", "200ms", "--ping-timeout", "600ms"],
  });
  try {
    const echo = startTcpEcho();
    const session = await openSession(agent);
    try {
      await new Promise((r) => setTimeout(r, 1500)); // > 2 ping timeouts with no stream traffic
      const back = await echoOnce(session, echo.port, ascii("still alive"));
      assert.equal(new TextDecoder().decode(back), "still alive");
    } finally {
      session.close("done");
      await session.closed;
      await echo.close();
    }
    assert.equal(await agent.exited, 0);
  } finally {
    await agent.stop();
  }
});

Deno.test("agent: connections that never send anything (TCP probes) do not keep it alive", async () => {
  const agent = await startAgentProcess({ args: ["--idle-exit", "500ms"] });
  let exited = false;
  agent.exited.then(() => exited = true);
  try {
    // Probe like a kubelet tcpSocket check, much more often than the idle period, for at most 60 s.
    for (let i = 0; i < 600 && !exited; i++) {
      try {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: agent.port });
        c.close();
      } catch {
        // the agent just exited
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(exited, true, "the agent kept running while only probed");
    assert.equal(await agent.exited, 0);
  } finally {
    await agent.stop();
  }
});
