/** Header codec: hand-written golden bytes, one rejection per invalid case, fast-check properties. */

import assert from "node:assert/strict";
import fc from "fast-check";
import type { Address } from "./addr.ts";
import {
  decodeHeader,
  encodeHeader,
  formatDestination,
  type Header,
  HEADER_FIXED_LENGTH,
  type HeaderError,
  MAX_HEADER_LENGTH,
} from "./header.ts";
import { Status, statusMessage } from "./status.ts";

const unhex = (s: string) => {
  const clean = s.replace(/\s+/g, "");
  return new Uint8Array(clean.match(/../g)!.map((h) => parseInt(h, 16)));
};
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

const ID = "00112233-4455-6677-8899-aabbccddeeff";
const ID_HEX = "00112233445566778899aabbccddeeff";

/** Golden vectors written by hand from SPEC.md: [name, header, bytes]. */
const golden: [string, Header, string][] = [
  [
    "TCP IPv4 1.2.3.4:5000 (the spec's example)",
    { requestId: ID, protocol: "tcp", port: 5000, address: { type: "ipv4", ip: "1.2.3.4" } },
    `00 001b ${ID_HEX} 00 1388 00 01020304`,
  ],
  [
    "UDP IPv4 10.96.0.10:53",
    { requestId: ID, protocol: "udp", port: 53, address: { type: "ipv4", ip: "10.96.0.10" } },
    `00 001b ${ID_HEX} 01 0035 00 0a60000a`,
  ],
  [
    "TCP IPv6 [::1]:8080",
    { requestId: ID, protocol: "tcp", port: 8080, address: { type: "ipv6", ip: "::1" } },
    `00 0027 ${ID_HEX} 00 1f90 00 00000000000000000000000000000001`,
  ],
  [
    "UDP IPv6 [2001:db8::5]:53",
    { requestId: ID, protocol: "udp", port: 53, address: { type: "ipv6", ip: "2001:db8::5" } },
    `00 0027 ${ID_HEX} 01 0035 00 20010db8000000000000000000000005`,
  ],
  [
    "TCP hostname redis:6379",
    { requestId: ID, protocol: "tcp", port: 6379, address: { type: "hostname", name: "redis" } },
    `00 001c ${ID_HEX} 00 18eb 01 7265646973`,
  ],
  [
    "UDP hostname kube-dns.kube-system:53",
    {
      requestId: ID,
      protocol: "udp",
      port: 53,
      address: { type: "hostname", name: "kube-dns.kube-system" },
    },
    // 23 + 20 = 43 = 0x2b; "kube-dns.kube-system"
    `00 002b ${ID_HEX} 01 0035 01 6b7562652d646e732e6b7562652d73797374656d`,
  ],
  [
    "TCP port 65535",
    { requestId: ID, protocol: "tcp", port: 65535, address: { type: "ipv4", ip: "255.0.0.1" } },
    `00 001b ${ID_HEX} 00 ffff 00 ff000001`,
  ],
];

for (const [name, header, bytes] of golden) {
  Deno.test(`header golden: encode ${name}`, () => {
    assert.equal(hex(encodeHeader(header)), hex(unhex(bytes)));
  });
  Deno.test(`header golden: decode ${name}`, () => {
    const wire = unhex(bytes);
    // Trailing payload bytes must not be consumed.
    const withPayload = new Uint8Array([...wire, 0xde, 0xad]);
    assert.deepEqual(decodeHeader(withPayload), { kind: "ok", header, length: wire.length });
  });
}

Deno.test("header: the spec example is 27 bytes", () => {
  assert.equal(encodeHeader(golden[0][1]).length, 27);
  assert.equal(HEADER_FIXED_LENGTH, 23);
});

