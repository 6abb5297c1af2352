import type { DescMethod } from "@bufbuild/protobuf";

/** Top-level request fields without which a method of the API refuses the request. */
const requiredRequestFields: Record<string, readonly string[]> = {
  Publish: ["event"],
  PublishBatch: ["entries"],
  GetEvent: ["id"],
  GetEventType: ["name"],
  CreateWebhook: ["webhook"],
  GetWebhook: ["id"],
  UpdateWebhook: ["webhook", "update_mask"],
  DeleteWebhook: ["id"],
  RotateWebhookSecret: ["id"],
  TestWebhook: ["id"],
  GetDelivery: ["id"],
  RetryDelivery: ["id"],
  RedriveDeadLetters: ["webhook_id"],
  ReplayEvents: ["webhook_id"],
  GetWebhookStats: ["id"],
};

/**
 * A Connect JSON request with an empty body is not JSON, so Connect would answer with a bare
 * parser message. Answer instead with what the method needs, naming its required fields.
 */
export function emptyJsonBodyError(method: DescMethod): { code: "invalid_argument"; message: string } {
  const required = requiredRequestFields[method.name] ?? [];
  const needs = required.length > 0
    ? `; ${method.name} requires ${required.map((f) => `"${f}"`).join(", ")}`
    : "; send {} for a request with every field at its default";
  return { code: "invalid_argument", message: `the request body is empty: expected a JSON ${method.input.typeName} object${needs}` };
}
