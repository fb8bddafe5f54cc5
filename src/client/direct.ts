/**
 * Direct mode (`--direct`, or automatic without the right to create the agent Job): no agent;
 * each local TCP connection is one apiserver port-forward to the target pod itself, as
 * `kubectl port-forward` does. The kubelet dials the pod's own localhost, so servers that
 * listen only on 127.0.0.1 inside the pod answer, and NetworkPolicy does not apply.
 *
 * The port-forward WebSocket (`v4.channel.k8s.io`) cannot half-close: after the local client's
 * EOF the stream stays open while the pod still answers, and is closed once the pod has sent
 * nothing for LINGER_MS (or when it ends it).
 *
 * @module
 */

import type { OpenedStream } from "../forward/listener.ts";
import type { KubeClient } from "../kube/client.ts";
import { openPortForward } from "../kube/portforward.ts";
import type { Destination, ResolvedTarget } from "../kube/resolve.ts";
import type { Transport } from "../mux/mod.ts";
import type { PortSpec } from "../spec/ports.ts";
import type { ForwardRequest } from "../spec/request.ts";
import { MAX_OPEN_ATTEMPTS } from "./opener.ts";
import type { Log } from "./options.ts";
import { type EarlyStream, RetryingStream } from "./retrying_stream.ts";

/** A port-forward that shows no error for this long counts as connected. */
const CONFIRM_MS = 500;
/** After the local EOF, the port-forward is closed once the pod has been quiet for this long. */
export const LINGER_MS = 5000;

/** Why these requests cannot go direct (the message for the user), or undefined if they can. */
export function directProblem(requests: ForwardRequest[]): string | undefined {
  for (const r of requests) {
    if (r.target.kind === "host" || r.target.kind === "ip") {
      return `${r.target.kind}/ targets need the agent: --direct reaches pods, workloads and Services with a selector`;
    }
    const udp = r.ports.find((p) => p.protocol === "udp");
    if (udp) {
      return `UDP needs the agent (${udp.text}): --direct forwards TCP only, as kubectl port-forward does`;
    }
  }
  return undefined;
}

/**
 * One port-forward as a relayed stream. It reads ahead, so `opened` settles by itself: it
 * resolves with the pod's first bytes, a clean end, or CONFIRM_MS without an error, and rejects
 * with the port-forward's error (say, the pod refused the port).
 */
export class PortForwardStream implements EarlyStream {
  readonly opened: Promise<void>;
  #transport: Transport;
  #chunks: Uint8Array[] = [];
  #ended = false;
  #error: unknown;
  #waiter: (() => void) | undefined;
  #quietSince = Date.now();
  #linger: ReturnType<typeof setInterval> | undefined;
  #confirm!: () => void;
  #refuse!: (e: unknown) => void;

  #lingerMs: number;

  /** `opts` are for tests: CONFIRM_MS and LINGER_MS otherwise. */
  constructor(transport: Transport, opts: { confirmMs?: number; lingerMs?: number } = {}) {
    this.#transport = transport;
    this.#lingerMs = opts.lingerMs ?? LINGER_MS;
    this.opened = new Promise<void>((resolve, reject) => {
      this.#confirm = resolve;
      this.#refuse = reject;
    });
    const timer = setTimeout(() => this.#confirm(), opts.confirmMs ?? CONFIRM_MS);
    const clear = () => clearTimeout(timer);
    this.opened.then(clear, clear);
    this.#pump();
  }

  async #pump(): Promise<void> {
    try {
      for (;;) {
        const chunk = await this.#transport.read();
        if (chunk === null) break;
        this.#quietSince = Date.now();
        this.#chunks.push(chunk);
        this.#confirm();
        this.#wake();
      }
      this.#ended = true;
      this.#confirm();
    } catch (e) {
      this.#error = e;
      this.#refuse(e);
    }
    clearInterval(this.#linger);
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  async read(): Promise<Uint8Array | null> {
    for (;;) {
      const chunk = this.#chunks.shift();
      if (chunk) return chunk;
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((r) => (this.#waiter = r));
    }
  }

  async write(data: Uint8Array): Promise<void> {
    if (this.#error !== undefined) throw this.#error;
    await this.#transport.write(data);
  }

  closeWrite(): Promise<void> {
    if (this.#linger === undefined && !this.#ended && this.#error === undefined) {
      this.#quietSince = Date.now();
      this.#linger = setInterval(() => {
        if (Date.now() - this.#quietSince >= this.#lingerMs) this.reset("local side done");
      }, Math.min(250, this.#lingerMs));
    }
    return Promise.resolve();
  }

  reset(_reason: string): void {
    clearInterval(this.#linger);
    this.#transport.close();
  }
}

/** Opens a direct stream for one new local connection to a target's port. */
export type DirectOpener = (
  target: ResolvedTarget,
  namespace: string,
  spec: PortSpec,
) => Promise<OpenedStream>;

/**
 * The opener of direct mode: a port-forward to the chosen pod of the target for each connection.
 * A port-forward that fails (the pod went away, or refused before answering) is reported to the
 * target and the connection moves to another ready pod, its first bytes replayed (at most
 * MAX_OPEN_ATTEMPTS tries in all).
 */
export function directOpener(client: KubeClient, log: Log): DirectOpener {
  return async (target, namespace, spec) => {
    let attempt = 0;
    let dest: Destination | undefined;
    const open = async (): Promise<EarlyStream> => {
      for (;;) {
        attempt++;
        dest = await target.destination(spec);
        const where = `${namespace}/${dest.pod}:${dest.port}`;
        log(2, `port-forward to pod ${where}`);
        try {
          return new PortForwardStream(
            await openPortForward(client, namespace, dest.pod!, dest.port, 30_000),
          );
        } catch (e) {
          if (attempt >= MAX_OPEN_ATTEMPTS) throw e;
          log(2, `port-forward to ${where} failed (${(e as Error).message}); trying again`);
          target.reportFailure(dest);
        }
      }
    };
    const first = await open();
    return new RetryingStream(first, async (e) => {
      if (attempt >= MAX_OPEN_ATTEMPTS || !dest) throw e;
      log(2, `port-forward to pod ${dest.pod} failed (${(e as Error).message}); trying again`);
      target.reportFailure(dest);
      return await open();
    });
  };
}
