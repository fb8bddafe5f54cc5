/** Dialling and error → status mapping, with injected resolvers/connectors (no network). */

import assert from "node:assert/strict";
import { DialError, dialTcp, type Resolver } from "./dial.ts";
import { Status, statusMessage } from "../protocol/status.ts";
import { parseAgentArgs, parseAgentDuration } from "./options.ts";

const host = { type: "hostname", name: "svc.ns" } as const;
const opts = { connectTimeoutMs: 50, resolveTimeoutMs: 50 };

async function statusOf(p: Promise<unknown>): Promise<Status> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof DialError, String(e));
    return e.status;
  }
  throw new Error("dial unexpectedly succeeded");
}

const failing = (code: string): Resolver => () =>
  Promise.reject(Object.assign(new Error(`getaddrinfo ${code} svc.ns`), { code }));

Deno.test("dial: resolver failures map to statuses", async () => {
  assert.equal(
    await statusOf(dialTcp(host, 80, { ...opts, resolver: failing("ENOTFOUND") })),
    Status.NoSuchHost,
  );
  assert.equal(
    await statusOf(dialTcp(host, 80, { ...opts, resolver: failing("EAI_AGAIN") })),
    Status.ResolveTimeout,
  );
  assert.equal(
    await statusOf(dialTcp(host, 80, { ...opts, resolver: failing("EWHAT") })),
    Status.UnknownError,
  );
  assert.equal(
    await statusOf(dialTcp(host, 80, { ...opts, resolver: () => Promise.resolve([]) })),
    Status.NoSuchHost,
  );
});

Deno.test("dial: a resolver that never answers → resolve timeout", async () => {
  const never: Resolver = () => new Promise(() => {});
  assert.equal(
    await statusOf(dialTcp(host, 80, { ...opts, resolver: never })),
    Status.ResolveTimeout,
  );
});

Deno.test("dial: a connect that never completes → connect timeout (i/o timeout)", async () => {
  let signalled = false;
  const status = await statusOf(
    dialTcp({ type: "ipv4", ip: "127.0.0.1" }, 80, {
      ...opts,
      connector: (o) =>
        new Promise(() => {
          o.signal?.addEventListener("abort", () => signalled = true);
        }),
    }),
  );
  assert.equal(status, Status.ConnectTimeout);
  assert.equal(statusMessage(status), "i/o timeout");
  assert.ok(signalled, "the pending connect was aborted");
});

Deno.test("dial: connect errors map to statuses", async () => {
  const cases: [Error, Status][] = [
    [
      new Deno.errors.ConnectionRefused("Connection refused (os error 111)"),
      Status.ConnectionRefused,
    ],
    [
      new Deno.errors.NetworkUnreachable("Network is unreachable (os error 101)"),
      Status.NetworkUnreachable,
    ],
    [new Error("No route to host (os error 113)"), Status.NetworkUnreachable],
    [new Deno.errors.TimedOut("Connection timed out (os error 110)"), Status.ConnectTimeout],
    [new Error("something else"), Status.UnknownError],
  ];
  for (const [err, want] of cases) {
    const got = await statusOf(
      dialTcp({ type: "ipv6", ip: "::1" }, 80, { ...opts, connector: () => Promise.reject(err) }),
    );
    assert.equal(got, want, err.message);
  }
});

Deno.test("dial: tries each resolved address in turn", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  const tried: string[] = [];
  try {
    const accepted = l.accept();
    const conn = await dialTcp(host, port, {
      ...opts,
      connectTimeoutMs: 5000,
      resolver: () => Promise.resolve(["10.0.0.1", "127.0.0.1"]),
      connector: (o) => {
        tried.push(o.hostname!);
        // Never dial anything but loopback from tests.
        if (o.hostname !== "127.0.0.1") {
          return Promise.reject(new Deno.errors.ConnectionRefused("refused"));
        }
        return Deno.connect(o);
      },
    });
    conn.close();
    (await accepted).close();
  } finally {
    l.close();
  }
  assert.deepEqual(tried, ["10.0.0.1", "127.0.0.1"]);
});

Deno.test("agent options: defaults, flags, durations", () => {
  const d = parseAgentArgs([]);
  assert.equal(d.hostname, "127.0.0.1");
  assert.equal(d.port, 9527);
  assert.equal(d.health, undefined);
  assert.equal(d.idleExitMs, 300_000);
  assert.equal(d.udpIdleMs, 60_000);
  assert.equal(d.pingTimeoutMs, 15_000);
  assert.equal(parseAgentArgs(["--ping-timeout", "2s"]).pingTimeoutMs, 2000);
  assert.throws(() => parseAgentArgs(["--ping-timeout", "0"]));
  const o = parseAgentArgs([
    "--listen",
    "[::1]:1234",
    "--idle-exit=1m30s",
    "--udp-idle",
    "500ms",
    "-v",
    "2",
    "--health",
    "0.0.0.0:9528",
  ]);
  assert.deepEqual(o.health, { hostname: "0.0.0.0", port: 9528 });
  assert.equal(o.hostname, "::1");
  assert.equal(o.port, 1234);
  assert.equal(o.idleExitMs, 90_000);
  assert.equal(o.udpIdleMs, 500);
  assert.equal(o.verbosity, 2);
  assert.equal(parseAgentDuration("0", "x"), 0);
  assert.throws(() => parseAgentArgs(["--listen", "nope"]));
  assert.throws(() => parseAgentArgs(["--health", "9528"]), /invalid --health "9528"/);
  assert.throws(() => parseAgentArgs(["--idle-exit", "5 minutes"]));
  assert.throws(() => parseAgentArgs(["--idle-exit"]));
  // krelay's server flag is an alias; 0 disables.
  assert.equal(parseAgentArgs(["--idle-timeout=15s"]).idleExitMs, 15_000);
  assert.equal(parseAgentArgs(["--idle-timeout", "0"]).idleExitMs, 0);
  assert.equal(parseAgentArgs(["--max-streams", "4096"]).maxStreams, 4096);
  assert.equal(parseAgentArgs([]).maxStreams, undefined);
  assert.throws(() => parseAgentArgs(["--max-streams", "0"]), /positive integer/);
});
