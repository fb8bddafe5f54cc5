/** The `deno run <URL>/main.ts` install path, simulated with a file URL from outside the repo. */
import assert from "node:assert/strict";
import { sharedCluster } from "../cluster/cluster.ts";
import { curl, kubectl } from "../_lib/relay.ts";
import { VERSION } from "../../src/version.ts";

const MAIN = new URL("../../main.ts", import.meta.url).href;
const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test(
  { name: "install: deno run <url>/main.ts -V from another directory", ...opts },
  async () => {
    const cwd = await Deno.makeTempDir();
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-net", "--quiet", MAIN, "-V"],
      cwd,
      stdin: "null",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const v = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(v.clientVersion, VERSION);
    assert.match(v.agentImage, new RegExp(`:v${VERSION.replaceAll(".", "\\.")}$`));
    await Deno.remove(cwd, { recursive: true });
  },
);

Deno.test({ name: "install: deno run <url>/main.ts forwards for real", ...opts }, async () => {
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
  const cwd = await Deno.makeTempDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-net",
      "--quiet",
      MAIN,
      "-n",
      "relay-install",
      "pod/hello",
      ":80",
    ],
    cwd,
    env: { KUBECONFIG: kc },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  try {
    const deadline = Date.now() + 60_000;
    while (!/Forwarding from 127\.0\.0\.1:(\d+)/.test(text) && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    const port = Number(/Forwarding from 127\.0\.0\.1:(\d+)/.exec(text)?.[1]);
    assert.ok(port > 0, text);
    assert.equal((await curl(`http://127.0.0.1:${port}/`)).trim(), "hello");
  } finally {
    child.kill("SIGINT");
    (async () => {
      while (!(await reader.read()).done) { /* drain */ }
    })();
    assert.equal((await child.status).code, 0);
    await Deno.remove(cwd, { recursive: true });
  }
});
