/**
 * End-to-end: `kubectl relay proxy` (real kubectl, our launcher) against the local control
 * plane: curl through SOCKS5 to a Service name and to a pod IP, HTTP CONNECT, a DNS query
 * through UDP ASSOCIATE (our own SOCKS UDP client), error replies, fuzzed greetings.
 *
 * Network rule: every destination is a cluster name or a pod/Service IP of the local harness
 * (loopback ranges); fuzzed input is shaped so that it can never form a CONNECT the agent
 * would dial.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { NS, podIP, podNames, setup } from "./fixtures.ts";
import { agentJobs, type RelayProcess, startRelay } from "../_lib/relay.ts";
import { dnsQuery, QueryType } from "../_lib/dns.ts";
import { curlNoProxy, readAll, readExactly, writeAll } from "../_lib/net.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const WEB_SVC = `web.${NS}.svc.cluster.local`;

/** curl through a proxy; returns exit code, body and stderr. */
async function curlVia(args: string[]): Promise<{ code: number; body: string; stderr: string }> {
  const out = await curlNoProxy(args, 30);
  return { code: out.code, body: new TextDecoder().decode(out.stdout).trim(), stderr: out.stderr };
}

/** Runs `kubectl relay proxy`, gives its port to `fn`, then Ctrl-C: exit 0, no agent left. */
async function withProxy(fn: (port: number, r: RelayProcess) => Promise<void>): Promise<void> {
  const kc = await setup();
  const relay = await startRelay(kc, ["proxy", "--port", "0", "-v", "1"], { forwardLines: 0 });
  try {
    const line = await relay.waitFor(/^Proxy listening on /, 90_000);
    const m = /^Proxy listening on 127\.0\.0\.1:(\d+) \(SOCKS5, HTTP CONNECT\)$/.exec(line);
    assert.ok(m, line);
    await fn(Number(m[1]), relay);
  } finally {
    const code = await relay.stop("SIGINT");
    assert.equal(code, 0, `relay exit code\n${relay.err.join("\n")}`);
  }
  assert.deepEqual(await agentJobs(kc), [], "agent Job left behind");
}

Deno.test({
  name: "e2e proxy: curl --socks5-hostname to a Service name and a pod IP; HTTP CONNECT",
  ...opts,
}, async () => {
  const kc = await setup();
  const pods = await podNames(kc, "app=web");
  const ip = await podIP(kc, pods[0]);
  await withProxy(async (port, r) => {
    const a = await curlVia(["--socks5-hostname", `127.0.0.1:${port}`, `http://${WEB_SVC}:8080/`]);
    assert.equal(a.code, 0, a.stderr);
    assert.ok(pods.includes(a.body), a.body);
    await r.waitFor(new RegExp(`^Handling connection for ${WEB_SVC.replaceAll(".", "\\.")}:8080$`));

    const b = await curlVia(["--socks5-hostname", `127.0.0.1:${port}`, `http://${ip}:80/`]);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(b.body, pods[0]);

    // Short name through the agent's search domains, via CONNECT and via plain HTTP proxying.
    const c = await curlVia(["-p", "-x", `http://127.0.0.1:${port}`, `http://web.${NS}:8080/`]);
    assert.equal(c.code, 0, c.stderr);
    assert.ok(pods.includes(c.body), c.body);
    const d = await curlVia(["-x", `http://127.0.0.1:${port}`, `http://web.${NS}:8080/`]);
    assert.equal(d.code, 0, d.stderr);
    assert.ok(pods.includes(d.body), d.body);
  });
});

