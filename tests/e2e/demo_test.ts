/** The README's demo command, run non-interactively (`--once`), asserting what a newcomer sees. */
import assert from "node:assert/strict";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "demo: deno task demo --once shows relayed HTTP, DNS, host/ and a rolling update",
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
  assert.match(text, /responses from web-\S+ \(new\)/);
  assert.match(text, /0 failed requests; the relay stayed up/);
  assert.match(text, /Done\./);
});
