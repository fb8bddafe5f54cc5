/** The tunnel frame codec: golden bytes, error cases, and fast-check properties. */

import assert from "node:assert/strict";
import fc from "fast-check";
import { arbFrame } from "../../tests/_lib/mux_arbitrary.ts";
import {
  decodeFrame,
  encodeFrame,
  type Frame,
  FrameDecoder,
  MAX_DATA_PAYLOAD,
  MAX_OPEN_HEADER,
  MAX_REASON_BYTES,
  MAX_WINDOW,
  PREFACE,
} from "./mux.ts";
import { encodeHeader } from "./header.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (s: string) => {
  const clean = s.replace(/\s+/g, "");
  return new Uint8Array(clean.match(/../g)!.map((h) => parseInt(h, 16)));
};

const golden: [string, Frame, string][] = [
  [
    "OPEN",
    { type: "open", streamId: 1, window: 262144, header: unhex("aabbcc") },
    "01 000007 00000001 00040000 aabbcc",
  ],
  [
    "STATUS",
    { type: "status", streamId: 3, status: 4, window: 0 },
    "02 000005 00000003 04 00000000",
  ],
  [
    "STATUS ok",
    { type: "status", streamId: 0x01020304, status: 0, window: 65536 },
    "02 000005 01020304 00 00010000",
  ],
  ["DATA", { type: "data", streamId: 5, data: unhex("6869") }, "03 000002 00000005 6869"],
  ["DATA empty", { type: "data", streamId: 5, data: new Uint8Array(0) }, "03 000000 00000005"],
  [
    "WINDOW_UPDATE",
    { type: "window_update", streamId: 7, increment: 65536 },
    "04 000004 00000007 00010000",
  ],
  ["HALF_CLOSE", { type: "half_close", streamId: 9 }, "05 000000 00000009"],
  ["RESET", { type: "reset", streamId: 11, reason: "no" }, "06 000002 0000000b 6e6f"],
  [
    "PING",
    { type: "ping", data: unhex("0102030405060708") },
    "07 000008 00000000 0102030405060708",
  ],
  [
    "PONG",
    { type: "pong", data: unhex("0102030405060708") },
    "08 000008 00000000 0102030405060708",
  ],
  ["GO_AWAY", { type: "go_away", reason: "bye" }, "09 000003 00000000 627965"],
];

Deno.test("mux: PREFACE is ASCII KRLYMUX1 and starts with a nonzero byte", () => {
  assert.equal(new TextDecoder().decode(PREFACE), "KRLYMUX1");
  assert.notEqual(PREFACE[0], 0);
});

for (const [name, frame, bytes] of golden) {
  Deno.test(`mux: golden bytes of ${name}`, () => {
    const encoded = encodeFrame(frame);
    assert.equal(hex(encoded), bytes.replace(/\s+/g, ""));
    const decoded = decodeFrame(encoded);
    assert.deepEqual(decoded, { kind: "ok", frame, length: encoded.length });
  });
}

Deno.test("mux: a DATA frame with a 64 KiB payload has length field 0x010000", () => {
  const data = new Uint8Array(MAX_DATA_PAYLOAD).fill(0xab);
  const encoded = encodeFrame({ type: "data", streamId: 1, data });
  assert.equal(hex(encoded.subarray(0, 8)), "0301000000000001");
  assert.equal(encoded.length, 8 + 65536);
});

Deno.test("mux: RESET reasons are truncated to MAX_REASON_BYTES on a character boundary", () => {
  const reason = "é".repeat(MAX_REASON_BYTES); // 2 bytes each
  const encoded = encodeFrame({ type: "reset", streamId: 1, reason });
  assert.equal(encoded.length, 8 + MAX_REASON_BYTES);
  const r = decodeFrame(encoded);
  assert.equal(r.kind, "ok");
  if (r.kind === "ok" && r.frame.type === "reset") {
    assert.equal(r.frame.reason, "é".repeat(MAX_REASON_BYTES / 2));
  }
  const odd = "a" + "é".repeat(MAX_REASON_BYTES); // boundary falls inside a character
  const e2 = encodeFrame({ type: "reset", streamId: 1, reason: odd });
  assert.equal(e2.length, 8 + MAX_REASON_BYTES - 1);
});

