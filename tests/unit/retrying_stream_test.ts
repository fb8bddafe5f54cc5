import assert from "node:assert/strict";
import { type PendingStream, RetryingStream } from "../../src/forward/retrying_stream.ts";

/** A fake stream that records writes and is accepted or refused when told. */
function fake(name: string) {
  let accept!: () => void;
  let refuse!: (e: Error) => void;
  let refused: Error | undefined;
  const written: string[] = [];
  let halfClosed = false;
  const status = new Promise<void>((res, rej) => {
    accept = res;
    refuse = (e) => {
      refused = e;
      rej(e);
    };
  });
  status.catch(() => {});
  const stream: PendingStream = {
    status,
    read: () => status.then(() => new TextEncoder().encode(`from ${name}`)),
    write: (d) => {
      if (refused) return Promise.reject(refused);
      written.push(new TextDecoder().decode(d));
      return Promise.resolve();
    },
    closeWrite: () => {
      halfClosed = true;
      return Promise.resolve();
    },
    reset: () => {},
  };
  return { stream, accept, refuse, written, halfClosed: () => halfClosed };
}

Deno.test("retrying stream: a refused open is replayed on the next stream, in order, once", async () => {
  const a = fake("a");
  const b = fake("b");
  const s = new RetryingStream(a.stream, () => Promise.resolve(b.stream));
  const buf = new TextEncoder().encode("one");
  await s.write(buf);
  buf.set(new TextEncoder().encode("XXX")); // the caller reuses its buffer
  await s.write(new TextEncoder().encode("two"));
  a.refuse(new Error("connection refused"));
  await s.write(new TextEncoder().encode("three")); // while switching
  await s.closeWrite();
  b.accept();
  await s.ready;
  assert.deepEqual(a.written, ["one", "two"]);
  assert.deepEqual(b.written, ["one", "two", "three"]);
  assert.ok(b.halfClosed());
  assert.equal(new TextDecoder().decode((await s.read())!), "from b");
  await s.write(new TextEncoder().encode("four"));
  assert.deepEqual(b.written.at(-1), "four");
});

Deno.test("retrying stream: without a replacement the refusal reaches reads, writes and ready", async () => {
  const a = fake("a");
  const s = new RetryingStream(a.stream, () => Promise.resolve(undefined));
  await s.write(new TextEncoder().encode("x"));
  const refusal = new Error("no such host");
  a.refuse(refusal);
  await assert.rejects(s.ready, (e) => e === refusal);
  await assert.rejects(s.read(), (e) => e === refusal);
  await assert.rejects(s.write(new TextEncoder().encode("y")), (e) => e === refusal);
});

Deno.test("retrying stream: a stream without a status is already accepted", async () => {
  const written: number[] = [];
  const plain: PendingStream = {
    read: () => Promise.resolve(null),
    write: (d) => {
      written.push(d.length);
      return Promise.resolve();
    },
    closeWrite: () => Promise.resolve(),
    reset: () => {},
  };
  const s = new RetryingStream(plain, () => Promise.reject(new Error("unused")));
  await s.ready;
  await s.write(new Uint8Array(3));
  assert.deepEqual(written, [3]);
  assert.equal(await s.read(), null);
});
