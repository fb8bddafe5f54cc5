/**
 * A fake apiserver for tests of target resolution and pod tracking: GETs of stored objects, pod
 * lists filtered by `fieldSelector=metadata.name=…` or equality `labelSelector`s, and watches that
 * see every later pod change. Paths are the ones src/kube sends.
 *
 * @module
 */

import { KubeApiError, type KubeReader, type WatchEvent } from "../../src/kube/client.ts";
import type { ContainerPort, Pod } from "../../src/kube/types.ts";

/** A pod of namespace `ns` (default "default"), Running and Ready unless told otherwise. */
export function fakePod(
  name: string,
  ip: string,
  opts: {
    labels?: Record<string, string>;
    ready?: boolean;
    readySince?: string;
    ports?: ContainerPort[];
    ns?: string;
  } = {},
): Pod {
  const ready = opts.ready ?? true;
  return {
    metadata: { name, namespace: opts.ns ?? "default", labels: opts.labels ?? {} },
    spec: { containers: [{ name: "main", ports: opts.ports ?? [] }] },
    status: {
      phase: ready ? "Running" : "Pending",
      podIP: ready ? ip : undefined,
      conditions: [{
        type: "Ready",
        status: ready ? "True" : "False",
        lastTransitionTime: opts.readySince ?? "2026-01-01T00:00:00Z",
      }],
    },
  };
}

interface Watcher {
  path: string;
  push(ev: WatchEvent<Pod>): void;
}

/** The fake apiserver. */
export class FakeKube implements KubeReader {
  /** Objects by API path (`/api/v1/namespaces/default/services/web`). */
  readonly objects = new Map<string, unknown>();
  /** Every GET path, in order. */
  readonly gets: string[] = [];
  #pods = new Map<string, Pod>();
  #watchers = new Set<Watcher>();
  #rv = 1;

  /** Stores an object under its path. */
  put(path: string, obj: unknown): this {
    this.objects.set(path, obj);
    return this;
  }

  /** Adds or replaces a pod (its GET path too); watchers see ADDED or MODIFIED. */
  setPod(pod: Pod): void {
    const key = podKey(pod);
    const type = this.#pods.has(key) ? "MODIFIED" : "ADDED";
    pod.metadata.resourceVersion = String(++this.#rv);
    this.#pods.set(key, pod);
    this.objects.set(`/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}`, pod);
    this.#notify({ type, object: pod });
  }

  /** Deletes a pod; watchers see DELETED. */
  deletePod(name: string, ns = "default"): void {
    const pod = this.#pods.get(`${ns}/${name}`);
    if (!pod) return;
    this.#pods.delete(`${ns}/${name}`);
    this.objects.delete(`/api/v1/namespaces/${ns}/pods/${name}`);
    pod.metadata.resourceVersion = String(++this.#rv);
    this.#notify({ type: "DELETED", object: pod });
  }

  get<T>(path: string): Promise<T> {
    this.gets.push(path);
    const list = /^\/api\/v1\/namespaces\/([^/]+)\/pods\?(.*)$/.exec(path);
    if (list) {
      const items = [...this.#pods.values()].filter((p) => matches(p, list[1], list[2]));
      return Promise.resolve(
        { metadata: { resourceVersion: String(this.#rv) }, items } as unknown as T,
      );
    }
    const obj = this.objects.get(path);
    if (obj === undefined) {
      const [kind, name] = path.split("/").slice(-2);
      return Promise.reject(
        new KubeApiError(404, "NotFound", `${kind} "${decodeURIComponent(name)}" not found`),
      );
    }
    return Promise.resolve(structuredClone(obj) as T);
  }

  async *watch<T>(
    path: string,
    _resourceVersion: string,
    signal: AbortSignal,
  ): AsyncGenerator<WatchEvent<T>> {
    const queue: WatchEvent<Pod>[] = [];
    let wake: (() => void) | undefined;
    const watcher: Watcher = {
      path,
      push(ev) {
        queue.push(ev);
        wake?.();
      },
    };
    this.#watchers.add(watcher);
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    try {
      while (!signal.aborted) {
        const ev = queue.shift();
        if (ev) {
          yield structuredClone(ev) as unknown as WatchEvent<T>;
          continue;
        }
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      this.#watchers.delete(watcher);
    }
  }

  #notify(ev: WatchEvent<Pod>): void {
    for (const w of this.#watchers) {
      const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\?(.*)$/.exec(w.path);
      if (m && matches(ev.object, m[1], m[2])) w.push(ev);
    }
  }
}

function podKey(p: Pod): string {
  return `${p.metadata.namespace}/${p.metadata.name}`;
}

/** Whether a pod is in namespace `ns` and matches a list query (equality selectors only). */
function matches(p: Pod, ns: string, query: string): boolean {
  if (p.metadata.namespace !== ns) return false;
  const params = new URLSearchParams(query);
  const field = params.get("fieldSelector");
  if (field !== null && field !== `metadata.name=${p.metadata.name}`) return false;
  const labels = params.get("labelSelector");
  if (labels) {
    for (const term of labels.split(",")) {
      const [k, v] = term.split("=");
      if (p.metadata.labels?.[k] !== v) return false;
    }
  }
  return true;
}
