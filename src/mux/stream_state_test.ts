/**
 * The StreamState sequences streams go through in what a user does with a Session pair (or a
 * scripted peer): each scenario records both ends' states after every step.
 */

import assert from "node:assert/strict";
import { EARLY_WINDOW } from "../protocol/mux.ts";
import {
  SessionClosedError,
  type Stream,
  StreamRejectedError,
  StreamResetError,
  StreamState,
} from "./mod.ts";
import { memoryPair, rawPeer, TEST_HEADER as HEADER } from "../../tests/_lib/session.ts";
import { readStream } from "../../tests/_lib/net.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * Steps of a scenario as `label: <state of each stream>` lines, for one readable comparison. A
 * step lists only streams whose state is settled at that point (not one a frame is on its way to).
 */
class Steps {
  readonly lines: string[] = [];
  at(label: string, ...streams: Stream[]): void {
    this.lines.push(`${label}: ${streams.map((s) => StreamState[s.state]).join(" / ")}`);
  }
}

/**
 * A test on a fresh in-memory Session pair: `body` gets the pair and an empty Steps record; the
 * pair is closed afterwards, whatever happens.
 */
function pairScenario(
  name: string,
  body: (p: Awaited<ReturnType<typeof memoryPair>>, steps: Steps) => Promise<void>,
): void {
  Deno.test(name, async () => {
    const p = await memoryPair();
    try {
      await body(p, new Steps());
    } finally {
      await p.close();
    }
  });
}

pairScenario(
  "stream state: open, accept, data both ways, half-close both ways ends Closed on both sides",
  async (p, steps) => {
    const c = p.client.openEarlyStream(HEADER);
    const srv = await p.streams.next();
    steps.at("OPEN", c, srv);
    srv.accept();
    steps.at("accept()", c, srv);
    await c.opened;
    steps.at("STATUS 0 arrived", c, srv);
    await c.write(enc("ping"));
    assert.equal(dec((await srv.read())!), "ping");
    await srv.write(enc("pong"));
    assert.equal(dec((await c.read())!), "pong");
    steps.at("data both ways", c, srv);
    await c.closeWrite();
    steps.at("client closeWrite()", c);
    assert.equal(await srv.read(), null);
    steps.at("server read EOF", c, srv);
    await srv.closeWrite();
    steps.at("server closeWrite()", srv);
    assert.equal(await c.read(), null);
    steps.at("client read EOF", c, srv);
    assert.deepEqual(steps.lines, [
      "OPEN: Opening / Accepting",
      "accept(): Opening / Open",
      "STATUS 0 arrived: Open / Open",
      "data both ways: Open / Open",
      "client closeWrite(): LocalClosed",
      "server read EOF: LocalClosed / RemoteClosed",
      "server closeWrite(): Closed",
      "client read EOF: Closed / Closed",
    ]);
    assert.equal(p.client.activeStreams, 0);
    assert.equal(p.server.activeStreams, 0);
  },
);

pairScenario(
  "stream state: an early half-close before STATUS, answered by the server's first write",
  async (p, steps) => {
    const c = p.client.openEarlyStream(HEADER);
    await c.write(enc("GET /"));
    await c.closeWrite();
    steps.at("OPEN, DATA, HALF_CLOSE sent", c);
    const srv = await p.streams.next();
    assert.equal(dec(await readStream(srv)), "GET /"); // early data, read before answering
    steps.at("server read EOF", c, srv);
    await srv.write(enc("200 OK")); // writing answers (STATUS 0)
    steps.at("server write()", srv);
    await c.opened;
    steps.at("STATUS 0 arrived", c, srv);
    await srv.closeWrite();
    steps.at("server closeWrite()", srv);
    assert.equal(dec(await readStream(c)), "200 OK");
    steps.at("client read EOF", c, srv);
    assert.deepEqual(steps.lines, [
      "OPEN, DATA, HALF_CLOSE sent: OpeningLocalClosed",
      "server read EOF: OpeningLocalClosed / AcceptingRemoteClosed",
      "server write(): RemoteClosed",
      "STATUS 0 arrived: LocalClosed / RemoteClosed",
      "server closeWrite(): Closed",
      "client read EOF: Closed / Closed",
    ]);
  },
);

