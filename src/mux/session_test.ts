/** Tunnel Session/Stream behaviour over an in-memory transport pair and loopback TCP. */

import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import { EARLY_WINDOW, encodeFrame, type Frame, FrameDecoder, PREFACE } from "../protocol/mux.ts";
import {
  Session,
  SessionClosedError,
  type Stream,
  StreamRejectedError,
  StreamResetError,
} from "./mod.ts";
import { connTransport } from "./mod.ts";
import { memoryTransportPair } from "../../tests/_lib/memory_transport.ts";
import {
  acceptPreface,
  drain,
  memoryPair,
  pseudoRandom,
  Queue,
  rawPeer,
  sendPattern,
  sha256,
  tcpPair,
  TEST_HEADER as HEADER,
} from "../../tests/_lib/session.ts";
import { readStream } from "../../tests/_lib/net.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * Server side: accept and echo everything back, then half-close. Never rejects (tests may not
 * await it): returns the error instead.
 */
async function echo(s: Stream): Promise<unknown> {
  try {
    s.accept();
    while (true) {
      const chunk = await s.read();
      if (chunk === null) break;
      await s.write(chunk);
    }
    await s.closeWrite();
  } catch (e) {
    return e;
  }
}

for (const [name, make] of [["memory", memoryPair], ["tcp", tcpPair]] as const) {
  Deno.test(`session/${name}: open carries the Header bytes, accept, echo, half-close`, async () => {
    const p = await make();
    try {
      const opening = p.client.openStream(HEADER);
      const srv = await p.streams.next();
      assert.deepEqual(srv.header, HEADER);
      const echoing = echo(srv);
      const c = await opening;
      assert.equal(c.id, 1);
      await c.write(enc("hello "));
      await c.write(enc("tunnel"));
      await c.closeWrite();
      assert.equal(dec(await readStream(c)), "hello tunnel");
      await echoing;
      assert.equal(p.client.activeStreams, 0);
      assert.equal(p.server.activeStreams, 0);
    } finally {
      await p.close();
    }
  });

  Deno.test(`session/${name}: many concurrent streams keep their bytes apart`, async () => {
    const p = await make();
    try {
      const serving = (async () => {
        for (let i = 0; i < 100; i++) void echo(await p.streams.next());
      })();
      const results = await Promise.all(
        Array.from({ length: 100 }, async (_, i) => {
          const s = await p.client.openStream(HEADER);
          const payload = pseudoRandom(10_000 + i * 997, i + 1);
          const [, got] = await Promise.all([
            (async () => {
              for (let off = 0; off < payload.length; off += 4096) {
                await s.write(payload.subarray(off, off + 4096));
              }
              await s.closeWrite();
            })(),
            readStream(s),
          ]);
          return sha256(got) === sha256(payload);
        }),
      );
      await serving;
      assert.deepEqual(results, new Array(100).fill(true));
    } finally {
      await p.close();
    }
  });

  Deno.test(`session/${name}: reject(status) fails openStream; the session stays up`, async () => {
    const p = await make();
    try {
      const opening = p.client.openStream(HEADER);
      (await p.streams.next()).reject(4);
      await assert.rejects(opening, (e) => e instanceof StreamRejectedError && e.status === 4);
      assert.equal(p.client.activeStreams, 0);
      const again = p.client.openStream(HEADER);
      void echo(await p.streams.next());
      const s = await again;
      await s.closeWrite();
      assert.equal(await s.read(), null);
    } finally {
      await p.close();
    }
  });

  Deno.test(`session/${name}: reset propagates with its reason both ways`, async () => {
    const p = await make();
    try {
      const opening = p.client.openStream(HEADER);
      const srv = await p.streams.next();
      srv.accept();
      const c = await opening;
      const pendingRead = srv.read();
      c.reset("client gave up");
      await assert.rejects(
        pendingRead,
        (e) => e instanceof StreamResetError && e.reason === "client gave up",
      );
      await assert.rejects(srv.write(enc("x")), StreamResetError);
      await assert.rejects(c.read(), StreamResetError);

      const opening2 = p.client.openStream(HEADER);
      const srv2 = await p.streams.next();
      srv2.accept();
      const c2 = await opening2;
      await c2.write(enc("data"));
      srv2.reset("dial tcp 10.0.0.1:80: connection refused");
      await assert.rejects(
        c2.read(),
        (e) => e instanceof StreamResetError && e.reason.endsWith("connection refused"),
      );
      // Writes fail once the reset arrived (poll: the RESET is in flight).
      await assert.rejects(async () => {
        for (let i = 0; i < 1000; i++) {
          await c2.write(enc("more"));
          await new Promise((r) => setTimeout(r, 1));
        }
      }, StreamResetError);
      assert.equal(p.client.activeStreams, 0);
      assert.equal(p.server.activeStreams, 0);
    } finally {
      await p.close();
    }
  });
}

