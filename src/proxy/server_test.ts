/**
 * The SOCKS5 / HTTP proxy against a fake agent (loopback only): real curl
 * through SOCKS5 and HTTP CONNECT, our own SOCKS client for exact reply bytes,
 * UDP ASSOCIATE, error replies, and fuzzed greetings.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { proxyListeningMessage, type ProxyServer, startProxy } from "./server.ts";
import {
  assertEchoed,
  curl,
  type FakeAgent,
  fakeAgent,
  httpExchange,
  patternBytes,
  receiveOrFail,
  sha256Hex,
  startEchoServer,
  startHttpServer,
  startUdpResponder,
  withWatchedProxy,
} from "../../tests/_lib/socks.ts";
import { dnsQuery } from "../../tests/_lib/dns.ts";
import { readAll, readExactly, writeAll } from "../../tests/_lib/net.ts";

const WEB = "web.default.svc.cluster.local";

interface Ctx {
  proxy: ProxyServer;
  agent: FakeAgent;
  logs: string[];
  http: number;
}

async function withProxy(
  fn: (c: Ctx) => Promise<void>,
  opts: {
    hosts?: Record<string, string>;
    dialIps?: boolean;
    udpIdleMs?: number;
    handshakeTimeoutMs?: number;
    hostname?: string;
  } = {},
): Promise<void> {
  const { port: http, server } = startHttpServer();
  const agent = fakeAgent({ [WEB]: "127.0.0.1", ...opts.hosts }, { dialIps: opts.dialIps });
  try {
    await withWatchedProxy(
      {
        hostname: opts.hostname,
        openStream: agent.openStream,
        udpIdleMs: opts.udpIdleMs,
        handshakeTimeoutMs: opts.handshakeTimeoutMs,
      },
      60_000,
      () => agent.closeAll(),
      (proxy, logs) => fn({ proxy, agent, logs, http }),
    );
  } finally {
    agent.closeAll();
    await server.shutdown();
  }
}

/** Connects and completes the no-auth greeting. */
async function socksGreet(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, new Uint8Array([5, 1, 0]));
  assert.deepEqual(await readExactly(conn, 2), new Uint8Array([5, 0]));
  return conn;
}

function domainRequest(cmd: number, name: string, port: number): Uint8Array {
  const n = new TextEncoder().encode(name);
  return new Uint8Array([5, cmd, 0, 3, n.length, ...n, port >> 8, port & 0xff]);
}

function ipv4Request(cmd: number, ip: number[], port: number): Uint8Array {
  return new Uint8Array([5, cmd, 0, 1, ...ip, port >> 8, port & 0xff]);
}

/** Sends one raw request after the greeting; returns the 10-byte reply and then everything until EOF. */
async function socksRequest(
  port: number,
  request: Uint8Array,
): Promise<{ reply: Uint8Array; rest: Uint8Array }> {
  const conn = await socksGreet(port);
  try {
    await writeAll(conn, request);
    const reply = await readAll(conn);
    return { reply: reply.subarray(0, 10), rest: reply.subarray(10) };
  } finally {
    conn.close();
  }
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
}

