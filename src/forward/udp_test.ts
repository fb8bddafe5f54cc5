/** Forwarded UDP ports: one flow (a stream of framed datagrams) per local client, idle flows end. */

import assert from "node:assert/strict";
import { FakeStream } from "../../tests/_lib/fake_stream.ts";
import { encodeUdpFrame, UdpFrameDecoder } from "../protocol/udp.ts";
import type { ForwardContext, OpenedStream } from "./listener.ts";
import { bindUdp } from "./udp.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function context(open: () => Promise<OpenedStream>) {
  const out: string[] = [];
  const err: string[] = [];
  const ctx: ForwardContext = { open, out: (l) => out.push(l), err: (l) => err.push(l), log() {} };
  return { ctx, out, err };
}

/** A context whose every `open` is a new accepted FakeStream, kept in `streams` in order. */
function fakeStreamContext() {
  const streams: FakeStream[] = [];
  return {
    ...context(() => {
      const s = new FakeStream();
      streams.push(s);
      return Promise.resolve(s);
    }),
    streams,
  };
}

/** The datagrams a flow's stream carried so far. */
function datagrams(s: FakeStream): string[] {
  return new UdpFrameDecoder().push(s.bytes()).map(dec);
}

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 300 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), what);
}

function client(): Deno.DatagramConn {
  return Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
}

