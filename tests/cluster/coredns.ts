/**
 * The cluster DNS add-on as kubeadm v1.36.3 installs it (`cmd/kubeadm/app/phases/addons/dns`,
 * manifests.go): ServiceAccount, ClusterRole/Binding `system:coredns`, ConfigMap, Deployment
 * `kube-system/coredns` (2 replicas, label `k8s-app=kube-dns`, maxUnavailable 1) and Service
 * `kube-system/kube-dns` on the 10th address of the service range (`GetDNSIP`). The harness runtime plays pods whose image contains `coredns` as the cluster DNS server
 * (tests/cluster/runtime); the Corefile is kubeadm's and documents what a real CoreDNS would do
 * (the runtime does not read it, and never forwards outside `cluster.local`).
 *
 * @module
 */

/** The image kubeadm v1.36 deploys (`CoreDNSVersion`). */
export const COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.14.2";

/** kubeadm's Corefile (cluster domain cluster.local). */
export const COREFILE = `.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
`;

/** The kube-dns Service's cluster IP: the 10th address of the service range, as kubeadm picks. */
export function clusterDnsIP(serviceCIDR: string): string {
  const [net] = serviceCIDR.split("/");
  const o = net.split(".").map(Number);
  return [o[0], o[1], o[2], o[3] + 10].join(".");
}

const LABELS = { "k8s-app": "kube-dns" };

/** The add-on's objects, in the order to create them: [API path, object]. */
export function corednsObjects(dnsIP: string): [string, Record<string, unknown>][] {
  const ns = "/api/v1/namespaces/kube-system";
  const rbac = "/apis/rbac.authorization.k8s.io/v1";
  return [
    [`${rbac}/clusterroles`, {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRole",
      metadata: { name: "system:coredns" },
      rules: [
        {
          apiGroups: [""],
          resources: ["endpoints", "services", "pods", "namespaces"],
          verbs: ["list", "watch"],
        },
        {
          apiGroups: ["discovery.k8s.io"],
          resources: ["endpointslices"],
          verbs: ["list", "watch"],
        },
      ],
    }],
    [`${rbac}/clusterrolebindings`, {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name: "system:coredns" },
      roleRef: {
        apiGroup: "rbac.authorization.k8s.io",
        kind: "ClusterRole",
        name: "system:coredns",
      },
      subjects: [{ kind: "ServiceAccount", name: "coredns", namespace: "kube-system" }],
    }],
    [`${ns}/serviceaccounts`, {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { name: "coredns", namespace: "kube-system" },
    }],
    [`${ns}/configmaps`, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "coredns", namespace: "kube-system" },
      data: { Corefile: COREFILE },
    }],
    [`${ns}/services`, {
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: "kube-dns",
        namespace: "kube-system",
        labels: {
          ...LABELS,
          "kubernetes.io/cluster-service": "true",
          "kubernetes.io/name": "CoreDNS",
        },
        annotations: { "prometheus.io/port": "9153", "prometheus.io/scrape": "true" },
      },
      spec: {
        clusterIP: dnsIP,
        selector: LABELS,
        ports: [
          { name: "dns", port: 53, protocol: "UDP", targetPort: 53 },
          { name: "dns-tcp", port: 53, protocol: "TCP", targetPort: 53 },
          { name: "metrics", port: 9153, protocol: "TCP", targetPort: 9153 },
        ],
      },
    }],
    ["/apis/apps/v1/namespaces/kube-system/deployments", {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "coredns", namespace: "kube-system", labels: LABELS },
      spec: {
        replicas: 2,
        selector: { matchLabels: LABELS },
        strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1 } },
        template: {
          metadata: { labels: LABELS },
          spec: {
            priorityClassName: "system-cluster-critical",
            serviceAccountName: "coredns",
            affinity: {
              podAntiAffinity: {
                preferredDuringSchedulingIgnoredDuringExecution: [{
                  weight: 100,
                  podAffinityTerm: {
                    labelSelector: {
                      matchExpressions: [{ key: "k8s-app", operator: "In", values: ["kube-dns"] }],
                    },
                    topologyKey: "kubernetes.io/hostname",
                  },
                }],
              },
            },
            tolerations: [
              { key: "CriticalAddonsOnly", operator: "Exists" },
              { key: "node-role.kubernetes.io/control-plane", effect: "NoSchedule" },
            ],
            nodeSelector: { "kubernetes.io/os": "linux" },
            containers: [{
              name: "coredns",
              image: COREDNS_IMAGE,
              imagePullPolicy: "IfNotPresent",
              resources: {
                limits: { memory: "170Mi" },
                requests: { cpu: "100m", memory: "70Mi" },
              },
              args: ["-conf", "/etc/coredns/Corefile"],
              volumeMounts: [{ name: "config-volume", mountPath: "/etc/coredns", readOnly: true }],
              ports: [
                { containerPort: 53, name: "dns", protocol: "UDP" },
                { containerPort: 53, name: "dns-tcp", protocol: "TCP" },
                { containerPort: 9153, name: "metrics", protocol: "TCP" },
                { containerPort: 8080, name: "liveness-probe", protocol: "TCP" },
                { containerPort: 8181, name: "readiness-probe", protocol: "TCP" },
              ],
              livenessProbe: {
                httpGet: { path: "/health", port: "liveness-probe", scheme: "HTTP" },
                initialDelaySeconds: 60,
                timeoutSeconds: 5,
                successThreshold: 1,
                failureThreshold: 5,
              },
              readinessProbe: {
                httpGet: { path: "/ready", port: "readiness-probe", scheme: "HTTP" },
              },
              securityContext: {
                allowPrivilegeEscalation: false,
                capabilities: { add: ["NET_BIND_SERVICE"], drop: ["ALL"] },
                readOnlyRootFilesystem: true,
              },
            }],
            dnsPolicy: "Default",
            volumes: [{
              name: "config-volume",
              configMap: { name: "coredns", items: [{ key: "Corefile", path: "Corefile" }] },
            }],
          },
        },
      },
    }],
  ];
}
