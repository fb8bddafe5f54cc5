/**
 * The proxy over the real tunnel Session (src/mux/session.ts): streams,
 * flow control, half-close and `StreamRejectedError` statuses as the client
 * will see them from the agent. The agent side is the loopback-only fake.
 */

import assert from "node:assert/strict";
import { StreamRejectedError } from "../mux/mod.ts";
import { Status } from "../protocol/status.ts";
import { encodeHeader } from "../protocol/header.ts";
import {
  assertEchoed,
  curl,
  httpExchange,
  patternBytes,
  receiveOrFail,
  type SessionAgent,
  sessionAgent,
  sha256Hex,
  socksExchange,
  startEchoServer,
  startHttpServer,
  startUdpResponder,
  withWatchedProxy,
} from "../../tests/_lib/socks.ts";
import { readExactly, writeAll } from "../../tests/_lib/net.ts";

const WEB = "web.default.svc.cluster.local";

async function withTunnelProxy(
  fn: (port: number, agent: SessionAgent, logs: string[]) => Promise<void>,
  hosts: Record<string, string> = {},
): Promise<void> {
  const agent = sessionAgent({ [WEB]: "127.0.0.1", ...hosts });
  try {
    await withWatchedProxy(
      { openStream: agent.openStream },
      60_000,
      () => void agent.close(),
      (proxy, logs) => fn(proxy.addr.port, agent, logs),
    );
  } finally {
    await agent.close();
  }
}

Deno.test("proxy over Session: the fake agent's rejection is a StreamRejectedError", async () => {
  const agent = sessionAgent();
  try {
    const header = encodeHeader({
      requestId: crypto.randomUUID(),
      protocol: "tcp",
      port: 80,
      address: { type: "hostname", name: "nosuch.test" },
    });
    await assert.rejects(
      agent.openStream(header),
      (e) => e instanceof StreamRejectedError && e.status === Status.NoSuchHost,
    );
  } finally {
    await agent.close();
  }
});

