/** Runs `kubectl relay …` (the real kubectl, with our launcher on PATH) for end-to-end tests. */

const ROOT = new URL("../../", import.meta.url).pathname;

/** A running `kubectl relay` process. */
export interface RelayProcess {
  child: Deno.ChildProcess;
  /** stdout lines so far. */
  out: string[];
  /** stderr lines so far. */
  err: string[];
  /** Local ports from the `Forwarding from` lines, in order. */
  ports: number[];
  /** Waits until a stdout/stderr line matches, or fails after `timeoutMs`. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends a signal and waits for the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
  /** Exit code once it has exited. */
  status: Promise<Deno.CommandStatus>;
}

/** Environment for kubectl with our plugin launcher first on PATH. */
export function relayEnv(
  kubeconfig: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    PATH: `${ROOT}bin:${Deno.env.get("PATH")}`,
    DENO: Deno.execPath(),
    KUBECONFIG: kubeconfig,
    NO_COLOR: "1",
    ...extra,
  };
}

async function pump(
  stream: ReadableStream<Uint8Array>,
  lines: string[],
  wake: () => void,
): Promise<void> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      wake();
    }
  }
  if (buf) lines.push(buf);
  wake();
}

/** Starts `kubectl relay ARGS` and returns once it has printed `want` Forwarding lines (or exited). */
export async function startRelay(
  kubeconfig: string,
  args: string[],
  opts: { forwardLines?: number; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<RelayProcess> {
  const child = new Deno.Command("kubectl", {
    args: ["relay", ...args],
    env: relayEnv(kubeconfig, opts.env),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out: string[] = [];
  const err: string[] = [];
  let waiters: (() => void)[] = [];
  const wake = () => {
    const w = waiters;
    waiters = [];
    w.forEach((f) => f());
  };
  const pumps = Promise.all([pump(child.stdout, out, wake), pump(child.stderr, err, wake)]);
  let exited = false;
  const status = pumps.then(() => child.status).then((s) => {
    exited = true;
    wake();
    return s;
  });
  const proc: RelayProcess = {
    child,
    out,
    err,
    status,
    get ports() {
      return out.flatMap((l) => {
        const m = /^Forwarding from .*:(\d+) -> /.exec(l);
        return m ? [Number(m[1])] : [];
      });
    },
    async waitFor(re, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      while (true) {
        const line = [...out, ...err].find((l) => re.test(l));
        if (line !== undefined) return line;
        if (exited || Date.now() > deadline) {
          throw new Error(
            `kubectl relay ${args.join(" ")}: no line matching ${re} (${
              exited ? "exited" : "timeout"
            })\nstdout:\n${out.join("\n")}\nstderr:\n${err.join("\n")}`,
          );
        }
        await new Promise<void>((r) => {
          const t = setTimeout(r, Math.max(1, deadline - Date.now()));
          waiters.push(() => {
            clearTimeout(t);
            r();
          });
        });
      }
    },
    async stop(signal = "SIGINT") {
      const kill = (sig: Deno.Signal) => {
        try {
          child.kill(sig);
        } catch {
          // already gone
        }
      };
      if (!exited) kill(signal);
      // A relay that ignores the signal is killed after 30 s (and its exit code shows it).
      const timer = setTimeout(() => kill("SIGKILL"), 30_000);
      const { code } = await status;
      clearTimeout(timer);
      return code;
    },
  };
  const want = opts.forwardLines ?? 1;
  if (want > 0) {
    const deadline = Date.now() + (opts.timeoutMs ?? 90_000);
    while (proc.ports.length < want) {
      await proc.waitFor(/^Forwarding from/, Math.max(1, deadline - Date.now()));
      if (proc.ports.length >= want) break;
      await new Promise((r) => setTimeout(r, 20));
      if (Date.now() > deadline) throw new Error("timed out waiting for Forwarding lines");
    }
  }
  return proc;
}

/**
 * Runs `kubectl relay ARGS` to completion (for error cases). A relay still running after
 * `timeoutMs` is killed and reported as exit code -1, so a test never hangs on it.
 */
export async function runRelay(
  kubeconfig: string,
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command("kubectl", {
    args: ["relay", ...args],
    env: relayEnv(kubeconfig, env),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return {
    code: timedOut ? -1 : out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr) + (timedOut ? `\n(killed after ${timeoutMs} ms)` : ""),
  };
}

/** Runs real kubectl and returns stdout (throws with stderr on failure). */
export async function kubectl(kubeconfig: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command("kubectl", {
    args,
    env: { KUBECONFIG: kubeconfig },
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  if (out.code !== 0) {
    throw new Error(`kubectl ${args.join(" ")} failed: ${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

/** Runs a `kubectl create …` command; an object that already exists counts as created. */
export async function kubectlCreate(kubeconfig: string, ...args: string[]): Promise<void> {
  await kubectl(kubeconfig, ...args).catch((e) => {
    if (!/already exists/.test(String(e))) throw e;
  });
}

/** Names of the pods matching a label selector in a namespace. */
export async function podNames(
  kubeconfig: string,
  namespace: string,
  selector: string,
): Promise<string[]> {
  const out = await kubectl(
    kubeconfig,
    "-n",
    namespace,
    "get",
    "pods",
    "-l",
    selector,
    "-o",
    "jsonpath={.items[*].metadata.name}",
  );
  return out.split(" ").filter((s) => s);
}

/** Fetches http://HOST:PORT/ with curl and returns the body. */
export async function curl(url: string, extra: string[] = []): Promise<string> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "10", ...extra, url],
    stdin: "null",
  })
    .output();
  const dec = new TextDecoder();
  if (out.code !== 0) {
    throw new Error(`curl ${url} failed (${out.code}): ${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

/** Asserts no agent Job is left in the cluster (all namespaces). */
export async function agentJobs(kubeconfig: string): Promise<string[]> {
  const out = await kubectl(
    kubeconfig,
    "get",
    "jobs",
    "-A",
    "-l",
    "app.kubernetes.io/name=kubectl-relay-agent",
    "-o",
    'jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\\n"}{end}',
  );
  return out.split("\n").filter((l) => l);
}
