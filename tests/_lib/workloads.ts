/** Test workloads on the cluster: applying a manifest and waiting for its rollouts. */

import { kubectl } from "./relay.ts";

/**
 * Applies `manifest` (YAML text) with kubectl, then waits (90 s each) for the rollout of each of
 * `workloads` (`deploy/NAME`, …) in `namespace`.
 */
export async function applyRolledOut(
  kubeconfig: string,
  namespace: string,
  manifest: string,
  workloads: string[],
): Promise<void> {
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  try {
    await Deno.writeTextFile(file, manifest);
    await kubectl(kubeconfig, "apply", "-f", file);
  } finally {
    await Deno.remove(file);
  }
  for (const w of workloads) {
    await kubectl(kubeconfig, "-n", namespace, "rollout", "status", w, "--timeout=90s");
  }
}

/**
 * Namespace `namespace` with Deployment `web`: `replicas` pods of relay-test/http (port `http`,
 * 80; each answers with its pod's name).
 */
export function webManifest(namespace: string, replicas: number): string {
  return deploymentManifest(namespace, "web", replicas, "relay-test/http", "http", 80);
}

/**
 * Namespace `namespace` with Deployment `name` (label `app: name`): `replicas` pods of `image`
 * with one TCP container port `portName`: `port`.
 */
export function deploymentManifest(
  namespace: string,
  name: string,
  replicas: number,
  image: string,
  portName: string,
  port: number,
): string {
  return `apiVersion: v1
kind: Namespace
metadata: { name: ${namespace} }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: ${name}, namespace: ${namespace} }
spec:
  replicas: ${replicas}
  selector: { matchLabels: { app: ${name} } }
  template:
    metadata: { labels: { app: ${name} } }
    spec:
      containers:
        - name: ${name}
          image: ${image}
          ports: [{ name: ${portName}, containerPort: ${port} }]
`;
}
