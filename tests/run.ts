/**
 * `deno task test [deno test args...]` — builds the control plane if needed, starts ONE loopback
 * cluster, runs `deno test -A <args>` with `RELAY_TEST_CLUSTER` pointing at the cluster's
 * state.json, stops the cluster, and prints a final line `N passed, M failed`. The default args
 * are `src/ scripts/ bench/ tests/`: every test, the unit tests beside the code included.
 *
 * Exit code: deno test's; 1 if the cluster cannot start, or if tests passed but stopping the
 * cluster left something behind. `RELAY_TEST_TIMEOUT` (seconds, default 1800) bounds the run.
 *
 * @module
 */

import { ensureBuilt, kubectlCommand } from "./cluster/build.ts";
import { type Cluster, startCluster } from "./cluster/cluster.ts";

/** Totals parsed from Deno's test summary line. */
export interface TestSummary {
  ok: boolean;
  passed: number;
  failed: number;
}

/** Remove ANSI colour codes. */
export function stripAnsi(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

/**
 * Parse `ok | 12 passed (3 steps) | 0 failed ...` / `FAILED | ...` (the last one wins); without
 * one, count top-level `name ... ok` / `name ... FAILED` lines (null if there are none).
 */
export function parseSummary(output: string): TestSummary | null {
  const plain = stripAnsi(output);
  const re = /^(ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed/gm;
  let m: RegExpExecArray | null;
  let last: TestSummary | null = null;
  while ((m = re.exec(plain)) !== null) {
    last = { ok: m[1] === "ok", passed: Number(m[2]), failed: Number(m[3]) };
  }
  if (last !== null) return last;
  // No summary (interrupted, timed out): count the per-test result lines seen so far.
  const passed = plain.match(/^\S.* \.\.\. ok\b/gm)?.length ?? 0;
  const failed = plain.match(/^\S.* \.\.\. FAILED\b/gm)?.length ?? 0;
  return passed + failed > 0 ? { ok: false, passed, failed } : null;
}

async function main(args: string[]): Promise<number> {
  const testArgs = args.length ? args : ["src/", "scripts/", "bench/", "tests/"];
  let cluster: Cluster;
  let binDir: string;
  try {
    binDir = (await ensureBuilt({ log: (l) => console.error(l) })).binDir;
    cluster = await startCluster({ log: (l) => console.error(l) });
  } catch (e) {
    console.error(`error: cannot start the test cluster: ${e instanceof Error ? e.stack : e}`);
    console.log("0 passed, 0 failed");
    return 1;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", ...testArgs],
    env: {
      RELAY_TEST_CLUSTER: `${cluster.dir}/state.json`,
      // No kubectl on PATH: the tests get the one built with the control plane.
      ...(kubectlCommand(binDir) === "kubectl"
        ? {}
        : { PATH: `${binDir}:${Deno.env.get("PATH") ?? ""}` }),
    },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    try {
      child.kill("SIGINT");
    } catch {
      // already gone
    }
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  // A hung test must not hang CI: SIGINT after RELAY_TEST_TIMEOUT seconds, SIGKILL 30 s later.
  const limit = Number(Deno.env.get("RELAY_TEST_TIMEOUT") ?? "1800");
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    console.error(`error: deno test still running after ${limit} s: interrupting it`);
    onSignal();
    kill = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, 30000);
  }, limit * 1000);
  let kill: ReturnType<typeof setTimeout> | undefined;
  let output = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    await Deno.stdout.write(chunk);
    output += decoder.decode(chunk, { stream: true });
    if (output.length > 4_000_000) output = output.slice(-1_000_000);
  }
  const status = await child.status;
  clearTimeout(timer);
  clearTimeout(kill);
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  let code = status.code;
  try {
    await cluster.stop();
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    if (code === 0) code = 1;
  }
  const summary = parseSummary(output);
  if (!/^(ok|FAILED) \| /m.test(stripAnsi(output))) {
    console.error("(no summary line from deno test; counted the result lines seen)");
  }
  if (interrupted) console.error(timedOut ? "(timed out)" : "(interrupted)");
  if (timedOut && code === 0) code = 1;
  // A timed-out run counts the test(s) still pending as one failure.
  const failed = (summary?.failed ?? 0) + (timedOut ? 1 : 0);
  console.log(`${summary?.passed ?? 0} passed, ${failed} failed`);
  return code;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
