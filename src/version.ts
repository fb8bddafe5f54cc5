import config from "../deno.json" with { type: "json" };

/** The client's version, from deno.json (the one place it is set). */
export const VERSION: string = config.version;

/** The published agent image, tagged with the client's version. */
export const DEFAULT_AGENT_IMAGE = `ghcr.io/kubectl-relay/kubectl-relay-agent:v${VERSION}`;
