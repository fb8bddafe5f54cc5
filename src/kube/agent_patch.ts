/**
 * `--patch` / `--patch-file`: a merge patch of the agent's Pod, as krelay takes it.
 *
 * The patch is JSON or YAML and has the Pod's shape: `metadata.namespace` (where the agent runs),
 * `metadata.labels`, `metadata.annotations`, `metadata.generateName`, and `spec` (a pod spec).
 * It is an RFC 7386 JSON merge patch (objects merge, `null` deletes, scalars and arrays replace),
 * except for the lists that Kubernetes itself merges by key (as `kubectl patch` does): containers,
 * init containers and volumes by `name`, a container's `env` by `name`, `ports` by `containerPort`
 * and `volumeMounts` by `mountPath`. So `{"spec":{"containers":[{"name":"agent","args":[…]}]}}`
 * changes the agent's arguments and keeps its image, probe and limits; krelay's container name
 * `krelay-server` (or no name) means the agent container too.
 *
 * The older shape, a bare pod spec (`{"nodeSelector": …}`), is still read, with a deprecation
 * warning: a patch whose top-level keys include none of `apiVersion`, `kind`, `metadata`, `spec`
 * is that shape (no pod spec field has one of those names); mixing the two is an error.
 *
 * @module
 */

import yaml from "npm:js-yaml@4.1.0";
import { UsageError } from "../errors.ts";
import { type Json, mergePatch } from "./merge_patch.ts";

type Obj = { [key: string]: Json };

/** A parsed `--patch`. */
export interface AgentPatch {
  /** `metadata.namespace`: where the agent runs. */
  namespace?: string;
  /** `metadata.generateName`: the prefix of the agent Job's name. */
  generateName?: string;
  /** `metadata.labels` (a value of null removes a label). */
  labels?: Record<string, string | null>;
  /** `metadata.annotations` (a value of null removes one). */
  annotations?: Record<string, string | null>;
  /** `spec`: merged into the agent's pod spec. */
  spec?: Obj;
  /** The patch was a bare pod spec (the deprecated shape). */
  legacy: boolean;
  /** Where it came from, for messages: `--patch` or `--patch-file FILE`. */
  source: string;
}

/** The line printed when the deprecated bare-pod-spec shape is used. */
export const LEGACY_PATCH_WARNING =
  'Warning: a --patch without "metadata" or "spec" is read as a bare pod spec; that form is deprecated: patch the agent Pod instead, e.g. {"spec": {"nodeSelector": {…}}}';

const POD_KEYS = new Set(["apiVersion", "kind", "metadata", "spec"]);
const METADATA_KEYS = new Set(["namespace", "labels", "annotations", "generateName"]);
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** Lists merged by a key (path of the list inside the pod spec → key), as Kubernetes does. */
const LIST_KEYS: Readonly<Record<string, string>> = {
  "containers": "name",
  "initContainers": "name",
  "volumes": "name",
  "containers[].env": "name",
  "containers[].ports": "containerPort",
  "containers[].volumeMounts": "mountPath",
  "initContainers[].env": "name",
  "initContainers[].ports": "containerPort",
  "initContainers[].volumeMounts": "mountPath",
};

/** krelay's name for its server container: a patch written for krelay means our agent. */
const KRELAY_CONTAINER = "krelay-server";

function isObject(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function stringMap(
  v: Json | undefined,
  what: string,
  source: string,
): Record<string, string | null> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw new UsageError(`${source}: ${what} must be a map of strings`);
  for (const [k, val] of Object.entries(v)) {
    if (val !== null && typeof val !== "string") {
      throw new UsageError(`${source}: ${what}.${k} must be a string (quote it in YAML)`);
    }
  }
  return v as Record<string, string | null>;
}

/** Parses the text of a patch (JSON or YAML). `source` names it in messages. */
export function parseAgentPatch(text: string, source: string): AgentPatch {
  let value: unknown;
  try {
    value = yaml.load(text);
  } catch (e) {
    const why = (e as Error).message.split("\n")[0];
    throw new UsageError(`${source} is neither valid JSON nor YAML: ${why}`);
  }
  if (value === null || value === undefined) return { legacy: false, source };
  if (!isObject(value)) {
    throw new UsageError(`${source} must be an object (a merge patch of the agent Pod)`);
  }
  const keys = Object.keys(value);
  const podKeys = keys.filter((k) => POD_KEYS.has(k));
  const others = keys.filter((k) => !POD_KEYS.has(k));
  if (podKeys.length === 0 && others.length > 0) {
    // The deprecated shape: a bare pod spec.
    return { spec: value, legacy: true, source };
  }
  if (others.length > 0) {
    throw new UsageError(
      `${source}: unknown field "${others[0]}" next to ${
        podKeys[0]
      }; a patch of the agent Pod has metadata and spec (a bare pod spec goes under "spec")`,
    );
  }
  if (value.apiVersion !== undefined && value.apiVersion !== "v1") {
    throw new UsageError(`${source}: apiVersion must be v1 (a Pod), not ${value.apiVersion}`);
  }
  if (value.kind !== undefined && value.kind !== "Pod") {
    throw new UsageError(`${source}: kind must be Pod, not ${value.kind}`);
  }
  const out: AgentPatch = { legacy: false, source };
  const meta = value.metadata;
  if (meta !== undefined && meta !== null) {
    if (!isObject(meta)) throw new UsageError(`${source}: metadata must be an object`);
    for (const k of Object.keys(meta)) {
      if (k === "name") {
        throw new UsageError(
          `${source}: metadata.name cannot be set (the agent's name is generated); use metadata.generateName for its prefix`,
        );
      }
      if (!METADATA_KEYS.has(k)) {
        throw new UsageError(
          `${source}: metadata.${k} is not supported (namespace, labels, annotations and generateName are)`,
        );
      }
    }
    if (meta.namespace !== undefined && meta.namespace !== null) {
      if (typeof meta.namespace !== "string" || !DNS_LABEL.test(meta.namespace)) {
        throw new UsageError(`${source}: metadata.namespace "${meta.namespace}" is not valid`);
      }
      out.namespace = meta.namespace;
    }
    if (meta.generateName !== undefined && meta.generateName !== null) {
      if (
        typeof meta.generateName !== "string" || !/^[a-z0-9]([-a-z0-9.]*)?$/.test(meta.generateName)
      ) {
        throw new UsageError(
          `${source}: metadata.generateName "${meta.generateName}" is not valid`,
        );
      }
      out.generateName = meta.generateName;
    }
    out.labels = stringMap(meta.labels, "metadata.labels", source);
    out.annotations = stringMap(meta.annotations, "metadata.annotations", source);
  }
  if (value.spec !== undefined && value.spec !== null) {
    if (!isObject(value.spec)) throw new UsageError(`${source}: spec must be an object`);
    out.spec = value.spec;
  }
  return out;
}

