/**
 * The Service forwarders behave like kube-proxy (real sockets on loopback): one endpoint per new
 * connection or UDP flow, no retry, refused when there is no endpoint, endpoint changes applied
 * after the propagation delay.
 */
import assert from "node:assert/strict";
import {
  type Backend,
  createTcpForwarder,
  createUdpForwarder,
  type Forwarder,
} from "./forwarder.ts";
import { startDnsServer } from "./dns_server.ts";
import { testZoneAnswerer } from "./zones.ts";
import { dig, requireTools, sha256 } from "./_testlib.ts";

const POD_A = "127.0.79.1";
const POD_B = "127.0.79.2";
const VIP = "127.0.79.100";
const SVC_PORT = 8080;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A TCP backend that answers every chunk it reads with `<name>\n`, counting connections. */
function nameServer(hostname: string, name: string) {
  const l = Deno.listen({ hostname, port: 0 });
  let accepted = 0;
  const conns = new Set<Deno.Conn>();
  const loop = (async () => {
    try {
      for await (const c of l) {
        accepted++;
        conns.add(c);
        (async () => {
          const buf = new Uint8Array(1024);
          try {
            while ((await c.read(buf)) !== null) await c.write(enc.encode(`${name}\n`));
          } catch {
            // reset
          }
          conns.delete(c);
          try {
            c.close();
          } catch {
            // closed
          }
        })();
      }
    } catch {
      // closed
    }
  })();
  return {
    backend: { hostname, port: (l.addr as Deno.NetAddr).port } as Backend,
    get accepted() {
      return accepted;
    },
    async close() {
      l.close();
      await loop;
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // closed
        }
      }
    },
  };
}

/** Send one line on `conn` and read the one-line answer; null if the connection ended. */
async function ask(conn: Deno.Conn): Promise<string | null> {
  try {
    await conn.write(enc.encode("?\n"));
    const buf = new Uint8Array(256);
    const n = await conn.read(buf);
    return n === null ? null : dec.decode(buf.subarray(0, n)).trim();
  } catch {
    return null; // reset
  }
}

/** A new connection to the forwarder and one question; the answer, "refused" or "failed". */
async function oneRequest(port: number): Promise<string> {
  let conn: Deno.Conn;
  try {
    conn = await Deno.connect({ hostname: VIP, port });
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionRefused) return "refused";
    // A socket being closed resets what reaches it before it is released.
    if (e instanceof Deno.errors.ConnectionReset) return "reset";
    throw e;
  }
  try {
    return (await ask(conn)) ?? "failed";
  } finally {
    conn.close();
  }
}

/** A UDP backend answering every datagram with its name. */
function udpNameServer(hostname: string, name: string) {
  const sock = Deno.listenDatagram({ hostname, port: 0, transport: "udp" });
  const loop = (async () => {
    try {
      for (;;) {
        const [, from] = await sock.receive();
        await sock.send(enc.encode(name), from);
      }
    } catch {
      // closed
    }
  })();
  return {
    backend: { hostname, port: (sock.addr as Deno.NetAddr).port } as Backend,
    async close() {
      sock.close();
      await loop;
    },
  };
}

/** One datagram from a UDP client socket (one flow); the answer or "silence" after `waitMs`. */
async function udpAsk(sock: Deno.DatagramConn, port: number, waitMs = 300): Promise<string> {
  await sock.send(enc.encode("?"), { transport: "udp", hostname: VIP, port });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const got = await Promise.race([
    sock.receive().then(([d]) => dec.decode(d)),
    new Promise<string>((r) => timer = setTimeout(() => r("silence"), waitMs)),
  ]);
  clearTimeout(timer);
  return got;
}

function newClient(): Deno.DatagramConn {
  return Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
}

async function closeAll(...xs: ({ close(): Promise<void> | void } | undefined)[]) {
  for (const x of xs) await x?.close();
}

Deno.test("forwarder TCP: data and half-close pass through to the endpoint", async () => {
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
    await conn.write(enc.encode(await sha256(all)));
    conn.close();
  })();
  const fwd = createTcpForwarder({ hostname: VIP, port: 0, propagationDelayMs: 0 });
  fwd.setEndpoints([{ hostname: POD_B, port: (backend.addr as Deno.NetAddr).port }]);
  await fwd.settled();
  try {
    const payload = new Uint8Array(3 * 1024 * 1024);
    const data = crypto.getRandomValues(new Uint8Array(65536));
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
    assert.equal(dec.decode(new Uint8Array(reply)), await sha256(payload));
    await served;
  } finally {
    backend.close();
    await fwd.close();
  }
});

