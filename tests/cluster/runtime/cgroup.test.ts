import assert from "node:assert/strict";
import {
  detectMemoryController,
  MemoryCgroups,
  parseMemoryQuantity,
  PodCgroup,
  runtimeCgroupId,
} from "./cgroup.ts";
import { processIdentity, SecurityContextError, setprivArgs } from "./pod_security.ts";
import { containerEnv, memoryLimit } from "./agent_sandbox.ts";
import type { V1Pod } from "./kube.ts";

Deno.test("parseMemoryQuantity: binary, decimal, exponent, fractions round up; junk throws", () => {
  assert.equal(parseMemoryQuantity("128Mi"), 134217728);
  assert.equal(parseMemoryQuantity("1Gi"), 2 ** 30);
  assert.equal(parseMemoryQuantity("64k"), 64000);
  assert.equal(parseMemoryQuantity("128M"), 128e6);
  assert.equal(parseMemoryQuantity("134217728"), 134217728);
  assert.equal(parseMemoryQuantity("1e9"), 1e9);
  assert.equal(parseMemoryQuantity("0.5Gi"), 2 ** 29);
  assert.equal(parseMemoryQuantity("1.5"), 2);
  assert.equal(parseMemoryQuantity("1500m"), 2);
  assert.equal(parseMemoryQuantity(1000), 1000);
  for (const bad of ["", "Mi", "12MB", "-1Mi", "1 Mi", "1.2.3"]) {
    assert.throws(() => parseMemoryQuantity(bad), /invalid memory quantity/, bad);
  }
});

