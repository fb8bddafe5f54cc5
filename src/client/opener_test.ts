/**
 * The open-and-retry policy (opener.ts) over a real tunnel to an in-memory agent: which refusals
 * are retried where, that early bytes are replayed exactly once, and what the user is told.
 */

import assert from "node:assert/strict";
import { FakeAgent } from "../../tests/_lib/fake_agent.ts";
import { readStream } from "../../tests/_lib/net.ts";
import type { Destination, ResolvedTarget } from "../kube/resolve.ts";
import { formatAddress } from "../protocol/addr.ts";
import { Status } from "../protocol/status.ts";
import type { PortSpec } from "../spec/ports.ts";
import { MAX_OPEN_ATTEMPTS, streamOpener } from "./opener.ts";
import { Tunnel } from "./tunnel.ts";

const SPEC: PortSpec = { local: 0, remote: 80, protocol: "tcp", text: "80" };
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * A target whose ready pods are `pods` (10.0.0.1, 10.0.0.2, …); a reported pod is skipped.
 * `watched` holds the pods whose watch (watchPod) is on; `gone(pod)` ends them.
 */
function podTarget(pods: string[]) {
  const reported: string[] = [];
  const watched = new Map<string, () => void>();
  const target: ResolvedTarget = {
    remoteLabel: (spec) => String(spec.remote),
    destination(spec): Promise<Destination> {
      const live = pods.filter((p) => !reported.includes(p));
      const pod = live[0] ?? pods[pods.length - 1];
      return Promise.resolve({
        address: { type: "ipv4", ip: `10.0.0.${pods.indexOf(pod) + 1}` },
        port: spec.remote as number,
        pod,
      });
    },
    reportFailure(dest) {
      reported.push(dest.pod!);
    },
    watchPod(dest, onGone) {
      const key = `${dest.pod} ${formatAddress(dest.address)}`;
      watched.set(key, onGone);
      return () => watched.delete(key);
    },
    stop() {},
  };
  const gone = (key: string) => {
    watched.get(key)?.();
    watched.delete(key);
  };
  return { target, reported, watched, gone };
}

/** A fixed destination without a pod (ip/ and host/ targets). */
const ipTarget: ResolvedTarget = {
  remoteLabel: (spec) => String(spec.remote),
  destination: (spec) =>
    Promise.resolve({ address: { type: "ipv4", ip: "192.0.2.7" }, port: spec.remote as number }),
  reportFailure() {
    throw new Error("a fixed destination has nothing to report");
  },
  stop() {},
};

async function withTunnel(agent: FakeAgent, fn: (tunnel: Tunnel) => Promise<void>): Promise<void> {
  const tunnel = new Tunnel({
    connect: agent.connect,
    heartbeatTimeoutMs: 15_000,
    waitForSessionMs: 5_000,
    note() {},
    log() {},
  });
  await tunnel.start();
  try {
    await fn(tunnel);
  } finally {
    tunnel.close();
    await agent.close();
  }
}

Deno.test("opener: the first open carries the destination and the early bytes", async () => {
  const agent = new FakeAgent();
  await withTunnel(agent, async (tunnel) => {
    const { target, reported } = podTarget(["web-a", "web-b"]);
    const stream = await streamOpener(tunnel, () => {})(target, SPEC);
    await stream.write(enc("hello"));
    await stream.closeWrite();
    await stream.ready;
    assert.equal(dec(await readStream(stream)), "hello");
    assert.equal(agent.streams.length, 1);
    const h = agent.streams[0].header;
    assert.deepEqual([h.protocol, h.address, h.port], [
      "tcp",
      { type: "ipv4", ip: "10.0.0.1" },
      80,
    ]);
    assert.deepEqual(reported, []);
  });
});

