/** UDP framing: golden bytes, limits, and reassembly under arbitrary chunking. */

import assert from "node:assert/strict";
import fc from "fast-check";
import { encodeUdpFrame, MAX_DATAGRAM, UdpFrameDecoder } from "./udp.ts";

Deno.test("udp frame: golden bytes", () => {
  assert.deepEqual(
    encodeUdpFrame(new Uint8Array([0x61, 0x62, 0x63])),
    new Uint8Array([0, 3, 0x61, 0x62, 0x63]),
  );
  assert.deepEqual(encodeUdpFrame(new Uint8Array(0)), new Uint8Array([0, 0]));
  const big = encodeUdpFrame(new Uint8Array(MAX_DATAGRAM));
  assert.equal(big.length, 65537);
  assert.deepEqual(big.subarray(0, 2), new Uint8Array([0xff, 0xff]));
  const mid = encodeUdpFrame(new Uint8Array(0x0102));
  assert.deepEqual(mid.subarray(0, 2), new Uint8Array([0x01, 0x02]));
});

Deno.test("udp frame: a datagram over 65535 bytes is refused", () => {
  assert.throws(() => encodeUdpFrame(new Uint8Array(MAX_DATAGRAM + 1)), RangeError);
});

Deno.test("udp decoder: empty datagrams, several frames per chunk, partial frames", () => {
  const d = new UdpFrameDecoder();
  assert.deepEqual(d.push(new Uint8Array([0, 0, 0, 2, 9])), [new Uint8Array(0)]);
  assert.equal(d.pending, 3);
  assert.deepEqual(d.push(new Uint8Array([8, 0])), [new Uint8Array([9, 8])]);
  assert.deepEqual(d.push(new Uint8Array([1])), []);
  assert.deepEqual(d.push(new Uint8Array([7])), [new Uint8Array([7])]);
  assert.equal(d.pending, 0);
});

Deno.test("udp decoder: returned datagrams do not alias the input chunk", () => {
  const d = new UdpFrameDecoder();
  const chunk = new Uint8Array([0, 1, 42]);
  const [out] = d.push(chunk);
  chunk[2] = 0;
  assert.deepEqual(out, new Uint8Array([42]));
});

Deno.test("property: UdpFrameDecoder reassembles arbitrary chunkings", () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ maxLength: 2000 }), { maxLength: 20 }),
      fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 50 }),
      (datagrams, cuts) => {
        const stream = new Uint8Array(datagrams.reduce((n, d) => n + 2 + d.length, 0));
        let off = 0;
        for (const d of datagrams) {
          const f = encodeUdpFrame(d);
          stream.set(f, off);
          off += f.length;
        }
        const dec = new UdpFrameDecoder();
        const got: Uint8Array[] = [];
        let pos = 0;
        let i = 0;
        while (pos < stream.length) {
          const n = cuts[i++ % cuts.length];
          got.push(...dec.push(stream.subarray(pos, pos + n)));
          pos += n;
        }
        assert.deepEqual(got, datagrams);
        assert.equal(dec.pending, 0);
      },
    ),
    { numRuns: 300 },
  );
});
