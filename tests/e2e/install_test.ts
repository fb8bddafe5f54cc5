/**
 * The `deno run <URL>/main.ts` install path for real: the repository is served over HTTPS on
 * loopback (a test CA passed with DENO_CERT) and run from a directory outside it, so Deno loads
 * every module, the agent Job template and the npm packages as it does from a published URL
 * (no deno.json, no import map).
 */
import assert from "node:assert/strict";
import { sharedCluster } from "../cluster/cluster.ts";
import { generatePki } from "../cluster/pki.ts";
import { curl, kubectl } from "../_lib/relay.ts";
import { VERSION } from "../../src/version.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const opts = { sanitizeOps: false, sanitizeResources: false };

const TYPES: Record<string, string> = {
  ts: "application/typescript",
  json: "application/json",
  yaml: "text/yaml",
};

/**
 * Serves the repository's files read-only over HTTPS on 127.0.0.1 (a random port), under a path
 * prefix new to every run, so Deno cannot answer from its module cache (a URL it loaded before,
 * from an earlier run on the same port) and every module is really fetched.
 */
async function serveRepo(): Promise<
  { url: string; ca: string; requests: string[]; close(): Promise<void> }
> {
  const dir = await Deno.makeTempDir({ prefix: "relay-https-" });
  const pki = await generatePki(dir, "127.0.0.1");
  const requests: string[] = [];
  const prefix = `/${crypto.randomUUID()}`;
  let resolvePort!: (port: number) => void;
  const port = new Promise<number>((r) => (resolvePort = r));
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(pki.apiserverCert),
    key: await Deno.readTextFile(pki.apiserverKey),
    onListen: (addr) => resolvePort(addr.port),
  }, async (req) => {
    const full = decodeURIComponent(new URL(req.url).pathname);
    if (!full.startsWith(`${prefix}/`)) return new Response("not found\n", { status: 404 });
    const path = full.slice(prefix.length);
    requests.push(path);
    const type = TYPES[path.slice(path.lastIndexOf(".") + 1)];
    if (req.method !== "GET" || path.includes("..") || path.includes("/.") || !type) {
      return new Response("not found\n", { status: 404 });
    }
    try {
      return new Response(await Deno.readFile(`${ROOT}${path.slice(1)}`), {
        headers: { "Content-Type": type },
      });
    } catch {
      return new Response("not found\n", { status: 404 });
    }
  });
  return {
    url: `https://127.0.0.1:${await port}${prefix}`,
    ca: pki.caCert,
    requests,
    async close() {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test(
  {
    name: "install: deno run https://…/main.ts from another directory: -V, then forwarding",
    ...opts,
  },
  async () => {
    const cluster = await sharedCluster();
    const kc = cluster.kubeconfig;
    await kubectl(kc, "create", "namespace", "relay-install").catch(() => "");
    await kubectl(kc, "-n", "relay-install", "run", "hello", "--image=relay-test/http", "--port=80")
      .catch(() => "");
    await kubectl(
      kc,
      "-n",
      "relay-install",
      "wait",
      "--for=condition=Ready",
      "pod/hello",
      "--timeout=60s",
    );
    const repo = await serveRepo();
    const cwd = await Deno.makeTempDir();
    const main = `${repo.url}/main.ts`;
    const env = { KUBECONFIG: kc, DENO_CERT: repo.ca, NO_COLOR: "1" };
    try {
      const v = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--unstable-net", "--quiet", main, "-V"],
        cwd,
        env,
        stdin: "null",
      }).output();
      assert.equal(v.code, 0, new TextDecoder().decode(v.stderr));
      const version = JSON.parse(new TextDecoder().decode(v.stdout));
      assert.equal(version.clientVersion, VERSION);
      assert.match(version.agentImage, new RegExp(`:v${VERSION.replaceAll(".", "\\.")}$`));

      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--unstable-net",
          "--quiet",
          main,
          "-n",
          "relay-install",
          "pod/hello",
          ":80",
        ],
        cwd,
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const errText = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
      let stderr = "";
      const drainErr = (async () => {
        for (;;) {
          const { value, done } = await errText.read();
          if (done) return;
          stderr += value;
        }
      })();
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      try {
        const deadline = Date.now() + 90_000;
        while (!/Forwarding from 127\.0\.0\.1:(\d+)/.test(text) && Date.now() < deadline) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
        const port = Number(/Forwarding from 127\.0\.0\.1:(\d+)/.exec(text)?.[1]);
        assert.ok(port > 0, `${text}\n${stderr}`);
        assert.equal((await curl(`http://127.0.0.1:${port}/`)).trim(), "hello");
      } finally {
        child.kill("SIGINT");
        (async () => {
          while (!(await reader.read()).done) { /* drain */ }
        })();
        const status = await child.status;
        await drainErr;
        assert.equal(status.code, 0, stderr);
      }
      // Everything came over HTTPS from the served repository: the entry point, the client's
      // modules and the agent Job template (fetched at run time).
      assert.ok(repo.requests.includes("/main.ts"));
      assert.ok(repo.requests.includes("/src/cli/run.ts"));
      assert.ok(repo.requests.includes("/manifests/agent-job.yaml"), repo.requests.join(" "));
    } finally {
      await repo.close();
      await Deno.remove(cwd, { recursive: true });
    }
  },
);
