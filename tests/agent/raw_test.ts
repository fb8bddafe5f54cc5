/**
 * The agent as a real process, raw mode (first byte after the Token block 0): hand-built Header
 * bytes, status byte, then raw TCP bytes or UDP frames, against echo servers on 127.0.0.1.
 */

import assert from "node:assert/strict";
import { startAgentProcess } from "../_lib/agent.ts";
import { startTcpEcho, startUdpEcho } from "../_lib/echo.ts";
import { closedPort, readAll, readExactly, writeAll } from "../_lib/net.ts";
import { encodeAuth } from "../../src/protocol/auth.ts";
import { Status } from "../../src/protocol/status.ts";

const ID_HEX = "0123456789abcdeffedcba9876543210";
const ID_TEXT = "01234567-89ab-cdef-fedc-ba9876543210";

const unhex = (s: string) => {
  const clean = s.replace(/\s+/g, "");
  return new Uint8Array(clean.match(/../g)!.map((h) => parseInt(h, 16)));
};
const p16 = (n: number) => n.toString(16).padStart(4, "0");
const ascii = (s: string) => new TextEncoder().encode(s);
const cat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
};

/** Hand-built header: TCP (proto 0) or UDP (1) to 127.0.0.1:port. */
const ipv4Header = (proto: 0 | 1, port: number) =>
  unhex(`00 001b ${ID_HEX} 0${proto} ${p16(port)} 00 7f000001`);
/** Hand-built header to a hostname. */
const hostHeader = (proto: 0 | 1, port: number, name: string) =>
  cat(unhex(`00 ${p16(23 + name.length)} ${ID_HEX} 0${proto} ${p16(port)} 01`), ascii(name));

/** Tokens of the agents started by {@link withAgent}, by port. */
const tokens = new Map<number, Uint8Array>();

async function withAgent(
  args: string[],
  fn: (agentPort: number, logs: string[]) => Promise<void>,
): Promise<void> {
  const agent = await startAgentProcess({ args });
  tokens.set(agent.port, agent.token);
  // Watchdog: a hang fails the test instead of blocking the run (killing the agent ends reads).
  let hung = false;
  const watchdog = setTimeout(() => {
    hung = true;
    agent.stop();
  }, 60_000);
  try {
    await fn(agent.port, agent.logs);
  } finally {
    clearTimeout(watchdog);
    await agent.stop();
  }
  assert.equal(hung, false, "test hung for 60 s");
  const bad = agent.logs.filter((l) => /unhandled rejection|internal error/.test(l));
  assert.deepEqual(bad, [], "the agent logged no internal errors");
}

/** Connects to the agent on `port` and presents its token (every agent's is registered here). */
async function connect(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, encodeAuth(tokens.get(port)!));
  return conn;
}

Deno.test("agent raw TCP: status 0, echo, half-close both ways", async () => {
  const echo = startTcpEcho();
  try {
    await withAgent([], async (port, logs) => {
      const conn = await connect(port);
      try {
        // Header and the first payload bytes in one write: the agent must not eat payload.
        await writeAll(conn, cat(ipv4Header(0, echo.port), ascii("hello ")));
        assert.deepEqual(await readExactly(conn, 1), new Uint8Array([0]));
        await writeAll(conn, ascii("world"));
        await conn.closeWrite();
        assert.equal(new TextDecoder().decode(await readAll(conn)), "hello world");
      } finally {
        conn.close();
      }
      assert.equal(echo.eofs, 1, "the echo server saw the client's half-close");
      assert.ok(logs.some((l) => l.includes(ID_TEXT)), "log lines carry the request id");
    });
  } finally {
    await echo.close();
  }
});

Deno.test("agent raw TCP: refused destination → status 4 (connection refused), then EOF", async () => {
  await withAgent([], async (port) => {
    const conn = await connect(port);
    try {
      await writeAll(conn, ipv4Header(0, closedPort()));
      assert.deepEqual(await readAll(conn), new Uint8Array([4]));
    } finally {
      conn.close();
    }
  });
});

