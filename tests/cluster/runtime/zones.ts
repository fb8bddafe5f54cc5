/**
 * What the harness's DNS servers answer:
 * - {@link testZoneAnswerer}: the server played for a pod's UDP port, authoritative for
 *   `test.relay.` (`whoami.test.relay` TXT → the pod's name, any `*.test.relay` A → 127.0.0.42);
 *   other zones REFUSED.
 * - {@link clusterAnswerer}: the cluster DNS (`cluster.local`): Services (cluster IP, headless →
 *   ready pod IPs, ExternalName → CNAME), StatefulSet-style pod names, `a-b-c-d.ns.pod`, SRV for
 *   named ports. Everything else NXDOMAIN: no upstream forwarding.
 *
 * @module
 */

import type { DnsAnswer, DnsAnswerer } from "./dns_server.ts";
import { CLASS_IN, type DnsRecord, normalizeName, Rcode, RecordType } from "./dns_wire.ts";
import { clusterIPOf, isReady, type V1Pod, type V1Service } from "./kube.ts";

/** The test zone. */
export const TEST_ZONE = "test.relay";
/** A record returned for every name in the test zone. */
export const TEST_ZONE_A = "127.0.0.42";
/** The cluster domain. */
export const CLUSTER_DOMAIN = "cluster.local";

function soa(zone: string): DnsRecord {
  return {
    name: zone,
    type: RecordType.SOA,
    class: CLASS_IN,
    ttl: 5,
    data: {
      kind: "soa",
      mname: `ns.dns.${zone}`,
      rname: `hostmaster.${zone}`,
      serial: 1,
      refresh: 7200,
      retry: 1800,
      expire: 86400,
      minimum: 5,
    },
  };
}

const nodata = (zone: string): DnsAnswer => ({
  rcode: Rcode.NoError,
  answers: [],
  authorities: [soa(zone)],
});
const nxdomain = (zone: string): DnsAnswer => ({
  rcode: Rcode.NXDomain,
  answers: [],
  authorities: [soa(zone)],
});

/** Answerer for the test-zone server of pod `podName`. */
export function testZoneAnswerer(podName: string): DnsAnswerer {
  return (query) => {
    const q = query.questions[0];
    const name = normalizeName(q.name);
    if (name !== TEST_ZONE && !name.endsWith(`.${TEST_ZONE}`)) {
      return { rcode: Rcode.Refused, answers: [], aa: false };
    }
    const answers: DnsRecord[] = [];
    const any = q.type === RecordType.ANY;
    if (name === TEST_ZONE) {
      if (q.type === RecordType.SOA || any) answers.push(soa(TEST_ZONE));
    } else {
      if (q.type === RecordType.A || any) {
        answers.push({
          name: q.name,
          type: RecordType.A,
          class: CLASS_IN,
          ttl: 0,
          data: { kind: "a", ip: TEST_ZONE_A },
        });
      }
      if ((q.type === RecordType.TXT || any) && name === `whoami.${TEST_ZONE}`) {
        answers.push({
          name: q.name,
          type: RecordType.TXT,
          class: CLASS_IN,
          ttl: 0,
          data: { kind: "txt", strings: [podName] },
        });
      }
    }
    return answers.length ? { rcode: Rcode.NoError, answers } : nodata(TEST_ZONE);
  };
}

/** What the cluster DNS needs to see of the cluster. */
export interface ClusterView {
  service(namespace: string, name: string): V1Service | undefined;
  /** Pods of a namespace (any state; the answerer filters). */
  pods(namespace: string): Iterable<V1Pod>;
  /** Pods matching a Service's selector that are ready. */
  readyEndpoints(svc: V1Service): V1Pod[];
}

/** kubeadm's Corefile: `kubernetes cluster.local … { ttl 30 }`. */
const TTL_SERVICE = 30;
const TTL_POD = 30;

