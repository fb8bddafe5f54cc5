import { formatAddress, parseAddress } from "../protocol/addr.ts";
import { KubeApiError, type KubeReader } from "./client.ts";
import { isPodReady, isPodServing, type List, type Pod } from "./types.ts";

/** Options for a PodTracker. */
export interface PodTrackerOptions {
  /** Called when the chosen pod changes (for `-v` logs and user-facing notes). */
  onChange?: (from: Pod | undefined, to: Pod | undefined) => void;
  log?: (line: string) => void;
  /** Which pods may be chosen (default: running and Ready). */
  usable?: (pod: Pod) => boolean;
}

/**
 * Keeps an up-to-date view of the pods matching a selector (list, then watch from the list's
 * resourceVersion; re-list on 410 Gone; re-watch with backoff on disconnect) and picks a ready pod.
 */
export class PodTracker {
  readonly namespace: string;
  /** The list query: `labelSelector=…` or `fieldSelector=…`. */
  readonly query: string;
  #client: KubeReader;
  #pods = new Map<string, Pod>();
  #chosen: string | undefined;
  #waiters: (() => void)[] = [];
  #abort = new AbortController();
  #opts: PodTrackerOptions;
  #started: Promise<void> | undefined;
  /** Pods that just refused a connection, skipped until the given time (ms since epoch). */
  #avoid = new Map<string, number>();
  /** `whenGone` callbacks by pod name, each with the pod IP it was given. */
  #goneWatchers = new Map<string, Set<GoneWatcher>>();

  constructor(client: KubeReader, namespace: string, query: string, opts: PodTrackerOptions = {}) {
    this.#client = client;
    this.namespace = namespace;
    this.query = query;
    this.#opts = opts;
  }