Deno.test("agent raw: invalid headers → status 1 (bad request); the agent keeps serving", async () => {
  const echo = startTcpEcho();
  try {
    await withAgent([], async (port) => {
      const bad = [
        unhex(`00 001b ${ID_HEX} 00 0000 00 7f000001`), // port 0
        unhex(`00 001b ${ID_HEX} 02 0050 00 7f000001`), // protocol 2
        unhex(`00 001b ${ID_HEX} 00 0050 07 7f000001`), // address type 7
        unhex(`00 001a ${ID_HEX} 00 0050 00 7f0000`), // IP of 3 bytes
        unhex(`00 0010 ${ID_HEX}`), // length 16 < 23
        unhex(`00 ffff ${ID_HEX}`), // length over the cap
        cat(unhex(`00 001b ${ID_HEX} 00 0050 01`), ascii("a b.")), // invalid DNS name
      ];
      for (const b of bad) {
        const conn = await connect(port);
        try {
          await writeAll(conn, b);
          assert.deepEqual(await readAll(conn), new Uint8Array([1]));
        } finally {
          conn.close();
        }
      }
      const conn = await connect(port);
      try {
        await writeAll(conn, cat(ipv4Header(0, echo.port), ascii("still here")));
        await conn.closeWrite();
        assert.equal(new TextDecoder().decode(await readAll(conn)), "\0still here");
      } finally {
        conn.close();
      }
    });
  } finally {
    await echo.close();
  }
});

Deno.test("agent raw TCP: hostname from /etc/hosts (localhost)", async () => {
  const echo = startTcpEcho();
  try {
    await withAgent([], async (port) => {
      const conn = await connect(port);
      try {
        await writeAll(conn, cat(hostHeader(0, echo.port, "localhost"), ascii("by name")));
        await conn.closeWrite();
        assert.equal(new TextDecoder().decode(await readAll(conn)), "\0by name");
      } finally {
        conn.close();
      }
    });
  } finally {
    await echo.close();
  }
});

Deno.test("agent raw UDP: framed datagrams keep their boundaries both ways", async () => {
  const echo = startUdpEcho();
  try {
    await withAgent([], async (port) => {
      const conn = await connect(port);
      try {
        const datagrams = [ascii("one"), new Uint8Array(1200).fill(7), ascii("three")];
        const frames = datagrams.map((d) =>
          cat(new Uint8Array([d.length >> 8, d.length & 255]), d)
        );
        await writeAll(conn, cat(ipv4Header(1, echo.port), frames[0]));
        assert.deepEqual(await readExactly(conn, 1), new Uint8Array([0]));
        // Replies are awaited one by one: UDP may reorder nothing on loopback, but pacing
        // keeps the test independent of socket buffer sizes.
        assert.deepEqual(await readExactly(conn, frames[0].length), frames[0]);
        for (const f of frames.slice(1)) {
          await writeAll(conn, f);
          assert.deepEqual(await readExactly(conn, f.length), f);
        }
        // Client half-close ends the flow: the agent closes its side.
        await conn.closeWrite();
        assert.deepEqual(await readAll(conn), new Uint8Array(0));
      } finally {
        conn.close();
      }
      assert.equal(echo.received, 3);
    });
  } finally {
    await echo.close();
  }
});

Deno.test("agent raw UDP: an idle flow expires (--udp-idle) and the connection ends", async () => {
  const echo = startUdpEcho();
  try {
    await withAgent(["--udp-idle", "300ms"], async (port, logs) => {
      const conn = await connect(port);
      try {
        await writeAll(conn, cat(ipv4Header(1, echo.port), unhex("0002 6869")));
        assert.deepEqual(await readExactly(conn, 5), unhex("00 0002 6869"));
        // No more traffic: the agent must end the flow by itself.
        assert.deepEqual(await readAll(conn), new Uint8Array(0));
      } finally {
        conn.close();
      }
      assert.ok(logs.some((l) => l.includes(ID_TEXT) && l.includes("idle")), logs.join("\n"));
    });
  } finally {
    await echo.close();
  }
});