/** Answerer for the cluster DNS. */
export function clusterAnswerer(view: ClusterView): DnsAnswerer {
  const answer = (qname: string, qtype: number, depth: number): DnsAnswer => {
    const name = normalizeName(qname);
    if (name !== CLUSTER_DOMAIN && !name.endsWith(`.${CLUSTER_DOMAIN}`)) {
      return nxdomain(CLUSTER_DOMAIN);
    }
    const labels = name === CLUSTER_DOMAIN
      ? []
      : name.slice(0, -CLUSTER_DOMAIN.length - 1).split(".");
    const n = labels.length;
    const wantA = qtype === RecordType.A || qtype === RecordType.ANY;
    const a = (ip: string, ttl: number): DnsRecord => ({
      name: qname,
      type: RecordType.A,
      class: CLASS_IN,
      ttl,
      data: { kind: "a", ip },
    });
    const ipv4 = (ip: string | undefined): ip is string => !!ip && /^\d+\.\d+\.\d+\.\d+$/.test(ip);

    // Structural names that exist but hold no records.
    if (n === 0 || (n === 1 && (labels[0] === "svc" || labels[0] === "pod"))) {
      return nodata(CLUSTER_DOMAIN);
    }
    if (n === 2 && (labels[1] === "svc" || labels[1] === "pod")) return nodata(CLUSTER_DOMAIN);

    // a-b-c-d.<ns>.pod.cluster.local
    if (n === 3 && labels[2] === "pod") {
      const ip = labels[0].replaceAll("-", ".");
      if (!ipv4(ip)) return nxdomain(CLUSTER_DOMAIN);
      return wantA ? { rcode: Rcode.NoError, answers: [a(ip, TTL_POD)] } : nodata(CLUSTER_DOMAIN);
    }

    // <svc>.<ns>.svc.cluster.local
    if (n === 3 && labels[2] === "svc") {
      const svc = view.service(labels[1], labels[0]);
      if (!svc) return nxdomain(CLUSTER_DOMAIN);
      if (svc.spec?.type === "ExternalName") {
        const target = normalizeName(svc.spec.externalName ?? "");
        if (!target) return nodata(CLUSTER_DOMAIN);
        const cname: DnsRecord = {
          name: qname,
          type: RecordType.CNAME,
          class: CLASS_IN,
          ttl: TTL_SERVICE,
          data: { kind: "name", name: target },
        };
        if (qtype === RecordType.CNAME) return { rcode: Rcode.NoError, answers: [cname] };
        const inCluster = target === CLUSTER_DOMAIN || target.endsWith(`.${CLUSTER_DOMAIN}`);
        if (inCluster && depth < 8) {
          const next = answer(target, qtype, depth + 1);
          return { ...next, rcode: next.rcode, answers: [cname, ...next.answers] };
        }
        return { rcode: Rcode.NoError, answers: [cname] };
      }
      const cip = clusterIPOf(svc);
      if (cip) {
        return wantA && ipv4(cip)
          ? { rcode: Rcode.NoError, answers: [a(cip, TTL_SERVICE)] }
          : nodata(CLUSTER_DOMAIN);
      }
      // Headless: ready endpoints.
      const ips = view.readyEndpoints(svc).map((p) => p.status?.podIP).filter(ipv4);
      return wantA && ips.length
        ? { rcode: Rcode.NoError, answers: ips.map((ip) => a(ip, TTL_POD)) }
        : nodata(CLUSTER_DOMAIN);
    }

    // <hostname>.<subdomain>.<ns>.svc.cluster.local (pods with spec.hostname/subdomain).
    if (n === 4 && labels[3] === "svc") {
      const [host, sub, ns] = labels;
      for (const p of view.pods(ns)) {
        const ph = p.spec?.hostname ?? p.metadata?.name;
        if (ph === host && p.spec?.subdomain === sub && isReady(p) && ipv4(p.status?.podIP)) {
          return wantA
            ? { rcode: Rcode.NoError, answers: [a(p.status!.podIP!, TTL_POD)] }
            : nodata(CLUSTER_DOMAIN);
        }
      }
      return nxdomain(CLUSTER_DOMAIN);
    }

    // _<port>._<proto>.<svc>.<ns>.svc.cluster.local
    if (n === 5 && labels[4] === "svc" && labels[0].startsWith("_") && labels[1].startsWith("_")) {
      const svc = view.service(labels[3], labels[2]);
      const portName = labels[0].slice(1);
      const proto = labels[1].slice(1).toUpperCase();
      const sp = svc?.spec?.ports?.find((p) =>
        p.name === portName && (p.protocol ?? "TCP") === proto
      );
      if (!svc || !sp) return nxdomain(CLUSTER_DOMAIN);
      if (qtype !== RecordType.SRV && qtype !== RecordType.ANY) return nodata(CLUSTER_DOMAIN);
      return {
        rcode: Rcode.NoError,
        answers: [{
          name: qname,
          type: RecordType.SRV,
          class: CLASS_IN,
          ttl: TTL_SERVICE,
          data: {
            kind: "srv",
            priority: 0,
            weight: 100,
            port: sp.port,
            target: `${labels[2]}.${labels[3]}.svc.${CLUSTER_DOMAIN}`,
          },
        }],
      };
    }
    return nxdomain(CLUSTER_DOMAIN);
  };
  return (query) => {
    const q = query.questions[0];
    if (q.class !== CLASS_IN) return { rcode: Rcode.Refused, answers: [], aa: false };
    return answer(q.name, q.type, 0);
  };
}
