import { FLAG_HELP } from "./flags.ts";

/** The text of `kubectl relay --help`. */
export function helpText(): string {
  const flags = FLAG_HELP.map(([f, d]) => `    ${f.padEnd(28)} ${d}`).join("\n");
  return `Forward one or more local ports to a pod, service, workload, IP or hostname, over TCP or UDP.

 Like kubectl port-forward, but connections are dialled by an agent inside the cluster, so UDP
 works, hostnames resolve with cluster DNS, and forwarding to a service or workload survives
 rolling updates.

Examples:
  kubectl relay svc/my-service 8080:http
  kubectl relay -n kube-system deploy/kube-dns :53@udp
  kubectl relay --address 0.0.0.0 pod/my-pod 5353:53
  kubectl relay host/redis.example.internal 6379
  kubectl relay ip/1.2.3.4 5000@tcp 6000@udp
  kubectl relay -f targets.txt
  kubectl relay --direct deploy/web 8080   # no agent: port-forward to the pod itself (TCP)
  kubectl relay proxy                      # SOCKS5 + HTTP CONNECT proxy on 127.0.0.1:1080
  kubectl relay proxy -l 127.0.0.1:0       # on a free port (printed)

Targets:
  pod/NAME (or NAME), svc/NAME, deploy/NAME, sts/NAME, rs/NAME, ds/NAME, job/NAME, host/HOSTNAME, ip/IP

Ports:
  [LOCAL_PORT:]REMOTE_PORT[@tcp|@udp]   (LOCAL_PORT empty = random; REMOTE_PORT may be a port name)

Options:
${flags}

Usage:
  kubectl relay [flags] TYPE/NAME [LOCAL_PORT:]REMOTE_PORT[@tcp|@udp] [...]
  kubectl relay [flags] -f FILE
  kubectl relay proxy [-l HOST:PORT | --address ADDR --port PORT]`;
}

/** The hint kubectl prints after an argument error. */
export const HINT = "See 'kubectl relay -h' for help and examples";
