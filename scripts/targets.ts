/** Release targets: Deno's target triple, our platform name, and the archive's binary name. */
export interface ReleaseTarget {
  triple: string;
  os: "linux" | "darwin" | "windows";
  arch: "amd64" | "arm64";
}

/** Every platform we ship a binary for. */
export const TARGETS: ReleaseTarget[] = [
  { triple: "x86_64-unknown-linux-gnu", os: "linux", arch: "amd64" },
  { triple: "aarch64-unknown-linux-gnu", os: "linux", arch: "arm64" },
  { triple: "x86_64-apple-darwin", os: "darwin", arch: "amd64" },
  { triple: "aarch64-apple-darwin", os: "darwin", arch: "arm64" },
  { triple: "x86_64-pc-windows-msvc", os: "windows", arch: "amd64" },
];

/** `kubectl-relay` or `kubectl-relay.exe`. */
export function binaryName(t: ReleaseTarget, base = "kubectl-relay"): string {
  return t.os === "windows" ? `${base}.exe` : base;
}
