/**
 * The agent as a real process: the Token block (PROTOCOL.md §0), the health port, and failed
 * starts. Connections without the right token are closed before anything is dialed, with one log
 * line each, while a good client keeps being served.
 */

import assert from "node:assert/strict";
import { AUTH_LENGTH, encodeAuth } from "../../src/protocol/auth.ts";
import { encodeHeader } from "../../src/protocol/header.ts";
import { encodeFrame, PREFACE } from "../../src/protocol/mux.ts";
import { Session } from "../../src/mux/mod.ts";
import { connTransport } from "../../src/mux/mod.ts";
import {
  AgentExitedError,
  type AgentProcess,
  randomToken,
  startAgentProcess,
} from "../_lib/agent.ts";
import { startTcpEcho, type TcpEcho } from "../_lib/echo.ts";
import { readExactly, writeAll } from "../_lib/net.ts";

const ascii = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const cat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
};

function tcpHeader(port: number): Uint8Array {
  return encodeHeader({
    requestId: crypto.randomUUID(),
    protocol: "tcp",
    port,
    address: { type: "ipv4", ip: "127.0.0.1" },
  });
}

/** An OPEN frame for stream 1 (window 256 KiB) carrying `header`. */
function openFrame(header: Uint8Array): Uint8Array {
  return encodeFrame({ type: "open", streamId: 1, window: 256 * 1024, header });
}

/**
 * Reads until the agent closes the connection; returns what arrived (a close with unread input
 * may come as a reset, which also counts as closed).
 */
async function readUntilClosed(conn: Deno.Conn): Promise<Uint8Array> {
  const got: number[] = [];
  const buf = new Uint8Array(4096);
  try {
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      got.push(...buf.subarray(0, n));
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.ConnectionReset)) throw e;
  }
  return new Uint8Array(got);
}

/** Echo over a stream of `session`. */
async function echoOnce(session: Session, port: number, msg: string): Promise<string> {
  const s = await session.openStream(tcpHeader(port));
  await s.write(ascii(msg));
  await s.closeWrite();
  let out = "";
  for (let c = await s.read(); c !== null; c = await s.read()) out += text(c);
  return out;
}

/** Runs `fn` with an agent (watchdog: a hang stops the agent, which ends every read). */
async function withAgent(
  args: string[],
  fn: (agent: AgentProcess, echo: TcpEcho) => Promise<void>,
): Promise<void> {
  const echo = startTcpEcho();
  const agent = await startAgentProcess({ args });
  let hung = false;
  const watchdog = setTimeout(() => {
    hung = true;
    agent.stop();
  }, 60_000);
  try {
    await fn(agent, echo);
  } finally {
    clearTimeout(watchdog);
    await agent.stop();
    await echo.close();
  }
  assert.equal(hung, false, "test hung for 60 s");
  const bad = agent.logs.filter((l) => /unhandled rejection|internal error/.test(l));
  assert.deepEqual(bad, [], "the agent logged no internal errors");
}