/**
 * Reads `--patch` or `--patch-file` (giving both is an error); undefined when neither is given.
 * `readFile` is injected for tests.
 */
export function readAgentPatch(
  patch: string | undefined,
  patchFile: string | undefined,
  readFile: (path: string) => string = Deno.readTextFileSync,
): AgentPatch | undefined {
  if (patch !== undefined && patchFile !== undefined) {
    throw new UsageError("give --patch or --patch-file, not both");
  }
  if (patchFile !== undefined) {
    let text: string;
    try {
      text = readFile(patchFile);
    } catch (e) {
      throw new UsageError(`cannot read ${patchFile}: ${(e as Error).message}`);
    }
    return parseAgentPatch(text, `--patch-file ${patchFile}`);
  }
  return patch === undefined ? undefined : parseAgentPatch(patch, "--patch");
}

/**
 * Where the agent runs: `--server.namespace` or the patch's `metadata.namespace` (either one
 * sets it; `default` without both). Both given and different is a contradiction: an error,
 * before anything is created.
 */
export function agentNamespaceOf(flag: string | undefined, patch: AgentPatch | undefined): string {
  const fromPatch = patch?.namespace;
  if (flag !== undefined && fromPatch !== undefined && flag !== fromPatch) {
    throw new UsageError(
      `--server.namespace "${flag}" contradicts metadata.namespace "${fromPatch}" in ${
        patch!.source
      }: the agent runs in one namespace; give it once (or the same in both)`,
    );
  }
  return flag ?? fromPatch ?? "default";
}

function keyOf(item: Obj, key: string, path: string, first: Obj | undefined): Json | undefined {
  if (path === "containers" && first) {
    // A container named as krelay's server, or not named, is our agent container.
    if (item.name === undefined || item.name === KRELAY_CONTAINER) return first.name;
  }
  return item[key];
}

function mergeList(target: Json[], patch: Json[], key: string, path: string): Json[] {
  if (!patch.every(isObject) || !target.every(isObject)) return patch;
  const out = target.map((t) => t as Obj);
  for (const item of patch as Obj[]) {
    const k = keyOf(item, key, path, out[0]);
    const at = k === undefined ? -1 : out.findIndex((t) => t[key] === k);
    if (at < 0) {
      out.push(mergeSpec(null, item, `${path}[]`) as Obj);
    } else {
      const { name: _ignored, ...rest } = item;
      const body = path === "containers" || path === "initContainers" ? rest : item;
      out[at] = mergeSpec(out[at], body, `${path}[]`) as Obj;
    }
  }
  return out;
}

/** Merges a pod spec patch: RFC 7386, except the lists in LIST_KEYS, merged by their key. */
export function mergeSpec(target: Json, patch: Json, path = ""): Json {
  if (!isObject(patch)) return patch;
  const out: Obj = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    const p = path ? `${path}.${k}` : k;
    const listKey = LIST_KEYS[p];
    if (v === null) delete out[k];
    else if (Array.isArray(v) && listKey && Array.isArray(out[k])) {
      out[k] = mergeList(out[k] as Json[], v, listKey, p);
    } else out[k] = mergeSpec(out[k] ?? null, v, p);
  }
  return out;
}

/**
 * Applies a patch to the agent Job built from manifests/agent-job.yaml: generateName on the Job,
 * labels and annotations on the Job and its pod, the spec on the pod template. The template's own
 * labels (which find the agent) stay whatever the patch says.
 */
export function applyAgentPatch(job: Obj, patch: AgentPatch): void {
  const meta = job.metadata as Obj;
  const template = (job.spec as Obj).template as Obj;
  const podMeta = (template.metadata ??= {}) as Obj;
  const ours = { ...(podMeta.labels as Obj | undefined ?? {}) };
  if (patch.generateName) meta.generateName = patch.generateName;
  for (const m of [meta, podMeta]) {
    if (patch.labels) m.labels = mergePatch(m.labels ?? {}, patch.labels);
    if (patch.annotations) m.annotations = mergePatch(m.annotations ?? {}, patch.annotations);
    m.labels = { ...(m.labels as Obj | undefined ?? {}), ...ours };
  }
  if (patch.spec) template.spec = mergeSpec(template.spec, patch.spec);
}