async function receive(sock: Deno.DatagramConn, ms = 2000): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("no datagram")), ms);
  });
  try {
    const [data] = await Promise.race([sock.receive(), timeout]);
    return dec(data);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("udp listener: one flow per client; datagrams framed each way, in order", async () => {
  const bound = bindUdp("127.0.0.1", 0);
  const streams: FakeStream[] = [];
  let letOpen!: () => void;
  const opening = new Promise<void>((r) => (letOpen = r));
  const { ctx, out } = context(async () => {
    const s = new FakeStream();
    streams.push(s);
    await opening;
    return s;
  });
  const listener = bound.serve(ctx);
  const dest = { transport: "udp", hostname: "127.0.0.1", port: bound.port } as const;
  const a = client();
  const b = client();
  // Sent while a's stream is still opening: queued, then written in order.
  for (const d of ["a1", "a2", "a3"]) await a.send(enc(d), dest);
  await until("a's flow opened", () => streams.length === 1);
  letOpen();
  await b.send(enc("b1"), dest);
  await until("b's flow opened", () => streams.length === 2);
  await until("datagrams written", () => datagrams(streams[0]).length === 3);
  assert.deepEqual(datagrams(streams[0]), ["a1", "a2", "a3"]);
  await until("b's datagram written", () => datagrams(streams[1]).length === 1);
  assert.deepEqual(datagrams(streams[1]), ["b1"]);
  assert.equal(listener.active, 2);
  assert.deepEqual(out, [
    `Handling connection for ${bound.port}`,
    `Handling connection for ${bound.port}`,
  ]);
  // Answers come back to the right client, one datagram per frame, even when frames are split.
  const two = new Uint8Array([...encodeUdpFrame(enc("r1")), ...encodeUdpFrame(enc("r2"))]);
  streams[0].push(two.subarray(0, 3));
  streams[0].push(two.subarray(3));
  streams[1].push(encodeUdpFrame(enc("for b")));
  assert.equal(await receive(a), "r1");
  assert.equal(await receive(a), "r2");
  assert.equal(await receive(b), "for b");
  listener.close();
  assert.ok(streams.every((s) => s.resetReason === "closing"));
  a.close();
  b.close();
});

Deno.test("udp listener: a refused flow is one error line; the next datagram opens a new one", async () => {
  const bound = bindUdp("127.0.0.1", 0);
  const streams: FakeStream[] = [];
  const { ctx, err } = context(() => {
    const s = new FakeStream({ accepted: streams.length > 0 });
    if (streams.length === 0) s.refuse(new Error("dial udp 10.0.0.1:53: no such host"));
    streams.push(s);
    return Promise.resolve(s);
  });
  const listener = bound.serve(ctx);
  const a = client();
  const dest = { transport: "udp", hostname: "127.0.0.1", port: bound.port } as const;
  await a.send(enc("q1"), dest);
  await until("error reported", () => err.length === 1);
  assert.deepEqual(err, ["error: dial udp 10.0.0.1:53: no such host"]);
  await until("flow forgotten", () => listener.active === 0);
  await a.send(enc("q2"), dest);
  await until(
    "second flow carries q2",
    () => streams.length === 2 && datagrams(streams[1]).length === 1,
  );
  assert.deepEqual(datagrams(streams[1]), ["q2"]);
  listener.close();
  a.close();
});

Deno.test("udp listener: a flow whose pod goes away is closed; the same client's next datagram opens a new flow", async () => {
  const bound = bindUdp("127.0.0.1", 0);
  const { ctx, out, streams } = fakeStreamContext();
  const listener = bound.serve(ctx);
  const dest = { transport: "udp", hostname: "127.0.0.1", port: bound.port } as const;
  const a = client();
  const b = client();
  await a.send(enc("a1"), dest);
  await until("a's flow watches its pod", () => streams[0]?.goneWatchers.size === 1);
  await b.send(enc("b1"), dest);
  await until("b's flow watches its pod", () => streams[1]?.goneWatchers.size === 1);
  streams[0].push(encodeUdpFrame(enc("old pod")));
  assert.equal(await receive(a), "old pod");
  // a's pod is deleted (b's is not): a's flow ends, b's goes on.
  streams[0].targetGone();
  assert.equal(streams[0].resetReason, "pod gone");
  await until("a's flow forgotten", () => listener.active === 1);
  // The same socket keeps sending: a new flow (and stream) carries it, to wherever the opener
  // sends a new flow now.
  await a.send(enc("a2"), dest);
  await until(
    "a's new flow carries a2",
    () => datagrams(streams[2] ?? new FakeStream()).length === 1,
  );
  assert.deepEqual(datagrams(streams[2]), ["a2"]);
  assert.deepEqual(datagrams(streams[0]), ["a1"]);
  streams[2].push(encodeUdpFrame(enc("new pod")));
  assert.equal(await receive(a), "new pod");
  await b.send(enc("b2"), dest);
  await until("b2 on b's first flow", () => datagrams(streams[1]).length === 2);
  assert.equal(streams.length, 3);
  assert.equal(streams[1].resetReason, undefined);
  assert.equal(out.length, 3);
  // Flows ended otherwise stop watching their pod.
  listener.close();
  assert.ok(streams.every((s) => s.goneWatchers.size === 0));
  a.close();
  b.close();
});

Deno.test("udp listener: a flow with no datagram either way for idleMs is closed", async () => {
  const bound = bindUdp("127.0.0.1", 0, 200);
  const { ctx, streams } = fakeStreamContext();
  const listener = bound.serve(ctx);
  const a = client();
  await a.send(enc("hello"), { transport: "udp", hostname: "127.0.0.1", port: bound.port });
  await until("flow opened", () => listener.active === 1);
  await until("idle flow closed", () => listener.active === 0);
  assert.equal(streams[0].resetReason, "idle");
  listener.close();
  a.close();
});

Deno.test("udp listener: stopAccepting ignores new clients, existing flows go on", async () => {
  const bound = bindUdp("127.0.0.1", 0);
  const { ctx, streams } = fakeStreamContext();
  const listener = bound.serve(ctx);
  const dest = { transport: "udp", hostname: "127.0.0.1", port: bound.port } as const;
  const a = client();
  const b = client();
  await a.send(enc("a1"), dest);
  await until("a's flow", () => datagrams(streams[0] ?? new FakeStream()).length === 1);
  listener.stopAccepting();
  await b.send(enc("b1"), dest);
  await a.send(enc("a2"), dest);
  await until("a2 relayed", () => datagrams(streams[0]).length === 2);
  assert.equal(streams.length, 1, "no flow for a new client");
  listener.close();
  a.close();
  b.close();
});