const MOUNTINFO_V1 = `
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
const MOUNTINFO_V2 = `
22 1 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
`;

Deno.test("detectMemoryController: v1 memory mount, pure v2, hybrid without memory in v2", () => {
  const files = (m: Record<string, string>) => (p: string) => {
    if (p in m) return m[p];
    throw new Deno.errors.NotFound(p);
  };
  // Hybrid: the unified mount exists but only has hugetlb: the v1 memory controller is used.
  assert.deepEqual(
    detectMemoryController(
      MOUNTINFO_V1,
      files({ "/sys/fs/cgroup/unified/cgroup.controllers": "hugetlb\n" }),
    ),
    { version: 1, mount: "/sys/fs/cgroup/memory" },
  );
  assert.deepEqual(
    detectMemoryController(
      MOUNTINFO_V2,
      files({ "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids\n" }),
    ),
    { version: 2, mount: "/sys/fs/cgroup" },
  );
  assert.equal(
    detectMemoryController(MOUNTINFO_V2, files({ "/sys/fs/cgroup/cgroup.controllers": "cpu\n" })),
    undefined,
  );
  assert.equal(detectMemoryController("", files({})), undefined);
});

Deno.test("MemoryCgroups v2 (a plain directory standing in for cgroupfs): files written and read", async () => {
  const root = await Deno.makeTempDir({ prefix: "rt-cg2-" });
  try {
    await Deno.writeTextFile(`${root}/cgroup.subtree_control`, "cpu");
    const cgs = new MemoryCgroups({ version: 2, mount: root }, "rt-1");
    assert.equal(cgs.dir, `${root}/kubectl-relay/rt-1`);
    const cg = await cgs.create("ns_pod", 64 * 2 ** 20);
    assert.equal(cg.dir, `${root}/kubectl-relay/rt-1/ns_pod`);
    assert.equal(cg.procsFile, `${cg.dir}/cgroup.procs`);
    // The controller is delegated on every level above the pod's cgroup.
    for (const d of [root, `${root}/kubectl-relay`, `${root}/kubectl-relay/rt-1`]) {
      assert.equal(await Deno.readTextFile(`${d}/cgroup.subtree_control`), "+memory", d);
    }
    assert.equal(await Deno.readTextFile(`${cg.dir}/memory.max`), String(64 * 2 ** 20));
    // What the kernel would report.
    await Deno.writeTextFile(`${cg.dir}/memory.current`, "1000\n");
    await Deno.writeTextFile(`${cg.dir}/memory.peak`, "5000\n");
    await Deno.writeTextFile(
      `${cg.dir}/memory.events`,
      "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
    );
    assert.deepEqual(cg.stats(), { usage: 1000, peak: 5000, limit: 64 * 2 ** 20, oomKills: 1 });
    assert.deepEqual(cgs.list(), ["ns_pod"]);
    // Unlimited: memory.max "max".
    const un = await cgs.create("ns_other", undefined);
    assert.equal(await Deno.readTextFile(`${un.dir}/memory.max`), "max");
    await Deno.writeTextFile(`${un.dir}/memory.current`, "7\n");
    assert.deepEqual(un.stats(), { usage: 7, peak: undefined, limit: undefined, oomKills: 0 });
    // A cgroup whose processes are listed is not removed by removeAll (nor replaced by create).
    await Deno.writeTextFile(un.procsFile, "4242\n");
    await assert.rejects(cgs.create("ns_other", 1), /still has processes 4242/);
    assert.equal(new PodCgroup(cgs.controller, un.dir).pids()[0], 4242);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("runtimeCgroupId: base name + hash of the path; distinct for distinct dirs", async () => {
  const a = await runtimeCgroupId("/tmp/a/relay-cluster-x");
  const b = await runtimeCgroupId("/tmp/b/relay-cluster-x");
  assert.match(a, /^relay-cluster-x-[0-9a-f]{8}$/);
  assert.notEqual(a, b);
  assert.equal(a, await runtimeCgroupId("/tmp/a/relay-cluster-x/"));
  assert.throws(() => new MemoryCgroups({ version: 1, mount: "/x" }, "../up"), /bad cgroup id/);
});

const IMAGE = { uid: 65532, gid: 65532 };

function pod(spec: Partial<NonNullable<V1Pod["spec"]>>, container: object = {}): V1Pod {
  return {
    metadata: { name: "p", namespace: "n", uid: "u" },
    spec: { containers: [{ name: "agent", ...container }], ...spec },
  };
}

Deno.test("processIdentity: container over pod over image; groups; caps; runAsNonRoot", () => {
  const id = (p: V1Pod) => processIdentity(p, p.spec!.containers[0], IMAGE);
  // Nothing said: the image's user, containerd's default capabilities.
  const d = id(pod({}));
  assert.equal(d.uid, 65532);
  assert.equal(d.gid, 65532);
  assert.deepEqual(d.groups, []);
  assert.equal(d.noNewPrivs, false);
  assert.ok(d.capabilities.includes("net_raw") && d.capabilities.length === 14);
  // The agent manifest: pod runAsUser/Group, container drops ALL, no privilege escalation.
  const m = id(
    pod({ securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532 } }, {
      securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } },
    }),
  );
  assert.deepEqual(m, { uid: 65532, gid: 65532, groups: [], noNewPrivs: true, capabilities: [] });
  // Container wins; a uid unknown to the image gets gid 0 unless runAsGroup says.
  assert.deepEqual(
    [id(pod({ securityContext: { runAsUser: 1000 } }, { securityContext: { runAsUser: 2000 } }))]
      .map((x) => [x.uid, x.gid]),
    [[2000, 0]],
  );
  const g = id(
    pod({ securityContext: { runAsUser: 1000, fsGroup: 3000, supplementalGroups: [5, 3000] } }, {
      securityContext: {
        runAsGroup: 7,
        capabilities: { drop: ["NET_RAW"], add: ["CAP_NET_ADMIN"] },
      },
    }),
  );
  assert.deepEqual([g.uid, g.gid, g.groups], [1000, 7, [5, 3000]]);
  assert.ok(!g.capabilities.includes("net_raw") && g.capabilities.includes("net_admin"));
  // runAsNonRoot with uid 0: the kubelet refuses.
  assert.throws(
    () =>
      id(pod({ securityContext: { runAsNonRoot: true } }, { securityContext: { runAsUser: 0 } })),
    (e) =>
      e instanceof SecurityContextError && e.reason === "CreateContainerConfigError" &&
      /breaks non-root policy/.test(e.message),
  );
  assert.deepEqual(setprivArgs(m), [
    "--reuid",
    "65532",
    "--regid",
    "65532",
    "--clear-groups",
    "--inh-caps",
    "-all",
    "--bounding-set",
    "-all",
    "--no-new-privs",
    "--pdeathsig",
    "KILL",
  ]);
  assert.deepEqual(setprivArgs(g).slice(4, 6), ["--groups", "5,3000"]);
});

Deno.test("memoryLimit and containerEnv from the pod spec", () => {
  const p = pod({ nodeName: "node-1" }, {
    resources: { limits: { memory: "128Mi", cpu: "1" } },
    env: [
      { name: "A", value: "x" },
      { name: "B", value: "$(A)-$(NOPE)-$$(A)" },
      { name: "POD", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
      { name: "NODE", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
    ],
  });
  assert.equal(memoryLimit(p, p.spec!.containers[0]), 134217728);
  assert.equal(memoryLimit(pod({}), pod({}).spec!.containers[0]), undefined);
  assert.deepEqual(containerEnv(p, p.spec!.containers[0]), {
    A: "x",
    B: "x-$(NOPE)-$(A)",
    POD: "p",
    NODE: "node-1",
  });
  const s = pod({}, {
    env: [{ name: "T", valueFrom: { secretKeyRef: { name: "s", key: "k" } } }],
  });
  assert.throws(() => containerEnv(s, s.spec!.containers[0]), /env T: only literal values/);
});