/** `p`, or undefined after `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), ms));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: "e2e proxy: UDP ASSOCIATE DNS query to a DNS pod, answered with its name",
  ...opts,
}, async () => {
  const kc = await setup();
  const [dnsPod] = await podNames(kc, "app=dns");
  const ip = (await podIP(kc, dnsPod)).split(".").map(Number);
  assert.equal(ip.length, 4);
  await withProxy(async (port) => {
    const ctl = await Deno.connect({ hostname: "127.0.0.1", port });
    const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      await writeAll(ctl, new Uint8Array([5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]));
      const reply = await readExactly(ctl, 12);
      assert.deepEqual(reply.subarray(0, 6), new Uint8Array([5, 0, 5, 0, 0, 1]));
      const relay: Deno.NetAddr = {
        transport: "udp",
        hostname: `${reply[6]}.${reply[7]}.${reply[8]}.${reply[9]}`,
        port: (reply[10] << 8) | reply[11],
      };
      const head = [0, 0, 0, 1, ...ip, 0, 53];
      const q = dnsQuery(0x5150, "whoami.test.relay", QueryType.TXT);
      // UDP may drop: retry a few times (bounded), each waiting up to 5 s.
      let answer: Uint8Array | undefined;
      const received = sock.receive().then(([d]) => d).catch(() => undefined);
      for (let attempt = 0; attempt < 3 && !answer; attempt++) {
        await sock.send(new Uint8Array([...head, ...q]), relay);
        answer = await within(received, 5000);
      }
      assert.ok(answer, "no DNS answer through the proxy");
      assert.deepEqual(answer.subarray(0, 10), new Uint8Array(head));
      const msg = answer.subarray(10);
      assert.deepEqual([msg[0], msg[1]], [0x51, 0x50]);
      assert.equal(msg[3] & 0x0f, 0);
      const text = new TextDecoder("latin1").decode(msg);
      assert.ok(text.includes(dnsPod), text);
    } finally {
      ctl.close();
      sock.close();
    }
  });
});

Deno.test({
  name: "e2e proxy: unknown host → 0x04, refused port → 0x05, fuzzed greetings leave it serving",
  ...opts,
}, async () => {
  const kc = await setup();
  const pods = await podNames(kc, "app=web");
  const ip = (await podIP(kc, pods[0])).split(".").map(Number);
  await withProxy(async (port, r) => {
    const socks = async (bytes: number[] | Uint8Array): Promise<Uint8Array> => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await writeAll(conn, new Uint8Array(bytes));
        await conn.closeWrite();
        return await readAll(conn);
      } finally {
        conn.close();
      }
    };
    const name = new TextEncoder().encode(`nosuch.${NS}.svc.cluster.local`);
    assert.deepEqual(
      await socks([5, 1, 0, 5, 1, 0, 3, name.length, ...name, 0, 80]),
      new Uint8Array([5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0]),
    );
    // The web pod serves only port 80: 81 is refused.
    assert.deepEqual(
      await socks([5, 1, 0, 5, 1, 0, 1, ...ip, 0, 81]),
      new Uint8Array([5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0]),
    );
    await r.waitFor(/^error: dial tcp nosuch\..*: no such host$/);
    await r.waitFor(/^error: dial tcp .*:81: connection refused$/);

    // Fuzz, shaped so that no input can be a CONNECT the agent would dial.
    const noConnect = fc.oneof(
      // A greeting without the no-auth method.
      fc.uint8Array({ minLength: 1, maxLength: 8 }).map((m) =>
        new Uint8Array([5, m.length, ...m.map((b) => b === 0 ? 1 : b)])
      ),
      // A request with a command other than CONNECT / UDP ASSOCIATE.
      fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 24 }))
        .filter(([cmd]) => cmd !== 1 && cmd !== 3)
        .map(([cmd, rest]) => new Uint8Array([5, 1, 0, 5, cmd, ...rest])),
      // A CONNECT with an unknown address type.
      fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 24 }))
        .filter(([atyp]) => atyp !== 1 && atyp !== 3 && atyp !== 4)
        .map(([atyp, rest]) => new Uint8Array([5, 1, 0, 5, 1, 0, atyp, ...rest])),
      // Random bytes that are neither SOCKS5 nor an HTTP request line.
      fc.uint8Array({ minLength: 1, maxLength: 64 }).map((b) => new Uint8Array([0xc0, ...b])),
    );
    await fc.assert(
      fc.asyncProperty(noConnect, async (bytes) => {
        await socks(bytes); // answered and closed; readAll returns
      }),
      { numRuns: 60, seed: 42 },
    );
    const after = await curlVia([
      "--socks5-hostname",
      `127.0.0.1:${port}`,
      `http://${WEB_SVC}:8080/`,
    ]);
    assert.equal(after.code, 0, after.stderr);
    assert.ok(pods.includes(after.body), after.body);
  });
});
