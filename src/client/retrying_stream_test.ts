import assert from "node:assert/strict";
import { type EarlyStream, RetryingStream } from "./retrying_stream.ts";

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
  const stream: EarlyStream = {
    opened: status,
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

Deno.test("retrying stream: when retry gives up, its error reaches reads, writes and ready", async () => {
  const a = fake("a");
  const reported = new Error("dial tcp redis:6379: no such host");
  const s = new RetryingStream(a.stream, () => Promise.reject(reported));
  await s.write(new TextEncoder().encode("x"));
  a.refuse(new Error("status 2"));
  await assert.rejects(s.ready, (e) => e === reported);
  await assert.rejects(s.read(), (e) => e === reported);
  await assert.rejects(s.write(new TextEncoder().encode("y")), (e) => e === reported);
});

Deno.test("retrying stream: after a local reset nothing is retried", async () => {
  const a = fake("a");
  let retried = 0;
  const s = new RetryingStream(a.stream, () => {
    retried++;
    return Promise.resolve(fake("b").stream);
  });
  const refusal = new Error("reset locally");
  s.reset("local connection closed");
  a.refuse(refusal);
  await assert.rejects(s.ready, (e) => e === refusal);
  assert.equal(retried, 0);
});
