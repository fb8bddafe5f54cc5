/**
 * Target resolution (resolve.ts) against a fake apiserver: where each kind of target sends a new
 * connection, what the Forwarding line names, the user errors, and following pods as they change.
 */

import assert from "node:assert/strict";
import { FakeKube, fakePod } from "../../tests/_lib/fake_kube.ts";
import { UsageError } from "../errors.ts";
import { parsePortSpec } from "../spec/ports.ts";
import type { ForwardRequest } from "../spec/request.ts";
import { parseTarget } from "../spec/target.ts";
import { KubeApiError } from "./client.ts";
import { type ResolvedTarget, resolveTarget } from "./resolve.ts";

const NS = "/api/v1/namespaces/default";

function request(target: string, ...ports: string[]): ForwardRequest {
  return {
    target: parseTarget(target),
    ports: ports.map(parsePortSpec),
    addresses: ["127.0.0.1"],
  };
}

async function resolve(
  kube: FakeKube,
  req: ForwardRequest,
  podRunningTimeoutMs = 1000,
): Promise<{ target: ResolvedTarget; notes: string[] }> {
  const notes: string[] = [];
  const target = await resolveTarget(kube, req, "default", {
    podRunningTimeoutMs,
    log: (l) => notes.push(l),
  });
  return { target, notes };
}

/** Where connections on the request's i-th port go: `ip:port (pod)`. */
async function where(t: ResolvedTarget, req: ForwardRequest, i = 0): Promise<string> {
  const d = await t.destination(req.ports[i]);
  const host = d.address.type === "hostname" ? d.address.name : d.address.ip;
  return `${host}:${d.port}${d.pod ? ` (${d.pod})` : ""}`;
}

function isUsageError(re: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof UsageError, String(e));
    assert.match(e.message, re);
    return true;
  };
}

Deno.test("resolve ip/ and host/: fixed destinations, numeric ports only, no API call", async () => {
  const kube = new FakeKube();
  const ip = request("ip/[fd00::7]", "8080:80", "53@udp");
  const { target } = await resolve(kube, ip);
  assert.equal(await where(target, ip, 0), "fd00::7:80");
  assert.equal(await where(target, ip, 1), "fd00::7:53");
  assert.equal(target.remoteLabel(ip.ports[0]), "80");
  const host = request("host/redis.cache", "6379");
  assert.equal(await where((await resolve(kube, host)).target, host), "redis.cache:6379");
  await assert.rejects(
    resolve(kube, request("host/redis", "6379:redis")),
    isUsageError(/^named port "redis" cannot be used with host\/ targets: give a port number$/),
  );
  assert.deepEqual(kube.gets, []);
});

Deno.test("resolve svc/ with a cluster IP: the service port, by number or name", async () => {
  const kube = new FakeKube().put(`${NS}/services/web`, {
    metadata: { name: "web" },
    spec: {
      clusterIP: "10.96.0.10",
      ports: [{ name: "http", port: 80, targetPort: 8080 }, { name: "dns", port: 53 }],
    },
  });
  const req = request("svc/web", "8000:80", "5353:dns");
  const { target } = await resolve(kube, req);
  assert.equal(await where(target, req, 0), "10.96.0.10:80");
  assert.equal(await where(target, req, 1), "10.96.0.10:53");
  assert.equal(target.remoteLabel(req.ports[0]), "80");
  await assert.rejects(
    resolve(kube, request("svc/web", "81")),
    isUsageError(/^Service web does not have a service port 81$/),
  );
  await assert.rejects(resolve(kube, request("svc/nope", "80")), (e: unknown) => {
    assert.ok(e instanceof KubeApiError);
    assert.equal(e.display, 'Error from server (NotFound): services "nope" not found');
    return true;
  });
});

Deno.test("resolve svc/ of type ExternalName: the external name, without its trailing dot", async () => {
  const kube = new FakeKube().put(`${NS}/services/ext`, {
    metadata: { name: "ext" },
    spec: { type: "ExternalName", externalName: "db.example.internal." },
  });
  const req = request("svc/ext", "5432");
  assert.equal(await where((await resolve(kube, req)).target, req), "db.example.internal:5432");
});

