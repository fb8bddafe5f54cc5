/** The one address validator: IPv4/IPv6 text, hostnames, classification and `host:port`. */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type Address,
  formatAddress,
  formatIpv4,
  formatIpv6,
  hostPort,
  isIPv4,
  isIPv6,
  isValidHostname,
  MAX_HOSTNAME_LENGTH,
  parseAddress,
  parseIpv4,
  parseIpv6,
} from "./addr.ts";

Deno.test("isIPv4: dotted quads only, no leading zeros, each part ≤ 255", () => {
  for (const ok of ["0.0.0.0", "127.0.0.1", "255.255.255.255", "10.0.12.3"]) {
    assert.ok(isIPv4(ok), ok);
  }
  for (
    const bad of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "01.2.3.4",
      "1.2.3.256",
      "1.2.3.-1",
      " 1.2.3.4",
      "a.b.c.d",
      "1..2.3",
      "١.2.3.4",
    ]
  ) {
    assert.ok(!isIPv4(bad), bad);
  }
});

Deno.test("isIPv6: full, compressed and IPv4-tailed forms; no brackets, zones or extra groups", () => {
  const ok = [
    "::",
    "::1",
    "1::",
    "fe80::1",
    "2001:db8:0:0:0:0:2:1",
    "2001:DB8::2:1",
    "::ffff:1.2.3.4",
    "1:2:3:4:5:6:1.2.3.4",
    "1:2:3:4:5:6:7::",
  ];
  for (const t of ok) assert.ok(isIPv6(t), t);
  const bad = [
    "",
    ":",
    "1.2.3.4",
    "[::1]",
    "fe80::1%eth0",
    "1::2::3",
    "1:2:3:4:5:6:7:8:9",
    "1::2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7",
    ":1:2:3:4:5:6:7",
    "12345::",
    "::1.2.3.4:5",
    "::ffff:1.2.3.256",
    "g::1",
  ];
  for (const t of bad) assert.ok(!isIPv6(t), t);
});

Deno.test("parseIpv6 and formatIpv6 round-trip canonical text (RFC 5952)", () => {
  const cases: [string, string][] = [
    ["2001:DB8:0:0:0:0:2:1", "2001:db8::2:1"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
    ["1:0:2:0:3:0:4:5", "1:0:2:0:3:0:4:5"],
    ["::ffff:7f00:1", "::ffff:127.0.0.1"],
  ];
  for (const [text, want] of cases) assert.equal(formatIpv6(parseIpv6(text)!), want, text);
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (b) => {
      assert.deepEqual(parseIpv6(formatIpv6(b)), b);
    }),
  );
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), (b) => {
      assert.deepEqual(parseIpv4(formatIpv4(b)), b);
    }),
  );
});

Deno.test("isValidHostname: RFC 1123 labels plus _, ≤ 63 per label, ≤ 253 bytes with the dot", () => {
  for (const ok of ["redis", "redis.default", "a-b.c_d", "_dns._udp.example", "x.", "A1"]) {
    assert.ok(isValidHostname(ok), ok);
  }
  for (const bad of ["", ".", "-a", "a-", "a..b", "a b", "ü.example", `${"a".repeat(64)}.x`]) {
    assert.ok(!isValidHostname(bad), bad);
  }
  assert.ok(isValidHostname("a".repeat(63)));
  // The Header carries at most MAX_HOSTNAME_LENGTH bytes, trailing dot included.
  const base = ["a".repeat(63), "b".repeat(63), "c".repeat(63)].join("."); // 191 bytes
  const at253 = `${base}.${"d".repeat(61)}`;
  assert.equal(at253.length, MAX_HOSTNAME_LENGTH);
  assert.ok(isValidHostname(at253));
  assert.ok(isValidHostname(`${base}.${"d".repeat(60)}.`));
  assert.ok(!isValidHostname(`${at253}.`), "254 bytes with the trailing dot");
  assert.ok(!isValidHostname(`${base}.${"d".repeat(62)}`));
});

Deno.test("parseAddress classifies text; formatAddress gives it back", () => {
  const cases: [string, Address][] = [
    ["1.2.3.4", { type: "ipv4", ip: "1.2.3.4" }],
    ["::1", { type: "ipv6", ip: "::1" }],
    ["[::1]", { type: "ipv6", ip: "::1" }],
    ["2001:DB8::0:5", { type: "ipv6", ip: "2001:db8::5" }],
    ["redis", { type: "hostname", name: "redis" }],
    ["redis.default", { type: "hostname", name: "redis.default" }],
    ["1.2.3", { type: "hostname", name: "1.2.3" }],
    ["01.2.3.4", { type: "hostname", name: "01.2.3.4" }],
  ];
  for (const [text, want] of cases) assert.deepEqual(parseAddress(text), want, text);
  assert.equal(formatAddress(parseAddress("fe80::1")), "fe80::1");
  assert.equal(formatAddress({ type: "hostname", name: "redis" }), "redis");
});

Deno.test("hostPort brackets IPv6 once", () => {
  assert.equal(hostPort("127.0.0.1", 8080), "127.0.0.1:8080");
  assert.equal(hostPort("::1", 53), "[::1]:53");
  assert.equal(hostPort("[::1]", 53), "[::1]:53");
  assert.equal(hostPort("redis", 6379), "redis:6379");
});