  /** Lists once (errors propagate to the caller), then keeps watching in the background. */
  start(): Promise<void> {
    this.#started ??= (async () => {
      const rv = await this.#list();
      this.#loop(rv);
    })();
    return this.#started;
  }

  /** Returns the chosen ready (usable) pod, waiting up to `timeoutMs` for one; undefined on timeout. */
  async readyPod(timeoutMs: number): Promise<Pod | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const pod = this.#pick();
      if (pod) return pod;
      const left = deadline - Date.now();
      if (left <= 0 || this.#abort.signal.aborted) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** All known pods (any state). */
  get pods(): Pod[] {
    return [...this.#pods.values()];
  }

  /** Stops watching (pending `whenGone` callbacks are dropped, not called). */
  stop(): void {
    this.#abort.abort();
    this.#goneWatchers.clear();
    this.#wake();
  }

  /**
   * Calls `onGone` once the pod `name` with IP `ip` stops serving: deleted, no longer Ready, or
   * replaced by a pod of the same name with another IP. As kube-proxy keeps the UDP conntrack
   * entries of a serving endpoint, a pod that is terminating but still Ready (say, in its preStop
   * hook) is not gone yet: it may still answer. If it is gone already, `onGone` is called soon
   * (asynchronously). Returns a function that cancels the watch.
   */
  whenGone(name: string, ip: string, onGone: () => void): () => void {
    if (this.#abort.signal.aborted) return () => {};
    const w: GoneWatcher = { ip: canonicalIp(ip), onGone };
    let set = this.#goneWatchers.get(name);
    if (!set) this.#goneWatchers.set(name, set = new Set());
    set.add(w);
    queueMicrotask(() => this.#checkGone(name));
    return () => {
      const s = this.#goneWatchers.get(name);
      if (!s?.delete(w)) return;
      if (s.size === 0) this.#goneWatchers.delete(name);
    };
  }

  /** Calls (and drops) the `whenGone` callbacks of `name`, or of every pod, that are gone. */
  #checkGone(name?: string): void {
    const names = name === undefined ? [...this.#goneWatchers.keys()] : [name];
    for (const n of names) {
      const set = this.#goneWatchers.get(n);
      if (!set) continue;
      const pod = this.#pods.get(n);
      const live = pod && isPodServing(pod) ? canonicalIp(pod.status!.podIP!) : undefined;
      for (const w of [...set]) {
        if (w.ip === live) continue;
        set.delete(w);
        try {
          w.onGone();
        } catch (e) {
          this.#opts.log?.(`pod ${n} gone: ${(e as Error).message}`);
        }
      }
      if (set.size === 0) this.#goneWatchers.delete(n);
    }
  }

  /**
   * Skips a pod for `ms` (it refused a connection: it is probably going away and the watch has
   * not told us yet). If no other pod is ready, it is still used.
   */
  avoid(name: string, ms: number): void {
    this.#avoid.set(name, Date.now() + ms);
    if (this.#chosen === name) this.#pick();
  }

  #usable(p: Pod): boolean {
    return this.#eligible(p) && (this.#avoid.get(p.metadata.name) ?? 0) <= Date.now();
  }

  #eligible(p: Pod): boolean {
    return (this.#opts.usable ?? isPodReady)(p);
  }

  #pick(): Pod | undefined {
    const current = this.#chosen ? this.#pods.get(this.#chosen) : undefined;
    if (current && this.#usable(current)) return current;
    const all = [...this.#pods.values()];
    const usable = all.filter((p) => this.#usable(p));
    const ready = (usable.length > 0 ? usable : all.filter((p) => this.#eligible(p))).sort(
      byReadySince,
    );
    const next = ready[0];
    if (next?.metadata.name !== this.#chosen) {
      this.#opts.onChange?.(current, next);
      this.#chosen = next?.metadata.name;
    }
    return next;
  }

  #wake(): void {
    const ws = this.#waiters;
    this.#waiters = [];
    ws.forEach((w) => w());
  }

  #path(): string {
    return `/api/v1/namespaces/${this.namespace}/pods?${this.query}`;
  }

  async #list(): Promise<string> {
    const list = await this.#client.get<List<Pod>>(this.#path());
    this.#pods = new Map(list.items.map((p) => [p.metadata.name, p]));
    this.#wake();
    this.#pick();
    this.#checkGone();
    return list.metadata.resourceVersion;
  }

  async #loop(initialRv: string): Promise<void> {
    let rv = initialRv;
    let backoff = 250;
    while (!this.#abort.signal.aborted) {
      try {
        for await (const ev of this.#client.watch<Pod>(this.#path(), rv, this.#abort.signal)) {
          backoff = 250;
          if (ev.type === "ERROR") {
            const status = ev.object as unknown as { code?: number };
            if (status.code === 410) {
              throw new KubeApiError(410, "Gone", "resource version too old");
            }
            continue;
          }
          if (ev.object.metadata?.resourceVersion) rv = ev.object.metadata.resourceVersion;
          if (ev.type === "BOOKMARK") continue;
          if (ev.type === "DELETED") this.#pods.delete(ev.object.metadata.name);
          else this.#pods.set(ev.object.metadata.name, ev.object);
          this.#pick();
          this.#wake();
          this.#checkGone(ev.object.metadata.name);
        }
      } catch (e) {
        if (this.#abort.signal.aborted) return;
        if (e instanceof KubeApiError && e.status === 410) {
          try {
            rv = await this.#list();
            continue;
          } catch (e2) {
            this.#opts.log?.(`re-listing pods failed: ${(e2 as Error).message}`);
          }
        } else {
          this.#opts.log?.(`pod watch interrupted: ${(e as Error).message}`);
        }
      }
      if (this.#abort.signal.aborted) return;
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 5000);
      // After a long disconnect the resourceVersion may be gone; a fresh list is cheap and safe.
      try {
        rv = await this.#list();
      } catch (e) {
        this.#opts.log?.(`re-listing pods failed: ${(e as Error).message}`);
      }
    }
  }
}

/** One `whenGone` callback: the pod IP it was opened to. */
interface GoneWatcher {
  ip: string;
  onGone: () => void;
}

/** One spelling per IP (an IPv6 address can be written several ways). */
function canonicalIp(ip: string): string {
  return formatAddress(parseAddress(ip));
}

function readySince(p: Pod): string {
  return p.status?.conditions?.find((c) => c.type === "Ready")?.lastTransitionTime ?? "";
}

/** Oldest-ready first (a stable choice), then by name. */
function byReadySince(a: Pod, b: Pod): number {
  return readySince(a).localeCompare(readySince(b)) ||
    a.metadata.name.localeCompare(b.metadata.name);
}
