/**
 * Tunnel.start: the first session counts only once the agent answers on it; a port-forward that
 * opens and fails at once (the agent does not listen yet) is tried again, bounded by
 * startTimeoutMs, and none of this is reported as a lost connection.
 */
import assert from "node:assert/strict";
import { Tunnel } from "./tunnel.ts";
import { prefixedTransport, Session, type Transport } from "../mux/mod.ts";
import { PREFACE } from "../protocol/mux.ts";
import { memoryTransportPair } from "../../tests/_lib/memory_transport.ts";

/** A port-forward that opened, then failed the way a kubelet reports "connection refused". */
function refusedTransport(): Transport {
  return {
    read: () => Promise.reject(new Error("error forwarding port 9527: connection refused")),
    write: () => Promise.resolve(),
    close: () => {},
  };
}

/** A port-forward that opened but on which nothing ever arrives. */
function silentTransport(): Transport {
  let wake: (v: null) => void = () => {};
  return {
    read: () => new Promise((r) => (wake = r)),
    write: () => Promise.resolve(),
    close: () => wake(null),
  };
}

/** An agent on the far end of an in-memory pipe: consumes the PREFACE, serves a Session. */
async function agentEnd(t: Transport, echoed: string[]): Promise<Session> {
  let got = new Uint8Array(0);
  while (got.length < PREFACE.length) {
    const chunk = await t.read();
    if (!chunk) throw new Error("no preface");
    got = new Uint8Array([...got, ...chunk]);
  }
  assert.deepEqual(got.subarray(0, PREFACE.length), PREFACE);
  return new Session(prefixedTransport(got.subarray(PREFACE.length), t), {
    role: "server",
    onStream: async (s) => {
      s.accept();
      const chunk = await s.read();
      if (chunk) echoed.push(new TextDecoder().decode(chunk));
      await s.write(new TextEncoder().encode("pong"));
      await s.closeWrite();
    },
  });
}

class NotListening extends Error {}

/** A connect function that counts its calls; `attempt(n)` makes the n-th one (from 1). */
function counting(attempt: (n: number) => Promise<Transport>) {
  let calls = 0;
  return {
    connect: () => attempt(++calls),
    get calls(): number {
      return calls;
    },
  };
}

/** A transport to an agent that answers (see agentEnd); the agent's Session goes to `agents`. */
function answering(echoed: string[], agents: Session[]): Promise<Transport> {
  const [a, b] = memoryTransportPair();
  agentEnd(b, echoed).then((s) => agents.push(s));
  return Promise.resolve(a);
}

function tunnel(
  connect: () => Promise<Transport>,
  startTimeoutMs: number,
  notes: string[],
  heartbeatTimeoutMs = 5000,
) {
  return new Tunnel({
    connect,
    heartbeatTimeoutMs,
    waitForSessionMs: 1000,
    startTimeoutMs,
    retryable: (e) => e instanceof NotListening,
    note: (l) => notes.push(l),
    log: () => {},
  });
}

Deno.test("tunnel start: retries until the agent answers, then carries streams", async () => {
  const notes: string[] = [];
  const echoed: string[] = [];
  const agents: Session[] = [];
  const c = counting((n) =>
    n <= 2 ? Promise.resolve(refusedTransport()) : answering(echoed, agents)
  );
  const t = tunnel(c.connect, 5000, notes);
  await t.start();
  assert.equal(c.calls, 3, "two refused attempts, then the one that answered");
  const stream = await t.openStream(new Uint8Array([0, 0, 3, 1, 2, 3]));
  await stream.write(new TextEncoder().encode("ping"));
  const answer = await stream.read();
  assert.equal(new TextDecoder().decode(answer!), "pong");
  assert.deepEqual(echoed, ["ping"]);
  assert.deepEqual(notes, [], "failed start attempts are not reported as lost connections");
  t.close();
  agents.forEach((s) => s.close());
});

Deno.test("tunnel start: gives up after startTimeoutMs with the last reason", async () => {
  const notes: string[] = [];
  const c = counting(() => Promise.resolve(refusedTransport()));
  const t = tunnel(c.connect, 300, notes);
  const t0 = Date.now();
  await assert.rejects(t.start(), /connection refused/);
  assert.ok(c.calls >= 3, `tried ${c.calls} times`);
  assert.ok(Date.now() - t0 < 2000, "stopped near the deadline");
  assert.deepEqual(notes, []);
  t.close();
});

Deno.test("tunnel start: a port-forward that opens but never answers does not count", async () => {
  const c = counting(() => Promise.resolve(silentTransport()));
  const t = tunnel(c.connect, 0, [], 200);
  // Whichever comes first: the start's own wait, or the session's heartbeat timeout.
  await assert.rejects(t.start(), /no answer from the agent in 200 ms|ping timeout/);
  assert.equal(c.calls, 1, "startTimeoutMs 0: one attempt");
  t.close();
});

Deno.test("tunnel start: connect errors are retried only when retryable", async () => {
  const echoed: string[] = [];
  const agents: Session[] = [];
  const c = counting((n) =>
    n <= 2 ? Promise.reject(new NotListening("connection refused")) : answering(echoed, agents)
  );
  const t = tunnel(c.connect, 5000, []);
  await t.start();
  assert.equal(c.calls, 3);
  t.close();
  agents.forEach((s) => s.close());

  const other = counting(() => Promise.reject(new Error("Error from server (Forbidden): no")));
  const u = tunnel(other.connect, 5000, []);
  await assert.rejects(u.start(), /Forbidden/);
  assert.equal(other.calls, 1, "a refusal by the apiserver is not retried");
  u.close();
});
