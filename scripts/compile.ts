/**
 * `deno task compile [--dry-run] [--target TRIPLE]`: compiles `kubectl-relay` for every release
 * target (and the agent for linux amd64/arm64, with its V8 flags baked in: agent_v8_flags.ts) into
 * dist/<os>-<arch>/.
 *
 * `deno compile` downloads Deno's runtime for each target, so it needs network access to Deno's
 * release host; `--dry-run` type-checks the entry points and prints the commands instead.
 */
import { binaryName, TARGETS } from "./targets.ts";
import { AGENT_V8_FLAGS, CLIENT_V8_FLAGS } from "./agent_v8_flags.ts";

const dryRun = Deno.args.includes("--dry-run");
const only = Deno.args.includes("--target")
  ? Deno.args[Deno.args.indexOf("--target") + 1]
  : undefined;
const root = new URL("../", import.meta.url).pathname;
const COMMON = ["compile", "-A", "--unstable-net", "--no-check=remote"];

/** The deno argument lists this task runs. */
export function compileCommands(): string[][] {
  const cmds: string[][] = [];
  for (const t of TARGETS.filter((t) => !only || t.triple === only)) {
    const dir = `dist/${t.os}-${t.arch}`;
    cmds.push([
      ...COMMON,
      `--v8-flags=${CLIENT_V8_FLAGS}`,
      "--include",
      "manifests/agent-job.yaml",
      "--target",
      t.triple,
      "-o",
      `${dir}/${binaryName(t)}`,
      "main.ts",
    ]);
    if (t.os === "linux") {
      cmds.push([
        ...COMMON,
        `--v8-flags=${AGENT_V8_FLAGS}`,
        "--target",
        t.triple,
        "-o",
        `${dir}/${binaryName(t, "kubectl-relay-agent")}`,
        "agent.ts",
      ]);
    }
  }
  return cmds;
}

async function run(args: string[]): Promise<void> {
  console.log(`$ deno ${args.join(" ")}`);
  if (dryRun) return;
  const { code } = await new Deno.Command(Deno.execPath(), { args, cwd: root }).spawn().status;
  if (code !== 0) throw new Error(`deno ${args[0]} failed with exit code ${code}`);
}

if (import.meta.main) {
  if (dryRun) {
    // What can be done offline: type-check both entry points exactly as compile would.
    const { code } = await new Deno.Command(Deno.execPath(), {
      args: ["check", "main.ts", "agent.ts"],
      cwd: root,
    })
      .spawn().status;
    if (code !== 0) Deno.exit(code);
  }
  for (const args of compileCommands()) await run(args);
}
