import assert from "node:assert/strict";
import { defaultFlags, parseArgs } from "../cli/flags.ts";
import { UsageError } from "../errors.ts";
import { kubeAccess as kubeAccessWith } from "./config.ts";
import { type Credentials, loadCredentials, loadKubeConfig } from "./credentials.ts";
import { staticCredentials } from "./kubeconfig.ts";
import type { Flags } from "../cli/flags.ts";
import type { KubeFlags } from "./flags.ts";

/** The relay's access (in-process credentials), the library standing in for the helper process. */
function kubeAccess(flags: Flags) {
  return kubeAccessWith(flags, () => {}, loadCredentials);
}

function kubeconfig(
  opts: { current?: string; ctx: string; ns?: string; server: string; user: string; token: string },
): string {
  return `apiVersion: v1
kind: Config
${opts.current ? `current-context: ${opts.current}` : ""}
clusters:
- name: ${opts.ctx}-cluster
  cluster: { server: "${opts.server}" }
users:
- name: ${opts.user}
  user: { token: ${opts.token} }
contexts:
- name: ${opts.ctx}
  context: { cluster: ${opts.ctx}-cluster, user: ${opts.user}${
    opts.ns ? `, namespace: ${opts.ns}` : ""
  } }
`;
}

async function withFiles(
  texts: string[],
  fn: (paths: string[]) => void | Promise<void>,
): Promise<void> {
  const paths = await Promise.all(texts.map(async (t) => {
    const p = await Deno.makeTempFile({ suffix: ".kubeconfig" });
    await Deno.writeTextFile(p, t);
    return p;
  }));
  try {
    await fn(paths);
  } finally {
    await Promise.all(paths.map((p) => Deno.remove(p)));
  }
}

Deno.test("kubeconfig: KUBECONFIG with several files, first current-context wins, contexts merge", async () => {
  await withFiles([
    kubeconfig({
      current: "a",
      ctx: "a",
      ns: "team-a",
      server: "https://127.0.0.1:6443",
      user: "alice",
      token: "t-a",
    }),
    kubeconfig({
      current: "b",
      ctx: "b",
      server: "https://127.0.0.2:6443",
      user: "bob",
      token: "t-b",
    }),
  ], async ([a, b]) => {
    const old = Deno.env.get("KUBECONFIG");
    Deno.env.set("KUBECONFIG", `${a}:${b}`);
    try {
      const access = await kubeAccess(defaultFlags());
      assert.equal(access.server, "https://127.0.0.1:6443");
      assert.equal(access.namespace, "team-a", "the context's namespace is the default");
      assert.equal((await access.headers()).get("Authorization"), "Bearer t-a");

      const flags =
        parseArgs(["--context", "b", "--as", "carol", "--as-group", "g1", "--as-group", "g2"])
          .flags;
      const other = await kubeAccess(flags);
      assert.equal(other.server, "https://127.0.0.2:6443");
      assert.equal(other.namespace, "default");
      const h = await other.headers();
      assert.equal(h.get("Authorization"), "Bearer t-b");
      assert.equal(h.get("Impersonate-User"), "carol");
      assert.equal(h.get("Impersonate-Group"), "g1, g2");

      const ns = parseArgs(["-n", "x", "--user", "bob", "--token", "override"]).flags;
      const third = await kubeAccess(ns);
      assert.equal(third.namespace, "x");
      assert.equal(third.server, "https://127.0.0.1:6443", "--user keeps the context's cluster");
      assert.equal((await third.headers()).get("Authorization"), "Bearer override");
    } finally {
      if (old === undefined) Deno.env.delete("KUBECONFIG");
      else Deno.env.set("KUBECONFIG", old);
    }
  });
});

