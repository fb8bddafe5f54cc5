/**
 * Child processes played for pods (the relay agent, redis-server): output captured line by line
 * (to a log file and a callback), and a stop that cannot hang (SIGTERM + SIGCONT, then SIGKILL).
 *
 * Children stay in the runtime's process group, so the cluster's group kill of the runtime also
 * reaches them even if the runtime itself is SIGKILLed.
 *
 * @module
 */

/** A running child. */
export interface ManagedChild {
  readonly pid: number;
  /** Resolves with the exit status once the process has exited and its output is drained. */
  readonly status: Promise<Deno.CommandStatus>;
  /** True once {@link ManagedChild.stop} was called. */
  readonly stopping: boolean;
  /** Terminate (SIGTERM + SIGCONT, SIGKILL after `graceMs`) and wait for the exit. */
  stop(graceMs?: number): Promise<Deno.CommandStatus>;
}

/** Options for {@link spawnChild}. */
export interface SpawnOptions {
  args: string[];
  /** Append stdout+stderr here. */
  logFile?: string;
  /** Called for each output line (stdout and stderr). */
  onLine?: (line: string, stream: "stdout" | "stderr") => void;
  env?: Record<string, string>;
  /** Start from an empty environment (only `env`), as a container does. */
  clearEnv?: boolean;
  cwd?: string;
}

async function pumpLines(
  stream: ReadableStream<Uint8Array>,
  name: "stdout" | "stderr",
  log: Deno.FsFile | undefined,
  onLine: SpawnOptions["onLine"],
): Promise<void> {
  const dec = new TextDecoder();
  let pending = "";
  try {
    for await (const chunk of stream) {
      if (log) await log.write(chunk).catch(() => 0);
      pending += dec.decode(chunk, { stream: true });
      let i: number;
      while ((i = pending.indexOf("\n")) >= 0) {
        onLine?.(pending.slice(0, i), name);
        pending = pending.slice(i + 1);
      }
    }
  } catch {
    // stream error: process is gone
  }
  if (pending) onLine?.(pending, name);
}

function signal(pid: number, sig: Deno.Signal) {
  try {
    Deno.kill(pid, sig);
  } catch {
    // gone already
  }
}

/** Start `cmd` with piped output. Throws if it cannot be spawned. */
export async function spawnChild(cmd: string, opts: SpawnOptions): Promise<ManagedChild> {
  const log = opts.logFile
    ? await Deno.open(opts.logFile, { create: true, append: true })
    : undefined;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd, {
      args: opts.args,
      env: opts.env,
      clearEnv: opts.clearEnv,
      cwd: opts.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    log?.close();
    throw e;
  }
  const drained = Promise.all([
    pumpLines(child.stdout, "stdout", log, opts.onLine),
    pumpLines(child.stderr, "stderr", log, opts.onLine),
  ]);
  const status = (async () => {
    const st = await child.status;
    await drained;
    log?.close();
    return st;
  })();
  let stopping = false;
  let exited = false;
  status.then(() => exited = true);
  return {
    pid: child.pid,
    status,
    get stopping() {
      return stopping;
    },
    async stop(graceMs = 3000) {
      stopping = true;
      if (!exited) {
        signal(child.pid, "SIGTERM");
        signal(child.pid, "SIGCONT"); // a SIGSTOPped agent (fault tests) must see the SIGTERM
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timeout = new Promise<void>((r) => timer = setTimeout(r, graceMs));
        await Promise.race([status, timeout]);
        clearTimeout(timer);
        if (!exited) signal(child.pid, "SIGKILL");
      }
      return await status;
    },
  };
}