pairScenario(
  "stream state: a reset from either side ends both sides Reset, before or after STATUS",
  async (p, steps) => {
    // Client resets an open stream.
    let c = p.client.openEarlyStream(HEADER);
    let srv = await p.streams.next();
    srv.accept();
    await c.opened;
    steps.at("open", c, srv);
    c.reset("client gave up");
    steps.at("client reset()", c, srv);
    await assert.rejects(srv.read(), (e) => e instanceof StreamResetError && e.byPeer);
    steps.at("server saw RESET", c, srv);
    // Server resets an open stream.
    c = p.client.openEarlyStream(HEADER);
    srv = await p.streams.next();
    srv.accept();
    await c.opened;
    srv.reset("local read: connection reset");
    steps.at("server reset()", c, srv);
    await assert.rejects(c.read(), (e) => e instanceof StreamResetError && e.byPeer);
    steps.at("client saw RESET", c, srv);
    // Client gives up before STATUS.
    c = p.client.openEarlyStream(HEADER);
    srv = await p.streams.next();
    c.reset("cancelled");
    steps.at("client reset() before STATUS", c, srv);
    await assert.rejects(c.opened, (e) => e instanceof StreamResetError && !e.byPeer);
    await assert.rejects(srv.read(), StreamResetError);
    steps.at("server saw RESET", c, srv);
    // Server resets instead of answering.
    c = p.client.openEarlyStream(HEADER);
    srv = await p.streams.next();
    srv.reset("stream handler failed");
    steps.at("server reset() instead of STATUS", c, srv);
    await assert.rejects(c.opened, (e) => e instanceof StreamResetError && e.byPeer);
    steps.at("client saw RESET", c, srv);
    srv.accept(); // too late: nothing changes
    steps.at("server accept() after reset()", c, srv);
    // The server resets a stream the client half-closed.
    c = p.client.openEarlyStream(HEADER);
    srv = await p.streams.next();
    await c.closeWrite();
    assert.equal(await srv.read(), null);
    steps.at("client half-closed", c, srv);
    srv.reset("write: broken pipe");
    steps.at("server reset()", c, srv);
    await assert.rejects(c.opened, (e) => e instanceof StreamResetError && e.byPeer);
    steps.at("client saw RESET", c, srv);
    // The client resets a stream the server half-closed.
    c = p.client.openEarlyStream(HEADER);
    srv = await p.streams.next();
    await srv.closeWrite();
    assert.equal(await c.read(), null);
    steps.at("server half-closed", c, srv);
    c.reset("local read: connection reset");
    steps.at("client reset()", c, srv);
    await assert.rejects(srv.read(), (e) => e instanceof StreamResetError && e.byPeer);
    steps.at("server saw RESET", c, srv);
    assert.deepEqual(steps.lines, [
      "open: Open / Open",
      "client reset(): Reset / Open",
      "server saw RESET: Reset / Reset",
      "server reset(): Open / Reset",
      "client saw RESET: Reset / Reset",
      "client reset() before STATUS: Reset / Accepting",
      "server saw RESET: Reset / Reset",
      "server reset() instead of STATUS: Opening / Reset",
      "client saw RESET: Reset / Reset",
      "server accept() after reset(): Reset / Reset",
      "client half-closed: OpeningLocalClosed / AcceptingRemoteClosed",
      "server reset(): OpeningLocalClosed / Reset",
      "client saw RESET: Reset / Reset",
      "server half-closed: RemoteClosed / LocalClosed",
      "client reset(): Reset / LocalClosed",
      "server saw RESET: Reset / Reset",
    ]);
    assert.equal(p.client.activeStreams, 0);
    assert.equal(p.server.activeStreams, 0);
  },
);

pairScenario(
  "stream state: a nonzero STATUS leaves both sides Rejected; reads and writes fail",
  async (p, steps) => {
    const c = p.client.openEarlyStream(HEADER);
    await c.write(enc("lost"));
    const srv = await p.streams.next();
    steps.at("OPEN", c, srv);
    srv.reject(4);
    steps.at("reject(4)", c, srv);
    await assert.rejects(c.opened, (e) => e instanceof StreamRejectedError && e.status === 4);
    steps.at("STATUS 4 arrived", c, srv);
    srv.accept(); // already answered: nothing changes
    c.reset("too late"); // already ended: nothing changes
    steps.at("accept() and reset() afterwards", c, srv);
    await assert.rejects(c.read(), StreamRejectedError);
    await assert.rejects(c.write(enc("more")), StreamRejectedError);
    await assert.rejects(srv.read(), /rejected with status 4/);
    assert.deepEqual(steps.lines, [
      "OPEN: Opening / Accepting",
      "reject(4): Opening / Rejected",
      "STATUS 4 arrived: Rejected / Rejected",
      "accept() and reset() afterwards: Rejected / Rejected",
    ]);
    assert.equal(p.client.activeStreams, 0);
    assert.equal(p.server.activeStreams, 0);
  },
);

Deno.test("stream state: an early-half-closed stream refused by the agent is Rejected", async () => {
  const peer = await rawPeer();
  const steps = new Steps();
  const s = peer.client.openEarlyStream(HEADER);
  await s.closeWrite();
  steps.at("closeWrite() before STATUS", s);
  await peer.next("open");
  await peer.send({ type: "status", streamId: 1, status: 2, window: 0 });
  await assert.rejects(s.opened, (e) => e instanceof StreamRejectedError && e.status === 2);
  steps.at("STATUS 2 arrived", s);
  assert.deepEqual(steps.lines, [
    "closeWrite() before STATUS: OpeningLocalClosed",
    "STATUS 2 arrived: Rejected",
  ]);
  await peer.done();
});