Deno.test("kubeconfig: missing context, missing file and no config are user errors", async () => {
  await withFiles([
    kubeconfig({ current: "a", ctx: "a", server: "https://127.0.0.1:6443", user: "u", token: "t" }),
  ], ([a]) => {
    const bad = parseArgs(["--kubeconfig", a, "--context", "nope"]).flags;
    assert.throws(
      () => loadKubeConfig(bad),
      (e) => e instanceof UsageError && /context "nope" does not exist/.test(e.message),
    );
    const missing = parseArgs(["--kubeconfig", `${a}.missing`]).flags;
    assert.throws(
      () => loadKubeConfig(missing),
      (e) => e instanceof UsageError && /error loading config file/.test(e.message),
    );
  });
  await withFiles([
    kubeconfig({ ctx: "a", server: "https://127.0.0.1:6443", user: "u", token: "t" }),
  ], ([a]) => {
    const flags = parseArgs(["--kubeconfig", a]).flags;
    assert.throws(
      () => loadKubeConfig(flags),
      (e) => e instanceof UsageError && /no current context/.test(e.message),
    );
  });
});

/** A kubeconfig with one context per user entry (`ctx-<user name>`), all on one cluster. */
function multiUser(users: Record<string, string>, cluster = `server: "https://127.0.0.1:6443/"`) {
  return `apiVersion: v1
kind: Config
current-context: ctx-${Object.keys(users)[0]}
clusters:
- name: c
  cluster: { ${cluster} }
users:
${Object.entries(users).map(([n, u]) => `- name: ${n}\n  user: { ${u} }`).join("\n")}
contexts:
${
    Object.keys(users).map((n) =>
      `- name: ctx-${n}\n  context: { cluster: c, user: ${n}, namespace: ns-${n} }`
    ).join("\n")
  }
`;
}

const b64 = (s: string) => btoa(s);

