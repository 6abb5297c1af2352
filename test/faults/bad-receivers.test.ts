/**
 * Receivers that hang, reset the connection, answer slowly, or answer bytes that are not HTTP,
 * beside a healthy one: the healthy endpoint gets every event as fast as ever, the broken ones
 * are retried on their schedule and dead-lettered after their last attempt, every attempt is
 * recorded with what went wrong, and nothing is sent after the last attempt.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DeliveryStatus } from "../../sdk/index.js";
import { type Answer, type Receiver, startReceiver } from "../helpers/receiver.js";
import { callJson, eventually, startTestServer, type TestServer } from "../helpers/test-server.js";
import { reportFault } from "./report.js";

let t: TestServer;
const receivers: Receiver[] = [];
beforeAll(async () => {
  t = await startTestServer({ config: { dispatcherMaxInFlightPerEndpoint: 4 } });
});
afterAll(async () => {
  for (const r of receivers) await r.close().catch(() => {});
  await t?.close();
});

const events = 10;
const maxAttempts = 3;

describe("receivers that misbehave", () => {
  it("never slow a healthy endpoint, are retried on schedule and dead-lettered, with every attempt recorded", async () => {
    const kinds: Array<[string, Answer]> = [
      ["healthy", { status: 200 }],
      ["hangs", { hang: true }],
      ["resets", { reset: true }],
      ["garbage", { garbage: true }],
      ["slow", { status: 200, delayMs: 150 }],
    ];
    const hooks = new Map<string, { id: string; rx: Receiver }>();
    for (const [kind, answer] of kinds) {
      const rx = await startReceiver(() => answer);
      receivers.push(rx);
      const { webhook } = await t.webhooks().createWebhook({
        webhook: { url: rx.url, patterns: ["memory.created"], attributes: { run: "bad-receivers" }, timeout: durationFromMs(400), retryPolicy: { maxAttempts, schedule: [durationFromMs(100)] } },
      });
      hooks.set(kind, { id: webhook!.id, rx });
    }
    const started = Date.now();
    const res = await callJson(t.url, "PublishBatch", { entries: Array.from({ length: events }, (_, i) => ({ event: { type: "memory.created", source: "faults", attributes: { run: "bad-receivers" }, data: { memory_id: `bad-${i}` } } })) });
    expect(res.status).toBe(200);

    // The healthy endpoint is not held up by the others.
    await hooks.get("healthy")!.rx.waitFor(events, 5_000);
    const healthyMs = Date.now() - started;
    expect(healthyMs).toBeLessThan(3_000);
    await hooks.get("slow")!.rx.waitFor(events, 10_000);

    // Every broken endpoint: each event tried maxAttempts times, then dead-lettered, with errors recorded.
    for (const kind of ["hangs", "resets", "garbage"]) {
      const { id, rx } = hooks.get(kind)!;
      const deliveries = await eventually(async () => {
        const page = await t.webhooks().listDeliveries({ webhookId: id, pageSize: 50 });
        return page.deliveries.length === events && page.deliveries.every((d) => d.status === DeliveryStatus.DEAD) ? page.deliveries : undefined;
      }, 20_000, `${kind}: every delivery dead-lettered`);
      for (const d of deliveries) {
        const { attempts } = await t.webhooks().getDelivery({ id: d.id });
        expect(attempts.map((a) => a.number), kind).toEqual([1, 2, 3]);
        for (const a of attempts) {
          expect(a.statusCode, `${kind}: ${a.error}`).toBe(0);
          expect(a.error.length, kind).toBeGreaterThan(0);
          if (kind === "hangs") expect(a.error).toContain("timed out");
        }
      }
      const seen = rx.requests.length;
      expect(seen, kind).toBe(events * maxAttempts);
      await new Promise((r) => setTimeout(r, 500));
      expect(rx.requests.length, `${kind}: nothing after the last attempt`).toBe(seen);
    }
    const healthy = await t.webhooks().listDeliveries({ webhookId: hooks.get("healthy")!.id, pageSize: 50 });
    expect(healthy.deliveries.every((d) => d.status === DeliveryStatus.SUCCEEDED && d.attempts === 1)).toBe(true);
    reportFault({ scenario: "misbehaving receivers", load: `${events} events to 5 endpoints`, faults: "receivers that hang, reset, answer garbage, answer slowly", lost: events - hooks.get("healthy")!.rx.requests.length, notes: `healthy endpoint done in ${healthyMs} ms; ${3 * events} deliveries dead-lettered after ${maxAttempts} attempts` });
    process.stdout.write(`\nbad receivers: the healthy endpoint had all ${events} events in ${healthyMs} ms beside a hanging, a resetting, a garbage-answering and a slow one; ${3 * events} deliveries to the broken ones dead-lettered after ${maxAttempts} attempts each, every attempt recorded\n`);
  });
});
