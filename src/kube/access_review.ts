/**
 * "Can I?" questions to the apiserver (SelfSubjectAccessReview), asked before anything is created.
 *
 * @module
 */

import type { KubeClient } from "./client.ts";

/** What one review asks about (`kubectl auth can-i VERB RESOURCE[/SUBRESOURCE] -n NAMESPACE`). */
export interface ResourceAttributes {
  namespace: string;
  verb: string;
  /** API group; "" for the core group. */
  group: string;
  resource: string;
  subresource?: string;
}

/**
 * Whether the user may do it: true or false as the apiserver answers, undefined when reviews are
 * unavailable (then the real request will tell).
 */
export async function accessAllowed(
  client: KubeClient,
  attrs: ResourceAttributes,
): Promise<boolean | undefined> {
  try {
    const review = await client.create<{ status?: { allowed?: boolean } }>(
      "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
      {
        apiVersion: "authorization.k8s.io/v1",
        kind: "SelfSubjectAccessReview",
        spec: { resourceAttributes: attrs },
      },
    );
    return review.status?.allowed;
  } catch {
    return undefined;
  }
}

/** The apiserver's wording for a refusal: `forbidden: you cannot create resource "pods/portforward" …`. */
export function forbiddenMessage(attrs: ResourceAttributes): string {
  const what = attrs.subresource ? `${attrs.resource}/${attrs.subresource}` : attrs.resource;
  return `forbidden: you cannot ${attrs.verb} resource "${what}" in API group "${attrs.group}" in the namespace "${attrs.namespace}"`;
}
