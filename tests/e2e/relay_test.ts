/**
 * End-to-end: `kubectl relay` (through real kubectl and our launcher) against the local control
 * plane, checked with real clients (curl, dig, redis-cli).
 */
import assert from "node:assert/strict";
import { sharedCluster } from "../cluster/cluster.ts";
import { NS, podIP, podNames, setup } from "./fixtures.ts";
import {
  agentJobs,
  curl,
  kubectl,
  kubectlCreate,
  type RelayProcess,
  runRelay,
  startRelay,
} from "../_lib/relay.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

async function dig(
  port: number,
  name: string,
  type = "TXT",
  server = "127.0.0.1",
): Promise<string> {
  const out = await new Deno.Command("dig", {
    args: [`@${server}`, "-p", String(port), name, type, "+short", "+tries=3", "+time=3"],
    stdin: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).trim().replace(/^"|"$/g, "");
}

/** Runs a relay, gives it to `fn`, then stops it with Ctrl-C: exit 0 and no agent left behind. */
async function withRelay(
  args: string[],
  fn: (r: RelayProcess) => Promise<void>,
  forwardLines = 1,
): Promise<void> {
  const kc = await setup();
  const relay = await startRelay(kc, args, { forwardLines });
  try {
    await fn(relay);
  } finally {
    const code = await relay.stop("SIGINT");
    assert.equal(code, 0, `relay exit code\n${relay.err.join("\n")}`);
  }
  assert.deepEqual(await agentJobs(kc), [], "agent Job left behind");
}

Deno.test({ name: "e2e: pod/ over TCP, curl sees the pod's name", ...opts }, async () => {
  const kc = await setup();
  const [pod] = await podNames(kc, "app=web");
  await withRelay(["-n", NS, `pod/${pod}`, ":80"], async (r) => {
    assert.match(r.out[0], /^Forwarding from 127\.0\.0\.1:\d+ -> 80$/);
    assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), pod);
    await r.waitFor(new RegExp(`^Handling connection for ${r.ports[0]}$`));
  });
});