Deno.test("resolve a headless svc/: a ready pod of its selector, its target port (named too)", async () => {
  const kube = new FakeKube().put(`${NS}/services/db`, {
    metadata: { name: "db" },
    spec: {
      clusterIP: "None",
      selector: { app: "db" },
      ports: [{ port: 5432, targetPort: "pg" }, { port: 9000, targetPort: 9187 }],
    },
  });
  const ports = [{ name: "pg", containerPort: 15432 }];
  kube.setPod(fakePod("db-0", "10.1.0.5", { labels: { app: "db" }, ports }));
  kube.setPod(fakePod("other", "10.1.0.9", { labels: { app: "other" }, ports }));
  const req = request("svc/db", "5432", "9000");
  const { target } = await resolve(kube, req);
  assert.equal(await where(target, req, 0), "10.1.0.5:15432 (db-0)");
  assert.equal(await where(target, req, 1), "10.1.0.5:9187 (db-0)");
  assert.equal(target.remoteLabel(req.ports[0]), "pg");
  target.stop();
});

Deno.test("resolve pod/: missing pod, pod never ready, named container port", async () => {
  const kube = new FakeKube();
  await assert.rejects(resolve(kube, request("pod/nope", "80")), /pods "nope" not found/);
  kube.setPod(fakePod("web-1", "10.1.0.7", { ready: false }));
  await assert.rejects(
    resolve(kube, request("pod/web-1", "80"), 100),
    isUsageError(
      /^timed out waiting for a running, ready pod of pod\/web-1 \(pod web-1 is Pending\)$/,
    ),
  );
  kube.setPod(
    fakePod("web-1", "10.1.0.7", { ports: [{ name: "http", containerPort: 8080 }] }),
  );
  const req = request("pod/web-1", "9000:http");
  const { target } = await resolve(kube, req);
  assert.equal(await where(target, req), "10.1.0.7:8080 (web-1)");
  target.stop();
  await assert.rejects(
    resolve(kube, request("pod/web-1", "9000:metrics")),
    /Pod web-1 of pod\/web-1 does not have a port named "metrics"/,
  );
});