Deno.test("header: IPv6 decodes to canonical compressed text", () => {
  const cases: [string, string][] = [
    ["0:0:0:0:0:0:0:1", "::1"],
    ["2001:0DB8:0000:0000:0000:0000:0000:0005", "2001:db8::5"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["::", "::"],
    ["fe80::", "fe80::"],
    ["::ffff:1.2.3.4", "::ffff:1.2.3.4"],
  ];
  for (const [input, canonical] of cases) {
    const h: Header = {
      requestId: ID,
      protocol: "tcp",
      port: 1,
      address: { type: "ipv6", ip: input },
    };
    const r = decodeHeader(encodeHeader(h));
    assert.equal(r.kind, "ok", input);
    if (r.kind === "ok") assert.deepEqual(r.header.address, { type: "ipv6", ip: canonical }, input);
  }
});

/** Builds a raw header with the given fields; `length` defaults to the true length. */
function raw(opts: {
  version?: number;
  length?: number;
  protocol?: number;
  port?: number;
  addrType?: number;
  addr?: Uint8Array;
}): Uint8Array {
  const addr = opts.addr ?? unhex("01020304");
  const total = HEADER_FIXED_LENGTH + addr.length;
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  out[0] = opts.version ?? 0;
  dv.setUint16(1, opts.length ?? total);
  out.set(unhex(ID_HEX), 3);
  out[19] = opts.protocol ?? 0;
  dv.setUint16(20, opts.port ?? 80);
  out[22] = opts.addrType ?? 0;
  out.set(addr, 23);
  return out;
}

const ascii = (s: string) => new TextEncoder().encode(s);

const rejections: [string, Uint8Array, HeaderError][] = [
  ["version 1", raw({ version: 1 }), "bad-version"],
  ["length 0", raw({ length: 0 }), "length-too-short"],
  ["length 22 (shorter than the fixed part)", raw({ length: 22 }), "length-too-short"],
  ["length over the cap", raw({ length: MAX_HEADER_LENGTH + 1 }), "length-too-long"],
  ["length 0xffff", raw({ length: 0xffff }), "length-too-long"],
  ["protocol 2", raw({ protocol: 2 }), "bad-protocol"],
  ["protocol 255", raw({ protocol: 255 }), "bad-protocol"],
  ["address type 2", raw({ addrType: 2 }), "bad-address-type"],
  ["address type 255", raw({ addrType: 255 }), "bad-address-type"],
  ["IP address of 0 bytes", raw({ addr: new Uint8Array(0) }), "bad-address-length"],
  ["IP address of 3 bytes", raw({ addr: unhex("010203") }), "bad-address-length"],
  ["IP address of 5 bytes", raw({ addr: unhex("0102030405") }), "bad-address-length"],
  ["IP address of 15 bytes", raw({ addr: new Uint8Array(15) }), "bad-address-length"],
  ["IP address of 17 bytes", raw({ addr: new Uint8Array(17) }), "bad-address-length"],
  ["empty hostname", raw({ addrType: 1, addr: new Uint8Array(0) }), "bad-address-length"],
  ["hostname with a space", raw({ addrType: 1, addr: ascii("re dis") }), "bad-hostname"],
  ["hostname with a NUL", raw({ addrType: 1, addr: unhex("6100") }), "bad-hostname"],
  ["hostname with UTF-8", raw({ addrType: 1, addr: ascii("ré.dis") }), "bad-hostname"],
  ["hostname with an empty label", raw({ addrType: 1, addr: ascii("a..b") }), "bad-hostname"],
  ["hostname starting with a dot", raw({ addrType: 1, addr: ascii(".a") }), "bad-hostname"],
  ["hostname of a dot", raw({ addrType: 1, addr: ascii(".") }), "bad-hostname"],
  ["label starting with -", raw({ addrType: 1, addr: ascii("-a.b") }), "bad-hostname"],
  ["label ending with -", raw({ addrType: 1, addr: ascii("a-.b") }), "bad-hostname"],
  ["label of 64 bytes", raw({ addrType: 1, addr: ascii("a".repeat(64)) }), "bad-hostname"],
  ["hostname with a colon", raw({ addrType: 1, addr: ascii("redis:6379") }), "bad-hostname"],
  ["hostname with a slash", raw({ addrType: 1, addr: ascii("a/b") }), "bad-hostname"],
  ["port 0", raw({ port: 0 }), "bad-port"],
];

for (const [name, bytes, error] of rejections) {
  Deno.test(`header rejects: ${name} → ${error}`, () => {
    const r = decodeHeader(bytes);
    assert.equal(r.kind, "error");
    if (r.kind === "error") {
      assert.equal(r.error, error);
      assert.ok(r.message.length > 0);
    }
  });
}

Deno.test("header accepts the longest valid hostname (253 bytes) and a trailing dot", () => {
  const longName = Array.from({ length: 4 }, () => "a".repeat(63)).join(".").slice(0, 253);
  assert.equal(longName.length, 253);
  for (const name of [longName, "redis.default.svc.cluster.local.", "_dns._udp.example", "a"]) {
    const r = decodeHeader(raw({ addrType: 1, addr: ascii(name) }));
    assert.equal(r.kind, "ok", name);
    if (r.kind === "ok") assert.deepEqual(r.header.address, { type: "hostname", name });
  }
  assert.equal(MAX_HEADER_LENGTH, 23 + 253);
});

Deno.test("header: truncated buffers are incomplete with the bytes needed", () => {
  const wire = unhex(golden[4][2]); // 28 bytes
  assert.deepEqual(decodeHeader(new Uint8Array(0)), { kind: "incomplete", needed: 3 });
  assert.deepEqual(decodeHeader(wire.subarray(0, 1)), { kind: "incomplete", needed: 3 });
  assert.deepEqual(decodeHeader(wire.subarray(0, 2)), { kind: "incomplete", needed: 3 });
  for (let n = 3; n < wire.length; n++) {
    assert.deepEqual(decodeHeader(wire.subarray(0, n)), { kind: "incomplete", needed: 28 }, `${n}`);
  }
  assert.equal(decodeHeader(wire).kind, "ok");
});

Deno.test("header: a bad version is reported from the first byte alone", () => {
  assert.deepEqual(decodeHeader(new Uint8Array([1])).kind, "error");
});

Deno.test("header: encodeHeader rejects invalid input with TypeError", () => {
  const ok: Header = golden[0][1];
  const bad: Header[] = [
    { ...ok, requestId: "not-a-uuid" },
    { ...ok, port: 0 },
    { ...ok, port: 65536 },
    { ...ok, port: 1.5 },
    { ...ok, protocol: "sctp" as "tcp" },
    { ...ok, address: { type: "ipv4", ip: "1.2.3" } },
    { ...ok, address: { type: "ipv4", ip: "1.2.3.256" } },
    { ...ok, address: { type: "ipv6", ip: "1:2:3:4:5:6:7:8:9" } },
    { ...ok, address: { type: "ipv6", ip: "1::2::3" } },
    { ...ok, address: { type: "hostname", name: "" } },
    { ...ok, address: { type: "hostname", name: "bad host" } },
    { ...ok, address: { type: "hostname", name: "a".repeat(254) } },
  ];
  for (const h of bad) assert.throws(() => encodeHeader(h), TypeError, JSON.stringify(h));
});

Deno.test("formatDestination", () => {
  const h = (address: Address, port: number): Header => ({
    requestId: ID,
    protocol: "tcp",
    port,
    address,
  });
  assert.equal(formatDestination(h({ type: "ipv4", ip: "1.2.3.4" }, 5000)), "1.2.3.4:5000");
  assert.equal(formatDestination(h({ type: "ipv6", ip: "::1" }, 53)), "[::1]:53");
  assert.equal(formatDestination(h({ type: "hostname", name: "redis" }, 6379)), "redis:6379");
});

Deno.test("statusMessage uses Go-like wording", () => {
  assert.equal(statusMessage(Status.ConnectionRefused), "connection refused");
  assert.equal(statusMessage(Status.NoSuchHost), "no such host");
  assert.equal(statusMessage(Status.ConnectTimeout), "i/o timeout");
  assert.equal(statusMessage(Status.NetworkUnreachable), "network is unreachable");
  assert.equal(statusMessage(99), "unknown status 99");
  const values = [0, 1, 2, 3, 4, 5, 6, 7];
  assert.deepEqual(
    [Status.Ok, Status.BadRequest, Status.NoSuchHost, Status.ResolveTimeout],
    values.slice(0, 4),
  );
  assert.deepEqual(
    [
      Status.ConnectionRefused,
      Status.ConnectTimeout,
      Status.NetworkUnreachable,
      Status.UnknownError,
    ],
    values.slice(4),
  );
});

// ---- properties ----

const labelArb = fc.stringMatching(/^[a-z0-9_](?:[a-z0-9_-]{0,20}[a-z0-9_])?$/);
const hostnameArb = fc
  .array(labelArb, { minLength: 1, maxLength: 6 })
  .map((ls) => ls.join("."))
  .filter((n) => n.length <= 253);

const ipv6BytesArb = fc.uint8Array({ minLength: 16, maxLength: 16 });
const bytesToIpv6Full = (b: Uint8Array) =>
  Array.from({ length: 8 }, (_, i) => ((b[2 * i] << 8) | b[2 * i + 1]).toString(16)).join(":");

const addressArb: fc.Arbitrary<Address> = fc.oneof(
  fc.ipV4().map((ip) => ({ type: "ipv4", ip }) as Address),
  ipv6BytesArb.map((b) => ({ type: "ipv6", ip: bytesToIpv6Full(b) }) as Address),
  hostnameArb.map((name) => ({ type: "hostname", name }) as Address),
);

const headerArb: fc.Arbitrary<Header> = fc.record({
  requestId: fc.uuid().map((u) => u.toLowerCase()),
  protocol: fc.constantFrom<"tcp" | "udp">("tcp", "udp"),
  port: fc.integer({ min: 1, max: 65535 }),
  address: addressArb,
});

Deno.test("property: encode → decode round-trips (IPv6 compared by bytes)", () => {
  fc.assert(
    fc.property(headerArb, fc.uint8Array({ maxLength: 8 }), (h, trailer) => {
      const wire = encodeHeader(h);
      const r = decodeHeader(new Uint8Array([...wire, ...trailer]));
      assert.equal(r.kind, "ok");
      if (r.kind !== "ok") return;
      assert.equal(r.length, wire.length);
      if (h.address.type === "ipv6") {
        // Canonical text differs from the input text; re-encoding gives the same bytes.
        assert.equal(r.header.address.type, "ipv6");
        assert.deepEqual(encodeHeader(r.header), wire);
      } else {
        assert.deepEqual(r.header, { ...h, address: { ...h.address } });
      }
    }),
    { numRuns: 500 },
  );
});

Deno.test("property: decodeHeader on arbitrary bytes never throws and stays within its input", () => {
  const anyBytes = fc.uint8Array({ maxLength: 300 });
  // Mostly-valid prefixes reach the deeper checks more often than pure noise.
  const nearValid = fc.tuple(
    fc.integer({ min: 0, max: 300 }),
    fc.integer({ min: 0, max: 3 }),
    fc.integer({ min: 0, max: 3 }),
    fc.uint8Array({ maxLength: 280 }),
  ).map(([len, proto, at, rest]) => {
    const b = new Uint8Array(23 + rest.length);
    b[1] = len >> 8;
    b[2] = len & 0xff;
    b[19] = proto;
    b[21] = 80;
    b[22] = at;
    b.set(rest, 23);
    return b;
  });
  fc.assert(
    fc.property(fc.oneof(anyBytes, nearValid), (buf) => {
      const r = decodeHeader(buf);
      if (r.kind === "ok") {
        assert.ok(r.length <= buf.length);
        assert.ok(r.length >= HEADER_FIXED_LENGTH && r.length <= MAX_HEADER_LENGTH);
        // Decoding only the declared bytes gives the same answer: nothing past them was read.
        assert.deepEqual(decodeHeader(buf.slice(0, r.length)), r);
      } else if (r.kind === "incomplete") {
        assert.ok(r.needed > buf.length);
        assert.ok(r.needed <= MAX_HEADER_LENGTH);
      } else {
        assert.equal(typeof r.error, "string");
      }
    }),
    { numRuns: 2000 },
  );
});