Deno.test({ name: "e2e: svc/ with cluster IP and a named port", ...opts }, async () => {
  const kc = await setup();
  const pods = await podNames(kc, "app=web");
  await withRelay(["-n", NS, "svc/web", ":http"], async (r) => {
    assert.match(r.out[0], / -> 8080$/);
    assert.ok(pods.includes((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim()));
  });
});

Deno.test({ name: "e2e: headless and ExternalName services", ...opts }, async () => {
  const kc = await setup();
  const pods = await podNames(kc, "app=web");
  await withRelay(["-n", NS, "svc/web-headless", ":9090"], async (r) => {
    assert.ok(pods.includes((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim()));
  });
  await withRelay(["-n", NS, "svc/web-external", ":http"], async (r) => {
    assert.ok(pods.includes((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim()));
  });
});

Deno.test({ name: "e2e: deploy/ and sts/ (redis SET/GET with redis-cli)", ...opts }, async () => {
  const kc = await setup();
  const pods = await podNames(kc, "app=web");
  await withRelay(["-n", NS, "deploy/web", ":80"], async (r) => {
    assert.ok(pods.includes((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim()));
  });
  await withRelay(["-n", NS, "sts/redis", ":6379"], async (r) => {
    const cli = (...a: string[]) =>
      new Deno.Command("redis-cli", {
        args: ["-h", "127.0.0.1", "-p", String(r.ports[0]), ...a],
        stdin: "null",
      })
        .output().then((o) => new TextDecoder().decode(o.stdout).trim());
    const value = crypto.randomUUID();
    assert.equal(await cli("SET", "relay-key", value), "OK");
    assert.equal(await cli("GET", "relay-key"), value);
  });
});

Deno.test({ name: "e2e: host/<svc>.<ns> and host/<short name>", ...opts }, async () => {
  const kc = await setup();
  const pods = await podNames(kc, "app=web");
  await withRelay([`host/web.${NS}`, ":8080"], async (r) => {
    assert.ok(pods.includes((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim()));
  });
  // A short name resolves through the search domains of the agent's namespace.
  await withRelay(["--server.namespace", NS, "host/web", ":8080"], async (r) => {
    assert.ok(pods.includes((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim()));
  });
});

Deno.test({ name: "e2e: ip/<pod IP> with 5000@tcp 6000@udp", ...opts }, async () => {
  const kc = await setup();
  const ip = await podIP(kc, "multi");
  await withRelay([`ip/${ip}`, ":5000@tcp", ":6000@udp"], async (r) => {
    assert.match(r.out[1], /^Forwarding from 127\.0\.0\.1:\d+ -> 6000 \(udp\)$/);
    assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), "multi");
    assert.equal(await dig(r.ports[1], "whoami.test.relay"), "multi");
  }, 2);
});

Deno.test({ name: "e2e: deploy/ :53@udp answered for real dig", ...opts }, async () => {
  const kc = await setup();
  const [pod] = await podNames(kc, "app=dns");
  await withRelay(["-n", NS, "deploy/dns", ":53@udp"], async (r) => {
    assert.equal(await dig(r.ports[0], "whoami.test.relay"), pod);
    // A second flow from another local port is a separate flow and is answered too.
    assert.equal(await dig(r.ports[0], "whoami.test.relay"), pod);
  });
});

Deno.test({ name: "e2e: --address localhost listens on 127.0.0.1 and ::1", ...opts }, async () => {
  const kc = await setup();
  const [pod] = await podNames(kc, "app=web");
  await withRelay(["-n", NS, "--address", "localhost", `pod/${pod}`, ":80"], async (r) => {
    assert.match(
      r.out.join("\n"),
      /Forwarding from 127\.0\.0\.1:\d+ -> 80\nForwarding from \[::1\]:\d+ -> 80/,
    );
    assert.equal(r.ports[0], r.ports[1], "same random port on both addresses");
    assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), pod);
    assert.equal((await curl(`http://[::1]:${r.ports[1]}/`, ["-g"])).trim(), pod);
  }, 2);
  await withRelay(["-n", NS, "--address", "0.0.0.0", `pod/${pod}`, ":80"], async (r) => {
    assert.match(r.out[0], /^Forwarding from 0\.0\.0\.0:\d+ -> 80$/);
    assert.equal((await curl(`http://127.0.0.2:${r.ports[0]}/`)).trim(), pod);
  });
});

Deno.test({ name: "e2e: -f file with two targets", ...opts }, async () => {
  const kc = await setup();
  const [dnsPod] = await podNames(kc, "app=dns");
  const file = await Deno.makeTempFile({ suffix: ".txt" });
  await Deno.writeTextFile(
    file,
    `# two targets\n-n ${NS} svc/web :http\n-n ${NS} deploy/dns :53@udp\n`,
  );
  try {
    await withRelay(["-f", file], async (r) => {
      const pods = await podNames(kc, "app=web");
      assert.ok(pods.includes((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim()));
      assert.equal(await dig(r.ports[1], "whoami.test.relay"), dnsPod);
    }, 2);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test({
  name: "e2e: the old bare pod spec --patch still works (deprecated); --server.namespace",
  ...opts,
}, async () => {
  const kc = await setup();
  const [pod] = await podNames(kc, "app=web");
  const patch = JSON.stringify({
    nodeSelector: { "relay-test": "yes" },
    tolerations: [{ operator: "Exists" }],
  });
  await kubectl(kc, "label", "node", "--all", "relay-test=yes", "--overwrite");
  await withRelay([
    "-n",
    NS,
    "--server.namespace",
    "kube-public",
    "--patch",
    patch,
    `pod/${pod}`,
    ":80",
  ], async (r) => {
    const agentPods = JSON.parse(
      await kubectl(
        kc,
        "-n",
        "kube-public",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=kubectl-relay-agent",
        "-o",
        "json",
      ),
    ).items as { spec: { nodeSelector?: Record<string, string>; tolerations?: unknown[] } }[];
    assert.equal(agentPods.length, 1);
    assert.deepEqual(agentPods[0].spec.nodeSelector, { "relay-test": "yes" });
    assert.ok(agentPods[0].spec.tolerations?.some((t) => JSON.stringify(t).includes("Exists")));
    assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), pod);
    assert.ok(
      r.err.some((l) => /^Warning: a --patch without "metadata" or "spec" .*deprecated/.test(l)),
      r.err.join("\n"),
    );
  });
});

Deno.test({
  name: "e2e: a refused destination is one error line; the relay keeps running",
  ...opts,
}, async () => {
  const kc = await setup();
  const [pod] = await podNames(kc, "app=web");
  const ip = await podIP(kc, pod);
  await withRelay([`ip/${ip}`, ":81", ":80"], async (r) => {
    await curl(`http://127.0.0.1:${r.ports[0]}/`).then(
      () => assert.fail("expected a failure"),
      () => {},
    );
    const line = await r.waitFor(/^error: dial tcp/);
    assert.equal(line, `error: dial tcp ${ip}:81: connection refused`);
    assert.equal((await curl(`http://127.0.0.1:${r.ports[1]}/`)).trim(), pod);
  }, 2);
});

Deno.test(
  { name: "e2e: bad input gives kubectl-like errors, exit 1, no agent", ...opts },
  async () => {
    const kc = await setup();
    const cases: [string[], RegExp][] = [
      [["cm/x", "80"], /^error: the server doesn't have a resource type "cm"/],
      [["-n", NS, "deploy/web"], /^error: at least 1 PORT is required/],
      [
        ["-n", NS, "svc/web", "8080:nope"],
        /^error: Service web does not have a service port named "nope"/,
      ],
      [["host/bad_name..x", "80"], /^error: invalid hostname/],
      [["-n", NS, "deploy/web", "70000"], /^error: invalid port "70000".*out of range/],
      [["-n", NS, "pod/does-not-exist", "80"], /NotFound.*pods "does-not-exist" not found/],
      [["-n", NS, "--nope", "deploy/web", "80"], /^error: unknown flag: --nope/],
    ];
    for (const [args, re] of cases) {
      const res = await runRelay(kc, args);
      assert.equal(res.code, 1, `${args.join(" ")}: ${res.stderr}`);
      assert.match(res.stderr.trim().split("\n")[0], re, args.join(" "));
      assert.doesNotMatch(res.stderr, /^\s+at /m, "no stack trace");
    }
    // A local port clash fails before anything is created in the cluster.
    const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const takenPort = (taken.addr as Deno.NetAddr).port;
    try {
      const clash = await runRelay(kc, ["-n", NS, "deploy/web", `${takenPort}:80`]);
      assert.equal(clash.code, 1);
      assert.match(
        clash.stderr,
        new RegExp(
          `^error: unable to listen on 127\\.0\\.0\\.1:${takenPort} \\(tcp\\): address already in use`,
          "m",
        ),
      );
      assert.doesNotMatch(clash.stderr, /Starting agent/);
    } finally {
      taken.close();
    }
    // No ready pod within a short --pod-running-timeout.
    await kubectlCreate(kc, "-n", NS, "create", "deployment", "empty", "--image=x", "--replicas=0");
    const res = await runRelay(kc, ["-n", NS, "--pod-running-timeout", "2s", "deploy/empty", "80"]);
    assert.equal(res.code, 1);
    assert.match(
      res.stderr,
      /^error: timed out waiting for a running, ready pod of deployment\/empty/m,
    );
    assert.deepEqual(await agentJobs(kc), []);
  },
);

Deno.test(
  { name: "e2e: token, client-cert and exec-plugin kubeconfigs; RBAC", ...opts },
  async () => {
    const kc = await setup();
    const cluster = await sharedCluster();
    const [pod] = await podNames(kc, "app=web");
    const rbac = new URL("../../manifests/rbac.yaml", import.meta.url).pathname;
    const limited = await cluster.createUser("relay-limited", rbac);
    for (const config of [cluster.tokenKubeconfig, cluster.execKubeconfig, limited]) {
      const r = await startRelay(config, ["-n", NS, `pod/${pod}`, ":80"]);
      try {
        assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), pod);
      } finally {
        assert.equal(await r.stop(), 0);
      }
    }
    // A user without pods/portforward: a clear error, exit 1, and the agent it created is removed.
    const noPf = await Deno.makeTempFile({ suffix: ".yaml" });
    const withoutPf = (await Deno.readTextFile(rbac)).replace(
      /\n\s*#[^\n]*\n\s+- apiGroups: \[""\]\n\s+resources: \["pods\/portforward"\]\n\s+verbs: \[[^\]]*\]/,
      "",
    ).replaceAll("kubectl-relay-", "relay-nopf-");
    assert.doesNotMatch(withoutPf, /portforward/, "the rule was removed");
    await Deno.writeTextFile(noPf, withoutPf);
    const user = await cluster.createUser("relay-nopf", noPf);
    const res = await runRelay(user, ["-n", NS, `pod/${pod}`, ":80"]);
    assert.equal(res.code, 1, res.stderr);
    assert.match(res.stderr, /error: .*(forbidden|Forbidden).*portforward/);
    assert.deepEqual(await agentJobs(kc), []);
    await Deno.remove(noPf);
  },
);

Deno.test({
  name: "e2e: --insecure-skip-tls-verify; an untrusted apiserver certificate is a clear error",
  ...opts,
}, async () => {
  const kc = await setup();
  const cluster = await sharedCluster();
  const [pod] = await podNames(kc, "app=web");
  const noCa = await Deno.makeTempFile({ suffix: ".kubeconfig" });
  await Deno.writeTextFile(
    noCa,
    (await Deno.readTextFile(cluster.tokenKubeconfig)).replace(
      /^\s*certificate-authority-data: .*\n/m,
      "",
    ),
  );
  try {
    const res = await runRelay(noCa, ["-n", NS, `pod/${pod}`, ":80"]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /^error: Unable to connect to the server: .*certificate/m);
    assert.deepEqual(await agentJobs(kc), []);
    const r = await startRelay(noCa, ["--insecure-skip-tls-verify", "-n", NS, `pod/${pod}`, ":80"]);
    try {
      assert.equal((await curl(`http://127.0.0.1:${r.ports[0]}/`)).trim(), pod);
    } finally {
      assert.equal(await r.stop(), 0);
    }
    assert.deepEqual(await agentJobs(kc), []);
  } finally {
    await Deno.remove(noCa);
  }
});