Deno.test("opener: a pod that refuses is reported and the open is replayed on the next pod", async () => {
  const agent = new FakeAgent((
    h,
  ) => (h.address.type === "ipv4" && h.address.ip === "10.0.0.1"
    ? Status.ConnectionRefused
    : "echo")
  );
  await withTunnel(agent, async (tunnel) => {
    const { target, reported } = podTarget(["web-a", "web-b"]);
    const stream = await streamOpener(tunnel, () => {})(target, SPEC);
    await stream.write(enc("hello "));
    await stream.write(enc("world"));
    await stream.closeWrite();
    await stream.ready;
    assert.equal(dec(await readStream(stream)), "hello world");
    assert.deepEqual(reported, ["web-a"]);
    assert.deepEqual(agent.streams.map((s) => s.answer), [Status.ConnectionRefused, "echo"]);
    // The accepted stream got the bytes exactly once.
    assert.equal(dec(await agent.streams[1].received!), "hello world");
  });
});

Deno.test("opener: onTargetGone watches the pod the stream reached, and only where targets follow pods", async () => {
  const agent = new FakeAgent((
    h,
  ) => (h.address.type === "ipv4" && h.address.ip === "10.0.0.1"
    ? Status.ConnectionRefused
    : "echo")
  );
  await withTunnel(agent, async (tunnel) => {
    const { target, watched, gone } = podTarget(["web-a", "web-b"]);
    const stream = await streamOpener(tunnel, () => {})(target, {
      ...SPEC,
      protocol: "udp",
    });
    await stream.ready;
    let calls = 0;
    const cancel = stream.onTargetGone!(() => calls++);
    // web-a refused; the stream went to web-b, so web-b is the pod watched.
    assert.deepEqual([...watched.keys()], ["web-b 10.0.0.2"]);
    gone("web-b 10.0.0.2");
    assert.equal(calls, 1);
    cancel();
    stream.reset("done");
    const fixed = await streamOpener(tunnel, () => {})(ipTarget, SPEC);
    assert.equal(fixed.onTargetGone, undefined);
    fixed.reset("done");
  });
});

Deno.test(`opener: after ${MAX_OPEN_ATTEMPTS} refusals the user sees the last dial error`, async () => {
  const agent = new FakeAgent(() => Status.ConnectTimeout);
  await withTunnel(agent, async (tunnel) => {
    const { target, reported } = podTarget(["web-a", "web-b", "web-c", "web-d"]);
    const stream = await streamOpener(tunnel, () => {})(target, SPEC);
    await stream.write(enc("x"));
    await assert.rejects(stream.ready, (e: Error) => {
      assert.equal(e.message, "dial tcp 10.0.0.3:80: i/o timeout");
      return true;
    });
    assert.equal(agent.streams.length, MAX_OPEN_ATTEMPTS);
    assert.deepEqual(reported, ["web-a", "web-b"]);
    await assert.rejects(stream.read());
  });
});

Deno.test("opener: a refusal no other pod can fix (no such host) is not retried", async () => {
  const agent = new FakeAgent(() => Status.NoSuchHost);
  await withTunnel(agent, async (tunnel) => {
    const { target, reported } = podTarget(["web-a", "web-b"]);
    const stream = await streamOpener(tunnel, () => {})(target, SPEC);
    await assert.rejects(stream.ready, /^Error: dial tcp 10\.0\.0\.1:80: no such host$/);
    assert.equal(agent.streams.length, 1);
    assert.deepEqual(reported, []);
  });
});

Deno.test("opener: a refused fixed destination (ip/, host/) is not retried", async () => {
  const agent = new FakeAgent(() => Status.ConnectionRefused);
  await withTunnel(agent, async (tunnel) => {
    const stream = await streamOpener(tunnel, () => {})(ipTarget, { ...SPEC, remote: 5000 });
    await assert.rejects(stream.ready, /dial tcp 192\.0\.2\.7:5000: connection refused/);
    assert.equal(agent.streams.length, 1);
  });
});

Deno.test("opener: an open the agent refused while going away is replayed on the next session", async () => {
  const agent = new FakeAgent((_, session) => (session === 0 ? "go-away" : "echo"));
  await withTunnel(agent, async (tunnel) => {
    const stream = await streamOpener(tunnel, () => {})(ipTarget, SPEC);
    await stream.write(enc("early"));
    await stream.closeWrite();
    await stream.ready;
    assert.equal(dec(await readStream(stream)), "early");
    assert.deepEqual(agent.streams.map((s) => [s.session, s.answer]), [[0, "go-away"], [
      1,
      "echo",
    ]]);
    assert.equal(dec(await agent.streams[1].received!), "early");
  });
});
