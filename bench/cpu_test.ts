import assert from "node:assert/strict";
import { cpuSeconds } from "./cpu.ts";

Deno.test("cpuSeconds: grows with this process's work; undefined for a missing process", () => {
  const before = cpuSeconds(Deno.pid)!;
  // Busy until 0.1 CPU-second more is seen (bounded: 10 s of wall time on a busy machine).
  const until = performance.now() + 10_000;
  let x = 0;
  let after = before;
  while (after - before < 0.1 && performance.now() < until) {
    for (let i = 0; i < 1e6; i++) x += Math.sqrt(x + i);
    after = cpuSeconds(Deno.pid)!;
  }
  assert.ok(x > 0);
  assert.ok(after - before >= 0.1, `${before} -> ${after}`);
  assert.equal(cpuSeconds(0), undefined);
  assert.equal(cpuSeconds(2 ** 22 + 7), undefined); // above pid_max's default range
});

Deno.test("cpuSeconds: counts a child process's CPU once it has been waited for", async () => {
  const before = cpuSeconds(Deno.pid)!;
  await new Deno.Command("sh", {
    args: ["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"],
  })
    .output();
  const after = cpuSeconds(Deno.pid)!;
  assert.ok(after - before >= 0.05, `${before} -> ${after}`);
});

Deno.test("cpuSeconds: live descendants count unless descendants is false", async () => {
  const child = new Deno.Command("sh", {
    args: ["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 5"],
  }).spawn();
  try {
    // Wait (bounded) until the child's loop has used some CPU.
    const deadline = performance.now() + 10_000;
    while ((cpuSeconds(child.pid) ?? 0) < 0.05 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const child0 = cpuSeconds(child.pid)!;
    const withChild = cpuSeconds(Deno.pid)!;
    const alone = cpuSeconds(Deno.pid, false)!;
    assert.ok(child0 >= 0.05, `child used ${child0} s`);
    assert.ok(withChild - alone >= child0 - 0.02, `${withChild} vs ${alone} + ${child0}`);
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
});
