/**
 * Certificates and keys for the test control plane, made with the `openssl` CLI.
 *
 * Everything is ECDSA P-256 (fast to generate). One CA signs the apiserver's serving certificate
 * and all client certificates; the service-account signing key is a separate EC key.
 *
 * @module
 */

/** Paths of the files written by {@link generatePki}. */
export interface Pki {
  caCert: string;
  caKey: string;
  apiserverCert: string;
  apiserverKey: string;
  saKey: string;
  saPub: string;
}

/** A client certificate and its key (PEM file paths). */
export interface ClientCert {
  cert: string;
  key: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `openssl ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/**
 * Write a CA, the apiserver serving certificate (SANs: 127.0.0.1, ::1, localhost, the
 * `kubernetes` service names and `serviceIP`), and a service-account key pair into `dir`.
 */
export async function generatePki(dir: string, serviceIP: string): Promise<Pki> {
  await Deno.mkdir(dir, { recursive: true });
  const p = (f: string) => `${dir}/${f}`;
  await openssl([
    "req",
    "-x509",
    ...EC,
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "3650",
    "-subj",
    "/CN=kubectl-relay-test-ca",
  ], dir);
  const sans = [
    "IP:127.0.0.1",
    "IP:::1",
    `IP:${serviceIP}`,
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
  ].join(",");
  await Promise.all([
    openssl([
      "req",
      "-x509",
      ...EC,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-keyout",
      "apiserver.key",
      "-out",
      "apiserver.crt",
      "-days",
      "3650",
      "-subj",
      "/CN=kube-apiserver",
      "-addext",
      `subjectAltName=${sans}`,
      "-addext",
      "extendedKeyUsage=serverAuth",
      "-addext",
      "basicConstraints=critical,CA:FALSE",
    ], dir),
    openssl(
      ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key"],
      dir,
    ).then(() => openssl(["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"], dir)),
  ]);
  return {
    caCert: p("ca.crt"),
    caKey: p("ca.key"),
    apiserverCert: p("apiserver.crt"),
    apiserverKey: p("apiserver.key"),
    saKey: p("sa.key"),
    saPub: p("sa.pub"),
  };
}

/**
 * Issue a client certificate signed by the CA in `dir` (`ca.crt`/`ca.key`), with subject
 * CN=`user` and one O= per group (Kubernetes maps O to groups). Files: `<file>.crt`, `<file>.key`.
 */
export async function issueClientCert(
  dir: string,
  file: string,
  user: string,
  groups: string[] = [],
): Promise<ClientCert> {
  const subj = groups.map((g) => `/O=${g}`).join("") + `/CN=${user}`;
  await openssl([
    "req",
    "-x509",
    ...EC,
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-keyout",
    `${file}.key`,
    "-out",
    `${file}.crt`,
    "-days",
    "3650",
    "-subj",
    subj,
    "-addext",
    "extendedKeyUsage=clientAuth",
    "-addext",
    "basicConstraints=critical,CA:FALSE",
  ], dir);
  return { cert: `${dir}/${file}.crt`, key: `${dir}/${file}.key` };
}
