import assert from "node:assert/strict";
import { patternBytes, startPodHttpServer } from "./pod_http.ts";
import { type Backend, startTcpForwarder, startUdpForwarder } from "./forwarder.ts";
import { startDnsServer } from "./dns_server.ts";
import { startTcpEcho, startUdpEcho } from "./echo_server.ts";
import { testZoneAnswerer } from "./zones.ts";
import { CLASS_IN, decodeMessage, encodeMessage, RecordType } from "./dns_wire.ts";
import { dig, requireTools, runCmd, sha256 } from "./_testlib.ts";

const POD_A = "127.0.78.1";
const POD_B = "127.0.78.2";
const VIP = "127.0.78.100";

Deno.test("pod HTTP server: body and X-Pod-Name are the pod's name (real curl)", async () => {
  await requireTools("curl");
  const srv = await startPodHttpServer(POD_A, 0, "web-abc");
  try {
    const r = await runCmd("curl", ["-sS", "-D", "-", `http://${POD_A}:${srv.port}/any/path`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^x-pod-name: web-abc\r$/im);
    assert.ok(r.stdout.endsWith("\r\n\r\nweb-abc\n"), r.stdout);
  } finally {
    await srv.close();
  }
});

Deno.test("pod HTTP server: /echo returns the body, /bytes/N the pattern", async () => {
  const srv = await startPodHttpServer(POD_A, 0, "p");
  try {
    const body = crypto.getRandomValues(new Uint8Array(60000));
    const echo = await fetch(`http://${POD_A}:${srv.port}/echo`, { method: "POST", body });
    assert.equal(await sha256(new Uint8Array(await echo.arrayBuffer())), await sha256(body));
    const n = 300_001;
    const res = await fetch(`http://${POD_A}:${srv.port}/bytes/${n}`);
    assert.equal(res.headers.get("x-pod-name"), "p");
    assert.equal(
      await sha256(new Uint8Array(await res.arrayBuffer())),
      await sha256(patternBytes(n)),
    );
  } finally {
    await srv.close();
  }
});

Deno.test("TCP forwarder: connections reach the picked backend; data and half-close survive", async () => {
  // A backend that reads everything, then answers with its SHA-256 (needs the client's EOF).
  const backend = Deno.listen({ hostname: POD_B, port: 0 });
  const served = (async () => {
    const conn = await backend.accept();
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const all = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
    let off = 0;
    for (const c of chunks) {
      all.set(c, off);
      off += c.length;
    }
    await conn.write(new TextEncoder().encode(await sha256(all)));
    conn.close();
  })();
  const picks: Backend[][] = [];
  const fwd = await startTcpForwarder({
    hostname: VIP,
    port: 0,
    pick: () => {
      // First candidate refuses (nothing listens on POD_A:1), the forwarder must try the next.
      const c = [{ hostname: POD_A, port: 1 }, {
        hostname: POD_B,
        port: (backend.addr as Deno.NetAddr).port,
      }];
      picks.push(c);
      return c;
    },
  });
  try {
    const data = crypto.getRandomValues(new Uint8Array(1 << 20).subarray(0, 65536));
    const payload = new Uint8Array(3 * 1024 * 1024);
    for (let i = 0; i < payload.length; i += data.length) payload.set(data, i);
    const conn = await Deno.connect({ hostname: VIP, port: fwd.port });
    let off = 0;
    while (off < payload.length) off += await conn.write(payload.subarray(off));
    await conn.closeWrite();
    const reply: number[] = [];
    const buf = new Uint8Array(128);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      reply.push(...buf.subarray(0, n));
    }
    conn.close();
    assert.equal(new TextDecoder().decode(new Uint8Array(reply)), await sha256(payload));
    assert.equal(picks.length, 1);
    await served;
  } finally {
    backend.close();
    await fwd.close();
  }
});

Deno.test("TCP forwarder: no backend → the connection is closed at once", async () => {
  const fwd = await startTcpForwarder({ hostname: VIP, port: 0, pick: () => [] });
  try {
    const conn = await Deno.connect({ hostname: VIP, port: fwd.port });
    const r = await conn.read(new Uint8Array(16)).catch(() => null);
    assert.equal(r, null);
    conn.close();
  } finally {
    await fwd.close();
  }
});