Deno.test("resolve deploy/: follows its pods through a rolling update, avoids a refusing pod", async () => {
  const labels = { app: "web" };
  const ports = [{ name: "http", containerPort: 80 }];
  const kube = new FakeKube().put("/apis/apps/v1/namespaces/default/deployments/web", {
    metadata: { name: "web" },
    spec: {
      selector: { matchLabels: labels },
      template: {
        spec: { containers: [{ name: "main", ports: [{ name: "http", containerPort: 80 }] }] },
      },
    },
  });
  kube.setPod(fakePod("web-a", "10.1.0.1", { labels, ports, readySince: "2026-01-01T00:00:00Z" }));
  kube.setPod(fakePod("web-b", "10.1.0.2", { labels, ports, readySince: "2026-01-01T00:00:05Z" }));
  const req = request("deploy/web", "8080:http");
  const { target, notes } = await resolve(kube, req);
  assert.equal(target.remoteLabel(req.ports[0]), "80");
  // The oldest ready pod, and the same one while it stays ready.
  assert.equal(await where(target, req), "10.1.0.1:80 (web-a)");
  assert.equal(await where(target, req), "10.1.0.1:80 (web-a)");
  // A pod that refused a connection is skipped while another is ready.
  target.reportFailure({ address: { type: "ipv4", ip: "10.1.0.1" }, port: 80, pod: "web-a" });
  assert.equal(await where(target, req), "10.1.0.2:80 (web-b)");
  // Rolling update: web-b goes away, web-c comes up; new connections follow.
  kube.setPod(fakePod("web-c", "10.1.0.3", { labels, ports, readySince: "2026-01-01T00:01:00Z" }));
  // As the kubelet reports it: the old pods turn not ready, then are deleted.
  kube.setPod(fakePod("web-b", "10.1.0.2", { labels, ports, ready: false }));
  kube.setPod(fakePod("web-a", "10.1.0.1", { labels, ports, ready: false }));
  kube.deletePod("web-b");
  kube.deletePod("web-a");
  for (let i = 0; i < 100 && (await where(target, req)) !== "10.1.0.3:80 (web-c)"; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(await where(target, req), "10.1.0.3:80 (web-c)");
  assert.ok(
    notes.includes("Pod web-b is gone or not ready; new connections go to web-c"),
    notes.join("\n"),
  );
  target.stop();
  await assert.rejects(
    resolve(kube, request("deploy/web", "8080:grpc")),
    isUsageError(/^deployment\/web does not have a container port named "grpc"$/),
  );
});

Deno.test("resolve: a new connection waits for a ready pod, up to --pod-running-timeout", async () => {
  const labels = { app: "job" };
  const kube = new FakeKube().put("/apis/batch/v1/namespaces/default/jobs/once", {
    metadata: { name: "once" },
    spec: { selector: { matchLabels: labels } },
  });
  kube.setPod(fakePod("once-1", "10.1.0.4", { labels }));
  const req = request("job/once", "7000");
  const { target } = await resolve(kube, req, 300);
  kube.setPod(fakePod("once-1", "10.1.0.4", { labels, ready: false }));
  await new Promise((r) => setTimeout(r, 20));
  await assert.rejects(
    target.destination(req.ports[0]),
    /^Error: timed out waiting for a ready pod of job\/once \(--pod-running-timeout\)$/,
  );
  const later = target.destination(req.ports[0]);
  setTimeout(() => kube.setPod(fakePod("once-2", "10.1.0.8", { labels })), 50);
  const d = await later;
  assert.deepEqual([d.pod, d.port], ["once-2", 7000]);
  target.stop();
});

Deno.test("resolve: watchPod calls back once the pod of a destination is not Ready, deleted or replaced (not while terminating and Ready)", async () => {
  const labels = { app: "dns" };
  const kube = new FakeKube().put("/apis/apps/v1/namespaces/default/deployments/dns", {
    metadata: { name: "dns" },
    spec: { selector: { matchLabels: labels } },
  });
  kube.setPod(fakePod("dns-a", "10.1.0.1", { labels }));
  kube.setPod(fakePod("dns-b", "fd00::0:2", { labels }));
  const req = request("deploy/dns", "53@udp");
  const { target } = await resolve(kube, req);
  const gone: string[] = [];
  const watch = (pod: string, ip: string) =>
    target.watchPod!(
      { address: { type: ip.includes(":") ? "ipv6" : "ipv4", ip }, port: 53, pod },
      () => gone.push(`${pod} ${ip}`),
    );
  const settle = () => new Promise((r) => setTimeout(r, 20));
  watch("dns-a", "10.1.0.1");
  watch("dns-b", "fd00::2"); // the same IP spelt another way
  const cancelled = watch("dns-b", "fd00::2");
  cancelled();
  watch("dns-z", "10.1.0.9"); // no such pod: gone at once
  await settle();
  assert.deepEqual(gone, ["dns-z 10.1.0.9"]);
  // Another pod changing, or the same pod changing without leaving, is no reason.
  kube.setPod(fakePod("dns-c", "10.1.0.3", { labels }));
  kube.setPod(fakePod("dns-a", "10.1.0.1", { labels, readySince: "2026-01-01T00:00:01Z" }));
  await settle();
  assert.deepEqual(gone, ["dns-z 10.1.0.9"]);
  // Terminating but still Ready (a preStop hook): it may still answer, not gone yet.
  const terminating = fakePod("dns-a", "10.1.0.1", { labels });
  terminating.metadata.deletionTimestamp = "2026-01-01T00:02:00Z";
  kube.setPod(terminating);
  await settle();
  assert.deepEqual(gone, ["dns-z 10.1.0.9"]);
  // Not Ready, then deleted: called once.
  kube.setPod(fakePod("dns-a", "10.1.0.1", { labels, ready: false }));
  kube.deletePod("dns-a");
  // Replaced by a pod of the same name on another IP (a StatefulSet's pod).
  kube.setPod(fakePod("dns-b", "10.1.0.7", { labels }));
  await settle();
  assert.deepEqual(gone, ["dns-z 10.1.0.9", "dns-a 10.1.0.1", "dns-b fd00::2"]);
  target.stop();
});