Deno.test("session/memory: the client writes PREFACE first, then an OPEN frame", async () => {
  const [a, b] = memoryTransportPair();
  const client = new Session(a, { role: "client" });
  const opening = client.openStream(HEADER);
  const bytes: number[] = [];
  while (bytes.length < PREFACE.length + 8 + 4 + HEADER.length) bytes.push(...(await b.read())!);
  const wire = new Uint8Array(bytes);
  assert.deepEqual(wire.subarray(0, 8), PREFACE);
  const d = new FrameDecoder().push(wire.subarray(8));
  const open = d.frames.find((f) => f.type === "open");
  assert.deepEqual(open, { type: "open", streamId: 1, window: 256 * 1024, header: HEADER });
  client.close("done");
  await assert.rejects(opening, SessionClosedError);
  assert.equal(await client.closed, "done");
  b.close();
});

Deno.test("session/tcp: 64 MiB upload and 64 MiB download arrive with matching SHA-256", async () => {
  const p = await tcpPair();
  try {
    const MiB = 1024 * 1024;
    const opening = p.client.openStream(HEADER);
    const srv = await p.streams.next();
    srv.accept();
    const c = await opening;
    const [sentUp, gotUp, sentDown, gotDown] = await Promise.all([
      sendPattern(c, 64 * MiB, 11, 50_000),
      drain(srv),
      sendPattern(srv, 64 * MiB, 22, 100_000),
      drain(c),
    ]);
    assert.equal(gotUp.bytes, 64 * MiB);
    assert.equal(gotUp.sha256, sentUp);
    assert.equal(gotDown.bytes, 64 * MiB);
    assert.equal(gotDown.sha256, sentDown);
  } finally {
    await p.close();
  }
});

Deno.test("session/tcp: a stalled reader on stream A does not stall stream B (32 MiB)", async () => {
  const WINDOW = 64 * 1024;
  const p = await tcpPair({ initialWindow: WINDOW }, { initialWindow: WINDOW });
  try {
    const openA = p.client.openStream(HEADER);
    const srvA = await p.streams.next();
    srvA.accept();
    const a = await openA;
    // Write far more than the window to A; nobody reads A on the server.
    let aWritten = false;
    const aWriting = a.write(new Uint8Array(4 * WINDOW)).then(() => (aWritten = true));
    aWriting.catch(() => {});

    const openB = p.client.openStream(HEADER);
    const srvB = await p.streams.next();
    srvB.accept();
    const b = await openB;
    const [sent, got] = await Promise.all([sendPattern(b, 32 * 1024 * 1024, 5), drain(srvB)]);
    assert.equal(got.sha256, sent);
    assert.equal(got.bytes, 32 * 1024 * 1024);

    // A is still blocked on credit and the server buffered at most its window.
    assert.equal(aWritten, false);
    assert.ok(srvA.bufferedAmount > 0, "A received data up to its window");
    assert.ok(srvA.bufferedAmount <= WINDOW, `A buffered ${srvA.bufferedAmount} > ${WINDOW}`);
    assert.equal(srvA.receiveWindow, WINDOW);

    srvA.reset("test over");
    await assert.rejects(aWriting, StreamResetError);
  } finally {
    await p.close();
  }
});

