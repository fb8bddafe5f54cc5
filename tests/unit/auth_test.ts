/** Token block codec: golden bytes, rejections, fast-check properties (PROTOCOL.md §0). */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  AUTH_LENGTH,
  AUTH_MAGIC,
  decodeAuth,
  encodeAuth,
  formatToken,
  parseToken,
  TOKEN_LENGTH,
  tokensEqual,
} from "../../src/protocol/auth.ts";
import { encodeHeader } from "../../src/protocol/header.ts";
import { PREFACE } from "../../src/protocol/mux.ts";

const unhex = (s: string) => {
  const clean = s.replace(/\s+/g, "");
  return new Uint8Array(clean.match(/../g)!.map((h) => parseInt(h, 16)));
};

const TOKEN = unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");

Deno.test("auth golden: the Token block is KRLYTOK1 + 32 token bytes (the PROTOCOL.md example)", () => {
  assert.equal(new TextDecoder().decode(AUTH_MAGIC), "KRLYTOK1");
  assert.equal(AUTH_LENGTH, 40);
  assert.deepEqual(
    encodeAuth(TOKEN),
    unhex(`4b524c59544f4b31
      000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f`),
  );
  assert.equal(
    formatToken(TOKEN),
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
  );
});

Deno.test("auth: decode returns the token and the length; bytes after it are left alone", () => {
  const header = encodeHeader({
    requestId: "00112233-4455-6677-8899-aabbccddeeff",
    protocol: "tcp",
    port: 5000,
    address: { type: "ipv4", ip: "1.2.3.4" },
  });
  const wire = new Uint8Array([...encodeAuth(TOKEN), ...header]);
  const r = decodeAuth(wire);
  assert.equal(r.kind, "ok");
  if (r.kind !== "ok") return;
  assert.equal(r.length, 40);
  assert.deepEqual(r.token, TOKEN);
  // The seed Header follows byte-exact.
  assert.deepEqual(wire.subarray(r.length), header);
});

Deno.test("auth: every proper prefix of a block is incomplete (needs 40)", () => {
  const wire = encodeAuth(TOKEN);
  for (let n = 0; n < AUTH_LENGTH; n++) {
    assert.deepEqual(decodeAuth(wire.subarray(0, n)), { kind: "incomplete", needed: 40 });
  }
});

Deno.test("auth: a bare Header or PREFACE is refused as soon as it differs from the magic", () => {
  const r1 = decodeAuth(new Uint8Array([0]));
  assert.equal(r1.kind, "error");
  if (r1.kind === "error") {
    assert.equal(r1.error, "no-token");
    assert.match(r1.message, /raw-mode Header/);
  }
  // PREFACE and magic share "KRLY": the fifth byte tells them apart.
  assert.equal(decodeAuth(PREFACE.subarray(0, 4)).kind, "incomplete");
  const r2 = decodeAuth(PREFACE);
  assert.equal(r2.kind, "error");
  if (r2.kind === "error") assert.match(r2.message, /tunnel preface/);
  const r3 = decodeAuth(new TextEncoder().encode("GET / HTTP/1.1\r\n"));
  assert.equal(r3.kind, "error");
  if (r3.kind === "error") assert.equal(r3.message, "no token");
});

Deno.test("auth: encodeAuth and formatToken refuse a token that is not 32 bytes", () => {
  assert.throws(() => encodeAuth(new Uint8Array(16)), TypeError);
  assert.throws(() => encodeAuth(new Uint8Array(33)), TypeError);
  assert.throws(() => formatToken(new Uint8Array(31)), TypeError);
});

Deno.test("auth: parseToken takes exactly 64 hex digits", () => {
  assert.deepEqual(parseToken(formatToken(TOKEN)), TOKEN);
  assert.deepEqual(parseToken(formatToken(TOKEN).toUpperCase()), TOKEN);
  for (
    const bad of ["", "00", "0".repeat(63), "0".repeat(65), "g".repeat(64), ` ${"0".repeat(63)}`]
  ) {
    assert.equal(parseToken(bad), undefined, JSON.stringify(bad));
  }
});