Deno.test("agent auth: no token, wrong and truncated tokens are refused without a dial; the good client is served throughout", async () => {
  await withAgent([], async (agent, echo) => {
    const good = new Session(connTransport(await agent.connect()), { role: "client" });
    try {
      assert.equal(await echoOnce(good, echo.port, "before"), "before");
      let dials = echo.accepted;
      assert.equal(dials, 1);

      const block = encodeAuth(agent.token);
      const flipped = agent.token.slice();
      flipped[17] ^= 0x01;
      const cases: { name: string; bytes: Uint8Array; closeWrite: boolean; log: RegExp }[] = [
        {
          // Sent without closing: the agent must refuse at the first byte, not wait for 40.
          name: "no token: a bare raw Header and payload",
          bytes: cat(tcpHeader(echo.port), ascii("hello")),
          closeWrite: false,
          log: /no token \(a raw-mode Header came first\), closing$/,
        },
        {
          name: "no token: a bare PREFACE and an OPEN",
          bytes: cat(PREFACE, openFrame(tcpHeader(echo.port))),
          closeWrite: false,
          log: /no token \(the tunnel preface came first\), closing$/,
        },
        {
          name: "no token: text",
          bytes: ascii("GET / HTTP/1.1\r\nHost: agent\r\n\r\n"),
          closeWrite: false,
          log: /no token, closing$/,
        },
        {
          name: "wrong token (random) and a Header",
          bytes: cat(encodeAuth(randomToken()), tcpHeader(echo.port)),
          closeWrite: false,
          log: /wrong token, closing$/,
        },
        {
          name: "wrong token (one bit off) and a PREFACE and OPEN",
          bytes: cat(encodeAuth(flipped), PREFACE, openFrame(tcpHeader(echo.port))),
          closeWrite: false,
          log: /wrong token, closing$/,
        },
        {
          name: "truncated token, then the pipe ends",
          bytes: block.subarray(0, 20),
          closeWrite: true,
          log: /incomplete token \(20 of 40 bytes\), closing$/,
        },
        {
          name: "the magic alone, then the pipe ends",
          bytes: block.subarray(0, 8),
          closeWrite: true,
          log: /incomplete token \(8 of 40 bytes\), closing$/,
        },
        {
          // The Header's bytes fill up the block: they are judged as token bytes, never as a Header.
          name: "truncated token followed by a Header",
          bytes: cat(block.subarray(0, 24), tcpHeader(echo.port)),
          closeWrite: false,
          log: /wrong token, closing$/,
        },
      ];
      for (const c of cases) {
        const before = agent.logs.length;
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: agent.port });
        try {
          await writeAll(conn, c.bytes);
          if (c.closeWrite) await conn.closeWrite();
          assert.deepEqual(await readUntilClosed(conn), new Uint8Array(0), `${c.name}: no answer`);
        } finally {
          conn.close();
        }
        // The good session still works, and only its own stream reached the destination.
        assert.equal(await echoOnce(good, echo.port, c.name), c.name);
        dials++;
        assert.equal(echo.accepted, dials, `${c.name}: nothing was dialed for it`);
        // One line about it (the others are the good stream's).
        const all = agent.logs.slice(before);
        const lines = all.filter((l) => / - connection /.test(l));
        assert.equal(lines.length, 1, `${c.name}: one log line:\n${all.join("\n")}`);
        assert.match(lines[0], /- connection 127\.0\.0\.1:\d+: /);
        assert.match(lines[0], c.log, c.name);
      }

      // The right token: raw mode and a second tunnel session both work, byte-exact after it.
      const raw = await Deno.connect({ hostname: "127.0.0.1", port: agent.port });
      try {
        await writeAll(raw, cat(block, tcpHeader(echo.port), ascii("raw ok")));
        assert.deepEqual(await readExactly(raw, 1), new Uint8Array([0]));
        assert.equal(text(await readExactly(raw, 6)), "raw ok");
      } finally {
        raw.close();
      }
      const second = new Session(connTransport(await agent.connect()), { role: "client" });
      try {
        assert.equal(await echoOnce(second, echo.port, "second"), "second");
      } finally {
        second.close("done");
        await second.closed;
      }
      assert.equal(await echoOnce(good, echo.port, "after"), "after");
    } finally {
      good.close("done");
      await good.closed;
    }
    // The token never appears in the agent's log.
    const hex = [...agent.token].map((b) => b.toString(16).padStart(2, "0")).join("");
    assert.ok(!agent.logs.some((l) => l.includes(hex)));
    assert.equal(AUTH_LENGTH, 40);
  });
});

Deno.test("agent auth: 200 unauthenticated connections of noise leave a live stream untouched", async () => {
  await withAgent([], async (agent, echo) => {
    const good = new Session(connTransport(await agent.connect()), { role: "client" });
    try {
      const live = await good.openStream(tcpHeader(echo.port));
      let seed = 12345;
      const next = () => (seed = (seed * 1103515245 + 12345) >>> 0);
      for (let i = 0; i < 200; i++) {
        const body = new Uint8Array(next() % 120);
        for (let j = 0; j < body.length; j++) body[j] = next() & 0xff;
        // Half of them start like a Token block, so the magic check and the token check both run.
        const bytes = i % 2 ? cat(encodeAuth(agent.token).subarray(0, 8), body) : body;
        const c = await Deno.connect({ hostname: "127.0.0.1", port: agent.port });
        try {
          await writeAll(c, bytes).catch(() => {});
          await c.closeWrite().catch(() => {});
          assert.deepEqual(await readUntilClosed(c), new Uint8Array(0));
        } finally {
          c.close();
        }
        if (i % 50 === 49) {
          await live.write(ascii(`tick ${i}`));
          assert.equal(text(await readN(live, `tick ${i}`.length)), `tick ${i}`);
        }
      }
      await live.closeWrite();
      assert.equal(await live.read(), null);
      assert.equal(echo.accepted, 1, "only the live stream was dialed");
    } finally {
      good.close("done");
      await good.closed;
    }
  });
});

