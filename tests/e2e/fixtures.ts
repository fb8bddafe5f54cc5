/** The end-to-end workloads (fixtures.yaml, namespace relay-e2e) and small lookups on them. */
import { sharedCluster } from "../cluster/cluster.ts";
import { curl, kubectl, podNames as podNamesIn } from "../_lib/relay.ts";
import { requireTools } from "../cluster/runtime/_testlib.ts";

/** Namespace of the e2e workloads. */
export const NS = "relay-e2e";
const FIXTURES = new URL("./fixtures.yaml", import.meta.url).pathname;

let setupDone: Promise<string> | undefined;

/** Starts (once per process) the shared cluster and the e2e workloads; returns the admin kubeconfig. */
export function setup(): Promise<string> {
  setupDone ??= (async () => {
    // The real clients the tests use, and redis-server for the harness's redis pods.
    await requireTools("dig", "curl", "redis-cli", "redis-server");
    const cluster = await sharedCluster();
    const kc = cluster.kubeconfig;
    await kubectl(kc, "apply", "-f", FIXTURES);
    for (const w of ["deploy/web", "deploy/dns", "sts/redis"]) {
      await kubectl(kc, "-n", NS, "rollout", "status", w, "--timeout=90s");
    }
    await kubectl(kc, "-n", NS, "wait", "--for=condition=Ready", "pod/multi", "--timeout=90s");
    // As on any cluster, a Service answers once its endpoints have reached kube-proxy.
    await serviceAnswers(kc, "web", 8080);
    return kc;
  })();
  return setupDone;
}

/** Waits (at most 15 s) until an HTTP request to a Service's cluster IP succeeds. */
export async function serviceAnswers(kc: string, svc: string, port: number): Promise<void> {
  const ip = (await kubectl(kc, "-n", NS, "get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"))
    .trim();
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await curl(`http://${ip}:${port}/`);
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Names of the pods matching a label selector in the e2e namespace. */
export function podNames(kc: string, selector: string): Promise<string[]> {
  return podNamesIn(kc, NS, selector);
}

/** A pod's IP in the e2e namespace. */
export async function podIP(kc: string, pod: string): Promise<string> {
  return await kubectl(kc, "-n", NS, "get", "pod", pod, "-o", "jsonpath={.status.podIP}");
}
