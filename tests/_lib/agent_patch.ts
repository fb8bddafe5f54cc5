/** `--patch` values for `kubectl relay` built from the agent manifest. */

import yaml from "npm:js-yaml@4.1.0";
import { DEFAULT_AGENT_IMAGE } from "../../src/version.ts";

/**
 * A legacy-shaped `--patch` (a pod spec, JSON) whose one container is the manifest's agent
 * container with `changes` applied. A pod spec patch replaces the whole container list, so the
 * image is set; `env` is left out (the client sets the token). `extraArgs` go after the
 * manifest's arguments.
 */
export async function agentContainerPatch(
  changes: Record<string, unknown>,
  extraArgs: string[] = [],
): Promise<string> {
  const m = yaml.load(
    await Deno.readTextFile(new URL("../../manifests/agent-job.yaml", import.meta.url)),
  ) as { spec: { template: { spec: { containers: Record<string, unknown>[] } } } };
  const c = { ...m.spec.template.spec.containers[0], ...changes };
  delete c.env;
  c.args = [...(c.args as string[]), ...extraArgs];
  c.image = DEFAULT_AGENT_IMAGE;
  return JSON.stringify({ containers: [c] });
}