Deno.test("auth: tokensEqual compares every byte and the lengths", () => {
  const other = TOKEN.slice();
  assert.ok(tokensEqual(TOKEN, other));
  other[31] ^= 1;
  assert.ok(!tokensEqual(TOKEN, other));
  other[31] ^= 1;
  other[0] ^= 0x80;
  assert.ok(!tokensEqual(TOKEN, other));
  assert.ok(!tokensEqual(TOKEN, TOKEN.subarray(0, 31)));
  assert.ok(tokensEqual(new Uint8Array(0), new Uint8Array(0)));
});

const tokenArb = fc.uint8Array({ minLength: TOKEN_LENGTH, maxLength: TOKEN_LENGTH });

Deno.test("property: encode → decode round-trips with any bytes after the block", () => {
  fc.assert(
    fc.property(tokenArb, fc.uint8Array({ maxLength: 64 }), (token, trailer) => {
      const wire = new Uint8Array([...encodeAuth(token), ...trailer]);
      const r = decodeAuth(wire);
      assert.equal(r.kind, "ok");
      if (r.kind !== "ok") return;
      assert.equal(r.length, AUTH_LENGTH);
      assert.deepEqual(r.token, token);
      assert.ok(tokensEqual(r.token, token));
      assert.equal(formatToken(token).length, 64);
      assert.deepEqual(parseToken(formatToken(token)), token);
    }),
    { numRuns: 500 },
  );
});

Deno.test("property: decodeAuth on arbitrary bytes never throws, reads only 40 bytes, and is prefix-consistent", () => {
  const anyBytes = fc.uint8Array({ maxLength: 80 });
  // Blocks with one byte changed or cut short reach every branch more often than noise.
  const nearValid = fc.tuple(
    tokenArb,
    fc.integer({ min: 0, max: AUTH_LENGTH + 8 }),
    fc.integer({ min: 0, max: 255 }),
    fc.integer({ min: 0, max: AUTH_LENGTH + 8 }),
  ).map(([token, at, value, cut]) => {
    const b = new Uint8Array([...encodeAuth(token), 1, 2, 3, 4, 5, 6, 7, 8]);
    if (at < b.length) b[at] = value;
    return b.subarray(0, cut);
  });
  fc.assert(
    fc.property(fc.oneof(anyBytes, nearValid), (buf) => {
      const r = decodeAuth(buf);
      const magicOk = AUTH_MAGIC.subarray(0, Math.min(8, buf.length)).every((b, i) => buf[i] === b);
      if (r.kind === "ok") {
        assert.ok(magicOk);
        assert.equal(r.length, AUTH_LENGTH);
        assert.ok(buf.length >= AUTH_LENGTH);
        assert.deepEqual(r.token, buf.subarray(8, 40));
        // Decoding only the block's bytes gives the same answer: nothing past them was read.
        assert.deepEqual(decodeAuth(buf.slice(0, r.length)), r);
      } else if (r.kind === "incomplete") {
        assert.ok(magicOk);
        assert.ok(buf.length < AUTH_LENGTH);
        assert.equal(r.needed, AUTH_LENGTH);
      } else {
        assert.ok(!magicOk);
        assert.equal(r.error, "no-token");
        // More bytes never turn a refusal into anything else.
        assert.equal(decodeAuth(new Uint8Array([...buf, ...AUTH_MAGIC])).kind, "error");
      }
      // A shorter prefix is never refused when the whole input is not, and is ok exactly when
      // it holds the whole block.
      for (let n = 0; n < buf.length; n++) {
        const p = decodeAuth(buf.subarray(0, n));
        if (r.kind !== "error") assert.equal(p.kind, n < AUTH_LENGTH ? "incomplete" : "ok");
      }
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: tokensEqual is byte equality", () => {
  fc.assert(
    fc.property(tokenArb, tokenArb, fc.boolean(), (a, b, same) => {
      const other = same ? a.slice() : b;
      const expected = a.every((x, i) => x === other[i]);
      assert.equal(tokensEqual(a, other), expected);
    }),
    { numRuns: 500 },
  );
});
