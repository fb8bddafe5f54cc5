import assert from "node:assert/strict";
import { defaultFlags, parseArgs } from "../cli/flags.ts";
import { UsageError } from "../errors.ts";
import { accessFrom } from "./config.ts";
import { type Credentials, loadCredentials, loadKubeConfig } from "./credentials.ts";
import type { Flags } from "../cli/flags.ts";

async function kubeAccess(flags: Flags) {
  const creds: Credentials = await loadCredentials(flags);
  return accessFrom(creds, flags, () => loadCredentials(flags));
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
