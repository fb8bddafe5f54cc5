/** Forwarded TCP ports: bind, then serve; one stream per connection, bytes and errors as a user sees them. */

import assert from "node:assert/strict";
import { FakeStream } from "../../tests/_lib/fake_stream.ts";
import { readAll, writeAll } from "../../tests/_lib/net.ts";
import type { ForwardContext, OpenedStream } from "./listener.ts";
import { bindTcp, forwardingLine } from "./tcp.ts";

/** A ForwardContext recording its lines; `open` is given by the test. */
function context(open: () => Promise<OpenedStream>) {
  const out: string[] = [];
  const err: string[] = [];
  const ctx: ForwardContext = { open, out: (l) => out.push(l), err: (l) => err.push(l), log() {} };
  return { ctx, out, err };
}

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("tcp listener: a connection made before serve() waits, then is relayed byte for byte", async () => {
  const bound = bindTcp("127.0.0.1", 0);
  assert.ok(bound.port > 0);
  assert.equal(
    forwardingLine(bound, "80"),
    `Forwarding from 127.0.0.1:${bound.port} -> 80`,
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bound.port });
  await writeAll(conn, enc("early bytes"));
  const streams: FakeStream[] = [];
  const { ctx, out, err } = context(() => {
    const s = new FakeStream({ echo: true });
    streams.push(s);
    return Promise.resolve(s);
  });
  const listener = bound.serve(ctx);
  const payload = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 31 + (i >> 9)) & 0xff);
  await writeAll(conn, payload);
  await conn.closeWrite();
  const back = await readAll(conn);
  conn.close();
  assert.equal(streams.length, 1);
  assert.deepEqual(back, new Uint8Array([...enc("early bytes"), ...payload]));
  assert.ok(streams[0].halfClosed, "the client's EOF became a half-close of the stream");
  assert.deepEqual(out, [`Handling connection for ${bound.port}`]);
  assert.deepEqual(err, []);
  listener.close();
});

Deno.test("tcp listener: bytes sent while the stream opens are kept and written first", async () => {
  const bound = bindTcp("127.0.0.1", 0);
  const stream = new FakeStream();
  let letOpen!: () => void;
  const opening = new Promise<void>((r) => (letOpen = r));
  const { ctx } = context(async () => {
    await opening;
    return stream;
  });
  const listener = bound.serve(ctx);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bound.port });
  await writeAll(conn, enc("GET / HTTP/1.0\r\n\r\n"));
  // Give the listener time to accept and read while the open is still pending.
  await new Promise((r) => setTimeout(r, 50));
  letOpen();
  await stream.waitWritten(18);
  assert.equal(dec(stream.written[0]), "GET / HTTP/1.0\r\n\r\n");
  conn.close();
  listener.close();
});

Deno.test("tcp listener: a refused stream is one error line and the connection is closed", async () => {
  const bound = bindTcp("127.0.0.1", 0);
  const stream = new FakeStream({ accepted: false });
  const { ctx, err } = context(() => Promise.resolve(stream));
  const listener = bound.serve(ctx);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bound.port });
  await writeAll(conn, enc("x"));
  await stream.waitWritten(1);
  stream.refuse(new Error("dial tcp 10.0.0.1:80: connection refused"));
  assert.equal((await readAll(conn)).length, 0);
  conn.close();
  assert.deepEqual(err, ["error: dial tcp 10.0.0.1:80: connection refused"]);
  listener.close();
});

Deno.test("tcp listener: no stream at all (no tunnel) is one error line and the connection is closed", async () => {
  const bound = bindTcp("127.0.0.1", 0);
  const { ctx, err } = context(() => Promise.reject(new Error("no connection to the agent")));
  const listener = bound.serve(ctx);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bound.port });
  assert.equal((await readAll(conn)).length, 0);
  conn.close();
  assert.deepEqual(err, ["error: no connection to the agent"]);
  listener.close();
});

Deno.test("tcp listener: stopAccepting refuses new connections, lets open ones finish; close ends them", async () => {
  const bound = bindTcp("127.0.0.1", 0);
  const streams: FakeStream[] = [];
  const { ctx } = context(() => {
    const s = new FakeStream({ echo: true });
    streams.push(s);
    return Promise.resolve(s);
  });
  const listener = bound.serve(ctx);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: bound.port });
  await writeAll(conn, enc("ping"));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(listener.active, 1);
  listener.stopAccepting();
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: bound.port }));
  // The open connection still works.
  await writeAll(conn, enc("pong"));
  await streams[0].waitWritten(8);
  assert.equal(dec(streams[0].bytes()), "pingpong");
  listener.close();
  const rest = await readAll(conn).catch(() => new Uint8Array(0));
  assert.ok(rest.length <= 8);
  conn.close();
  for (let i = 0; i < 100 && listener.active > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(listener.active, 0);
});

Deno.test("tcp listener: a bound socket is served once; close() releases an unserved one", () => {
  const bound = bindTcp("127.0.0.1", 0);
  const { ctx } = context(() => Promise.reject(new Error("unused")));
  const listener = bound.serve(ctx);
  assert.throws(() => bound.serve(ctx), /served already/);
  listener.close();
  const unserved = bindTcp("127.0.0.1", 0);
  unserved.close();
  // The port is free again.
  bindTcp("127.0.0.1", unserved.port).close();
  assert.throws(() => {
    const clash = bindTcp("127.0.0.1", 0);
    try {
      bindTcp("127.0.0.1", clash.port);
    } finally {
      clash.close();
    }
  }, Deno.errors.AddrInUse);
});