Deno.test("forwarder TCP: one endpoint per new connection, picked at random", async () => {
  const a = nameServer(POD_A, "a");
  const b = nameServer(POD_B, "b");
  const fwd = createTcpForwarder({ hostname: VIP, port: SVC_PORT, propagationDelayMs: 0 });
  fwd.setEndpoints([a.backend, b.backend]);
  await fwd.settled();
  try {
    const seen = new Map<string, number>();
    const N = 40;
    for (let i = 0; i < N; i++) {
      const conn = await Deno.connect({ hostname: VIP, port: SVC_PORT });
      try {
        const first = await ask(conn);
        // Everything on one connection goes to the endpoint picked for it.
        for (let j = 0; j < 3; j++) assert.equal(await ask(conn), first);
        assert.ok(first === "a" || first === "b", `answer ${first}`);
        seen.set(first, (seen.get(first) ?? 0) + 1);
      } finally {
        conn.close();
      }
    }
    assert.equal(a.accepted + b.accepted, N, "one backend connection per client connection");
    assert.equal(seen.get("a"), a.accepted);
    assert.equal(seen.get("b"), b.accepted);
    // Random picks: both endpoints get connections (probability of not: 2^-39).
    assert.ok(a.accepted > 0 && b.accepted > 0, JSON.stringify([...seen]));
  } finally {
    await closeAll(fwd, a, b);
  }
});

Deno.test("forwarder TCP: a refusing endpoint fails the connection, no retry elsewhere", async () => {
  const live = nameServer(POD_A, "live");
  const dead = Deno.listen({ hostname: POD_B, port: 0 });
  const deadEndpoint = { hostname: POD_B, port: (dead.addr as Deno.NetAddr).port };
  dead.close(); // nothing listens there any more: connects are refused
  const fwd = createTcpForwarder({ hostname: VIP, port: SVC_PORT, propagationDelayMs: 0 });
  fwd.setEndpoints([deadEndpoint, live.backend]);
  await fwd.settled();
  try {
    const results: string[] = [];
    for (let i = 0; i < 30; i++) results.push(await oneRequest(SVC_PORT));
    const ok = results.filter((r) => r === "live").length;
    const failed = results.filter((r) => r === "failed").length;
    assert.equal(ok + failed, results.length, results.join(","));
    assert.ok(failed > 0, "some connections picked the refusing endpoint and failed");
    assert.ok(ok > 0, "the others reached the live endpoint");
    assert.equal(live.accepted, ok, "failed connections were not retried on the live endpoint");
  } finally {
    await closeAll(fwd, live);
  }
});

Deno.test("forwarder TCP: no endpoint → connection refused; open connections survive", async () => {
  const a = nameServer(POD_A, "a");
  const fwd = createTcpForwarder({ hostname: VIP, port: SVC_PORT, propagationDelayMs: 0 });
  let open: Deno.Conn | undefined;
  try {
    assert.equal(fwd.listening, false);
    assert.equal(await oneRequest(SVC_PORT), "refused", "a new Service with no endpoint");
    fwd.setEndpoints([a.backend]);
    await fwd.settled();
    assert.equal(fwd.listening, true);
    open = await Deno.connect({ hostname: VIP, port: SVC_PORT });
    assert.equal(await ask(open), "a");
    fwd.setEndpoints([]);
    await fwd.settled();
    assert.equal(fwd.listening, false);
    await assert.rejects(
      Deno.connect({ hostname: VIP, port: SVC_PORT }),
      Deno.errors.ConnectionRefused,
    );
    assert.equal(await ask(open), "a", "an established connection keeps its endpoint");
    fwd.setEndpoints([a.backend]);
    await fwd.settled();
    assert.equal(await oneRequest(SVC_PORT), "a", "endpoints back: accepted again");
  } finally {
    open?.close();
    await closeAll(fwd, a);
  }
});

Deno.test("forwarder UDP: one endpoint per flow, silence without endpoints, flows flushed when their endpoint stops serving", async () => {
  const a = udpNameServer(POD_A, "a");
  const b = udpNameServer(POD_B, "b");
  const fwd = createUdpForwarder({ hostname: VIP, port: SVC_PORT, propagationDelayMs: 0 });
  const clients: Deno.DatagramConn[] = [];
  try {
    const c0 = newClient();
    clients.push(c0);
    assert.equal(await udpAsk(c0, SVC_PORT), "silence", "no endpoint: nothing answers");
    fwd.setEndpoints([a.backend, b.backend]);
    await fwd.settled();
    const seen = new Set<string>();
    const flows: [Deno.DatagramConn, string][] = [];
    for (let i = 0; i < 24; i++) {
      const c = newClient();
      clients.push(c);
      const first = await udpAsk(c, SVC_PORT, 2000);
      // Every datagram of a flow goes to the endpoint picked for the flow.
      for (let j = 0; j < 2; j++) assert.equal(await udpAsk(c, SVC_PORT, 2000), first);
      seen.add(first);
      flows.push([c, first]);
    }
    assert.deepEqual([...seen].sort(), ["a", "b"], "flows are spread over the endpoints");
    // b terminating but still serving: new flows avoid it, its flows go on (conntrack kept).
    fwd.setEndpoints([a.backend], [a.backend, b.backend]);
    await fwd.settled();
    for (const [c, first] of flows) assert.equal(await udpAsk(c, SVC_PORT, 2000), first);
    for (let i = 0; i < 6; i++) {
      const c = newClient();
      clients.push(c);
      assert.equal(await udpAsk(c, SVC_PORT, 2000), "a", "a new flow goes to a ready endpoint");
    }
    // b no longer serving: its flows are flushed, their next datagram starts a new flow (to a).
    fwd.setEndpoints([a.backend], [a.backend]);
    await fwd.settled();
    for (const [c] of flows) assert.equal(await udpAsk(c, SVC_PORT, 2000), "a");
    fwd.setEndpoints([]);
    await fwd.settled();
    assert.equal(await udpAsk(flows[0][0], SVC_PORT), "silence");
  } finally {
    clients.forEach((c) => c.close());
    await closeAll(fwd, a, b);
  }
});

