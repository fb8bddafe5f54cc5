import type { KubeAccess } from "./config.ts";

/** A Kubernetes `Status` failure returned by the apiserver. */
export class KubeApiError extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string, message: string) {
    super(message);
    this.name = "KubeApiError";
    this.status = status;
    this.reason = reason;
  }
  /** kubectl's rendering: `Error from server (NotFound): pods "x" not found`. */
  get display(): string {
    return `Error from server (${this.reason || this.status}): ${this.message}`;
  }
}

/** The apiserver could not be reached at all (refused, TLS failure, timeout). */
export class KubeConnectionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KubeConnectionError";
  }
}

/** One event of a watch stream. */
export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

const REASONS: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  409: "AlreadyExists",
  410: "Gone",
  422: "Invalid",
  429: "TooManyRequests",
  500: "InternalError",
  503: "ServiceUnavailable",
};

/** Minimal REST + watch client over Deno's fetch, authenticated from a kubeconfig. */
export class KubeClient {
  readonly access: KubeAccess;
  constructor(access: KubeAccess) {
    this.access = access;
  }

  /** Sends one request and returns the decoded JSON body; throws KubeApiError on a non-2xx answer. */
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    opts: { contentType?: string; signal?: AbortSignal; timeoutMs?: number } = {},
  ): Promise<T> {
    let res = await this.fetch(method, path, body, opts);
    if (res.status === 401 && await this.access.refresh().catch(() => false)) {
      // An expired exec-plugin or OIDC token: fetch a new one and try once more.
      await res.body?.cancel();
      res = await this.fetch(method, path, body, opts);
    }
    const text = await res.text();
    if (!res.ok) throw apiError(res.status, text);
    return (text ? JSON.parse(text) : {}) as T;
  }

  /** GET a path. */
  get<T>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  /** GET a path whose answer is text (e.g. a pod's log); throws KubeApiError on a non-2xx answer. */
  async getText(path: string): Promise<string> {
    const opts = { accept: "text/plain, */*" };
    let res = await this.fetch("GET", path, undefined, opts);
    if (res.status === 401 && await this.access.refresh().catch(() => false)) {
      await res.body?.cancel();
      res = await this.fetch("GET", path, undefined, opts);
    }
    const text = await res.text();
    if (!res.ok) throw apiError(res.status, text);
    return text;
  }

  /** POST an object to a collection path. */
  create<T>(path: string, obj: unknown): Promise<T> {
    return this.request<T>("POST", path, obj);
  }

  /** DELETE with background propagation; a missing object is not an error. */
  async delete(path: string): Promise<void> {
    try {
      await this.request("DELETE", path, {
        kind: "DeleteOptions",
        apiVersion: "v1",
        propagationPolicy: "Background",
      });
    } catch (e) {
      if (e instanceof KubeApiError && e.status === 404) return;
      throw e;
    }
  }

  /**
   * Streams watch events for a collection path from `resourceVersion`.
   * Ends when the server closes the stream or `signal` aborts.
   */
  async *watch<T>(
    path: string,
    resourceVersion: string,
    signal: AbortSignal,
  ): AsyncGenerator<WatchEvent<T>> {
    const sep = path.includes("?") ? "&" : "?";
    const url = `${path}${sep}watch=1&allowWatchBookmarks=true&resourceVersion=${
      encodeURIComponent(resourceVersion)
    }`;
    const res = await this.fetch("GET", url, undefined, { signal, timeoutMs: 0 });
    if (!res.ok) throw apiError(res.status, await res.text());
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value;
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) yield JSON.parse(line) as WatchEvent<T>;
        }
      }
    } finally {
      reader.releaseLock();
      await res.body?.cancel().catch(() => {});
    }
  }

  private async fetch(
    method: string,
    path: string,
    body: unknown,
    opts: { contentType?: string; signal?: AbortSignal; timeoutMs?: number; accept?: string },
  ): Promise<Response> {
    const headers = await this.access.headers();
    headers.set("Accept", opts.accept ?? "application/json");
    if (body !== undefined) headers.set("Content-Type", opts.contentType ?? "application/json");
    const timeout = opts.timeoutMs ?? this.access.requestTimeoutMs;
    const signals = [opts.signal, timeout > 0 ? AbortSignal.timeout(timeout) : undefined].filter(
      (s): s is AbortSignal => s !== undefined,
    );
    try {
      return await fetch(`${this.access.server}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        client: this.access.httpClient,
        signal: signals.length ? AbortSignal.any(signals) : undefined,
      });
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      throw new KubeConnectionError(
        `Unable to connect to the server: ${describeFetchError(e)}`,
      );
    }
  }
}

/** Turns a failed fetch into a short, kubectl-like cause. */
export function describeFetchError(e: unknown): string {
  const err = e as Error & { cause?: Error };
  if (err?.name === "TimeoutError") return "request timed out";
  const text = `${err?.message ?? e}${err?.cause ? `: ${err.cause.message}` : ""}`;
  if (/Connection refused/i.test(text)) return "connection refused";
  if (/UnknownIssuer|certificate/i.test(text)) {
    return `tls: failed to verify certificate (${text.split("\n")[0]})`;
  }
  return text.split("\n")[0];
}

function apiError(status: number, text: string): KubeApiError {
  try {
    const s = JSON.parse(text) as { message?: string; reason?: string };
    return new KubeApiError(status, s.reason ?? REASONS[status] ?? "", s.message ?? text);
  } catch {
    const reason = REASONS[status] ?? "";
    const msg = status === 401
      ? "the server has asked for the client to provide credentials"
      : text.trim();
    return new KubeApiError(status, reason, msg || `status ${status}`);
  }
}
