/** Direct mode's pieces: which requests can go direct, and one port-forward as a stream. */
import assert from "node:assert/strict";
import { directProblem, PortForwardStream } from "./direct.ts";
import type { Transport } from "../mux/mod.ts";
import { parsePortSpec } from "../spec/ports.ts";
import { parseTarget } from "../spec/target.ts";

/** A Transport fed by the test: `push` data, `fail` with an error, `end` it. */
function fakeTransport() {
  const chunks: (Uint8Array | Error | null)[] = [];
  let wake: (() => void) | undefined;
  const written: string[] = [];
  let closed = false;
  const feed = (c: Uint8Array | Error | null) => {
    chunks.push(c);
    wake?.();
  };
  const t: Transport = {
    async read() {
      while (chunks.length === 0 && !closed) await new Promise<void>((r) => (wake = r));
      if (closed && chunks.length === 0) return null;
      const c = chunks.shift()!;
      if (c instanceof Error) throw c;
      return c;
    },
    write(chunk) {
      written.push(new TextDecoder().decode(chunk));
      return Promise.resolve();
    },
    close() {
      closed = true;
      wake?.();
    },
  };
  return {
    t,
    written,
    push: (s: string) => feed(new TextEncoder().encode(s)),
    fail: (m: string) => feed(new Error(m)),
    end: () => feed(null),
    get closed() {
      return closed;
    },
  };
}

const req = (target: string, ...ports: string[]) => ({
  target: parseTarget(target),
  ports: ports.map(parsePortSpec),
  addresses: ["127.0.0.1"],
});

Deno.test("direct: TCP to pods, workloads and services can go direct; UDP, host/, ip/ cannot", () => {
  assert.equal(directProblem([req("pod/x", "80"), req("deploy/y", "8080:http")]), undefined);
  assert.equal(directProblem([req("svc/web", ":80")]), undefined);
  assert.match(directProblem([req("pod/x", "80", ":53@udp")])!, /^UDP needs the agent \(:53@udp\)/);
  assert.match(directProblem([req("host/db", "5432")])!, /^host\/ targets need the agent/);
  assert.match(directProblem([req("ip/10.0.0.1", "80")])!, /^ip\/ targets need the agent/);
});

Deno.test("direct stream: opened on the pod's first bytes; data flows both ways", async () => {
  const f = fakeTransport();
  const s = new PortForwardStream(f.t, { confirmMs: 60_000 });
  await s.write(new TextEncoder().encode("GET /"));
  assert.deepEqual(f.written, ["GET /"]);
  f.push("hello");
  await s.opened;
  assert.equal(new TextDecoder().decode((await s.read())!), "hello");
  f.end();
  assert.equal(await s.read(), null);
});

Deno.test("direct stream: an error before any answer rejects opened (so it can be retried)", async () => {
  const f = fakeTransport();
  const s = new PortForwardStream(f.t, { confirmMs: 60_000 });
  f.fail("port-forward to ns/p:80: connection refused");
  await assert.rejects(s.opened, /connection refused/);
  await assert.rejects(s.read(), /connection refused/);
  await assert.rejects(s.write(new Uint8Array(1)), /connection refused/);
});

Deno.test("direct stream: no error for a while counts as connected", async () => {
  const f = fakeTransport();
  const s = new PortForwardStream(f.t, { confirmMs: 20 });
  await s.opened;
  s.reset("done");
  assert.ok(f.closed);
});

Deno.test("direct stream: after the local EOF it closes once the pod is quiet", async () => {
  const f = fakeTransport();
  const s = new PortForwardStream(f.t, { confirmMs: 10, lingerMs: 150 });
  await s.closeWrite();
  // The pod still answers after our EOF: that is delivered, and it keeps the stream open.
  await new Promise((r) => setTimeout(r, 100));
  f.push("late answer");
  assert.equal(new TextDecoder().decode((await s.read())!), "late answer");
  assert.equal(f.closed, false);
  // Then quiet: closed, and the reader sees the end.
  assert.equal(await s.read(), null);
  assert.ok(f.closed);
});
