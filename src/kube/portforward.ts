import { KubeApiError, type KubeClient } from "./client.ts";
import type { Transport } from "../mux/mod.ts";
import { noDelayToPort, noDelayWhileOpening } from "./nodelay.ts";

/** The apiserver refused or broke the pod port-forward. */
export class PortForwardError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PortForwardError";
  }
}

const DATA = 0;
const ERROR = 1;
/**
 * A write waits while more than this is queued in the WebSocket, so that what the session sends
 * next (an interactive stream's frame) does not queue behind megabytes. 1 MiB keeps the apiserver
 * connection busy between the 2 ms polls (256 KiB cost ~20% throughput in the bench; 4 MiB
 * doubled the p99 of a 1-byte echo beside a bulk transfer).
 */
const HIGH_WATER = 1024 * 1024;

/**
 * Opens the apiserver's pod port-forward (`v4.channel.k8s.io` WebSocket) to one port of a pod
 * and exposes its data channel as a byte Transport.
 *
 * Each binary message starts with a channel byte: 0 = data, 1 = error (for the first port).
 * The first two bytes the server sends on each channel are the port number (little-endian).
 */
export async function openPortForward(
  client: KubeClient,
  namespace: string,
  pod: string,
  port: number,
  timeoutMs = 30_000,
): Promise<Transport> {
  const access = client.access;
  const url = `${access.server.replace(/^http/, "ws")}/api/v1/namespaces/${
    encodeURIComponent(namespace)
  }/pods/${encodeURIComponent(pod)}/portforward?ports=${port}`;
  const headers = await access.headers();
  const server = new URL(access.server);
  const serverPort = Number(server.port) || (server.protocol === "http:" ? 80 : 443);
  // Deno opens the WebSocket's connection with Nagle on: switch it off, from the handshake on.
  const opened = noDelayWhileOpening(serverPort);
  let transport: WebSocketTransport;
  try {
    const ws = new WebSocket(url, {
      protocols: ["v4.channel.k8s.io"],
      headers,
      client: access.httpClient,
    });
    ws.binaryType = "arraybuffer";
    transport = new WebSocketTransport(ws, `${namespace}/${pod}:${port}`);
    await transport.opened(timeoutMs);
  } catch (e) {
    opened();
    // Deno reports a failed upgrade only by its last retry's error, which hides the cause
    // (a 404, 403 or 401 from the apiserver): ask the apiserver directly to explain it.
    await client.get(
      `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}`,
    )
      .catch((cause) => {
        throw cause instanceof KubeApiError ? new PortForwardError(cause.display) : e;
      });
    throw e;
  }
  opened();
  transport.coalesceWrites = noDelayToPort(serverPort) > 0;
  return transport;
}

/**
 * `coalesceWrites` is set only when the connection has TCP_NODELAY (nodelay.ts): with Nagle on,
 * deferring batches stalled bursts of datagrams by ~40 ms, and the kernel coalesces small writes
 * instead.
 */
class WebSocketTransport implements Transport {
  coalesceWrites = false;
  #ws: WebSocket;
  #what: string;
  #chunks: Uint8Array[] = [];
  #waiter: (() => void) | null = null;
  #ended = false;
  #error: string | null = null;
  #errorText = "";
  #prefixLeft = [2, 2];
  /** The channel byte and the chunk of the last write. */
  #sendBuffer = new Uint8Array(64 * 1024 + 1);
  #openPromise: Promise<void>;

  constructor(ws: WebSocket, what: string) {
    this.#ws = ws;
    this.#what = what;
    this.#openPromise = new Promise((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = (ev) => {
        const msg = (ev as ErrorEvent).message || "websocket error";
        this.#fail(`port-forward to ${what} failed: ${msg}`);
        reject(new PortForwardError(this.#error!));
      };
      ws.onclose = (ev) => {
        if (this.#errorText) this.#fail(`port-forward to ${what}: ${this.#errorText.trim()}`);
        this.#ended = true;
        this.#wake();
        reject(
          new PortForwardError(
            `port-forward to ${what} closed (code ${ev.code}) ${ev.reason}`.trim(),
          ),
        );
      };
    });
    this.#openPromise.catch(() => {});
    ws.onmessage = (ev) => this.#onMessage(ev.data);
  }

  /** Resolves once the WebSocket is open, or rejects with the server's reason. */
  async opened(timeoutMs: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new PortForwardError(`port-forward to ${this.#what}: timed out after ${timeoutMs} ms`),
        );
        this.close();
      }, timeoutMs);
    });
    try {
      await Promise.race([this.#openPromise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  #onMessage(data: unknown): void {
    if (!(data instanceof ArrayBuffer) || data.byteLength === 0) return;
    const bytes = new Uint8Array(data);
    const channel = bytes[0];
    let payload = bytes.subarray(1);
    if (channel !== DATA && channel !== ERROR) return;
    const skip = Math.min(this.#prefixLeft[channel], payload.length);
    this.#prefixLeft[channel] -= skip;
    payload = payload.subarray(skip);
    if (payload.length === 0) return;
    if (channel === ERROR) {
      this.#errorText += new TextDecoder().decode(payload);
      this.#fail(`port-forward to ${this.#what}: ${this.#errorText.trim()}`);
      this.close();
      return;
    }
    this.#chunks.push(payload);
    this.#wake();
  }

  #fail(message: string): void {
    if (this.#error === null) this.#error = message;
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  async read(): Promise<Uint8Array | null> {
    while (true) {
      const chunk = this.#chunks.shift();
      if (chunk) return chunk;
      if (this.#error !== null) throw new PortForwardError(this.#error);
      if (this.#ended) return null;
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.#error !== null) throw new PortForwardError(this.#error);
    if (this.#ended || this.#ws.readyState !== WebSocket.OPEN) {
      throw new PortForwardError(`port-forward to ${this.#what} is closed`);
    }
    // `send` copies the message at once, so one buffer serves every write (no garbage per write).
    if (this.#sendBuffer.length < chunk.length + 1) {
      this.#sendBuffer = new Uint8Array(Math.max(chunk.length + 1, this.#sendBuffer.length * 2));
    }
    this.#sendBuffer[0] = DATA;
    this.#sendBuffer.set(chunk, 1);
    this.#ws.send(this.#sendBuffer.subarray(0, chunk.length + 1));
    while (this.#ws.bufferedAmount > HIGH_WATER && this.#ws.readyState === WebSocket.OPEN) {
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  close(): void {
    if (this.#ws.readyState === WebSocket.CONNECTING || this.#ws.readyState === WebSocket.OPEN) {
      try {
        this.#ws.close();
      } catch {
        // already closing
      }
    }
    this.#ended = true;
    this.#wake();
  }
}
