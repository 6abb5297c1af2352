import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Webhook as StandardWebhook } from "standardwebhooks";
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { startReceiver, type Receiver } from "./helpers/receiver.js";
import { callJson, memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

describe("webhook smoke", () => {
  let t: TestServer;
  let rx: Receiver;
  beforeAll(async () => {
    t = await startTestServer();
    rx = await startReceiver();
  });
  afterAll(async () => {
    await t.close();
    await rx.close();
  });

  it("delivers a signed event", async () => {
    const { webhook } = await t.webhooks().createWebhook({ webhook: { url: rx.url, patterns: ["memory.*"] } });
    expect(webhook?.secret).toMatch(/^whsec_/);
    const pub = await callJson(t.url, "Publish", { event: memoryCreated("m1") });
    const [req] = await rx.waitFor(1);
    new StandardWebhook(webhook!.secret).verify(req!.body, req!.headers as Record<string, string>);
    expect(req!.json).toMatchObject({ id: pub.body.id, type: "memory.created", data: { memory_id: "m1" } });
    const list = await t.webhooks().listDeliveries({ webhookId: webhook!.id });
    expect(list.deliveries).toHaveLength(1);
  });

  it("retries then dead-letters", async () => {
    const rx2 = await startReceiver(() => ({ status: 500 }));
    const { webhook } = await t.webhooks().createWebhook({ webhook: { url: rx2.url, patterns: ["dream.*"], retryPolicy: { maxAttempts: 3, schedule: [create(DurationSchema, { nanos: 50_000_000 })] } } });
    await callJson(t.url, "Publish", { event: { type: "dream.started", source: "m", data: { session_id: "s", trigger: "t" } } });
    await rx2.waitFor(3);
    const dead = await (async () => { for (let i = 0; i < 100; i++) { const r = await t.webhooks().listDeadLetters({ webhookId: webhook!.id }); if (r.deliveries.length) return r; await new Promise((r) => setTimeout(r, 50)); } })();
    expect(dead?.deliveries[0]?.attempts).toBe(3);
    const d = await t.webhooks().getDelivery({ id: dead!.deliveries[0]!.id });
    expect(d.attempts.map((a) => a.statusCode)).toEqual([500, 500, 500]);
    await rx2.close();
  });
});