Deno.test("session/memory: half-close works in both orders", async () => {
  const p = await memoryPair();
  try {
    // Server half-closes first while the client keeps sending.
    const opening = p.client.openStream(HEADER);
    const srv = await p.streams.next();
    srv.accept();
    const c = await opening;
    await srv.write(enc("banner"));
    await srv.closeWrite();
    assert.equal(dec(await readStream(c)), "banner");
    await c.write(enc("still "));
    await c.write(enc("talking"));
    await c.closeWrite();
    assert.equal(dec(await readStream(srv)), "still talking");
    await assert.rejects(c.write(enc("late")), /write after closeWrite/);
    assert.equal(p.client.activeStreams, 0);

    // Client half-closes first; the server answers after seeing EOF.
    const opening2 = p.client.openStream(HEADER);
    const srv2 = await p.streams.next();
    srv2.accept();
    const c2 = await opening2;
    await c2.write(enc("question"));
    await c2.closeWrite();
    assert.equal(dec(await readStream(srv2)), "question");
    await srv2.write(enc("answer"));
    await srv2.closeWrite();
    assert.equal(dec(await readStream(c2)), "answer");
  } finally {
    await p.close();
  }
});

Deno.test("session/memory: OPEN beyond maxStreams is refused; the session stays up", async () => {
  const p = await memoryPair({}, { maxStreams: 2 });
  try {
    const held: Stream[] = [];
    const held2: Stream[] = [];
    for (let i = 0; i < 2; i++) {
      const o = p.client.openStream(HEADER);
      const srv = await p.streams.next();
      srv.accept();
      held2.push(srv);
      held.push(await o);
    }
    await assert.rejects(
      p.client.openStream(HEADER),
      (e) => e instanceof StreamResetError && e.reason === "too many streams",
    );
    assert.equal(p.server.activeStreams, 2);
    held[0].reset("done");
    await assert.rejects(held2[0].read(), StreamResetError); // the server saw the reset
    const o = p.client.openStream(HEADER);
    void echo(await p.streams.next());
    const s = await o;
    await s.write(enc("ok"));
    await s.closeWrite();
    assert.equal(dec(await readStream(s)), "ok");
    held[1].reset("done");
  } finally {
    await p.close();
  }
});

Deno.test("session/memory: ping timeout ends a session whose peer went silent", async () => {
  const [a, b] = memoryTransportPair();
  const client = new Session(a, { role: "client", pingIntervalMs: 20, pingTimeoutMs: 200 });
  // The "peer" reads everything and never answers.
  const sink = (async () => {
    while ((await b.read()) !== null) { /* swallow */ }
  })();
  const opening = client.openStream(HEADER);
  const reason = await client.closed;
  assert.match(reason, /^ping timeout/);
  await assert.rejects(opening, SessionClosedError);
  await assert.rejects(client.openStream(HEADER), SessionClosedError);
  b.close();
  await sink;
});

Deno.test("session/memory: pings are answered, so an idle session stays up", async () => {
  const p = await memoryPair(
    { pingIntervalMs: 10, pingTimeoutMs: 100 },
    { pingIntervalMs: 10, pingTimeoutMs: 100 },
  );
  try {
    let ended = false;
    void p.client.closed.then(() => (ended = true));
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(ended, false);
    const o = p.client.openStream(HEADER);
    const echoing = echo(await p.streams.next());
    const s = await o;
    await s.closeWrite();
    assert.equal(await s.read(), null);
    assert.equal(await echoing, undefined);
  } finally {
    await p.close();
  }
});