Deno.test("mux: encodeFrame rejects invalid input from our own code", () => {
  const bad: Frame[] = [
    { type: "data", streamId: 0, data: new Uint8Array(1) },
    { type: "data", streamId: 1, data: new Uint8Array(MAX_DATA_PAYLOAD + 1) },
    { type: "open", streamId: 1, window: 1, header: new Uint8Array(0) },
    { type: "open", streamId: 1, window: 1, header: new Uint8Array(MAX_OPEN_HEADER + 1) },
    { type: "open", streamId: 1, window: MAX_WINDOW + 1, header: new Uint8Array(1) },
    { type: "window_update", streamId: 1, increment: 0 },
    { type: "status", streamId: 1, status: 256, window: 0 },
    { type: "ping", data: new Uint8Array(7) },
    { type: "half_close", streamId: 2 ** 32 },
  ];
  for (const f of bad) assert.throws(() => encodeFrame(f), TypeError, JSON.stringify(f));
});

Deno.test("mux: decode errors are typed and found from the 8-byte frame header alone", () => {
  const cases: [string, string][] = [
    ["00 000000 00000000", "bad-type"], // a raw-mode Header (version 0) is not a frame
    ["0a 000000 00000001", "bad-type"],
    ["ff ffffff ffffffff", "bad-type"],
    ["03 010001 00000001", "bad-length"], // DATA of 65537 bytes
    ["02 000004 00000001", "bad-length"], // STATUS must be 5 bytes
    ["05 000001 00000001", "bad-length"], // HALF_CLOSE has no payload
    ["07 000007 00000000", "bad-length"],
    ["01 000004 00000001", "bad-length"], // OPEN without a Header
    ["06 000401 00000001", "bad-length"], // RESET reason of 1025 bytes
    ["03 000000 00000000", "bad-stream-id"],
    ["01 000005 00000000", "bad-stream-id"],
    ["07 000008 00000001", "bad-stream-id"],
    ["09 000000 00000002", "bad-stream-id"],
  ];
  for (const [bytes, error] of cases) {
    const r = decodeFrame(unhex(bytes));
    assert.equal(r.kind, "error", bytes);
    if (r.kind === "error") {
      assert.equal(r.error, error, bytes);
      assert.ok(r.message.length > 0);
    }
  }
  const values: string[] = [
    "04 000004 00000001 00000000", // zero increment
    "04 000004 00000001 80000000", // increment beyond 2^31-1
    "01 000005 00000001 80000000 00", // OPEN window beyond 2^31-1
    "02 000005 00000001 00 ffffffff",
  ];
  for (const bytes of values) {
    const r = decodeFrame(unhex(bytes));
    assert.equal(r.kind === "error" && r.error, "bad-value", bytes);
  }
});

Deno.test("mux: incomplete input asks for the exact total, and trailing bytes are not read", () => {
  assert.deepEqual(decodeFrame(new Uint8Array(0)), { kind: "incomplete", needed: 8 });
  assert.deepEqual(decodeFrame(unhex("03 0000")), { kind: "incomplete", needed: 8 });
  assert.deepEqual(decodeFrame(unhex("03 000003 00000001 aa")), { kind: "incomplete", needed: 11 });
  const r = decodeFrame(unhex("05 000000 00000001 ff ff ff"));
  assert.deepEqual(r, { kind: "ok", frame: { type: "half_close", streamId: 1 }, length: 8 });
});

Deno.test("mux: FrameDecoder stays failed after an error and keeps frames decoded before it", () => {
  const d = new FrameDecoder();
  const good = encodeFrame({ type: "half_close", streamId: 1 });
  const out = d.push(new Uint8Array([...good, 0x00, 0, 0, 0, 0, 0, 0, 0]));
  assert.deepEqual(out.frames, [{ type: "half_close", streamId: 1 }]);
  assert.equal(out.error?.error, "bad-type");
  const again = d.push(good);
  assert.deepEqual(again.frames, []);
  assert.equal(again.error?.error, "bad-type");
});

// ---- properties ----

Deno.test("mux property: encode then decode round-trips every frame", () => {
  fc.assert(
    fc.property(arbFrame, (frame) => {
      const bytes = encodeFrame(frame);
      assert.deepEqual(decodeFrame(bytes), { kind: "ok", frame, length: bytes.length });
    }),
    { numRuns: 500 },
  );
});

