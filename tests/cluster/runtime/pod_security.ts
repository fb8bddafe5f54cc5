/**
 * The identity a kubelet gives a container process, from the pod's and the container's
 * `securityContext`: uid/gid (`runAsUser`/`runAsGroup`, else the image's USER), supplementary
 * groups (`supplementalGroups`, `fsGroup`), `runAsNonRoot`, `allowPrivilegeEscalation: false`
 * (no_new_privs) and the capability bounding set (containerd's default set, then `add`/`drop`).
 * Turned into `setpriv` arguments for the process that execs the container.
 *
 * @module
 */

import type { V1Pod } from "./kube.ts";

type V1Container = NonNullable<V1Pod["spec"]>["containers"][number];

/** The user an image runs as when the pod does not say (Dockerfile `USER uid:gid`). */
export interface ImageUser {
  uid: number;
  gid: number;
}

/** The agent image's user (Dockerfile.agent: `USER 65532:65532`, distroless `nonroot`). */
export const AGENT_IMAGE_USER: ImageUser = { uid: 65532, gid: 65532 };

/** containerd's default capability set for containers (CRI `DefaultCapabilities`). */
export const DEFAULT_CAPABILITIES = [
  "CHOWN",
  "DAC_OVERRIDE",
  "FSETID",
  "FOWNER",
  "MKNOD",
  "NET_RAW",
  "SETGID",
  "SETUID",
  "SETFCAP",
  "SETPCAP",
  "NET_BIND_SERVICE",
  "SYS_CHROOT",
  "KILL",
  "AUDIT_WRITE",
];

/** How one container's process runs. */
export interface ProcessIdentity {
  uid: number;
  gid: number;
  /** Supplementary groups (sorted, unique). */
  groups: number[];
  /** `allowPrivilegeEscalation: false` → the no_new_privs bit. */
  noNewPrivs: boolean;
  /** Capability bounding set (names without `CAP_`, lower case). */
  capabilities: string[];
}

/** A securityContext the kubelet refuses to run (it leaves the container waiting). */
export class SecurityContextError extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

/**
 * The identity of `container` in `pod`. The container's securityContext wins over the pod's;
 * without `runAsUser` the image's user is used; without `runAsGroup` the image's group if the
 * uid is the image's user, else 0 (containerd's lookup of a uid the image's /etc/passwd does not
 * know). Throws {@link SecurityContextError} where a kubelet refuses to start the container
 * (`runAsNonRoot` with uid 0).
 */
export function processIdentity(
  pod: V1Pod,
  container: V1Container | undefined,
  image: ImageUser,
): ProcessIdentity {
  const psc = pod.spec?.securityContext ?? {};
  const csc = container?.securityContext ?? {};
  const uid = csc.runAsUser ?? psc.runAsUser ?? image.uid;
  const gid = csc.runAsGroup ?? psc.runAsGroup ?? (uid === image.uid ? image.gid : 0);
  const nonRoot = csc.runAsNonRoot ?? psc.runAsNonRoot ?? false;
  if (nonRoot && uid === 0) {
    const who = `pod: "${pod.metadata?.name}_${pod.metadata?.namespace}(${pod.metadata?.uid})", ` +
      `container: ${container?.name}`;
    throw new SecurityContextError(
      "CreateContainerConfigError",
      `container's runAsUser breaks non-root policy (${who})`,
    );
  }
  const groups = [...new Set([...(psc.supplementalGroups ?? []), psc.fsGroup ?? -1])]
    .filter((g) => g >= 0 && g !== gid)
    .sort((a, b) => a - b);
  const norm = (c: string) => c.toUpperCase().replace(/^CAP_/, "");
  const drop = (csc.capabilities?.drop ?? []).map(norm);
  const add = (csc.capabilities?.add ?? []).map(norm);
  let caps = drop.includes("ALL") ? [] : DEFAULT_CAPABILITIES.filter((c) => !drop.includes(c));
  caps = [...new Set([...caps, ...add.filter((c) => c !== "ALL" && !drop.includes(c))])];
  return {
    uid,
    gid,
    groups,
    noNewPrivs: csc.allowPrivilegeEscalation === false,
    capabilities: caps.map((c) => c.toLowerCase()),
  };
}

/**
 * `setpriv` arguments (before the command) that switch to `id`: real+effective uid/gid,
 * supplementary groups, no inheritable capabilities, the bounding set, no_new_privs, and
 * SIGKILL when the parent (the runtime) dies.
 */
export function setprivArgs(id: ProcessIdentity): string[] {
  return [
    "--reuid",
    String(id.uid),
    "--regid",
    String(id.gid),
    ...(id.groups.length ? ["--groups", id.groups.join(",")] : ["--clear-groups"]),
    "--inh-caps",
    "-all",
    "--bounding-set",
    ["-all", ...id.capabilities.map((c) => `+${c}`)].join(","),
    ...(id.noNewPrivs ? ["--no-new-privs"] : []),
    "--pdeathsig",
    "KILL",
  ];
}