pairScenario(
  "stream state: closing the session mid-stream ends both sides SessionEnded",
  async (p, steps) => {
    const c = p.client.openEarlyStream(HEADER);
    const srv = await p.streams.next();
    srv.accept();
    await c.opened;
    await c.write(enc("half"));
    assert.equal(dec((await srv.read())!), "half");
    steps.at("open", c, srv);
    const pending = srv.read();
    p.client.close("user pressed ctrl-c");
    steps.at("client close()", c, srv);
    await assert.rejects(pending, SessionClosedError);
    steps.at("server saw the pipe end", c, srv);
    await assert.rejects(c.write(enc("x")), SessionClosedError);
    await assert.rejects(c.read(), SessionClosedError);
    c.reset("afterwards"); // only this side changes: nothing is sent on an ended session
    steps.at("client reset() afterwards", c, srv);
    await assert.rejects(c.read(), StreamResetError);
    assert.deepEqual(steps.lines, [
      "open: Open / Open",
      "client close(): SessionEnded / Open",
      "server saw the pipe end: SessionEnded / SessionEnded",
      "client reset() afterwards: Reset / SessionEnded",
    ]);
  },
);

pairScenario(
  "stream state: a session that ends after the peer's HALF_CLOSE still reads to a clean EOF",
  async (p, steps) => {
    const c = p.client.openEarlyStream(HEADER);
    const srv = await p.streams.next();
    await srv.write(enc("banner"));
    await srv.closeWrite();
    await c.opened;
    assert.equal(dec((await c.read())!), "banner");
    assert.equal(await c.read(), null);
    steps.at("server wrote and half-closed", c, srv);
    p.server.close("agent stopping");
    await p.client.closed;
    steps.at("session ended", c, srv);
    assert.equal(await c.read(), null);
    await assert.rejects(c.write(enc("late")), SessionClosedError);
    assert.deepEqual(steps.lines, [
      "server wrote and half-closed: RemoteClosed / LocalClosed",
      "session ended: SessionEndedRemoteClosed / SessionEnded",
    ]);
  },
);

pairScenario(
  "stream state: a session that ends before STATUS ends both unanswered sides",
  async (p, steps) => {
    const c = p.client.openEarlyStream(HEADER);
    await c.write(enc("GET /"));
    await c.closeWrite();
    const early = p.client.openEarlyStream(HEADER);
    const srv = await p.streams.next();
    const srvEarly = await p.streams.next();
    assert.equal(dec(await readStream(srv)), "GET /");
    steps.at("unanswered", c, srv, early, srvEarly);
    p.server.close("agent stopping");
    await p.client.closed;
    steps.at("session ended", c, srv, early, srvEarly);
    await assert.rejects(c.opened, SessionClosedError);
    await assert.rejects(early.opened, SessionClosedError);
    assert.equal(await srv.read(), null);
    await assert.rejects(srvEarly.read(), SessionClosedError);
    assert.deepEqual(steps.lines, [
      "unanswered: OpeningLocalClosed / AcceptingRemoteClosed / Opening / Accepting",
      "session ended: SessionEnded / SessionEndedRemoteClosed / SessionEnded / SessionEnded",
    ]);
  },
);

Deno.test("stream state: reset() after a clean close discards unread data and sends nothing", async () => {
  const peer = await rawPeer();
  const steps = new Steps();
  const s = peer.client.openEarlyStream(HEADER);
  await peer.next("open");
  await peer.send({ type: "status", streamId: 1, status: 0, window: EARLY_WINDOW });
  await s.opened;
  await peer.send({ type: "data", streamId: 1, data: enc("unread") });
  await peer.send({ type: "half_close", streamId: 1 });
  await peer.send({ type: "half_close", streamId: 1 }); // a duplicate is ignored
  // A PING round trip: the client handled every frame sent before it once the PONG is back.
  await peer.send({ type: "ping", data: new Uint8Array(8) });
  await peer.next("pong");
  steps.at("peer's FIN", s);
  await s.closeWrite();
  await peer.next("half_close");
  steps.at("both FINs", s);
  s.reset("not needed");
  steps.at("reset()", s);
  await assert.rejects(s.read(), StreamResetError);
  // Anything the client sent before answering this PING has arrived by the PONG.
  await peer.send({ type: "ping", data: new Uint8Array(8) });
  await peer.next("pong");
  assert.deepEqual(peer.unread.filter((f) => f.type === "reset"), []);
  assert.deepEqual(steps.lines, [
    "peer's FIN: RemoteClosed",
    "both FINs: Closed",
    "reset(): Reset",
  ]);
  await peer.done();
});