Deno.test("UDP forwarder: real dig through a cluster-IP-like socket reaches the DNS backend", async () => {
  await requireTools("dig");
  const dnsA = await startDnsServer({
    hostname: POD_A,
    port: 0,
    answer: testZoneAnswerer("dns-a"),
  });
  const fwd = await startUdpForwarder({
    hostname: VIP,
    port: 0,
    pick: () => [{ hostname: POD_A, port: dnsA.port }],
    idleMs: 200,
  });
  try {
    assert.deepEqual(await dig(VIP, fwd.port, "whoami.test.relay", "TXT"), ['"dns-a"']);
    assert.deepEqual(await dig(VIP, fwd.port, "whoami.test.relay", "TXT"), ['"dns-a"']);
  } finally {
    await fwd.close();
    await dnsA.close();
  }
});

Deno.test("echo servers: TCP echoes 2 MiB (SHA-256) and half-closes; UDP echoes a datagram", async () => {
  const tcp = await startTcpEcho(POD_A, 0);
  const udp = await startUdpEcho(POD_A, 0);
  const sock = Deno.listenDatagram({ hostname: POD_A, port: 0, transport: "udp" });
  try {
    const payload = crypto.getRandomValues(new Uint8Array(65536));
    const big = new Uint8Array(2 << 20);
    for (let i = 0; i < big.length; i += payload.length) big.set(payload, i);
    const conn = await Deno.connect({ hostname: POD_A, port: tcp.port });
    const writing = (async () => {
      let off = 0;
      while (off < big.length) off += await conn.write(big.subarray(off));
      await conn.closeWrite();
    })();
    const got = new Uint8Array(big.length);
    let n = 0;
    for (;;) {
      const r = await conn.read(got.subarray(n));
      if (r === null) break;
      n += r;
      if (n === got.length) {
        assert.equal(await conn.read(new Uint8Array(1)), null, "EOF after the echo");
        break;
      }
    }
    await writing;
    conn.close();
    assert.equal(n, big.length);
    assert.equal(await sha256(got), await sha256(big));

    const dgram = crypto.getRandomValues(new Uint8Array(1200));
    await sock.send(dgram, { transport: "udp", hostname: POD_A, port: udp.port });
    const [back] = await sock.receive();
    assert.deepEqual(back, dgram);
  } finally {
    sock.close();
    await tcp.close();
    await udp.close();
  }
});

Deno.test("UDP forwarder: a flow whose backend went away moves to a live one", async () => {
  await requireTools("dig");
  const dnsA = await startDnsServer({
    hostname: POD_A,
    port: 0,
    answer: testZoneAnswerer("dns-a"),
  });
  const dnsB = await startDnsServer({
    hostname: POD_B,
    port: 0,
    answer: testZoneAnswerer("dns-b"),
  });
  let live = [{ hostname: POD_A, port: dnsA.port }];
  const fwd = await startUdpForwarder({
    hostname: VIP,
    port: 0,
    pick: () => live,
    backendAlive: (b) => live.some((x) => x.hostname === b.hostname && x.port === b.port),
  });
  // One client socket = one flow.
  const sock = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const ask = async () => {
    const q = encodeMessage({
      id: 7,
      qr: false,
      opcode: 0,
      aa: false,
      tc: false,
      rd: true,
      ra: false,
      rcode: 0,
      questions: [{ name: "whoami.test.relay", type: RecordType.TXT, class: CLASS_IN }],
      answers: [],
      authorities: [],
      additionals: [],
    });
    await sock.send(q, { transport: "udp", hostname: VIP, port: fwd.port });
    const [data] = await sock.receive();
    const a = decodeMessage(data).answers[0].data;
    return a.kind === "txt" ? a.strings[0] : "";
  };
  try {
    assert.equal(await ask(), "dns-a");
    live = [{ hostname: POD_B, port: dnsB.port }];
    // The liveness check runs at most once a second per flow: ask until the flow moved (bounded).
    let answer = await ask();
    for (let i = 0; i < 30 && answer !== "dns-b"; i++) {
      await new Promise((r) => setTimeout(r, 100));
      answer = await ask();
    }
    assert.equal(answer, "dns-b");
  } finally {
    sock.close();
    await fwd.close();
    await dnsA.close();
    await dnsB.close();
  }
});
