import assert from "node:assert/strict";
import { startDnsServer } from "./dns_server.ts";
import {
  decodeMessage,
  type DnsMessage,
  encodeMessage,
  queryMessage,
  Rcode,
  RecordType,
} from "./dns_wire.ts";
import { clusterAnswerer, TEST_ZONE_A, testZoneAnswerer } from "./zones.ts";
import { dig, digFull, requireTools } from "./_testlib.ts";
import type { V1Pod, V1Service } from "./kube.ts";
import { selectedReadyPods } from "./kube.ts";

const HOST = "127.0.77.1";

const query = (name: string, type: number): DnsMessage => queryMessage(0x1234, name, type);

Deno.test("dns_wire: a query encodes to the RFC 1035 bytes and decodes back", () => {
  const bytes = encodeMessage(query("ab.c", RecordType.A));
  assert.deepEqual(
    Array.from(bytes),
    [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 2, 97, 98, 1, 99, 0, 0, 1, 0, 1],
  );
  const back = decodeMessage(bytes);
  assert.equal(back.id, 0x1234);
  assert.equal(back.rd, true);
  assert.deepEqual(back.questions, [{ name: "ab.c", type: 1, class: 1 }]);
});

Deno.test("dns_wire: records round-trip; compression pointers are followed", () => {
  const m: DnsMessage = {
    ...query("x.test", RecordType.ANY),
    qr: true,
    answers: [
      {
        name: "x.test",
        type: RecordType.A,
        class: 1,
        ttl: 7,
        data: { kind: "a", ip: "127.1.2.3" },
      },
      {
        name: "x.test",
        type: RecordType.AAAA,
        class: 1,
        ttl: 7,
        data: { kind: "aaaa", ip: "fd00::1:0:0:2" },
      },
      {
        name: "x.test",
        type: RecordType.TXT,
        class: 1,
        ttl: 7,
        data: { kind: "txt", strings: ["hi", "there"] },
      },
      {
        name: "x.test",
        type: RecordType.CNAME,
        class: 1,
        ttl: 7,
        data: { kind: "name", name: "y.test" },
      },
      {
        name: "_p._tcp.x.test",
        type: RecordType.SRV,
        class: 1,
        ttl: 7,
        data: { kind: "srv", priority: 1, weight: 2, port: 80, target: "x.test" },
      },
    ],
  };
  assert.deepEqual(decodeMessage(encodeMessage(m)).answers, m.answers);
  // Hand-made message with a pointer to offset 12 (the question name).
  const q = encodeMessage(query("ab.c", RecordType.A));
  const withAnswer = new Uint8Array([
    ...q.slice(0, 6),
    0,
    1,
    ...q.slice(8),
    0xc0,
    12,
    0,
    1,
    0,
    1,
    0,
    0,
    0,
    9,
    0,
    4,
    10,
    0,
    0,
    1,
  ]);
  const d = decodeMessage(withAnswer);
  assert.equal(d.answers[0].name, "ab.c");
  assert.deepEqual(d.answers[0].data, { kind: "a", ip: "10.0.0.1" });
});