Deno.test("proxy: listening line; curl --socks5-hostname fetches by cluster name", async () => {
  await withProxy(async ({ proxy, agent, logs, http }) => {
    assert.equal(
      proxyListeningMessage(proxy.addr),
      `Proxy listening on 127.0.0.1:${proxy.addr.port} (SOCKS5, HTTP CONNECT)`,
    );
    assert.equal(
      proxyListeningMessage({ transport: "tcp", hostname: "::1", port: 1080 }),
      "Proxy listening on [::1]:1080 (SOCKS5, HTTP CONNECT)",
    );
    const size = 3_000_000;
    const r = await curl([
      "--socks5-hostname",
      `127.0.0.1:${proxy.addr.port}`,
      `http://${WEB}:${http}/size/${size}`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await sha256Hex(r.stdout), await sha256Hex(patternBytes(size)));
    assert.deepEqual(agent.opened, [{
      protocol: "tcp",
      destination: `${WEB}:${http}`,
      outcome: "ok",
    }]);
    assert.ok(logs.includes(`Handling connection for ${WEB}:${http}`), logs.join("\n"));
  });
});

Deno.test("proxy: curl --socks5 with an IPv4 address sends an IP Header", async () => {
  await withProxy(async ({ proxy, agent, http }) => {
    const r = await curl(["--socks5", `127.0.0.1:${proxy.addr.port}`, `http://127.0.0.1:${http}/`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(new TextDecoder().decode(r.stdout), `hello via 127.0.0.1:${http}\n`);
    assert.deepEqual(agent.opened, [{
      protocol: "tcp",
      destination: `127.0.0.1:${http}`,
      outcome: "ok",
    }]);
  });
});

Deno.test("proxy: SOCKS5 CONNECT to an IPv6 address (ATYP 4) relays to [::1]", async () => {
  const echo = Deno.listen({ hostname: "::1", port: 0 });
  const echoPort = (echo.addr as Deno.NetAddr).port;
  const served = (async () => {
    const c = await echo.accept();
    const got = await readAll(c);
    await writeAll(c, got);
    c.close();
  })();
  try {
    await withProxy(async ({ proxy, agent }) => {
      const conn = await socksGreet(proxy.addr.port);
      const v6 = new Uint8Array(16);
      v6[15] = 1;
      await writeAll(conn, new Uint8Array([5, 1, 0, 4, ...v6, echoPort >> 8, echoPort & 0xff]));
      assert.deepEqual(await readExactly(conn, 10), new Uint8Array([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
      await writeAll(conn, new TextEncoder().encode("ping6"));
      await conn.closeWrite();
      assert.equal(new TextDecoder().decode(await readAll(conn)), "ping6");
      conn.close();
      assert.deepEqual(agent.opened, [{
        protocol: "tcp",
        destination: `[::1]:${echoPort}`,
        outcome: "ok",
      }]);
    });
  } finally {
    await served;
    echo.close();
  }
});

Deno.test("proxy: HTTP CONNECT (curl -p -x) and absolute-form HTTP (curl -x) both work", async () => {
  await withProxy(async ({ proxy, agent, logs, http }) => {
    const size = 1_500_000;
    const viaConnect = await curl([
      "-p",
      "-x",
      `http://127.0.0.1:${proxy.addr.port}`,
      `http://${WEB}:${http}/size/${size}`,
    ]);
    assert.equal(viaConnect.code, 0, viaConnect.stderr);
    assert.equal(await sha256Hex(viaConnect.stdout), await sha256Hex(patternBytes(size)));

    const plain = await curl([
      "-x",
      `http://127.0.0.1:${proxy.addr.port}`,
      `http://${WEB}:${http}/`,
    ]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(new TextDecoder().decode(plain.stdout), `hello via ${WEB}:${http}\n`);

    assert.equal(agent.opened.length, 2);
    assert.equal(logs.filter((l) => l === `Handling connection for ${WEB}:${http}`).length, 2);
  });
});

Deno.test("proxy: an upload through SOCKS arrives intact (POST, SHA-256)", async () => {
  await withProxy(async ({ proxy, http }) => {
    const body = patternBytes(2_000_000);
    const file = await Deno.makeTempFile();
    try {
      await Deno.writeFile(file, body);
      const r = await curl([
        "--socks5-hostname",
        `127.0.0.1:${proxy.addr.port}`,
        "--data-binary",
        `@${file}`,
        `http://${WEB}:${http}/upload`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(new TextDecoder().decode(r.stdout), await sha256Hex(body));
    } finally {
      await Deno.remove(file);
    }
  });
});

Deno.test("proxy: half-close is relayed both ways (echo of 4 MiB, SHA-256)", async () => {
  const echo = startEchoServer();
  try {
    await withProxy(async ({ proxy }) => {
      const conn = await socksGreet(proxy.addr.port);
      await writeAll(conn, domainRequest(1, "echo.test", echo.port));
      assert.deepEqual(await readExactly(conn, 10), new Uint8Array([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
      const data = patternBytes(4 * 1024 * 1024);
      await assertEchoed(conn, data);
      conn.close();
    }, { hosts: { "echo.test": "127.0.0.1" } });
  } finally {
    await echo.close();
  }
});

Deno.test("proxy: the server's half-close reaches the client, which can still send", async () => {
  // The server greets, half-closes, then reads what the client sends after seeing EOF.
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serverPort = (server.addr as Deno.NetAddr).port;
  const received = (async () => {
    const c = await server.accept();
    await writeAll(c, new TextEncoder().encode("bye"));
    await c.closeWrite();
    const got = await readAll(c);
    c.close();
    return new TextDecoder().decode(got);
  })();
  try {
    await withProxy(async ({ proxy }) => {
      const conn = await socksGreet(proxy.addr.port);
      await writeAll(conn, ipv4Request(1, [127, 0, 0, 1], serverPort));
      assert.deepEqual(await readExactly(conn, 10), new Uint8Array([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
      assert.equal(new TextDecoder().decode(await readAll(conn)), "bye");
      await writeAll(conn, new TextEncoder().encode("after EOF"));
      await conn.closeWrite();
      assert.equal(await received, "after EOF");
      conn.close();
    });
  } finally {
    server.close();
  }
});

Deno.test("proxy: bytes pipelined right after the SOCKS request are relayed", async () => {
  const echo = startEchoServer();
  try {
    await withProxy(async ({ proxy }) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.addr.port });
      const req = domainRequest(1, "echo.test", echo.port);
      const payload = new TextEncoder().encode("early bytes");
      await writeAll(conn, new Uint8Array([5, 1, 0, ...req, ...payload]));
      await conn.closeWrite();
      const all = await readAll(conn);
      conn.close();
      assert.deepEqual(all.subarray(0, 12), new Uint8Array([5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
      assert.equal(new TextDecoder().decode(all.subarray(12)), "early bytes<eof seen>");
    }, { hosts: { "echo.test": "127.0.0.1" } });
  } finally {
    await echo.close();
  }
});

Deno.test("proxy: agent statuses become SOCKS reply codes", async () => {
  await withProxy(async ({ proxy, agent, logs }) => {
    const refused = freePort();
    const cases: [Uint8Array, number, string][] = [
      [domainRequest(1, "nosuch.test", 80), 0x04, "dial tcp nosuch.test:80: no such host"],
      [
        ipv4Request(1, [127, 0, 0, 1], refused),
        0x05,
        `dial tcp 127.0.0.1:${refused}: connection refused`,
      ],
      // Not loopback: the fake agent answers NetworkUnreachable without contacting it.
      [ipv4Request(1, [192, 0, 2, 1], 443), 0x03, "dial tcp 192.0.2.1:443:"],
    ];
    for (const [req, code, logged] of cases) {
      const { reply, rest } = await socksRequest(proxy.addr.port, req);
      assert.deepEqual(reply, new Uint8Array([5, code, 0, 1, 0, 0, 0, 0, 0, 0]));
      assert.equal(rest.length, 0);
      assert.ok(
        logs.some((l) => l.startsWith(`error: ${logged}`)),
        `${logged}\n${logs.join("\n")}`,
      );
    }
    assert.deepEqual(agent.opened.map((o) => o.outcome), [2, 4, 6]);
  });
});

Deno.test("proxy: curl sees reply 5 for a refused port and 4 for an unknown host", async () => {
  await withProxy(async ({ proxy }) => {
    const refused = freePort();
    const a = await curl([
      "--socks5-hostname",
      `127.0.0.1:${proxy.addr.port}`,
      `http://127.0.0.1:${refused}/`,
    ]);
    // curl 7.88 shows the SOCKS reply code: 5 = connection refused; exit 97 = CURLE_PROXY.
    assert.equal(a.code, 97, a.stderr);
    assert.match(a.stderr, /SOCKS5 connection to 127\.0\.0\.1\. \(5\)/);
    const b = await curl([
      "--socks5-hostname",
      `127.0.0.1:${proxy.addr.port}`,
      "http://nosuch.test/",
    ]);
    assert.equal(b.code, 97, b.stderr);
    assert.match(b.stderr, /SOCKS5 connection to nosuch\.test\. \(4\)/);
  });
});

Deno.test("proxy: HTTP CONNECT failures answer 502 with the dial error", async () => {
  await withProxy(async ({ proxy }) => {
    const refused = freePort();
    for (
      const [target, body] of [
        [`127.0.0.1:${refused}`, `dial tcp 127.0.0.1:${refused}: connection refused\n`],
        ["nosuch.test:80", "dial tcp nosuch.test:80: no such host\n"],
      ]
    ) {
      const text = await httpExchange(
        proxy.addr.port,
        `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`,
      );
      assert.ok(text.startsWith("HTTP/1.1 502 Bad Gateway\r\n"), text);
      assert.ok(text.endsWith(`\r\n\r\n${body}`), text);
    }
    const refusedCurl = await curl([
      "-p",
      "-x",
      `http://127.0.0.1:${proxy.addr.port}`,
      `http://127.0.0.1:${refused}/`,
    ]);
    assert.notEqual(refusedCurl.code, 0);
    assert.match(refusedCurl.stderr, /502/);
  });
});

Deno.test("proxy: malformed input gets the proper error reply and nothing is dialled", async () => {
  await withProxy(async ({ proxy, agent, http }) => {
    const port = proxy.addr.port;
    const raw = async (bytes: number[]): Promise<Uint8Array> => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(conn, new Uint8Array(bytes));
      const out = await readAll(conn);
      conn.close();
      return out;
    };
    // Only username/password offered: no acceptable methods.
    assert.deepEqual(await raw([5, 1, 2]), new Uint8Array([5, 0xff]));
    // Zero methods.
    assert.deepEqual(await raw([5, 0]), new Uint8Array([5, 0xff]));
    const ok = [5, 0];
    const fail = (code: number) => [...ok, 5, code, 0, 1, 0, 0, 0, 0, 0, 0];
    // BIND is not supported.
    assert.deepEqual(
      await raw([5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80]),
      new Uint8Array(fail(7)),
    );
    // Unknown command.
    assert.deepEqual(
      await raw([5, 1, 0, 5, 9, 0, 1, 127, 0, 0, 1, 0, 80]),
      new Uint8Array(fail(7)),
    );
    // Unknown address type.
    assert.deepEqual(await raw([5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80]), new Uint8Array(fail(8)));
    // Wrong version in the request.
    assert.deepEqual(
      await raw([5, 1, 0, 4, 1, 0, 1, 127, 0, 0, 1, 0, 80]),
      new Uint8Array(fail(1)),
    );
    // Empty domain name.
    assert.deepEqual(await raw([5, 1, 0, 5, 1, 0, 3, 0, 0, 80]), new Uint8Array(fail(1)));
    // Port 0 cannot be encoded in a Header.
    assert.deepEqual(await raw([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 0]), new Uint8Array(fail(1)));
    // SOCKS4 is refused SOCKS4-style.
    assert.deepEqual(
      await raw([4, 1, 0, 80, 127, 0, 0, 1, 0]),
      new Uint8Array([0, 0x5b, 0, 0, 0, 0, 0, 0]),
    );
    const http400 = new TextDecoder().decode(
      await raw([...new TextEncoder().encode("HELLO\r\n\r\n")]),
    );
    assert.ok(http400.startsWith("HTTP/1.1 400 Bad Request\r\n"), http400);
    const origin = new TextDecoder().decode(
      await raw([...new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")]),
    );
    assert.ok(origin.startsWith("HTTP/1.1 400 Bad Request\r\n"), origin);
    const big = new TextDecoder().decode(
      await raw([...new TextEncoder().encode(`CONNECT a:1 HTTP/1.1\r\nX: ${"y".repeat(20000)}`)]),
    );
    assert.ok(big.startsWith("HTTP/1.1 431 "), big.slice(0, 80));
    assert.equal(agent.opened.length, 0);
    // Still serving.
    const r = await curl(["--socks5-hostname", `127.0.0.1:${port}`, `http://${WEB}:${http}/`]);
    assert.equal(r.code, 0, r.stderr);
  });
});

Deno.test("proxy: a silent client is dropped after the handshake timeout", async () => {
  await withProxy(async ({ proxy }) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.addr.port });
    await writeAll(conn, new Uint8Array([5])); // incomplete greeting, then silence
    assert.equal((await readAll(conn)).length, 0);
    conn.close();
  }, { handshakeTimeoutMs: 200 });
});

Deno.test("proxy: the handshake timeout does not cut a slow agent answer", async () => {
  const echo = startEchoServer();
  const agent = fakeAgent({ "echo.test": "127.0.0.1" });
  const proxy = await startProxy({
    hostname: "127.0.0.1",
    port: 0,
    // The agent answers well after the handshake timeout.
    openStream: async (h) => {
      await new Promise((r) => setTimeout(r, 400));
      return await agent.openStream(h);
    },
    log: () => {},
    handshakeTimeoutMs: 100,
  });
  try {
    const conn = await socksGreet(proxy.addr.port);
    await writeAll(conn, domainRequest(1, "echo.test", echo.port));
    assert.deepEqual(await readExactly(conn, 10), new Uint8Array([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
    await writeAll(conn, new TextEncoder().encode("slow"));
    await conn.closeWrite();
    assert.equal(new TextDecoder().decode(await readAll(conn)), "slow<eof seen>");
    conn.close();
  } finally {
    await proxy.close();
    agent.closeAll();
    await echo.close();
  }
});

Deno.test("proxy: fuzzed greetings and requests leave the proxy serving", async () => {
  await withProxy(async ({ proxy, agent, http }) => {
    const port = proxy.addr.port;
    const input = fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      fc.uint8Array({ maxLength: 64 }).map((b) => new Uint8Array([5, ...b])),
      fc.uint8Array({ maxLength: 48 }).map((b) => new Uint8Array([5, 1, 0, 5, ...b])),
      fc.string({ maxLength: 80 }).map((s) => new TextEncoder().encode(`CONNECT ${s}\r\n\r\n`)),
    );
    await fc.assert(
      fc.asyncProperty(input, async (bytes) => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        try {
          await writeAll(conn, bytes);
          await conn.closeWrite();
          // The proxy must answer (or not) and close: readAll returns.
          const out = await readAll(conn, 1 << 16);
          if (bytes.length > 0 && bytes[0] === 5 && out.length > 0) assert.equal(out[0], 5);
        } finally {
          conn.close();
        }
      }),
      { numRuns: 150, seed: 8 },
    );
    // Anything that got as far as the agent was refused without contact (dialIps false).
    assert.ok(agent.opened.every((o) => o.outcome !== "ok"));
    const r = await curl(["--socks5-hostname", `127.0.0.1:${port}`, `http://${WEB}:${http}/`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(new TextDecoder().decode(r.stdout), `hello via ${WEB}:${http}\n`);
  }, { dialIps: false });
});

Deno.test("proxy: invalid names are refused locally with 0x01 and an error line", async () => {
  await withProxy(async ({ proxy, agent, logs }) => {
    const { reply } = await socksRequest(proxy.addr.port, domainRequest(1, "bad name!", 80));
    assert.deepEqual(reply, new Uint8Array([5, 1, 0, 1, 0, 0, 0, 0, 0, 0]));
    assert.ok(logs.includes("error: dial tcp bad name!:80: invalid destination"), logs.join("\n"));
    assert.equal(agent.opened.length, 0);
  });
});

Deno.test("proxy: listening on ::1, CONNECT and UDP ASSOCIATE use IPv6 addresses", async () => {
  const dns = startUdpResponder();
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "::1", port: 0 });
  try {
    await withProxy(async ({ proxy, http }) => {
      assert.equal(proxy.addr.hostname, "::1");
      const r = await curl([
        "--socks5-hostname",
        `[::1]:${proxy.addr.port}`,
        `http://${WEB}:${http}/`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(new TextDecoder().decode(r.stdout), `hello via ${WEB}:${http}\n`);
      const ctl = await Deno.connect({ hostname: "::1", port: proxy.addr.port });
      await writeAll(ctl, new Uint8Array([5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]));
      const reply = await readExactly(ctl, 2 + 4 + 16 + 2);
      const loop6 = new Uint8Array(16);
      loop6[15] = 1;
      // The relay is on the address the client reached: ATYP 4, ::1.
      assert.deepEqual(reply.subarray(0, 22), new Uint8Array([5, 0, 5, 0, 0, 4, ...loop6]));
      const relay: Deno.NetAddr = {
        transport: "udp",
        hostname: "::1",
        port: (reply[22] << 8) | reply[23],
      };
      const pkt = udpPacket([1, 127, 0, 0, 1], dns.port, dnsQuery(6, "v6"));
      await sock.send(pkt, relay);
      const got = await receiveOrFail(sock);
      assert.equal(got[11], 6);
      ctl.close();
    }, { hostname: "::1" });
  } finally {
    sock.close();
    await dns.close();
  }
});

Deno.test("proxy: close() ends relayed connections", async () => {
  const echo = startEchoServer();
  try {
    const agent = fakeAgent({ "echo.test": "127.0.0.1" });
    const proxy = await startProxy({
      hostname: "127.0.0.1",
      port: 0,
      openStream: agent.openStream,
      log: () => {},
    });
    const conn = await socksGreet(proxy.addr.port);
    await writeAll(conn, domainRequest(1, "echo.test", echo.port));
    assert.deepEqual(await readExactly(conn, 10), new Uint8Array([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
    await proxy.close();
    assert.equal((await readAll(conn)).length, 0);
    conn.close();
    agent.closeAll();
  } finally {
    await echo.close();
  }
});

// ---- UDP ASSOCIATE ----------------------------------------------------------

function udpPacket(atypAddr: number[], port: number, data: Uint8Array): Uint8Array {
  return new Uint8Array([0, 0, 0, ...atypAddr, port >> 8, port & 0xff, ...data]);
}

/** A DNS-like query: id, flags, one question. */
async function udpAssociate(
  proxyPort: number,
): Promise<{ ctl: Deno.TcpConn; relay: Deno.NetAddr }> {
  const ctl = await socksGreet(proxyPort);
  await writeAll(ctl, ipv4Request(3, [0, 0, 0, 0], 0));
  const reply = await readExactly(ctl, 10);
  assert.deepEqual(reply.subarray(0, 4), new Uint8Array([5, 0, 0, 1]));
  assert.deepEqual(reply.subarray(4, 8), new Uint8Array([127, 0, 0, 1]));
  const relayPort = (reply[8] << 8) | reply[9];
  assert.ok(relayPort > 0);
  return { ctl, relay: { transport: "udp", hostname: "127.0.0.1", port: relayPort } };
}

async function exchange(
  sock: Deno.DatagramConn,
  relay: Deno.NetAddr,
  packet: Uint8Array,
): Promise<Uint8Array> {
  await sock.send(packet, relay);
  return await receiveOrFail(sock);
}

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

Deno.test("proxy: UDP ASSOCIATE carries a DNS-like exchange to an IP and to a name", async () => {
  const dns = startUdpResponder();
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    await withProxy(async ({ proxy, agent, logs }) => {
      const { ctl, relay } = await udpAssociate(proxy.addr.port);
      const byIp = [1, 127, 0, 0, 1];
      for (let id = 1; id <= 3; id++) {
        const q = dnsQuery(id, "web.default.svc.cluster.local");
        const got = await exchange(sock, relay, udpPacket(byIp, dns.port, q));
        const expected = q.slice();
        expected[2] |= 0x80;
        assert.deepEqual(got, udpPacket(byIp, dns.port, expected));
      }
      const name = new TextEncoder().encode("kube-dns.test");
      const byName = [3, name.length, ...name];
      const q = dnsQuery(77, "redis.default");
      const got = await exchange(sock, relay, udpPacket(byName, dns.port, q));
      const expected = q.slice();
      expected[2] |= 0x80;
      // The reply carries the destination as the client named it.
      assert.deepEqual(got, udpPacket(byName, dns.port, expected));
      // One stream per (client, destination).
      assert.deepEqual(agent.opened, [
        { protocol: "udp", destination: `127.0.0.1:${dns.port}`, outcome: "ok" },
        { protocol: "udp", destination: `kube-dns.test:${dns.port}`, outcome: "ok" },
      ]);
      assert.ok(
        logs.includes(`Handling connection for kube-dns.test:${dns.port} (UDP)`),
        logs.join("\n"),
      );
      // Ending the control connection ends the association and its streams.
      ctl.close();
      await waitFor(() => agent.live === 0, "UDP streams to close");
    }, { hosts: { "kube-dns.test": "127.0.0.1" } });
  } finally {
    sock.close();
    await dns.close();
  }
});

Deno.test("proxy: UDP flows expire when idle and reopen on the next datagram", async () => {
  const dns = startUdpResponder();
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    await withProxy(async ({ proxy, agent }) => {
      const { ctl, relay } = await udpAssociate(proxy.addr.port);
      const dest = [1, 127, 0, 0, 1];
      await exchange(sock, relay, udpPacket(dest, dns.port, dnsQuery(1, "a")));
      assert.equal(agent.live, 1);
      await waitFor(() => agent.live === 0, "the idle flow to close");
      const got = await exchange(sock, relay, udpPacket(dest, dns.port, dnsQuery(2, "a")));
      assert.equal(got[3 + 7 + 1], 2); // reply to query id 2
      assert.equal(agent.opened.length, 2);
      ctl.close();
    }, { udpIdleMs: 150 });
  } finally {
    sock.close();
    await dns.close();
  }
});

Deno.test("proxy: the UDP relay ignores strangers, fragments and garbage, then still works", async () => {
  const dns = startUdpResponder();
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  // A "stranger": another loopback source address (127.0.0.2) is not the TCP client.
  const stranger = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.2", port: 0 });
  try {
    await withProxy(async ({ proxy, agent }) => {
      const { ctl, relay } = await udpAssociate(proxy.addr.port);
      const dest = [1, 127, 0, 0, 1];
      await stranger.send(udpPacket(dest, dns.port, dnsQuery(9, "x")), relay);
      const frag = udpPacket(dest, dns.port, dnsQuery(9, "x"));
      frag[2] = 1;
      await sock.send(frag, relay);
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ maxLength: 40 }), async (junk) => {
          // Never a valid packet to a dialled IP: ATYP forced to an invalid value.
          const j = junk.slice();
          if (j.length > 3) j[3] = 0x7f;
          await sock.send(j, relay);
        }),
        { numRuns: 100, seed: 3 },
      );
      const got = await exchange(sock, relay, udpPacket(dest, dns.port, dnsQuery(5, "a")));
      assert.equal(got[3 + 7 + 1], 5);
      assert.equal(dns.received, 1);
      assert.equal(agent.opened.length, 1);
      ctl.close();
    });
  } finally {
    stranger.close();
    sock.close();
    await dns.close();
  }
});
