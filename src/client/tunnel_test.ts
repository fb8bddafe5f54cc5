/**
 * Tunnel reconnection (tunnel.ts) against an in-memory agent: a lost session is replaced with
 * backoff, a new session counts only once it stays up, streams wait (bounded) while it is gone.
 */

import assert from "node:assert/strict";
import { FakeAgent } from "../../tests/_lib/fake_agent.ts";
import { readStream } from "../../tests/_lib/net.ts";
import { encodeHeader } from "../protocol/header.ts";
import { SessionClosedError } from "../mux/mod.ts";
import { Tunnel } from "./tunnel.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

const header = () =>
  encodeHeader({
    requestId: crypto.randomUUID(),
    protocol: "tcp",
    port: 80,
    address: { type: "ipv4", ip: "10.0.0.1" },
  });

function tunnelTo(agent: FakeAgent, waitForSessionMs = 10_000) {
  const notes: string[] = [];
  const tunnel = new Tunnel({
    connect: agent.connect,
    heartbeatTimeoutMs: 15_000,
    waitForSessionMs,
    note: (l) => notes.push(l),
    log() {},
  });
  return { tunnel, notes };
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), what);
}

async function echoThrough(tunnel: Tunnel, text: string): Promise<string> {
  const stream = await tunnel.openStream(header());
  await stream.write(enc(text));
  await stream.closeWrite();
  return dec(await readStream(stream));
}

Deno.test("tunnel: a lost session ends its streams, is reconnected, and new streams use the new one", async () => {
  const agent = new FakeAgent((_, session) => (session === 0 ? "hold" : "echo"));
  const { tunnel, notes } = tunnelTo(agent);
  await tunnel.start();
  const held = await tunnel.openStream(header());
  assert.equal(tunnel.activeStreams, 1);
  agent.drop(0);
  await assert.rejects(held.read());
  assert.equal(await echoThrough(tunnel, "after"), "after");
  assert.equal(agent.connects, 2);
  assert.equal(agent.streams.at(-1)!.session, 1);
  await until("reconnected note", () => notes.length === 2);
  assert.match(
    notes[0],
    /^Lost connection to the agent \(.*\); 1 open connection\(s\) closed; reconnecting…$/,
  );
  assert.match(notes[1], /^Reconnected to the agent after \d+\.\ds$/);
  tunnel.close();
  await agent.close();
});

Deno.test("tunnel: a connect that fails, or a session that ends at once, is retried with backoff", async () => {
  // Connect 1 (the first reconnect) fails; connect 2 gives a session the agent drops at once;
  // connect 3 stays up.
  const agent = new FakeAgent(() => "echo", (n) => n === 1);
  const { tunnel, notes } = tunnelTo(agent);
  await tunnel.start();
  const connectsBefore = agent.connects;
  const dropSecond = setInterval(() => {
    if (agent.connects === 3) {
      clearInterval(dropSecond);
      agent.drop(1);
    }
  }, 1);
  agent.drop(0);
  await until("third connect", () => agent.connects === 4, 15_000);
  clearInterval(dropSecond);
  assert.equal(connectsBefore, 1);
  await until("reconnected note", () => notes.some((n) => n.startsWith("Reconnected")), 15_000);
  assert.equal(notes.filter((n) => n.startsWith("Lost connection")).length, 1, notes.join("\n"));
  assert.equal(await echoThrough(tunnel, "third time"), "third time");
  tunnel.close();
  await agent.close();
});

Deno.test("tunnel: while no session comes back, a new stream fails after waitForSessionMs", async () => {
  const agent = new FakeAgent(() => "echo", (n) => n > 0);
  const { tunnel } = tunnelTo(agent, 300);
  await tunnel.start();
  agent.drop(0);
  await until("session gone", () => agent.connects > 1);
  await assert.rejects(
    tunnel.openStream(header()),
    (e: Error) => e instanceof SessionClosedError && /still reconnecting/.test(e.message),
  );
  tunnel.close();
  await agent.close();
});

Deno.test("tunnel: after an agent's go-away, open streams finish on the old session, new ones use a new one", async () => {
  const agent = new FakeAgent();
  const { tunnel, notes } = tunnelTo(agent);
  await tunnel.start();
  const old = await tunnel.openStream(header());
  agent.sessions[0].goAway();
  await until("new session", () => agent.connects === 2);
  assert.equal(await echoThrough(tunnel, "new"), "new");
  assert.equal(agent.streams.at(-1)!.session, 1);
  await old.write(enc("old"));
  await old.closeWrite();
  assert.equal(dec(await readStream(old)), "old");
  assert.ok(!notes.some((n) => n.startsWith("Lost connection")), notes.join("\n"));
  tunnel.close();
  await agent.close();
});

Deno.test("tunnel: after close() nothing reconnects and opens fail at once", async () => {
  const agent = new FakeAgent();
  const { tunnel } = tunnelTo(agent);
  await tunnel.start();
  tunnel.close();
  await assert.rejects(tunnel.openStream(header()), /relay is shutting down|session closed/);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(agent.connects, 1);
  await agent.close();
});