Deno.test("session/memory: go-away refuses new streams, lets open ones finish, then closes", async () => {
  const goAways: string[] = [];
  const p = await memoryPair({ onGoAway: (r) => goAways.push(r) });
  const opening = p.client.openStream(HEADER);
  const srv = await p.streams.next();
  srv.accept();
  const c = await opening;
  p.server.goAway();
  // The client learns about it asynchronously.
  for (let i = 0; i < 100; i++) {
    const r = await p.client.openStream(HEADER).then(
      () => "opened",
      (e) => e,
    );
    if (r instanceof SessionClosedError) break;
    if (r instanceof StreamResetError) {
      assert.equal(r.reason, "going away");
      continue;
    }
    assert.fail(`unexpected ${r}`);
  }
  await assert.rejects(p.client.openStream(HEADER), /going away/);
  assert.deepEqual(goAways, ["going away"]);
  assert.equal(p.client.acceptsNewStreams, false);
  assert.equal(p.server.acceptsNewStreams, false);
  const [sent, got] = await Promise.all([sendPattern(c, 1024 * 1024, 3), drain(srv)]);
  assert.equal(got.sha256, sent);
  await srv.write(enc("bye"));
  await srv.closeWrite();
  assert.equal(dec(await readStream(c)), "bye");
  assert.equal(await p.server.closed, "go away");
  assert.equal(await p.client.closed, "go away");
  await p.close();
});

Deno.test("session/tcp: garbage after the preface kills only that session", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const sessions = new Queue<Session>();
  const serverStreams = new Queue<Stream>();
  const accepting = (async () => {
    for (let i = 0; i < 2; i++) {
      const conn = await listener.accept();
      const t = await acceptPreface(connTransport(conn));
      sessions.push(new Session(t, { role: "server", onStream: (s) => serverStreams.push(s) }));
    }
  })();
  const good = new Session(connTransport(await Deno.connect({ hostname: "127.0.0.1", port })), {
    role: "client",
  });
  const goodServer = await sessions.next();
  const bad = await Deno.connect({ hostname: "127.0.0.1", port });
  const garbage = new Uint8Array([...PREFACE, 0x42, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 2, 3]);
  await bad.write(garbage);
  const badServer = await sessions.next();
  await accepting;
  listener.close();

  assert.match(await badServer.closed, /^protocol error: unknown frame type 0x42/);
  // The server told the bad client why (GO_AWAY), then closed the connection.
  const received = new FrameDecoder();
  const frames: Frame[] = [];
  const buf = new Uint8Array(64 * 1024);
  while (true) {
    const n = await bad.read(buf);
    if (n === null) break;
    frames.push(...received.push(buf.slice(0, n)).frames);
  }
  bad.close();
  assert.deepEqual(frames.filter((f) => f.type === "go_away"), [
    { type: "go_away", reason: "protocol error: unknown frame type 0x42" },
  ]);

  const o = good.openStream(HEADER);
  void echo(await serverStreams.next());
  const s = await o;
  await s.write(enc("still fine"));
  await s.closeWrite();
  assert.equal(dec(await readStream(s)), "still fine");
  good.close();
  goodServer.close();
  await Promise.all([good.closed, goodServer.closed]);
  await new Promise((r) => setTimeout(r, 0));
});

