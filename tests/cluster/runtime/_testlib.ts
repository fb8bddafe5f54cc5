/**
 * Helpers for the runtime's tests: run a command and capture its output, check required tools.
 *
 * @module
 */

/** Result of {@link runCmd}. */
export interface CmdResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command to completion (stdin closed) and capture its output. */
export async function runCmd(cmd: string, args: string[]): Promise<CmdResult> {
  const out = await new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Debian package providing each tool the tests need. */
const PACKAGES: Record<string, string> = {
  dig: "dnsutils",
  curl: "curl",
  "redis-server": "redis-server",
  "redis-cli": "redis-tools",
};

/**
 * Make sure the tools exist: if one is missing and we are root, `apt-get install` its package;
 * otherwise throw naming the package.
 */
export async function requireTools(...tools: string[]): Promise<void> {
  const missing: string[] = [];
  for (const t of tools) {
    if ((await runCmd("sh", ["-c", `command -v ${t}`])).code !== 0) missing.push(t);
  }
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map((t) => PACKAGES[t] ?? t))];
  if (Deno.uid() === 0) {
    const r = await runCmd("sh", [
      "-c",
      `DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${pkgs.join(" ")} || ` +
      `(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${
        pkgs.join(" ")
      })`,
    ]);
    if (r.code === 0) return;
  }
  throw new Error(
    `missing tools ${missing.join(", ")}: install Debian package(s) ${pkgs.join(" ")}`,
  );
}

/** `dig +short` against server:port; returns trimmed output lines. */
export async function dig(
  server: string,
  port: number,
  name: string,
  type: string,
  extra: string[] = [],
): Promise<string[]> {
  const r = await runCmd("dig", [
    `@${server}`,
    "-p",
    String(port),
    name,
    type,
    "+short",
    "+time=2",
    "+tries=2",
    ...extra,
  ]);
  if (r.code !== 0) throw new Error(`dig failed (${r.code}): ${r.stdout}${r.stderr}`);
  return r.stdout.split("\n").map((l) => l.trim()).filter((l) => l !== "");
}

/** Full `dig` output (for status lines). */
export async function digFull(
  server: string,
  port: number,
  name: string,
  type: string,
  extra: string[] = [],
): Promise<string> {
  const r = await runCmd("dig", [
    `@${server}`,
    "-p",
    String(port),
    name,
    type,
    "+time=2",
    "+tries=2",
    ...extra,
  ]);
  return r.stdout;
}

/** Hex SHA-256. */
export async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}
