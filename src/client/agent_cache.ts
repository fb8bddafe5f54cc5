/**
 * Which shared agent (`--reuse-agent`) this machine used last, per apiserver, namespace and agent
 * template (image, `--patch`, arguments): so a run can open the port-forward to it while it checks that the agent may still be
 * used. Names only (no token, no credentials), in `$XDG_CACHE_HOME/kubectl-relay/` (default
 * `~/.cache`). A missing, unreadable or stale entry only means no head start.
 *
 * @module
 */

/** The agent a key was last served by. */
export interface CachedAgent {
  job: string;
  pod: string;
}

/** Entries older than this are ignored (a shared agent exits after 5 idle minutes). */
const MAX_AGE_MS = 60 * 60_000;
/** At most this many entries are kept (the newest). */
const MAX_ENTRIES = 50;

type Entries = Record<string, CachedAgent & { at: number }>;

function cacheFile(): string | undefined {
  const base = Deno.env.get("XDG_CACHE_HOME") ??
    (Deno.env.get("HOME") ? `${Deno.env.get("HOME")}/.cache` : undefined);
  return base ? `${base}/kubectl-relay/shared-agents.json` : undefined;
}

function readAll(file: string): Entries {
  try {
    const v = JSON.parse(Deno.readTextFileSync(file));
    return v && typeof v === "object" && !Array.isArray(v) ? v as Entries : {};
  } catch {
    return {};
  }
}

/** The key of one apiserver, agent namespace and what the agent's template is made of. */
export function agentCacheKey(server: string, namespace: string, template: string): string {
  return `${server} ${namespace} ${template}`;
}

/** The agent last used for `key`, if recent. */
export function cachedAgent(key: string, file = cacheFile()): CachedAgent | undefined {
  if (!file) return undefined;
  const e = readAll(file)[key];
  if (!e || typeof e.pod !== "string" || typeof e.job !== "string") return undefined;
  if (!(Date.now() - e.at < MAX_AGE_MS)) return undefined;
  return { job: e.job, pod: e.pod };
}

/** Records the agent used for `key` (best effort: errors are ignored). */
export function rememberAgent(key: string, agent: CachedAgent, file = cacheFile()): void {
  if (!file) return;
  try {
    const entries = readAll(file);
    entries[key] = { job: agent.job, pod: agent.pod, at: Date.now() };
    const kept = Object.entries(entries)
      .filter(([, e]) => Date.now() - e.at < MAX_AGE_MS)
      .sort(([, a], [, b]) => b.at - a.at)
      .slice(0, MAX_ENTRIES);
    Deno.mkdirSync(file.replace(/\/[^/]*$/, ""), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${Deno.pid}.tmp`;
    Deno.writeTextFileSync(tmp, JSON.stringify(Object.fromEntries(kept)), { mode: 0o600 });
    Deno.renameSync(tmp, file);
  } catch {
    // no cache, no head start
  }
}