Deno.test("session/raw: the sender never exceeds the credit the peer granted", async () => {
  const peer = await rawPeer();
  const opening = peer.client.openStream(HEADER);
  const open = await peer.next("open");
  assert.equal(open.type === "open" && open.streamId, 1);
  // The agent's window counts from the start of the stream and is at least EARLY_WINDOW.
  await peer.send({ type: "status", streamId: 1, status: 0, window: EARLY_WINDOW + 100 });
  const s = await opening;
  const total = EARLY_WINDOW + 1000;
  const writing = s.write(pseudoRandom(total, 9));
  let got = 0;
  while (got < EARLY_WINDOW + 100) {
    const f = await peer.next("data");
    assert.equal(f.type, "data");
    if (f.type === "data") got += f.data.length;
  }
  assert.equal(got, EARLY_WINDOW + 100);
  // Nothing more may come until credit is granted; prove it with a PING round trip.
  await peer.send({ type: "ping", data: new Uint8Array(8) });
  await peer.next("pong");
  // Anything the client sent before answering the PING has been read by now: no DATA.
  assert.deepEqual(peer.unread.filter((f) => f.type === "data"), []);
  let writeDone = false;
  void writing.then(() => (writeDone = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(writeDone, false);
  await peer.send({ type: "window_update", streamId: 1, increment: 900 });
  while (got < total) {
    const f = await peer.next("data");
    if (f.type === "data") got += f.data.length;
  }
  await writing;
  assert.equal(got, total);
  await peer.done();
});

Deno.test("session/raw: DATA beyond the granted window is a protocol error", async () => {
  const peer = await rawPeer({ initialWindow: 1024 });
  const opening = peer.client.openStream(HEADER);
  await peer.next("open");
  await peer.send({ type: "status", streamId: 1, status: 0, window: EARLY_WINDOW });
  const s = await opening;
  await peer.send({ type: "data", streamId: 1, data: new Uint8Array(1000) });
  await peer.send({ type: "data", streamId: 1, data: new Uint8Array(100) });
  assert.match(await peer.client.closed, /^protocol error: .*exceeds credit/);
  assert.equal((await s.read())?.length, 1000);
  await assert.rejects(s.read(), SessionClosedError);
  await peer.done();
});

Deno.test("session/raw: the receiver returns credit as the reader consumes", async () => {
  const peer = await rawPeer({ initialWindow: 4096 });
  const opening = peer.client.openStream(HEADER);
  await peer.next("open");
  await peer.send({ type: "status", streamId: 1, status: 0, window: EARLY_WINDOW });
  const s = await opening;
  await peer.send({ type: "data", streamId: 1, data: new Uint8Array(4096).fill(1) });
  assert.equal((await s.read())?.length, 4096);
  const wu = await peer.next("window_update");
  assert.deepEqual(wu, { type: "window_update", streamId: 1, increment: 4096 });
  await peer.send({ type: "half_close", streamId: 1 });
  assert.equal(await s.read(), null);
  await peer.done();
});

Deno.test("session/memory: close() ends every stream with SessionClosedError", async () => {
  const p = await memoryPair();
  const opening = p.client.openStream(HEADER);
  const srv = await p.streams.next();
  srv.accept();
  const c = await opening;
  const reading = c.read();
  const srvReading = srv.read();
  p.client.close("user pressed ctrl-c");
  await assert.rejects(reading, SessionClosedError);
  await assert.rejects(srvReading, SessionClosedError);
  assert.equal(await p.client.closed, "user pressed ctrl-c");
  assert.equal(await p.server.closed, "connection closed by peer");
  assert.equal(p.client.activeStreams, 1); // the count at close time
  await assert.rejects(c.write(enc("x")), SessionClosedError);
  await p.close();
});

Deno.test("session/raw: early DATA and HALF_CLOSE before STATUS wait for the server to accept", async () => {
  const [a, b] = memoryTransportPair();
  const opened: Stream[] = [];
  // A smaller window is raised to EARLY_WINDOW: the client may send that much before STATUS.
  const server = new Session(b, {
    role: "server",
    initialWindow: 1024,
    onStream: (s) => opened.push(s),
  });
  const early = pseudoRandom(EARLY_WINDOW, 3);
  await a.write(encodeFrame({ type: "open", streamId: 1, window: 1024, header: HEADER }));
  await a.write(encodeFrame({ type: "data", streamId: 1, data: early.subarray(0, 1000) }));
  await a.write(encodeFrame({ type: "data", streamId: 1, data: early.subarray(1000) }));
  await a.write(encodeFrame({ type: "half_close", streamId: 1 }));
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  const s = await (async () => {
    while (opened.length === 0) await new Promise((r) => setTimeout(r, 1));
    return opened[0];
  })();
  s.accept();
  while (!frames.some((f) => f.type === "status")) {
    frames.push(...decoder.push((await a.read())!).frames);
  }
  assert.deepEqual(frames.find((f) => f.type === "status"), {
    type: "status",
    streamId: 1,
    status: 0,
    window: EARLY_WINDOW,
  });
  assert.equal(await sha256(await readStream(s)), await sha256(early));
  server.close();
  a.close();
});

Deno.test("session/raw: early DATA beyond the server's window ends the server session", async () => {
  const [a, b] = memoryTransportPair();
  const server = new Session(b, { role: "server", initialWindow: 1024, onStream: () => {} });
  await a.write(encodeFrame({ type: "open", streamId: 1, window: 1024, header: HEADER }));
  await a.write(encodeFrame({ type: "data", streamId: 1, data: new Uint8Array(EARLY_WINDOW) }));
  await a.write(encodeFrame({ type: "data", streamId: 1, data: new Uint8Array(1) }));
  assert.match(await server.closed, /^protocol error: stream 1: DATA of 1 bytes exceeds credit 0/);
  a.close();
});

Deno.test("session/raw: an early stream sends OPEN, DATA, HALF_CLOSE in one go, within EARLY_WINDOW", async () => {
  const peer = await rawPeer();
  const s = peer.client.openEarlyStream(HEADER);
  const payload = pseudoRandom(EARLY_WINDOW + 5000, 4);
  const writing = s.write(payload).then(() => s.closeWrite());
  const open = await peer.next("open");
  assert.equal(open.type === "open" && open.streamId, 1);
  let got = 0;
  while (got < EARLY_WINDOW) {
    const f = await peer.next("data");
    if (f.type === "data") got += f.data.length;
  }
  // No more than the early window before STATUS; prove it with a PING round trip.
  await peer.send({ type: "ping", data: new Uint8Array(8) });
  await peer.next("pong");
  assert.deepEqual(peer.unread.filter((f) => f.type === "data" || f.type === "half_close"), []);
  await peer.send({ type: "status", streamId: 1, status: 0, window: EARLY_WINDOW + 5000 });
  await s.opened;
  while (got < payload.length) {
    const f = await peer.next("data");
    if (f.type === "data") got += f.data.length;
  }
  assert.equal(got, payload.length);
  await writing;
  assert.deepEqual(await peer.next("half_close"), { type: "half_close", streamId: 1 });
  await peer.done();
});

Deno.test("session/raw: an early OPEN shares one transport write with DATA that follows at once", async () => {
  const [a, b] = memoryTransportPair();
  const client = new Session(a, { role: "client" });
  const t = await acceptPreface(b);
  const writes: Frame["type"][][] = [];
  const readWrite = async () =>
    writes.push(new FrameDecoder().push((await t.read())!).frames.map((f) => f.type));
  while (!writes.flat().includes("ping")) await readWrite(); // the session's first PING
  // Data the local client had already sent goes out with the OPEN, in one write.
  const s = client.openEarlyStream(HEADER);
  await new Promise((r) => setImmediate(r)); // the local read completes an I/O poll later
  await s.write(enc("GET /"));
  await readWrite();
  // Without data the OPEN still goes out (a fraction of a millisecond later).
  client.openEarlyStream(HEADER);
  await readWrite();
  assert.deepEqual(writes.slice(-2), [["open", "data"], ["open"]]);
  client.close();
  await client.closed;
  t.close();
});

Deno.test("session/raw: a refused early stream fails opened, reads and writes with the status", async () => {
  const peer = await rawPeer();
  const s = peer.client.openEarlyStream(HEADER);
  await s.write(enc("lost"));
  await peer.next("open");
  await peer.send({ type: "status", streamId: 1, status: 4, window: 0 });
  await assert.rejects(s.opened, (e) => e instanceof StreamRejectedError && e.status === 4);
  await assert.rejects(s.read(), StreamRejectedError);
  await assert.rejects(s.write(enc("more")), StreamRejectedError);
  assert.equal(peer.client.activeStreams, 0);
  await peer.done();
});

Deno.test("session/raw: a STATUS window below EARLY_WINDOW or agent DATA before STATUS ends the session", async () => {
  for (
    const bad of [
      { type: "status", streamId: 1, status: 0, window: EARLY_WINDOW - 1 },
      { type: "data", streamId: 1, data: enc("too early") },
    ] satisfies Frame[]
  ) {
    const peer = await rawPeer();
    const s = peer.client.openEarlyStream(HEADER);
    await peer.next("open");
    await peer.send(bad);
    assert.match(await peer.client.closed, /^protocol error: .*(early window|before its STATUS)/);
    await assert.rejects(s.opened, SessionClosedError);
    await peer.done();
  }
});

Deno.test("session/memory: early data reaches the server's reader after accept", async () => {
  const p = await memoryPair();
  try {
    const c = p.client.openEarlyStream(HEADER);
    await c.write(enc("GET / HTTP/1.0\r\n\r\n"));
    await c.closeWrite();
    const srv = await p.streams.next();
    const echoing = echo(srv);
    await c.opened;
    assert.equal(dec(await readStream(c)), "GET / HTTP/1.0\r\n\r\n");
    await echoing;
  } finally {
    await p.close();
  }
});

Deno.test("session/raw: OPEN with a non-increasing stream id ends the server session", async () => {
  const [a, b] = memoryTransportPair();
  const server = new Session(b, { role: "server", onStream: (s) => s.accept() });
  await a.write(encodeFrame({ type: "open", streamId: 3, window: 1024, header: HEADER }));
  await a.write(encodeFrame({ type: "open", streamId: 1, window: 1024, header: HEADER }));
  assert.match(await server.closed, /^protocol error: OPEN with stream id 1/);
  a.close();
});

Deno.test("session/tcp: receive buffers never exceed the window, which never exceeds maxWindow", async () => {
  const opts = { initialWindow: 64 * 1024, maxWindow: 512 * 1024 };
  const p = await tcpPair(opts, opts);
  try {
    const opening = p.client.openStream(HEADER);
    const srv = await p.streams.next();
    srv.accept();
    const c = await opening;
    const sending = sendPattern(c, 16 * 1024 * 1024, 8);
    let bytes = 0;
    let reads = 0;
    while (true) {
      assert.ok(srv.bufferedAmount <= srv.receiveWindow, `${srv.bufferedAmount} buffered`);
      assert.ok(srv.receiveWindow <= 512 * 1024, `window ${srv.receiveWindow}`);
      // Yield now and then so data piles up between reads.
      if (++reads % 8 === 0) await new Promise((r) => setTimeout(r, 0));
      const chunk = await srv.read();
      if (chunk === null) break;
      bytes += chunk.length;
    }
    await sending;
    assert.equal(bytes, 16 * 1024 * 1024);
  } finally {
    await p.close();
  }
});

Deno.test("session/raw: a peer that floods PINGs without reading is cut off", async () => {
  const [a, b] = memoryTransportPair();
  const server = new Session(b, { role: "server", onStream: (s) => s.accept() });
  const ping = encodeFrame({ type: "ping", data: new Uint8Array(8) });
  const block = new Uint8Array(ping.length * 65536);
  for (let off = 0; off < block.length; off += ping.length) block.set(ping, off);
  const flooding = (async () => {
    // At most 16 MiB of PINGs (1M frames); the session must give up before that.
    for (let i = 0; i < 16; i++) await a.write(block);
  })();
  assert.equal(
    await server.closed,
    "transport write failed: write queue overflow: the peer is not reading",
  );
  await assert.rejects(flooding, Deno.errors.BrokenPipe);
  a.close();
});

Deno.test("session: invalid options are rejected at construction", () => {
  for (
    const bad of [
      { initialWindow: 0 },
      { maxStreams: -1 },
      { pingTimeoutMs: Number.NaN },
      { pingIntervalMs: 0 },
    ]
  ) {
    const [a, b] = memoryTransportPair();
    assert.throws(() => new Session(a, { role: "server", ...bad }), TypeError, JSON.stringify(bad));
    a.close();
    b.close();
  }
});

Deno.test("session/raw: the reason of a peer's GO_AWAY shows in the close reason", async () => {
  const peer = await rawPeer();
  const opening = peer.client.openStream(HEADER);
  await peer.next("open");
  await peer.send({ type: "status", streamId: 1, status: 0, window: EARLY_WINDOW });
  const s = await opening;
  await peer.send({ type: "go_away", reason: "protocol error: something" });
  await peer.send({ type: "reset", streamId: 1, reason: "bye" });
  assert.equal(await peer.client.closed, "go away: protocol error: something");
  await assert.rejects(s.read(), StreamResetError);
  await peer.done();
});
