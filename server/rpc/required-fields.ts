/** Top-level request fields without which a method of the API refuses the request. */
export const requiredRequestFields: Record<string, readonly string[]> = {
  Publish: ["event"],
  PublishBatch: ["entries"],
  GetEvent: ["id"],
  GetEventType: ["name"],
  RegisterEventTypes: ["descriptor_set"],
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
