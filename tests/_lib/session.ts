/** Test helpers for tunnel Session tests: connected session pairs over memory and loopback TCP. */

import { createHash } from "node:crypto";
import { encodeFrame, type Frame, FrameDecoder, PREFACE } from "../../src/protocol/mux.ts";
import { Session, type SessionOptions, type Stream } from "../../src/mux/mod.ts";
import { connTransport, prefixedTransport, type Transport } from "../../src/mux/mod.ts";
import { memoryTransportPair } from "./memory_transport.ts";

/** A well-formed Header's bytes for mux tests (the session does not decode it). */
export const TEST_HEADER: Uint8Array = new Uint8Array([0, 0, 27, ...new Array(24).fill(7)]);

/** A FIFO of values with an awaitable `next()`. */
export class Queue<T> {
  #items: T[] = [];
  #waiters: ((v: T) => void)[] = [];
  push(v: T): void {
    const w = this.#waiters.shift();
    if (w) w(v);
    else this.#items.push(v);
  }
  next(): Promise<T> {
    const v = this.#items.shift();
    if (v !== undefined) return Promise.resolve(v);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

/**
 * Does what the agent does with a new tunnel connection: reads exactly PREFACE.length bytes,
 * checks them, and returns a transport that yields whatever came after them.
 */
export async function acceptPreface(t: Transport): Promise<Transport> {
  let got = new Uint8Array(0);
  while (got.length < PREFACE.length) {
    const chunk = await t.read();
    if (chunk === null) throw new Error("EOF before preface");
    const merged = new Uint8Array(got.length + chunk.length);
    merged.set(got);
    merged.set(chunk, got.length);
    got = merged;
  }
  for (let i = 0; i < PREFACE.length; i++) {
    if (got[i] !== PREFACE[i]) throw new Error("bad preface");
  }
  return prefixedTransport(got.subarray(PREFACE.length), t);
}

/** A client and a server Session connected to each other. */
export interface Pair {
  client: Session;
  server: Session;
  /** Streams the server accepted, in order. */
  streams: Queue<Stream>;
  /** Closes both sessions and waits until they and their transports are done. */
  close(): Promise<void>;
}

type Opts = Omit<SessionOptions, "role" | "onStream">;

async function pairOver(
  clientT: Transport,
  serverRaw: Promise<Transport>,
  clientOpts: Opts,
  serverOpts: Opts,
  extra: () => void = () => {},
): Promise<Pair> {
  const client = new Session(clientT, { role: "client", ...clientOpts });
  const streams = new Queue<Stream>();
  const server = new Session(await acceptPreface(await serverRaw), {
    role: "server",
    onStream: (s) => streams.push(s),
    ...serverOpts,
  });
  return {
    client,
    server,
    streams,
    async close() {
      client.close("test done");
      server.close("test done");
      await Promise.all([client.closed, server.closed]);
      extra();
      // Let the transports' pending reads settle (op sanitizer).
      await new Promise((r) => setTimeout(r, 0));
    },
  };
}

/** Sessions over an in-memory transport pair. */
export function memoryPair(clientOpts: Opts = {}, serverOpts: Opts = {}): Promise<Pair> {
  const [a, b] = memoryTransportPair();
  return pairOver(a, Promise.resolve(b), clientOpts, serverOpts);
}

/** Sessions over a real loopback TCP connection (127.0.0.1). */
export async function tcpPair(clientOpts: Opts = {}, serverOpts: Opts = {}): Promise<Pair> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: (listener.addr as Deno.NetAddr).port,
  });
  const serverConn = await accepted;
  listener.close();
  return pairOver(
    connTransport(conn),
    Promise.resolve(connTransport(serverConn)),
    clientOpts,
    serverOpts,
  );
}

/** Deterministic pseudo-random bytes (xorshift32), cheap to generate in bulk. */
export function pseudoRandom(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, n >>> 2);
  let x = seed | 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  for (let i = words.length * 4; i < n; i++) out[i] = i & 0xff;
  return out;
}

/** Reads a stream to EOF; returns its byte count and SHA-256 (hex). */
export async function drain(stream: Stream): Promise<{ bytes: number; sha256: string }> {
  const h = createHash("sha256");
  let bytes = 0;
  while (true) {
    const chunk = await stream.read();
    if (chunk === null) break;
    bytes += chunk.length;
    h.update(chunk);
  }
  return { bytes, sha256: h.digest("hex") };
}

/**
 * Writes `total` bytes of pseudo-random data in `chunk`-sized writes, then half-closes;
 * returns the SHA-256 (hex) of what was sent.
 */
export async function sendPattern(
  stream: Stream,
  total: number,
  seed: number,
  chunk = 64 * 1024,
): Promise<string> {
  const h = createHash("sha256");
  const block = pseudoRandom(1024 * 1024, seed);
  let sent = 0;
  let i = 0;
  while (sent < total) {
    const n = Math.min(chunk, total - sent);
    const start = (i++ * 7919) % (block.length - chunk);
    const piece = block.subarray(start, start + n);
    h.update(piece);
    await stream.write(piece);
    sent += n;
  }
  await stream.closeWrite();
  return h.digest("hex");
}

/** SHA-256 (hex) of one array. */
export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * A scripted raw peer of a client Session: the test takes the client's frames (all but PINGs)
 * and writes frames by hand. A background loop reads and decodes everything the client sends.
 */
export async function rawPeer(clientOpts: Opts = {}) {
  const [a, b] = memoryTransportPair();
  const client = new Session(a, { role: "client", ...clientOpts });
  const t: Transport = await acceptPreface(b);
  const decoder = new FrameDecoder();
  const pending: Frame[] = [];
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const pump = (async () => {
    try {
      for (let chunk = await t.read(); chunk !== null; chunk = await t.read()) {
        const batch = decoder.push(chunk);
        pending.push(...batch.frames.filter((f) => f.type !== "ping"));
        if (batch.error) throw batch.error;
        wake?.();
      }
      failure = new Error("EOF");
    } catch (e) {
      failure = e as Error;
    }
    wake?.();
  })();
  return {
    client,
    /** The first received frame of this type not taken yet (waits for one). */
    async next(type: Frame["type"]): Promise<Frame> {
      while (true) {
        const i = pending.findIndex((f) => f.type === type);
        if (i >= 0) return pending.splice(i, 1)[0];
        if (failure) throw failure;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
    send(frame: Frame): Promise<void> {
      return t.write(encodeFrame(frame));
    },
    /** Frames received but not yet taken with next(). */
    get unread(): Frame[] {
      return [...pending];
    },
    /** Takes every frame received so far (after letting queued client writes arrive). */
    async takeAll(): Promise<Frame[]> {
      await new Promise((r) => setTimeout(r, 0));
      return pending.splice(0);
    },
    async done() {
      client.close("test done");
      await client.closed;
      t.close();
      await pump;
    },
  };
}