Deno.test("dns_wire: malformed input throws DnsFormatError (truncation, pointer loop)", () => {
  assert.throws(() => decodeMessage(new Uint8Array([1, 2, 3])), { name: "DnsFormatError" });
  const loop = new Uint8Array([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
  assert.throws(() => decodeMessage(loop), { name: "DnsFormatError" });
});

Deno.test("test zone server: real dig over UDP and TCP gets the pod name and the fixed A", async () => {
  await requireTools("dig");
  const srv = await startDnsServer({ hostname: HOST, port: 0, answer: testZoneAnswerer("pod-a") });
  try {
    assert.deepEqual(await dig(HOST, srv.port, "whoami.test.relay", "TXT"), ['"pod-a"']);
    assert.deepEqual(await dig(HOST, srv.port, "whoami.test.relay", "TXT", ["+tcp"]), ['"pod-a"']);
    assert.deepEqual(await dig(HOST, srv.port, "anything.test.relay", "A"), [TEST_ZONE_A]);
    assert.match(await digFull(HOST, srv.port, "example.com", "A"), /status: REFUSED/);
    assert.match(await digFull(HOST, srv.port, "nope.test.relay", "TXT"), /status: NOERROR/);
  } finally {
    await srv.close();
  }
});

Deno.test("dns server: garbage gets FORMERR with the same id, not silence", async () => {
  const srv = await startDnsServer({
    hostname: HOST,
    port: 0,
    tcp: false,
    answer: testZoneAnswerer("p"),
  });
  const sock = Deno.listenDatagram({ hostname: HOST, port: 0, transport: "udp" });
  try {
    await sock.send(new Uint8Array([0xab, 0xcd, 1, 0, 0, 1, 0]), {
      transport: "udp",
      hostname: HOST,
      port: srv.port,
    });
    const [data] = await sock.receive();
    const m = decodeMessage(data);
    assert.equal(m.id, 0xabcd);
    assert.equal(m.rcode, Rcode.FormErr);
  } finally {
    sock.close();
    await srv.close();
  }
});

function pod(
  name: string,
  ns: string,
  ip: string,
  labels: Record<string, string>,
  ready = true,
): V1Pod {
  return {
    metadata: { name, namespace: ns, labels },
    spec: {
      containers: [{ name: "c", ports: [{ name: "http", containerPort: 80 }] }],
      nodeName: "n",
    },
    status: {
      phase: "Running",
      podIP: ip,
      conditions: [{ type: "Ready", status: ready ? "True" : "False" }],
    },
  };
}

Deno.test("cluster DNS: services, headless, ExternalName, NXDOMAIN, search-domain misses", async () => {
  await requireTools("dig");
  const services: V1Service[] = [
    {
      metadata: { name: "web", namespace: "default" },
      spec: {
        clusterIP: "127.2.0.10",
        selector: { app: "web" },
        ports: [{ name: "http", port: 80, protocol: "TCP" }],
      },
    },
    {
      metadata: { name: "hl", namespace: "default" },
      spec: { clusterIP: "None", selector: { app: "web" }, ports: [{ port: 80 }] },
    },
    {
      metadata: { name: "ext", namespace: "default" },
      spec: { type: "ExternalName", externalName: "web.default.svc.cluster.local" },
    },
    {
      metadata: { name: "out", namespace: "default" },
      spec: { type: "ExternalName", externalName: "example.org" },
    },
  ];
  const pods = [
    pod("web-1", "default", "127.1.0.5", { app: "web" }),
    pod("web-2", "default", "127.1.0.6", { app: "web" }, false),
  ];
  const srv = await startDnsServer({
    hostname: HOST,
    port: 0,
    answer: clusterAnswerer({
      service: (ns, name) =>
        services.find((s) => s.metadata!.namespace === ns && s.metadata!.name === name),
      pods: (ns) => pods.filter((p) => p.metadata!.namespace === ns),
      readyEndpoints: (svc) => selectedReadyPods(svc, pods),
    }),
  });
  try {
    assert.deepEqual(await dig(HOST, srv.port, "web.default.svc.cluster.local", "A"), [
      "127.2.0.10",
    ]);
    assert.deepEqual(await dig(HOST, srv.port, "WEB.default.svc.cluster.local.", "A", ["+tcp"]), [
      "127.2.0.10",
    ]);
    // Headless: only the ready pod.
    assert.deepEqual(await dig(HOST, srv.port, "hl.default.svc.cluster.local", "A"), ["127.1.0.5"]);
    assert.deepEqual(await dig(HOST, srv.port, "ext.default.svc.cluster.local", "A"), [
      "web.default.svc.cluster.local.",
      "127.2.0.10",
    ]);
    assert.deepEqual(await dig(HOST, srv.port, "out.default.svc.cluster.local", "A"), [
      "example.org.",
    ]);
    assert.deepEqual(await dig(HOST, srv.port, "_http._tcp.web.default.svc.cluster.local", "SRV"), [
      "0 100 80 web.default.svc.cluster.local.",
    ]);
    assert.deepEqual(await dig(HOST, srv.port, "127-1-0-9.default.pod.cluster.local", "A"), [
      "127.1.0.9",
    ]);
    assert.match(
      await digFull(HOST, srv.port, "web.default.svc.cluster.local", "AAAA"),
      /status: NOERROR/,
    );
    assert.match(
      await digFull(HOST, srv.port, "nope.default.svc.cluster.local", "A"),
      /status: NXDOMAIN/,
    );
    assert.match(
      await digFull(HOST, srv.port, "web.default.svc.cluster.local.default.svc.cluster.local", "A"),
      /status: NXDOMAIN/,
    );
    assert.match(await digFull(HOST, srv.port, "example.com", "A"), /status: NXDOMAIN/);
  } finally {
    await srv.close();
  }
});
