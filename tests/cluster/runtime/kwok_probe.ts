/**
 * Asks kwok itself whether it already knows a pod's `PortForward`. kwok learns PortForward
 * objects through an informer, which lags (seconds after an apiserver restart): a pod marked
 * Ready before that would fail its first port-forwards with "no forward found". So the runtime
 * opens a WebSocket port-forward (`v4.channel.k8s.io`) straight to kwok's kubelet-like server
 * and only reports Ready once kwok answers without that error.
 *
 * @module
 */

/** Result of one probe. */
export type ProbeResult = "found" | "missing" | "unreachable";

/**
 * One probe of `ws://host:port/portForward/<ns>/<pod>?port=<p>` (the kubelet API spells it `port`). kwok looks the forward up as
 * soon as the streams exist and writes the error on the error channel (1) right away; no error
 * within `quietMs` means the forward was found (and the target dialled).
 */
export function probeKwokForward(
  kwok: { hostname: string; port: number },
  namespace: string,
  pod: string,
  port: number,
  quietMs = 250,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const url = `ws://${kwok.hostname}:${kwok.port}/portForward/${encodeURIComponent(namespace)}/${
      encodeURIComponent(pod)
    }?port=${port}`;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, ["v4.channel.k8s.io"]);
    } catch {
      resolve("unreachable");
      return;
    }
    ws.binaryType = "arraybuffer";
    let done = false;
    let closed = false;
    let result: ProbeResult = "unreachable";
    let timer: ReturnType<typeof setTimeout> | undefined;
    let closeTimer: ReturnType<typeof setTimeout> | undefined;
    const settle = () => {
      clearTimeout(closeTimer);
      resolve(result);
    };
    // Resolve once the socket is closed (at most 1 s later): no WebSocket outlives the probe.
    const finish = (r: ProbeResult) => {
      if (done) return;
      done = true;
      result = r;
      clearTimeout(timer);
      if (closed) return settle();
      closeTimer = setTimeout(settle, 1000);
      try {
        ws.close();
      } catch {
        // closing
      }
    };
    const errText: string[] = [];
    ws.onopen = () => {
      timer = setTimeout(() => finish("found"), quietMs);
    };
    ws.onmessage = (ev) => {
      if (!(ev.data instanceof ArrayBuffer)) return;
      const b = new Uint8Array(ev.data);
      if (b.length === 0 || b[0] !== 1) return;
      // Error channel: the first message is the 2-byte port, then the error text.
      const text = new TextDecoder().decode(b.subarray(1));
      if (b.length <= 3 && errText.length === 0) {
        errText.push("");
        return;
      }
      finish(/no forward found|not found/i.test(text) ? "missing" : "found");
    };
    ws.onerror = () => finish("unreachable");
    ws.onclose = () => {
      closed = true;
      if (done) settle();
      else finish(errText.length ? "found" : "unreachable");
    };
  });
}

/**
 * Probe until kwok knows the forward (true) or `timeoutMs` passes or `cancelled()` (false).
 * "unreachable" counts as not known yet.
 */
export async function waitKwokForward(
  kwok: { hostname: string; port: number },
  namespace: string,
  pod: string,
  port: number,
  timeoutMs = 15000,
  cancelled: () => boolean = () => false,
): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (cancelled()) return false;
    if ((await probeKwokForward(kwok, namespace, pod, port)) === "found") return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 200));
  }
}
