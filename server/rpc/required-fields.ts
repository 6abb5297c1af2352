/** Top-level request fields without which a method of the API refuses the request. */
export const requiredRequestFields: Record<string, readonly string[]> = {
  Publish: ["event"],
  PublishBatch: ["entries"],
  GetEvent: ["id"],
  GetEventType: ["name"],
};
