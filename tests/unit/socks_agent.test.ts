/**
 * The proxy against the real agent process (agent.ts) over a real tunnel
 * Session on loopback. The agent runs in a private mount namespace whose
 * /etc/resolv.conf names only a fake DNS server on a loopback address with a
 * search domain (like cluster DNS), so names are resolved "in the cluster"
 * and no query leaves the machine. Every destination is on 127.0.0.0/8.
 * Skipped where `unshare --mount` is unavailable (not root).
 */

import assert from "node:assert/strict";
import type { ProxyServer } from "../../src/proxy/server.ts";
import { Session } from "../../src/mux/mod.ts";
import { connTransport } from "../../src/mux/mod.ts";
import { type AgentProcess, canUnshareMount, startAgentProcess } from "../_lib/agent.ts";
import { type FakeDns, startFakeDns } from "../_lib/dns.ts";
import { closedPort, randomLoopback } from "../_lib/net.ts";
import {
  assertEchoed,
  curl,
  httpExchange,
  patternBytes,
  readN,
  receiveOrFail,
  sha256Hex,
  socksExchange,
  startEchoServer,
  startHttpServer,
  withWatchedProxy,
  writeFull,
} from "./socks_fake.ts";

const canUnshare = await canUnshareMount();

interface Env {
  proxy: ProxyServer;
  agent: AgentProcess;
  dns: FakeDns;
  logs: string[];
  http: number;
  echo: number;
}

async function withAgentProxy(fn: (e: Env) => Promise<void>): Promise<void> {
  const dnsAddr = randomLoopback();
  const dns = startFakeDns(dnsAddr, {
    "web.relay.test": "127.0.0.1",
    "echo.relay.test": "127.0.0.1",
  });
  const { port: http, server } = startHttpServer();
  const echo = startEchoServer();
  const agent = await startAgentProcess({
    resolvConf: `nameserver ${dnsAddr}\nsearch relay.test\noptions ndots:1 timeout:1 attempts:1\n`,
  });
  const conn = await agent.connect();
  const session = new Session(connTransport(conn), { role: "client" });
  try {
    await withWatchedProxy(
      { openStream: (h) => session.openStream(h) },
      90_000,
      () => session.close("watchdog"),
      (proxy, logs) => fn({ proxy, agent, dns, logs, http, echo: echo.port }),
    );
  } finally {
    session.close("test done");
    await session.closed;
    await agent.stop();
    await echo.close();
    await server.shutdown();
    await dns.close();
  }
  const bad = agent.logs.filter((l) => /unhandled rejection|internal error/i.test(l));
  assert.deepEqual(bad, [], "the agent logged no internal errors");
}

