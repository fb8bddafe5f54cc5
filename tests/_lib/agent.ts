/**
 * Runs agent.ts as a real local process for tests, listening on 127.0.0.1 (port
 * chosen by the kernel, read from its `listening on` line), with a fresh random token
 * in `KUBECTL_RELAY_TOKEN`; `connect()` opens a connection that has presented it.
 *
 * With `resolvConf`, the agent runs in a private mount namespace where
 * /etc/resolv.conf is replaced (bind mount, needs root + unshare): so its
 * name lookups go only to a test DNS server on loopback, never to the host's.
 */

import { encodeAuth, formatToken, TOKEN_ENV, TOKEN_LENGTH } from "../../src/protocol/auth.ts";
import { writeAll } from "./net.ts";

const REPO = new URL("../../", import.meta.url).pathname;

/** A fresh random token (what the client draws per agent). */
export function randomToken(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(TOKEN_LENGTH));
}

/** Options of {@link startAgentProcess}. */
export interface AgentProcessOptions {
  /** Extra agent arguments (after `--listen 127.0.0.1:0`). */
  args?: string[];
  /** Contents for the agent's /etc/resolv.conf (private mount namespace). */
  resolvConf?: string;
  /**
   * The agent's `KUBECTL_RELAY_TOKEN` text: default the hex of a fresh random token; `null`
   * leaves the variable unset.
   */
  tokenEnv?: string | null;
}

/** A running agent process. */
export interface AgentProcess {
  readonly port: number;
  /** The token it was given (unset when `tokenEnv` was given). */
  readonly token: Uint8Array;
  /** Connects to it and sends the Token block; the connection is ready for a Header or PREFACE. */
  connect(): Promise<Deno.TcpConn>;
  readonly pid: number;
  /** stderr log lines so far. */
  readonly logs: string[];
  /** Resolves with the exit code when the process ends by itself or is stopped. */
  readonly exited: Promise<number>;
  /** SIGTERM, then wait; idempotent. */
  stop(): Promise<void>;
}

/** The agent exited before it was listening. */
export class AgentExitedError extends Error {
  constructor(readonly code: number, readonly logs: string[]) {
    super(`agent exited with ${code} before listening:\n${logs.join("\n")}`);
    this.name = "AgentExitedError";
  }
}

/** Whether `unshare --mount` works here (root + util-linux). */
export async function canUnshareMount(): Promise<boolean> {
  try {
    const out = await new Deno.Command("unshare", {
      args: ["--mount", "--propagation", "private", "true"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

async function lines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    let i;
    while ((i = rest.indexOf("\n")) !== -1) {
      onLine(rest.slice(0, i));
      rest = rest.slice(i + 1);
    }
  }
  if (rest) onLine(rest);
}

/**
 * Starts the agent and waits for its `listening on` line. Rejects with the agent's output if it
 * exits first.
 */
export async function startAgentProcess(opts: AgentProcessOptions = {}): Promise<AgentProcess> {
  const token = randomToken();
  const tokenEnv = opts.tokenEnv === undefined ? formatToken(token) : opts.tokenEnv;
  const denoArgs = [
    "run",
    "-A",
    "--unstable-net",
    `${REPO}agent.ts`,
    "--listen",
    "127.0.0.1:0",
    ...(opts.args ?? []),
  ];
  let cmd = Deno.execPath();
  let args = denoArgs;
  let resolvFile: string | undefined;
  if (opts.resolvConf !== undefined) {
    resolvFile = await Deno.makeTempFile({ prefix: "agent-resolv-" });
    await Deno.writeTextFile(resolvFile, opts.resolvConf);
    cmd = "unshare";
    args = [
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      'mount --bind "$0" /etc/resolv.conf && exec "$@"',
      resolvFile,
      Deno.execPath(),
      ...denoArgs,
    ];
  }
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...(tokenEnv === null ? {} : { [TOKEN_ENV]: tokenEnv }) },
  }).spawn();
  const logs: string[] = [];
  let ready!: (port: number) => void;
  const listening = new Promise<number>((r) => ready = r);
  const outDone = lines(child.stdout, (l) => {
    const m = /^listening on .*:(\d+)$/.exec(l);
    if (m) ready(Number(m[1]));
  });
  const errDone = lines(child.stderr, (l) => logs.push(l));
  const exited = (async () => {
    const st = await child.status;
    await Promise.all([outDone, errDone]);
    if (resolvFile) await Deno.remove(resolvFile).catch(() => {});
    return st.code;
  })();
  const port = await Promise.race([
    listening,
    exited.then((code) => {
      throw new AgentExitedError(code, logs);
    }),
  ]);
  let stopping: Promise<void> | undefined;
  return {
    port,
    token,
    async connect() {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(conn, encodeAuth(token));
      return conn;
    },
    pid: child.pid,
    logs,
    exited,
    stop() {
      stopping ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch {
          // already exited
        }
        await exited;
      })();
      return stopping;
    },
  };
}