Deno.test("credentials in-process: the same result as the library for every static auth method", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/ca.pem`, "CA FROM FILE\n");
    await Deno.writeTextFile(`${dir}/cert.pem`, "CERT FROM FILE\n");
    await Deno.writeTextFile(`${dir}/key.pem`, "KEY FROM FILE\n");
    await Deno.writeTextFile(`${dir}/token`, "token-from-file\n");
    const file = `${dir}/config`;
    await Deno.writeTextFile(
      file,
      multiUser({
        token: "token: t-inline",
        tokenfile: `token-file: ${dir}/token`,
        certdata: `client-certificate-data: ${b64("CERT DATA")}, client-key-data: ${
          b64("KEY DATA")
        }`,
        // Relative paths are relative to the kubeconfig's directory.
        certfile: "client-certificate: cert.pem, client-key: key.pem",
        basic: "username: admin, password: s3cret",
        impersonating: "token: t-imp, as: someone-else",
        // A user with an exec plugin elsewhere in the file does not matter.
        plugin: "exec: { apiVersion: client.authentication.k8s.io/v1, command: /bin/false }",
      }, `server: "https://127.0.0.1:6443/", certificate-authority: ca.pem`),
    );
    const cases: [string, string[], Partial<Credentials>][] = [
      ["token", [], { headers: { Authorization: "Bearer t-inline" }, ca: "CA FROM FILE\n" }],
      ["tokenfile", [], { headers: { Authorization: "Bearer token-from-file\n" } }],
      ["certdata", [], { cert: "CERT DATA", key: "KEY DATA", headers: {} }],
      ["certfile", [], { cert: "CERT FROM FILE\n", key: "KEY FROM FILE\n" }],
      ["basic", [], { headers: { Authorization: `Basic ${b64("admin:s3cret")}` } }],
      ["impersonating", [], {
        headers: { Authorization: "Bearer t-imp", "Impersonate-User": "someone-else" },
      }],
      ["token", ["--token", "flag-token", "-n", "other", "--server", "https://127.0.0.9:1/"], {
        headers: { Authorization: "Bearer flag-token" },
        namespace: "other",
        server: "https://127.0.0.9:1",
      }],
      ["certdata", ["--insecure-skip-tls-verify"], { insecure: true, ca: undefined }],
      ["basic", ["--certificate-authority", `${dir}/cert.pem`], { ca: "CERT FROM FILE\n" }],
    ];
    for (const [user, extra, want] of cases) {
      const flags = parseArgs(["--kubeconfig", file, "--context", `ctx-${user}`, ...extra]).flags;
      const fromLibrary = await loadCredentials(flags);
      const inProcess = staticCredentials(flags);
      assert.deepEqual(inProcess, fromLibrary, `${user} ${extra.join(" ")}`);
      const expected = {
        server: "https://127.0.0.1:6443",
        namespace: `ns-${user}`,
        contextName: `ctx-${user}`,
        insecure: false,
        refreshable: false,
        ...want,
      };
      for (const [k, v] of Object.entries(expected)) {
        assert.deepEqual(inProcess?.[k as keyof Credentials], v, `${user}: ${k}`);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("credentials in-process: exec plugins and auth providers go to the helper", async () => {
  const text = multiUser({
    exec: "exec: { apiVersion: client.authentication.k8s.io/v1, command: /bin/false }",
    oidc: "auth-provider: { name: oidc, config: { id-token: x } }",
    plain: "token: t",
  });
  await withFiles([text], async ([file]) => {
    const at = (ctx: string, ...extra: string[]) =>
      parseArgs(["--kubeconfig", file, "--context", ctx, ...extra]).flags;
    assert.equal(staticCredentials(at("ctx-exec")), undefined);
    assert.equal(staticCredentials(at("ctx-exec", "--token", "t2")), undefined);
    assert.equal(staticCredentials(at("ctx-oidc")), undefined);
    assert.equal(staticCredentials(at("ctx-plain"))?.headers.Authorization, "Bearer t");
    // --user picks a plugin user for a plain context.
    assert.equal(staticCredentials(at("ctx-plain", "--user", "exec")), undefined);

    const used: string[] = [];
    const helper = (f: KubeFlags) => {
      used.push(f.context!);
      return Promise.resolve({ ...staticCredentials(at("ctx-plain"))!, refreshable: true });
    };
    const access = await kubeAccessWith(at("ctx-exec"), () => {}, helper);
    assert.deepEqual(used, ["ctx-exec"], "the helper ran once, for the plugin user");
    assert.equal((await access.headers()).get("Authorization"), "Bearer t");
    await kubeAccessWith(at("ctx-plain"), () => {}, helper);
    assert.deepEqual(used, ["ctx-exec"], "no helper for a static user");
  });
});

Deno.test("credentials in-process: a kubeconfig it cannot use is reported by the helper, unchanged", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const broken: Record<string, string> = {
      "missing token-file": multiUser({ u: `token-file: ${dir}/nope` }),
      "missing client certificate": multiUser({
        u: `client-certificate: ${dir}/nope.pem, client-key: ${dir}/nope.key`,
      }),
      "cluster without server": multiUser({ u: "token: t" }, `insecure-skip-tls-verify: true`),
      "not YAML": "clusters: [\n",
      "context without cluster": "contexts:\n- name: x\n  context: { user: u }\n",
    };
    for (const [what, text] of Object.entries(broken)) {
      const file = `${dir}/${what.replaceAll(" ", "_")}`;
      await Deno.writeTextFile(file, text);
      const flags = parseArgs(["--kubeconfig", file]).flags;
      assert.throws(() => staticCredentials(flags), Error, what);
      const libraryError = await loadCredentials(flags).then(
        () => assert.fail(`${what}: the library accepted it`),
        (e: Error) => e,
      );
      assert.ok(libraryError instanceof UsageError, what);
      const viaAccess = await kubeAccessWith(flags, () => {}, loadCredentials).then(
        () => assert.fail(`${what}: accepted`),
        (e: Error) => e,
      );
      assert.equal(viaAccess.message, libraryError.message, what);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
