/**
 * A minimal Kubernetes REST client for the test harness (JSON over fetch, admin client cert).
 *
 * @module
 */

/** An HTTP error from the apiserver. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly body: string, what: string) {
    super(`${what}: HTTP ${status}: ${body.slice(0, 500)}`);
  }
}

/** Talks to one apiserver with a client certificate. Call {@link KubeClient.close} when done. */
export class KubeClient {
  readonly #client: Deno.HttpClient;

  constructor(readonly server: string, ca: string, cert: string, key: string) {
    this.#client = Deno.createHttpClient({ caCerts: [ca], cert, key });
  }

  /** Send a request; returns the parsed JSON body, or throws {@link ApiError} on non-2xx. */
  async request(
    method: string,
    path: string,
    body?: unknown,
    timeoutMs = 10000,
  ): Promise<Record<string, unknown>> {
    const res = await fetch(`${this.server}${path}`, {
      method,
      client: this.#client,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    if (!res.ok) throw new ApiError(res.status, text, `${method} ${path}`);
    try {
      return JSON.parse(text);
    } catch {
      return { text };
    }
  }

  /** GET; resolves to null on 404. */
  async get(path: string): Promise<Record<string, unknown> | null> {
    try {
      return await this.request("GET", path);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }
  }

  /** POST `obj`; on 409 (exists) PUT it instead when `replace`, else keep the existing one. */
  async create(path: string, obj: Record<string, unknown>, replace = false): Promise<void> {
    try {
      await this.request("POST", path, obj);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 409) throw e;
      if (replace) {
        const meta = obj.metadata as { name: string };
        await this.request("PUT", `${path}/${meta.name}`, obj);
      }
    }
  }

  /** Release the HTTP client. */
  close(): void {
    this.#client.close();
  }
}