Deno.test("mux property: decoding arbitrary bytes never throws and never over-reads", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 200 }),
        // Mostly valid frame headers (known type, small length) followed by random bytes.
        fc.tuple(
          fc.integer({ min: 1, max: 9 }),
          fc.integer({ min: 0, max: 40 }),
          fc.integer({ min: 0, max: 3 }),
          fc.uint8Array({ maxLength: 60 }),
        ).map(([t, len, id, rest]) => new Uint8Array([t, 0, 0, len, 0, 0, 0, id, ...rest])),
      ),
      (bytes) => {
        const r = decodeFrame(bytes);
        if (r.kind === "ok") assert.ok(r.length <= bytes.length);
        if (r.kind === "incomplete") assert.ok(r.needed > bytes.length);
        const d = new FrameDecoder();
        d.push(bytes.subarray(0, bytes.length >> 1));
        d.push(bytes.subarray(bytes.length >> 1));
      },
    ),
    { numRuns: 3000 },
  );
});

Deno.test("mux property: any chunking of a frame stream decodes to the same frames", () => {
  fc.assert(
    fc.property(
      fc.array(arbFrame, { minLength: 1, maxLength: 12 }),
      fc.array(fc.integer({ min: 0, max: 1 << 20 }), { maxLength: 20 }),
      (frames, cuts) => {
        const parts = frames.map(encodeFrame);
        const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let off = 0;
        for (const p of parts) {
          all.set(p, off);
          off += p.length;
        }
        const points = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
        const d = new FrameDecoder();
        const got: Frame[] = [];
        let prev = 0;
        for (const p of [...points, all.length]) {
          const batch = d.push(all.slice(prev, p));
          assert.equal(batch.error, undefined);
          got.push(...batch.frames);
          prev = p;
        }
        assert.equal(d.hasPartialFrame, false);
        assert.deepEqual(got, frames);
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("mux property: chunks read into one reused buffer decode to the same frames", () => {
  // What connTransport does: every read lands in the same buffer. The decoder must not keep a
  // view of it: the frames of each push are cloned at once, then the buffer is overwritten.
  fc.assert(
    fc.property(
      fc.array(arbFrame, { minLength: 1, maxLength: 12 }),
      fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 20 }),
      (frames, sizes) => {
        const all = new Uint8Array(frames.flatMap((f) => [...encodeFrame(f)]));
        const reused = new Uint8Array(300);
        const d = new FrameDecoder();
        const got: Frame[] = [];
        let off = 0;
        for (let i = 0; off < all.length; i++) {
          const n = Math.min(sizes[i % sizes.length], all.length - off);
          reused.set(all.subarray(off, off + n));
          const batch = d.push(reused.subarray(0, n));
          assert.equal(batch.error, undefined);
          got.push(...structuredClone(batch.frames));
          reused.fill(0xee);
          off += n;
        }
        assert.equal(d.hasPartialFrame, false);
        assert.deepEqual(got, frames);
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("mux: the example session in PROTOCOL.md §5.11, byte for byte", async () => {
  const doc = await Deno.readTextFile(new URL("../../PROTOCOL.md", import.meta.url));
  const block = doc.split("### 5.11 Example")[1].split("```")[1];
  const lines = block.trim().split("\n");
  // Each line: optional direction, lowercase hex fields, then a description.
  const wire = { "C→A": "", "A→C": "" } as Record<string, string>;
  let dir = "";
  for (const line of lines) {
    const tokens = line.trim().split(/\s+/);
    if (tokens[0] === "C→A" || tokens[0] === "A→C") dir = tokens.shift()!;
    const fields = tokens.slice(0, tokens.findIndex((t) => !/^([0-9a-f]{2})+$/.test(t)));
    assert.ok(dir && fields.length > 0, line);
    wire[dir] += fields.join("");
  }
  const header = encodeHeader({
    requestId: "00112233-4455-6677-8899-aabbccddeeff",
    protocol: "tcp",
    port: 5000,
    address: { type: "ipv4", ip: "1.2.3.4" },
  });
  const ping = unhex("0000000000000001");
  const c2a = [
    PREFACE,
    encodeFrame({ type: "open", streamId: 1, window: 256 * 1024, header }),
    encodeFrame({ type: "data", streamId: 1, data: new TextEncoder().encode("hello") }),
    encodeFrame({ type: "half_close", streamId: 1 }),
    encodeFrame({ type: "ping", data: ping }),
  ];
  const a2c = [
    encodeFrame({ type: "status", streamId: 1, status: 0, window: 256 * 1024 }),
    encodeFrame({ type: "data", streamId: 1, data: new TextEncoder().encode("hi") }),
    encodeFrame({ type: "half_close", streamId: 1 }),
    encodeFrame({ type: "pong", data: ping }),
  ];
  assert.equal(wire["C→A"], c2a.map(hex).join(""));
  assert.equal(wire["A→C"], a2c.map(hex).join(""));
});
