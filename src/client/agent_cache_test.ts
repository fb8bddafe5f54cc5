/** The shared-agent cache: what a run remembers to open its port-forward early. */
import assert from "node:assert/strict";
import { agentCacheKey, cachedAgent, rememberAgent } from "./agent_cache.ts";

Deno.test("agent cache: remembers the last agent per key; stale or broken files give nothing", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/sub/shared-agents.json`;
  try {
    const a = agentCacheKey("https://127.0.0.1:6443", "default", '{"image":"a"}');
    const b = agentCacheKey("https://127.0.0.1:6443", "default", '{"image":"b"}');
    assert.equal(cachedAgent(a, file), undefined, "no file yet");
    rememberAgent(a, { job: "j1", pod: "p1" }, file);
    rememberAgent(b, { job: "j2", pod: "p2" }, file);
    rememberAgent(a, { job: "j3", pod: "p3" }, file);
    assert.deepEqual(cachedAgent(a, file), { job: "j3", pod: "p3" });
    assert.deepEqual(cachedAgent(b, file), { job: "j2", pod: "p2" });
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600, "only the user reads it");
    // An entry older than an hour does not count.
    const old = JSON.parse(await Deno.readTextFile(file));
    old[a].at = Date.now() - 2 * 60 * 60_000;
    await Deno.writeTextFile(file, JSON.stringify(old));
    assert.equal(cachedAgent(a, file), undefined);
    assert.deepEqual(cachedAgent(b, file), { job: "j2", pod: "p2" });
    // A broken file is no cache, and is replaced by the next run.
    await Deno.writeTextFile(file, "{not json");
    assert.equal(cachedAgent(b, file), undefined);
    rememberAgent(b, { job: "j4", pod: "p4" }, file);
    assert.deepEqual(cachedAgent(b, file), { job: "j4", pod: "p4" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