Deno.test("proxy over Session: curl by cluster name via SOCKS5 and via CONNECT (SHA-256)", async () => {
  const { port: http, server } = startHttpServer();
  try {
    await withTunnelProxy(async (port, _agent, logs) => {
      const size = 5_000_000;
      const want = await sha256Hex(patternBytes(size));
      const a = await curl([
        "--socks5-hostname",
        `127.0.0.1:${port}`,
        `http://${WEB}:${http}/size/${size}`,
      ]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(await sha256Hex(a.stdout), want);
      const b = await curl([
        "-p",
        "-x",
        `http://127.0.0.1:${port}`,
        `http://${WEB}:${http}/size/${size}`,
      ]);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(await sha256Hex(b.stdout), want);
      assert.equal(logs.filter((l) => l === `Handling connection for ${WEB}:${http}`).length, 2);
    });
  } finally {
    await server.shutdown();
  }
});

Deno.test("proxy over Session: half-close and 8 MiB echo through the tunnel (SHA-256)", async () => {
  const echo = startEchoServer();
  try {
    await withTunnelProxy(async (port) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const name = new TextEncoder().encode("echo.test");
      await writeAll(
        conn,
        new Uint8Array([
          5,
          1,
          0,
          5,
          1,
          0,
          3,
          name.length,
          ...name,
          echo.port >> 8,
          echo.port & 0xff,
        ]),
      );
      assert.deepEqual(
        await readExactly(conn, 12),
        new Uint8Array([5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
      );
      const data = patternBytes(8 * 1024 * 1024);
      await assertEchoed(conn, data);
      conn.close();
    }, { "echo.test": "127.0.0.1" });
  } finally {
    await echo.close();
  }
});

Deno.test("proxy over Session: statuses map to SOCKS replies and HTTP 502", async () => {
  await withTunnelProxy(async (port, _agent, logs) => {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const refused = (l.addr as Deno.NetAddr).port;
    l.close();
    const name = new TextEncoder().encode("nosuch.test");
    assert.deepEqual(
      await socksExchange(port, [5, 1, 0, 3, name.length, ...name, 0, 80]),
      new Uint8Array([5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0]),
    );
    assert.deepEqual(
      await socksExchange(port, [5, 1, 0, 1, 127, 0, 0, 1, refused >> 8, refused & 0xff]),
      new Uint8Array([5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
    );
    assert.ok(logs.includes("error: dial tcp nosuch.test:80: no such host"), logs.join("\n"));
    assert.ok(
      logs.includes(`error: dial tcp 127.0.0.1:${refused}: connection refused`),
      logs.join("\n"),
    );
    const r = await curl(["-p", "-x", `http://127.0.0.1:${port}`, "http://nosuch.test/"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /502/);
  });
});

Deno.test("proxy over Session: UDP ASSOCIATE exchange travels as UDP streams", async () => {
  const dns = startUdpResponder();
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    await withTunnelProxy(async (port, agent) => {
      const ctl = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(ctl, new Uint8Array([5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]));
      const reply = await readExactly(ctl, 12);
      assert.deepEqual(reply.subarray(0, 10), new Uint8Array([5, 0, 5, 0, 0, 1, 127, 0, 0, 1]));
      const relay: Deno.NetAddr = {
        transport: "udp",
        hostname: "127.0.0.1",
        port: (reply[10] << 8) | reply[11],
      };
      const name = new TextEncoder().encode("kube-dns.test");
      const head = [0, 0, 0, 3, name.length, ...name, dns.port >> 8, dns.port & 0xff];
      for (let id = 1; id <= 3; id++) {
        const query = [0, id, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 119, 101, 98, 0, 0, 1, 0, 1];
        await sock.send(new Uint8Array([...head, ...query]), relay);
        const got = await receiveOrFail(sock);
        const answer = query.slice();
        answer[2] |= 0x80;
        assert.deepEqual(got, new Uint8Array([...head, ...answer]));
      }
      assert.deepEqual(agent.inner.opened, [
        { protocol: "udp", destination: `kube-dns.test:${dns.port}`, outcome: "ok" },
      ]);
      ctl.close();
    }, { "kube-dns.test": "127.0.0.1" });
  } finally {
    sock.close();
    await dns.close();
  }
});

Deno.test("proxy over Session: 64 concurrent SOCKS connections each echo their own data", async () => {
  const echo = startEchoServer();
  try {
    await withTunnelProxy(async (port, agent) => {
      const one = async (i: number) => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        try {
          await writeAll(
            conn,
            new Uint8Array([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, echo.port >> 8, echo.port & 0xff]),
          );
          assert.deepEqual(
            await readExactly(conn, 12),
            new Uint8Array([5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
          );
          const data = patternBytes(64 * 1024 + i).subarray(i);
          await assertEchoed(conn, data, `conn ${i}`);
        } finally {
          conn.close();
        }
      };
      await Promise.all(Array.from({ length: 64 }, (_, i) => one(i)));
      assert.equal(agent.inner.opened.length, 64);
    });
  } finally {
    await echo.close();
  }
});

Deno.test("proxy over Session: a dead tunnel answers 0x01 / 502 and the proxy keeps serving", async () => {
  await withTunnelProxy(async (port, agent, logs) => {
    await agent.close(); // the tunnel is gone: openStream rejects with SessionClosedError
    assert.deepEqual(
      await socksExchange(port, [5, 1, 0, 1, 127, 0, 0, 1, 0, 80]),
      new Uint8Array([5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0]),
    );
    assert.ok(
      logs.some((l) => /^error: dial tcp 127\.0\.0\.1:80: .*session closed/.test(l)),
      logs.join("\n"),
    );
    const text = await httpExchange(port, "CONNECT web:80 HTTP/1.1\r\n\r\n");
    assert.ok(text.startsWith("HTTP/1.1 502 Bad Gateway\r\n"), text);
  });
});

Deno.test("proxy over Session: a client that stops reading does not stall another", async () => {
  // A server that pushes up to 64 MiB to whoever connects (bounded), until the peer goes away.
  const flood = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const floodPort = (flood.addr as Deno.NetAddr).port;
  const flooding = (async () => {
    const c = await flood.accept();
    const chunk = patternBytes(64 * 1024);
    try {
      for (let i = 0; i < 1024; i++) await writeAll(c, chunk);
    } catch { /* the peer went away */ }
    c.close();
  })();
  const echo = startEchoServer();
  try {
    await withTunnelProxy(async (port) => {
      const stalled = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(
        stalled,
        new Uint8Array([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, floodPort >> 8, floodPort & 0xff]),
      );
      assert.deepEqual(
        await readExactly(stalled, 12),
        new Uint8Array([5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
      );
      // `stalled` now never reads; the flood fills its stream's window and the buffers.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(
        conn,
        new Uint8Array([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, echo.port >> 8, echo.port & 0xff]),
      );
      assert.deepEqual(
        await readExactly(conn, 12),
        new Uint8Array([5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
      );
      const data = patternBytes(4 * 1024 * 1024);
      await assertEchoed(conn, data);
      conn.close();
      stalled.close();
    });
  } finally {
    await flooding;
    flood.close();
    await echo.close();
  }
});
