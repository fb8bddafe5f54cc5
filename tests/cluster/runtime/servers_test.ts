import assert from "node:assert/strict";
import { patternBytes, startPodHttpServer } from "./pod_http.ts";
import { startTcpEcho, startUdpEcho } from "./echo_server.ts";
import { requireTools, runCmd, sha256 } from "./_testlib.ts";

const POD_A = "127.0.78.1";

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