Deno.test("forwarder: endpoint additions and removals take effect after the propagation delay", async () => {
  const DELAY = 600;
  const a = nameServer(POD_A, "a");
  const b = nameServer(POD_B, "b");
  const ua = udpNameServer(POD_A, "a");
  const ub = udpNameServer(POD_B, "b");
  const tcp = createTcpForwarder({ hostname: VIP, port: SVC_PORT, propagationDelayMs: DELAY });
  const udp = createUdpForwarder({ hostname: VIP, port: SVC_PORT, propagationDelayMs: DELAY });
  const clients: Deno.DatagramConn[] = [];
  const udpNew = (waitMs?: number) => {
    const c = newClient();
    clients.push(c);
    return udpAsk(c, SVC_PORT, waitMs);
  };
  /** Poll `probe` until it returns `want`; returns the ms it took from `t0`. */
  const until = async (want: string, t0: number, probe: () => Promise<string>) => {
    for (let i = 0; i < 100; i++) {
      if (await probe() === want) return performance.now() - t0;
      await sleep(20);
    }
    throw new Error(`never got ${want}`);
  };
  const both = (eps: [Backend, Backend]) => {
    tcp.setEndpoints([eps[0]]);
    udp.setEndpoints([eps[1]]);
  };
  try {
    // Addition: still refused / silent right after, served once the delay has passed.
    let t0 = performance.now();
    both([a.backend, ua.backend]);
    assert.equal(await oneRequest(SVC_PORT), "refused");
    assert.equal(await udpNew(100), "silence");
    assert.ok(await until("a", t0, () => oneRequest(SVC_PORT)) >= DELAY - 20);
    assert.ok(await until("a", t0, () => udpNew(100)) >= DELAY - 20);

    // Replacement a → b: new connections still go to a until the delay has passed.
    t0 = performance.now();
    both([b.backend, ub.backend]);
    assert.equal(await oneRequest(SVC_PORT), "a");
    assert.equal(await udpNew(), "a");
    assert.ok(await until("b", t0, () => oneRequest(SVC_PORT)) >= DELAY - 20);
    assert.ok(await until("b", t0, () => udpNew()) >= DELAY - 20);

    // Removal: still accepted (to b) right after, refused once the delay has passed.
    t0 = performance.now();
    tcp.setEndpoints([]);
    udp.setEndpoints([]);
    assert.equal(await oneRequest(SVC_PORT), "b");
    assert.equal(await udpNew(), "b");
    assert.ok(await until("refused", t0, () => oneRequest(SVC_PORT)) >= DELAY - 20);
    assert.ok(await until("silence", t0, () => udpNew(100)) >= DELAY - 20);
  } finally {
    clients.forEach((c) => c.close());
    await closeAll(tcp, udp, a, b, ua, ub);
  }
});

Deno.test("forwarder UDP: real dig through a cluster-IP-like socket reaches the DNS endpoint", async () => {
  await requireTools("dig");
  const dnsA = await startDnsServer({
    hostname: POD_A,
    port: 0,
    answer: testZoneAnswerer("dns-a"),
  });
  const fwd: Forwarder = createUdpForwarder({ hostname: VIP, port: 0, propagationDelayMs: 0 });
  fwd.setEndpoints([{ hostname: POD_A, port: dnsA.port }]);
  await fwd.settled();
  try {
    assert.deepEqual(await dig(VIP, fwd.port, "whoami.test.relay", "TXT"), ['"dns-a"']);
    assert.deepEqual(await dig(VIP, fwd.port, "whoami.test.relay", "TXT"), ['"dns-a"']);
  } finally {
    await fwd.close();
    await dnsA.close();
  }
});
