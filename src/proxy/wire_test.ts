/** Pure codecs of the proxy: SOCKS5 addresses, replies, UDP headers; HTTP proxy request parsing. */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeSocksAddress,
  decodeUdpPacket,
  encodeReply,
  encodeSocksAddress,
  encodeUdpPacket,
  type SocksDestination,
} from "./wire.ts";
import { parseHttpProxyRequest, splitHostPort } from "./http.ts";
import { formatIpv6 } from "../protocol/addr.ts";

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("socks wire: address blocks decode to exact values", () => {
  assert.deepEqual(decodeSocksAddress(new Uint8Array([1, 10, 96, 0, 10, 0, 53])), {
    kind: "ok",
    destination: { address: { type: "ipv4", ip: "10.96.0.10" }, port: 53 },
    length: 7,
  });
  const v6 = new Uint8Array([4, 0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1, 0x1f, 0x90]);
  assert.deepEqual(decodeSocksAddress(v6), {
    kind: "ok",
    destination: { address: { type: "ipv6", ip: "2001:db8::1" }, port: 8080 },
    length: 19,
  });
  assert.deepEqual(decodeSocksAddress(new Uint8Array([3, 5, ...enc("redis"), 0x18, 0xeb])), {
    kind: "ok",
    destination: { address: { type: "hostname", name: "redis" }, port: 6379 },
    length: 9,
  });
  assert.deepEqual(decodeSocksAddress(new Uint8Array([3, 5, 1])), {
    kind: "incomplete",
    needed: 9,
  });
  assert.deepEqual(decodeSocksAddress(new Uint8Array([])), { kind: "incomplete", needed: 1 });
  const bad = decodeSocksAddress(new Uint8Array([2, 0, 0]));
  assert.equal(bad.kind, "error");
  assert.equal(bad.kind === "error" && bad.reply, 0x08);
  const empty = decodeSocksAddress(new Uint8Array([3, 0, 0, 80]));
  assert.equal(empty.kind === "error" && empty.reply, 0x01);
});

Deno.test("socks wire: replies are VER REP RSV ATYP ADDR PORT", () => {
  assert.deepEqual(encodeReply(0x05), new Uint8Array([5, 5, 0, 1, 0, 0, 0, 0, 0, 0]));
  assert.deepEqual(
    encodeReply(0, { address: { type: "ipv4", ip: "127.0.0.1" }, port: 40000 }),
    new Uint8Array([5, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40]),
  );
  assert.deepEqual(
    encodeReply(0, { address: { type: "ipv6", ip: "::1" }, port: 1 }),
    new Uint8Array([5, 0, 0, 4, ...new Array(15).fill(0), 1, 0, 1]),
  );
});

Deno.test("socks wire: IPv6 addresses: brackets and zones are dropped, mapped IPv4 kept", () => {
  const block = (ip: string) => encodeSocksAddress({ address: { type: "ipv6", ip }, port: 53 });
  const one = new Uint8Array([4, ...new Array(15).fill(0), 1, 0, 53]);
  assert.deepEqual(block("[::1]"), one);
  assert.deepEqual(block("::1"), one);
  const ll = decodeSocksAddress(block("fe80::1%eth0"));
  assert.deepEqual(ll.kind === "ok" && ll.destination.address, { type: "ipv6", ip: "fe80::1" });
  const mapped = decodeSocksAddress(block("::ffff:10.0.0.1"));
  assert.deepEqual(mapped.kind === "ok" && mapped.destination.address, {
    type: "ipv6",
    ip: "::ffff:10.0.0.1",
  });
  assert.throws(() => block("1::2::3"), TypeError);
  assert.throws(
    () => encodeSocksAddress({ address: { type: "ipv4", ip: "256.0.0.1" }, port: 1 }),
    TypeError,
  );
});