Deno.test({
  name: "proxy + agent: curl --socks5-hostname by short name (search domain), SHA-256",
  ignore: !canUnshare,
  async fn() {
    await withAgentProxy(async ({ proxy, logs, http, dns }) => {
      const size = 4_000_000;
      const r = await curl([
        "--socks5-hostname",
        `127.0.0.1:${proxy.addr.port}`,
        `http://web:${http}/size/${size}`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await sha256Hex(r.stdout), await sha256Hex(patternBytes(size)));
      assert.ok(logs.includes(`Handling connection for web:${http}`), logs.join("\n"));
      // The agent resolved it, through its resolver (not ours).
      assert.ok(dns.queries.includes("web.relay.test"), dns.queries.join(","));
    });
  },
});

Deno.test({
  name: "proxy + agent: HTTP CONNECT and absolute-form HTTP by full name",
  ignore: !canUnshare,
  async fn() {
    await withAgentProxy(async ({ proxy, http }) => {
      const p = `http://127.0.0.1:${proxy.addr.port}`;
      const a = await curl(["-p", "-x", p, `http://web.relay.test:${http}/`]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(new TextDecoder().decode(a.stdout), `hello via web.relay.test:${http}\n`);
      const b = await curl(["-x", p, `http://web.relay.test:${http}/`]);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(new TextDecoder().decode(b.stdout), `hello via web.relay.test:${http}\n`);
    });
  },
});

Deno.test({
  name: "proxy + agent: half-close through the agent (echo 4 MiB + EOF trailer)",
  ignore: !canUnshare,
  async fn() {
    await withAgentProxy(async ({ proxy, echo }) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.addr.port });
      await writeFull(
        conn,
        new Uint8Array([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, echo >> 8, echo & 0xff]),
      );
      assert.deepEqual(await readN(conn, 12), new Uint8Array([5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
      const data = patternBytes(4 * 1024 * 1024);
      await assertEchoed(conn, data);
      conn.close();
    });
  },
});

Deno.test({
  name: "proxy + agent: unknown host → SOCKS 0x04 / HTTP 502; refused port → SOCKS 0x05",
  ignore: !canUnshare,
  async fn() {
    await withAgentProxy(async ({ proxy, logs }) => {
      const port = proxy.addr.port;
      const name = new TextEncoder().encode("nosuch");
      assert.deepEqual(
        await socksExchange(port, [5, 1, 0, 3, name.length, ...name, 0, 80]),
        new Uint8Array([5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0]),
      );
      assert.ok(logs.includes("error: dial tcp nosuch:80: no such host"), logs.join("\n"));
      const refused = closedPort();
      assert.deepEqual(
        await socksExchange(port, [5, 1, 0, 1, 127, 0, 0, 1, refused >> 8, refused & 0xff]),
        new Uint8Array([5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
      );
      assert.ok(
        logs.includes(`error: dial tcp 127.0.0.1:${refused}: connection refused`),
        logs.join("\n"),
      );
      const text = await httpExchange(port, "CONNECT nosuch:443 HTTP/1.1\r\n\r\n");
      assert.ok(text.startsWith("HTTP/1.1 502 Bad Gateway\r\n"), text);
      assert.ok(text.endsWith("\r\n\r\ndial tcp nosuch:443: no such host\n"), text);
    });
  },
});

/** A DNS query for an A record. */
function dnsQuery(id: number, name: string): Uint8Array {
  const labels = name.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]);
  return new Uint8Array([
    id >> 8,
    id & 0xff,
    1,
    0,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    ...labels,
    0,
    0,
    1,
    0,
    1,
  ]);
}

Deno.test({
  name: "proxy + agent: UDP ASSOCIATE carries a real DNS query to the cluster's DNS server",
  ignore: !canUnshare,
  async fn() {
    const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      await withAgentProxy(async ({ proxy, dns, logs }) => {
        const ctl = await Deno.connect({ hostname: "127.0.0.1", port: proxy.addr.port });
        await writeFull(ctl, new Uint8Array([5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]));
        const reply = await readN(ctl, 12);
        assert.deepEqual(reply.subarray(0, 10), new Uint8Array([5, 0, 5, 0, 0, 1, 127, 0, 0, 1]));
        const relay: Deno.NetAddr = {
          transport: "udp",
          hostname: "127.0.0.1",
          port: (reply[10] << 8) | reply[11],
        };
        const ip = dns.address.split(".").map(Number);
        const head = [0, 0, 0, 1, ...ip, 0, 53];
        // Found: one A record 127.0.0.1.
        const q1 = dnsQuery(0x1234, "web.relay.test");
        await sock.send(new Uint8Array([...head, ...q1]), relay);
        const r1 = await receiveOrFail(sock);
        assert.deepEqual(r1.subarray(0, 10), new Uint8Array(head));
        const m1 = r1.subarray(10);
        assert.deepEqual([m1[0], m1[1]], [0x12, 0x34]); // same id
        assert.equal(m1[3] & 0x0f, 0); // NOERROR
        assert.equal((m1[6] << 8) | m1[7], 1); // one answer
        assert.deepEqual(m1.subarray(m1.length - 4), new Uint8Array([127, 0, 0, 1]));
        // Unknown: NXDOMAIN.
        const q2 = dnsQuery(0x4321, "nosuch.relay.test");
        await sock.send(new Uint8Array([...head, ...q2]), relay);
        const m2 = (await receiveOrFail(sock)).subarray(10);
        assert.deepEqual([m2[0], m2[1]], [0x43, 0x21]);
        assert.equal(m2[3] & 0x0f, 3);
        assert.ok(dns.queries.includes("nosuch.relay.test"));
        assert.ok(
          logs.includes(`Handling connection for ${dns.address}:53 (UDP)`),
          logs.join("\n"),
        );
        ctl.close();
      });
    } finally {
      sock.close();
    }
  },
});