Deno.test("agent: exits by itself after --idle-exit with no session and no stream", async () => {
  const agent = await startAgentProcess({ args: ["--idle-exit", "500ms"] });
  try {
    assert.equal(await agent.exited, 0);
    assert.ok(agent.logs.some((l) => l.includes("idle")), agent.logs.join("\n"));
  } finally {
    await agent.stop();
  }
});

Deno.test("agent: an open raw stream keeps it alive past --idle-exit", async () => {
  const echo = startTcpEcho();
  const agent = await startAgentProcess({ args: ["--idle-exit", "300ms"] });
  try {
    const conn = await agent.connect();
    try {
      await writeAll(conn, ipv4Header(0, echo.port));
      assert.deepEqual(await readExactly(conn, 1), new Uint8Array([0]));
      // Several idle periods with the stream open; then it must still relay.
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 300));
        await writeAll(conn, ascii("ping"));
        assert.equal(new TextDecoder().decode(await readExactly(conn, 4)), "ping");
      }
      await conn.closeWrite();
      await readAll(conn);
    } finally {
      conn.close();
    }
    // Now idle: it exits.
    assert.equal(await agent.exited, 0);
  } finally {
    await agent.stop();
    await echo.close();
  }
});

Deno.test("agent: bad command line exits 2 with an error", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-net",
      new URL("../../agent.ts", import.meta.url).pathname,
      "--nope",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /error: unknown flag/);
});

Deno.test("agent raw UDP: datagrams from other sources than the destination are dropped", async () => {
  // The destination answers from its own socket; a second socket "spoofs" a reply first.
  const server = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const other = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const serverPort = (server.addr as Deno.NetAddr).port;
  const serving = (async () => {
    const [, from] = await server.receive();
    await other.send(ascii("spoof"), from);
    await server.send(ascii("real"), from);
  })();
  try {
    await withAgent([], async (port) => {
      const conn = await connect(port);
      try {
        await writeAll(conn, cat(ipv4Header(1, serverPort), unhex("0001 78")));
        assert.deepEqual(await readExactly(conn, 1), new Uint8Array([0]));
        assert.deepEqual(await readExactly(conn, 6), cat(unhex("0004"), ascii("real")));
        await conn.closeWrite();
        assert.deepEqual(await readAll(conn), new Uint8Array(0), "nothing else arrived");
      } finally {
        conn.close();
      }
    });
    await serving;
  } finally {
    server.close();
    other.close();
  }
});

Deno.test("agent raw: the status arrives even when payload followed a refused header", async () => {
  await withAgent([], async (port) => {
    for (
      const header of [ipv4Header(0, closedPort()), unhex(`00 001b ${ID_HEX} 00 0000 00 7f000001`)]
    ) {
      const conn = await connect(port);
      try {
        // Payload the agent will never read: closing with unread data must not destroy the status.
        await writeAll(conn, cat(header, new Uint8Array(256 * 1024)));
        const first = await readExactly(conn, 1);
        assert.ok(first[0] === Status.ConnectionRefused || first[0] === Status.BadRequest);
        assert.deepEqual(await readAll(conn), new Uint8Array(0));
      } finally {
        conn.close();
      }
    }
  });
});

Deno.test("agent raw UDP: an unsendable datagram (65,535 bytes over IPv4) is dropped, the flow goes on", async () => {
  const echo = startUdpEcho();
  try {
    await withAgent([], async (port) => {
      const conn = await connect(port);
      try {
        await writeAll(conn, ipv4Header(1, echo.port));
        assert.deepEqual(await readExactly(conn, 1), new Uint8Array([0]));
        const huge = cat(unhex("ffff"), new Uint8Array(65535)); // > 65,507: IPv4 cannot carry it
        await writeAll(conn, cat(huge, unhex("0002 6f6b")));
        assert.deepEqual(await readExactly(conn, 4), unhex("0002 6f6b"));
        await conn.closeWrite();
        assert.deepEqual(await readAll(conn), new Uint8Array(0));
      } finally {
        conn.close();
      }
    });
  } finally {
    await echo.close();
  }
});