const destination: fc.Arbitrary<SocksDestination> = fc.record({
  address: fc.oneof(
    fc.ipV4().map((ip) => ({ type: "ipv4" as const, ip })),
    fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => ({
      type: "ipv6" as const,
      ip: formatIpv6(b),
    })),
    fc.stringMatching(/^[a-z0-9.-]{1,255}$/).map((name) => ({ type: "hostname" as const, name })),
  ),
  port: fc.integer({ min: 0, max: 65535 }),
});

Deno.test("socks wire: encode/decode round-trips (property)", () => {
  fc.assert(
    fc.property(destination, fc.uint8Array({ maxLength: 32 }), (rec, data) => {
      // fast-check records have a null prototype; compare plain objects.
      const d: SocksDestination = { address: rec.address, port: rec.port };
      const block = encodeSocksAddress(d);
      assert.deepEqual(decodeSocksAddress(block), {
        kind: "ok",
        destination: d,
        length: block.length,
      });
      const pkt = encodeUdpPacket(block, data);
      const back = decodeUdpPacket(pkt);
      assert.ok(typeof back !== "string");
      assert.deepEqual(back.destination, d);
      assert.deepEqual(back.rawAddress, block);
      assert.deepEqual(back.data, data);
      assert.equal(back.frag, 0);
    }),
    { numRuns: 300 },
  );
});

Deno.test("socks wire: decoders never throw on arbitrary bytes (property)", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(4), (b, off) => {
      decodeSocksAddress(b, off);
      decodeUdpPacket(b);
      parseHttpProxyRequest(b);
    }),
    { numRuns: 500 },
  );
});

Deno.test("http proxy: CONNECT targets and absolute-form requests", () => {
  assert.deepEqual(
    parseHttpProxyRequest(
      enc("CONNECT web.default.svc.cluster.local:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ),
    { kind: "connect", host: "web.default.svc.cluster.local", port: 443 },
  );
  assert.deepEqual(parseHttpProxyRequest(enc("CONNECT [::1]:5432 HTTP/1.1\r\n\r\n")), {
    kind: "connect",
    host: "::1",
    port: 5432,
  });
  const fwd = parseHttpProxyRequest(
    enc(
      "GET http://web:8080/a/b?c=1 HTTP/1.1\r\nHost: web:8080\r\nProxy-Connection: keep-alive\r\n" +
        "Accept: */*\r\nConnection: keep-alive\r\n\r\n",
    ),
  );
  assert.equal(fwd.kind, "forward");
  assert.ok(fwd.kind === "forward");
  assert.equal(fwd.host, "web");
  assert.equal(fwd.port, 8080);
  assert.equal(
    new TextDecoder().decode(fwd.head),
    "GET /a/b?c=1 HTTP/1.1\r\nHost: web:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n",
  );
  const noPort = parseHttpProxyRequest(enc("GET http://web HTTP/1.0\r\n\r\n"));
  assert.ok(noPort.kind === "forward" && noPort.port === 80);
  assert.equal(
    new TextDecoder().decode(noPort.kind === "forward" ? noPort.head : new Uint8Array()),
    "GET / HTTP/1.0\r\nConnection: close\r\n\r\n",
  );
  for (
    const bad of [
      "CONNECT web HTTP/1.1\r\n\r\n",
      "CONNECT web:0 HTTP/1.1\r\n\r\n",
      "CONNECT web:65536 HTTP/1.1\r\n\r\n",
      "CONNECT ::1:80 HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\n\r\n",
      "GET https://web/ HTTP/1.1\r\n\r\n",
      "GET http://user@web/ HTTP/1.1\r\n\r\n",
      "CONNECT web:80\r\n\r\n",
    ]
  ) {
    const r = parseHttpProxyRequest(enc(bad));
    assert.equal(r.kind, "error", bad);
    assert.equal(r.kind === "error" && r.code, 400, bad);
  }
  assert.equal(splitHostPort("[::1]"), null);
  assert.deepEqual(splitHostPort("[::1]", 80), { host: "::1", port: 80 });
});