async function readN(s: { read(): Promise<Uint8Array | null> }, n: number): Promise<Uint8Array> {
  const parts: number[] = [];
  while (parts.length < n) {
    const c = await s.read();
    assert.ok(c, "stream ended early");
    parts.push(...c);
  }
  return new Uint8Array(parts);
}

Deno.test("agent: refuses to start without a token, or with a malformed one: one line, exit 2", async () => {
  for (
    const [env, want] of [
      [null, /^error: KUBECTL_RELAY_TOKEN is not set: /],
      ["", /^error: KUBECTL_RELAY_TOKEN is not 64 hexadecimal digits: /],
      ["abc123", /^error: KUBECTL_RELAY_TOKEN is not 64 hexadecimal digits: /],
      ["0".repeat(63) + "x", /^error: KUBECTL_RELAY_TOKEN is not 64 hexadecimal digits: /],
    ] as const
  ) {
    const e = await startAgentProcess({ tokenEnv: env }).then(
      (a) => a.stop().then(() => assert.fail(`started with token ${JSON.stringify(env)}`)),
      (e) => e,
    );
    assert.ok(e instanceof AgentExitedError, String(e));
    assert.equal(e.code, 2);
    assert.equal(e.logs.length, 1, e.logs.join("\n"));
    assert.match(e.logs[0], want);
  }
});

Deno.test("agent: a taken port is a failed start: one line, exit 1 (tunnel and health port)", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  try {
    for (
      const [args, want] of [
        [["--listen", `127.0.0.1:${port}`], `127.0.0.1:${port} (tunnel)`],
        [["--health", `127.0.0.1:${port}`], `127.0.0.1:${port} (health)`],
      ] as const
    ) {
      const e = await startAgentProcess({ args: [...args] }).then(
        (a) => a.stop().then(() => assert.fail(`started on a taken port: ${args.join(" ")}`)),
        (e) => e,
      );
      assert.ok(e instanceof AgentExitedError, String(e));
      assert.equal(e.code, 1);
      assert.equal(e.logs.length, 1, e.logs.join("\n"));
      assert.equal(
        e.logs[0],
        `error: cannot listen on ${want}: Address already in use (os error 98)`,
      );
    }
  } finally {
    taken.close();
  }
});

Deno.test("agent: the health port accepts and closes, carries nothing, and does not keep it alive", async () => {
  const echo = startTcpEcho();
  const agent = await startAgentProcess({ args: ["--health", "127.0.0.1:0", "--idle-exit", "1s"] });
  let exited = false;
  agent.exited.then(() => exited = true);
  try {
    // The line goes to stderr before `listening on` goes to stdout; let stderr catch up.
    let line: string | undefined;
    for (let i = 0; i < 100 && !line; i++) {
      line = agent.logs.find((l) => / health port on /.test(l));
      if (!line) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(line, agent.logs.join("\n"));
    const healthPort = Number(/:(\d+)$/.exec(line)![1]);
    assert.notEqual(healthPort, agent.port);
    // Even the right token and a Header get no answer there: it only accepts and closes.
    const c = await Deno.connect({ hostname: "127.0.0.1", port: healthPort });
    try {
      await writeAll(c, cat(encodeAuth(agent.token), tcpHeader(echo.port))).catch(() => {});
      assert.deepEqual(await readUntilClosed(c), new Uint8Array(0));
    } finally {
      c.close();
    }
    assert.equal(echo.accepted, 0);
    // Probed like a kubelet readiness probe, more often than the idle period, for at most 60 s.
    for (let i = 0; i < 600 && !exited; i++) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port: healthPort })).close();
      } catch {
        // the agent just exited
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(exited, true, "the agent kept running while only probed");
    assert.equal(await agent.exited, 0);
  } finally {
    await agent.stop();
    await echo.close();
  }
});
