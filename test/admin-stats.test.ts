/**
 * AdminService.GetStats: the bus's numbers (published, delivered, errors, active subscriptions,
 * queue size, dead letters) and one entry per open stream, after real traffic, over the SDK and
 * over plain Connect JSON.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAdminClient } from "../sdk/index.js";
import { startReceiver } from "./helpers/receiver.js";
import { eventually, memoryCreated, postJson, callJson, startTestServer, type TestServer } from "./helpers/test-server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ config: { nodeId: "stats-node" } });
});
afterAll(async () => {
  await t?.close();
});

describe("GetStats", () => {
  it("counts what this node did, reports the queue and dead letters, and lists every open stream", async () => {
    const admin = createAdminClient({ baseUrl: t.url });
    const before = await admin.getStats({});
    expect(before.nodeId).toBe("stats-node");

    const ok = await startReceiver(() => ({ status: 200 }));
    const failing = await startReceiver(() => ({ status: 500 }));
    try {
      await t.webhooks().createWebhook({ webhook: { url: ok.url, patterns: ["memory.created"] } });
      await t.webhooks().createWebhook({ webhook: { url: failing.url, patterns: ["memory.created"], retryPolicy: { maxAttempts: 2, schedule: [durationFromMs(50)] } } });
      const ac = new AbortController();
      const stream = t.client().subscribe({ patterns: ["memory.*"], attributes: { run: "stats" }, filter: "size(attributes) > 0" }, { signal: ac.signal })[Symbol.asyncIterator]();
      await stream.next(); // open
      try {
        for (const id of ["s1", "s2", "s3"]) expect((await callJson(t.url, "Publish", { event: { ...memoryCreated(id), attributes: { run: "stats" } } })).status).toBe(200);
        expect((await callJson(t.url, "Publish", { event: { type: "memory.created" } })).status).toBe(400);
        for (let i = 0; i < 3; i++) await stream.next();
        await ok.waitFor(3);
        // The counters move once their transactions have committed, a moment after the rows
        // change: wait for both (under a full test run, the dead letters were seen first).
        const stats = await eventually(async () => {
          const s = await admin.getStats({});
          const counted = [s.deliveriesSucceeded - before.deliveriesSucceeded, s.deliveryFailures - before.deliveryFailures, s.deliveriesDeadLettered - before.deliveriesDeadLettered];
          return s.deadLetters >= 3n && counted.every((n) => n >= 3n) ? s : undefined;
        }, 10_000, "three dead letters, counted");
        // Three events plus the two tidings.webhook.created events this node published.
        expect(stats.eventsPublished - before.eventsPublished).toBeGreaterThanOrEqual(5n);
        expect(stats.publishErrors - before.publishErrors).toBe(1n);
        expect(stats.deliveriesSucceeded - before.deliveriesSucceeded).toBe(3n);
        expect(stats.deliveryFailures - before.deliveryFailures).toBe(3n);
        expect(stats.deliveriesDeadLettered - before.deliveriesDeadLettered).toBe(3n);
        expect(stats.queueSize).toBe(0n);
        expect(stats.headSequence).toBeGreaterThanOrEqual(5n);
        expect(stats.activeSubscriptions).toBe(1);
        expect(stats.subscriptions).toHaveLength(1);
        const sub = stats.subscriptions[0]!;
        expect(sub.patterns).toEqual(["memory.*"]);
        expect(sub.attributes).toEqual({ run: "stats" });
        expect(sub.filter).toBe("size(attributes) > 0");
        expect(sub.eventsSent).toBe(3n);
        expect(sub.lag).toBeLessThanOrEqual(stats.headSequence);
        expect(sub.id).toMatch(/^sub_/);

        // A GET, as the README's curl line sends it.
        const viaGet = await fetch(`${t.url}/tidings.v1.AdminService/GetStats?encoding=json&message=%7B%7D`);
        expect(viaGet.status).toBe(200);
        expect(((await viaGet.json()) as { nodeId: string }).nodeId).toBe("stats-node");

        // Plain Connect JSON, as curl sends it.
        const json = await postJson(t.url, "/tidings.v1.AdminService/GetStats", {});
        expect(json.status).toBe(200);
        expect(json.body.nodeId).toBe("stats-node");
        expect(json.body.activeSubscriptions).toBe(1);
        expect(json.body.subscriptions[0].eventsSent).toBe("3");
      } finally {
        ac.abort();
        await stream.return?.();
      }
      await eventually(async () => ((await admin.getStats({})).activeSubscriptions === 0 ? true : undefined), 5_000, "the stream closed");
    } finally {
      await ok.close();
      await failing.close();
    }
  });
});
