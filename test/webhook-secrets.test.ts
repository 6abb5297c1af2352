/**
 * Webhook signing secrets and custom header values never appear in the server's logs (at debug
 * level, through create, list, update, rotation, failing and dead-lettered deliveries, and
 * delete), in list responses, or in the tidings.webhook.* events the server publishes.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createJsonLogger } from "../server/logging/logger.js";
import { startReceiver } from "./helpers/receiver.js";
import { callJson, eventually, memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

const lines: string[] = [];
let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ start: { logger: createJsonLogger("debug", (line) => lines.push(line)) } });
});
afterAll(async () => {
  await t?.close();
});

const secret = `whsec_${Buffer.from("a-signing-secret-of-32-bytes-xyz").toString("base64")}`;
const headerValue = "Bearer header-value-that-must-stay-private";
const rotated = `whsec_${Buffer.from("another-signing-secret-32-bytes!").toString("base64")}`;

describe("webhook secrets and custom headers", () => {
  it("stay out of logs, list responses and the server's own events", async () => {
    const rx = await startReceiver(() => ({ status: 500 })); // failing: retries and a dead letter get logged
    try {
      const api = t.webhooks();
      const { webhook } = await api.createWebhook({
        webhook: { url: rx.url, patterns: ["memory.created"], secret, headers: { authorization: headerValue }, retryPolicy: { maxAttempts: 2, schedule: [durationFromMs(50)] } },
      });
      expect(webhook!.secret).toBe(secret); // shown once, to its creator
      expect((await callJson(t.url, "Publish", { event: memoryCreated("secret-test") })).status).toBe(200);
      await rx.waitFor(2);
      expect(rx.requests[0]!.headers.authorization).toBe(headerValue); // sent, of course
      await eventually(async () => {
        const ds = await api.listDeliveries({ webhookId: webhook!.id });
        return ds.deliveries.length === 1 && ds.deliveries[0]!.attempts === 2 && ds.deliveries[0]!.lastStatusCode === 500 ? true : undefined;
      }, 10_000, "the delivery dead-lettered");
      await api.updateWebhook({ webhook: { id: webhook!.id, description: "changed" }, updateMask: { paths: ["description"] } });
      await api.rotateWebhookSecret({ id: webhook!.id, secret: rotated });

      const listed = await api.listWebhooks({});
      const mine = listed.webhooks.find((w) => w.id === webhook!.id)!;
      expect(mine.secret).toBe("");
      expect(mine.headers.authorization).toBe("<redacted>");
      const listedText = JSON.stringify(listed, (_k, v) => (typeof v === "bigint" ? String(v) : v));
      for (const s of [secret, rotated, headerValue]) expect(listedText).not.toContain(s);

      const systemEvents = await callJson(t.url, "ListEvents", { patterns: ["tidings.**"], pageSize: 100 });
      expect(systemEvents.status).toBe(200);
      expect(systemEvents.body.events.length).toBeGreaterThan(0);
      for (const s of [secret, rotated, headerValue]) expect(JSON.stringify(systemEvents.body)).not.toContain(s);

      await api.deleteWebhook({ id: webhook!.id });
      expect(lines.length).toBeGreaterThan(0);
      const logs = lines.join("");
      for (const s of [secret, rotated, headerValue, "a-signing-secret", "header-value-that-must"]) expect(logs).not.toContain(s);
    } finally {
      await rx.close();
    }
  });
});
