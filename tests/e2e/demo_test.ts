/** The README's demo command, run non-interactively (`--once`), asserting what a newcomer sees. */
import assert from "node:assert/strict";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name:
    "demo: deno task demo --once shows relayed HTTP, DNS (kube-dns too), host/ and a rolling update",
  ...opts,
}, async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "demo", "--once"],
    cwd: new URL("../../", import.meta.url).pathname,
    stdin: "null",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(240_000), // a hung demo fails the test instead of stalling CI
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  assert.match(text, /Kubeconfig: \/\S+kubeconfig/);
  assert.match(text, /Forwarding from 127\.0\.0\.1:\d+ -> 80/);
  assert.match(text, /Forwarding from 127\.0\.0\.1:\d+ -> 53 \(udp\)/);
  assert.match(text, /served by pod web-/);
  assert.match(text, /answered by pod dns-/);
  // UDP to the cluster DNS: kube-dns answers with the kubernetes Service's IP.
  assert.match(
    text,
    /kube-dns answered kubernetes\.default\.svc\.cluster\.local A (\d+\.\d+\.\d+\.\d+) \(the kubernetes Service is \1\)/,
  );
  assert.match(text, /responses from web-\S+ \(old\)/);
  assert.match(text, /responses from web-\S+ \(new\)/);
  // Counted per request, each on a new connection.
  const m = text.match(/(\d+) requests, each on a new TCP connection: (\d+) failed requests/);
  assert.ok(m, text);
  assert.ok(Number(m[1]) > 50, `only ${m[1]} requests`);
  assert.equal(m[2], "0", text);
  assert.match(text, /Done\./);
});
