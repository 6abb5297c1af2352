import net from "node:net";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { DeliveryStatus, type Webhook, type WebhookSchema } from "../gen/tidings/v1/webhook_pb.js";
import type { GetDeliveryResponse } from "../gen/tidings/v1/webhook_service_pb.js";
import { startReceiver, type Receiver, type Responder } from "./helpers/receiver.js";
import { callJson, eventually, startTestServer, type TestServer } from "./helpers/test-server.js";

/**
 * Retries, backoff, Retry-After, 410 Gone, dead letters and redrive, RetryDelivery, the failure
 * policy, ReplayEvents, timeouts and connection resets — each test with its own receiver and
 * its own webhook, filtered on a unique `run` attribute so that no test sees another's events.
 */
type WebhookInit = Exclude<MessageInitShape<typeof WebhookSchema>, Webhook>;

describe("webhook retries and dead letters", () => {
  let t: TestServer;
  const cleanups: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    t = await startTestServer();
  });
  afterEach(async () => {
    while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
  });
  afterAll(async () => {
    await t?.close();
  });

  const wh = () => t.webhooks();
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const newRun = () => `run-${randomUUID()}`;
  /** A retry policy with a fast schedule (delays in ms). */
  const fast = (maxAttempts: number, ...delaysMs: number[]) => ({ maxAttempts, schedule: delaysMs.map(durationFromMs) });

  async function receiver(responder: Responder): Promise<Receiver> {
    const rx = await startReceiver(responder);
    cleanups.push(() => rx.close());
    return rx;
  }

  async function createHook(url: string, run: string, extra: Omit<WebhookInit, "url"> = {}): Promise<Webhook> {
    const { webhook } = await wh().createWebhook({ webhook: { url, patterns: ["memory.*"], attributes: { run }, ...extra } });
    expect(webhook?.id).toMatch(/^wh_/);
    cleanups.push(() => wh().deleteWebhook({ id: webhook!.id }));
    return webhook!;
  }

  let counter = 0;
  const eventOf = (run: string, type = "memory.created", time?: Date) => ({
    type,
    source: "test/webhook-retries",
    data: { memory_id: `m-${++counter}` },
    attributes: { run },
    ...(time && { time: time.toISOString() }),
  });

  async function publish(run: string, type = "memory.created", time?: Date): Promise<{ id: string; sequence: bigint }> {
    const res = await callJson(t.url, "Publish", { event: eventOf(run, type, time) });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return { id: res.body.id as string, sequence: BigInt(res.body.sequence) };
  }

  /** The webhook's first delivery, once routed. */
  const firstDelivery = (webhookId: string) =>
    eventually(async () => (await wh().listDeliveries({ webhookId })).deliveries.at(-1), 10_000, `a delivery for ${webhookId}`);

  /** Waits until the delivery has the status, then returns it with its attempts. */
  const deliveryWhen = (id: string, status: DeliveryStatus, timeoutMs = 10_000): Promise<GetDeliveryResponse> =>
    eventually(async () => {
      const d = await wh().getDelivery({ id });
      return d.delivery?.status === status ? d : undefined;
    }, timeoutMs, `delivery ${id} to be ${DeliveryStatus[status]}`);

  /** An operational event (tidings.**) of the type whose data matches. */
  const systemEvent = (type: string, match: (data: any) => boolean) =>
    eventually(async () => {
      const res = await callJson(t.url, "ListEvents", { patterns: ["tidings.**"], descending: true, pageSize: 1000 });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      return (res.body.events as any[] | undefined)?.find((e) => e.type === type && match(e.data ?? {}));
    }, 10_000, `a ${type} event`);

  const gapsOf = (rx: Receiver) => rx.requests.slice(1).map((r, i) => r.at - rx.requests[i]!.at);

  it("retries on the schedule and records every attempt", async () => {
    const run = newRun();
    const rx = await receiver((_, i) => ({ status: i < 2 ? 500 : 200, body: i < 2 ? "boom" : "ok" }));
    const hook = await createHook(rx.url, run, { retryPolicy: fast(3, 200, 400) });
    const pub = await publish(run);

    const d = await deliveryWhen((await firstDelivery(hook.id)).id, DeliveryStatus.SUCCEEDED);
    expect(d.delivery).toMatchObject({ webhookId: hook.id, eventId: pub.id, eventType: "memory.created", eventSequence: pub.sequence, attempts: 3, lastStatusCode: 200, lastError: "", replay: false });
    expect(d.attempts.map((a) => a.number)).toEqual([1, 2, 3]);
    expect(d.attempts.map((a) => a.statusCode)).toEqual([500, 500, 200]);
    expect(d.attempts.map((a) => a.error)).toEqual(["HTTP 500", "HTTP 500", ""]);
    expect(d.attempts.map((a) => a.responseExcerpt)).toEqual(["boom", "boom", "ok"]);
    for (const a of d.attempts) {
      expect(a.duration).toBeDefined();
      expect(durationMs(a.duration!)).toBeGreaterThanOrEqual(0);
      expect(a.time).toBeDefined();
    }
    const times = d.attempts.map((a) => timestampDate(a.time!).getTime());
    expect(times).toEqual([...times].sort((a, b) => a - b));

    expect(rx.requests).toHaveLength(3);
    // Every retry of a message carries the same webhook-id (Standard Webhooks).
    expect(new Set(rx.requests.map((r) => r.headers["webhook-id"]))).toEqual(new Set([pub.id]));
    const [g1, g2] = gapsOf(rx) as [number, number];
    expect(g1).toBeGreaterThanOrEqual(0.8 * 200);
    expect(g2).toBeGreaterThanOrEqual(0.8 * 400); // the second delay of the schedule, not the first again
    expect(g1).toBeLessThan(1.2 * 200 + 1500);
    expect(g2).toBeLessThan(1.2 * 400 + 1500);
  });

  it("accepts and follows an exponential backoff policy", async () => {
    const run = newRun();
    const rx = await receiver((_, i) => ({ status: i < 3 ? 500 : 200 }));
    // 100 ms, 400 ms, then 1600 ms capped at 800 ms.
    const retryPolicy = { maxAttempts: 4, baseDelay: durationFromMs(100), multiplier: 4, maxDelay: durationFromMs(800) };
    const hook = await createHook(rx.url, run, { retryPolicy });
    const got = (await wh().getWebhook({ id: hook.id })).webhook!.retryPolicy!;
    expect(got.maxAttempts).toBe(4);
    expect(got.schedule).toEqual([]);
    expect(durationMs(got.baseDelay!)).toBe(100);
    expect(got.multiplier).toBe(4);
    expect(durationMs(got.maxDelay!)).toBe(800);

    await publish(run);
    const d = await deliveryWhen((await firstDelivery(hook.id)).id, DeliveryStatus.SUCCEEDED);
    expect(d.attempts.map((a) => a.statusCode)).toEqual([500, 500, 500, 200]);
    const [g1, g2, g3] = gapsOf(rx) as [number, number, number];
    expect(g1).toBeGreaterThanOrEqual(0.8 * 100);
    expect(g2).toBeGreaterThanOrEqual(0.8 * 400);
    expect(g3).toBeGreaterThanOrEqual(0.8 * 800);
    expect(g2).toBeGreaterThan(g1);
    expect(g3).toBeGreaterThan(g2);
    expect(g3).toBeLessThan(0.8 * 1600); // max_delay caps it
  });

  it("honours Retry-After", async () => {
    const run = newRun();
    const rx = await receiver((_, i) => (i === 0 ? { status: 503, headers: { "retry-after": "1" } } : { status: 200 }));
    const hook = await createHook(rx.url, run, { retryPolicy: fast(3, 50) });
    await publish(run);
    const d = await deliveryWhen((await firstDelivery(hook.id)).id, DeliveryStatus.SUCCEEDED);
    expect(d.attempts.map((a) => a.statusCode)).toEqual([503, 200]);
    expect(rx.requests).toHaveLength(2);
    expect(gapsOf(rx)[0]).toBeGreaterThanOrEqual(950);
  });

  it("dead-letters on 410 Gone and disables the endpoint until it is re-enabled", async () => {
    const run = newRun();
    const rx = await receiver(() => ({ status: 410 }));
    const hook = await createHook(rx.url, run, { retryPolicy: fast(5, 50) });
    const pub = await publish(run);

    const first = await firstDelivery(hook.id);
    const d = await deliveryWhen(first.id, DeliveryStatus.DEAD);
    expect(d.delivery).toMatchObject({ attempts: 1, lastStatusCode: 410, eventId: pub.id });
    expect(d.attempts.map((a) => a.statusCode)).toEqual([410]);

    const disabled = (await wh().getWebhook({ id: hook.id })).webhook!;
    expect(disabled.enabled).toBe(false);
    expect(disabled.disabledReason).toContain("410");

    const off = await systemEvent("tidings.webhook.disabled", (data) => data.webhook_id === hook.id);
    expect(off.data.reason).toContain("410");
    expect(off.data.last_status_code).toBe(410);
    const dead = await systemEvent("tidings.delivery.dead_lettered", (data) => data.webhook_id === hook.id);
    expect(dead.data).toMatchObject({ delivery_id: first.id, event_id: pub.id, event_type: "memory.created", attempts: 1, last_status_code: 410 });

    // A disabled endpoint gets nothing.
    const meanwhile = await publish(run);
    await sleep(500);
    expect(rx.requests).toHaveLength(1);

    rx.respond(() => ({ status: 200 }));
    const { webhook: enabled } = await wh().updateWebhook({ webhook: { id: hook.id, enabled: true }, updateMask: { paths: ["enabled"] } });
    expect(enabled?.enabled).toBe(true);
    expect(enabled?.disabledReason).toBe("");
    expect((await wh().getWebhook({ id: hook.id })).webhook?.disabledReason).toBe("");
    // And it delivers again.
    const after = await publish(run);
    await eventually(() => rx.requests.find((r) => r.json?.id === after.id), 10_000, "the event published after re-enabling");
    // Events published while it was disabled are not sent (ReplayEvents is for those).
    await sleep(200);
    expect(rx.requests.map((r) => r.json?.id)).not.toContain(meanwhile.id);
    expect(rx.requests).toHaveLength(2);
  });

  it("dead-letters after max attempts and redrives", async () => {
    const run = newRun();
    const rx = await receiver(() => ({ status: 500 }));
    const hook = await createHook(rx.url, run, { retryPolicy: fast(2, 50) });
    const batch = await callJson(t.url, "PublishBatch", { entries: [{ event: eventOf(run, "memory.created") }, { event: eventOf(run, "memory.updated") }] });
    expect(batch.status, JSON.stringify(batch.body)).toBe(200);
    const [createdId, updatedId] = (batch.body.results as Array<{ id: string }>).map((r) => r.id) as [string, string];

    const letters = await eventually(async () => {
      const r = await wh().listDeadLetters({ webhookId: hook.id });
      return r.deliveries.length === 2 ? r.deliveries : undefined;
    }, 10_000, "two dead letters");
    for (const l of letters) expect(l).toMatchObject({ webhookId: hook.id, status: DeliveryStatus.DEAD, attempts: 2, lastStatusCode: 500, lastError: "HTTP 500" });
    expect(rx.requests).toHaveLength(4);
    const created = letters.find((l) => l.eventId === createdId)!;
    const updated = letters.find((l) => l.eventId === updatedId)!;
    expect(created.eventType).toBe("memory.created");
    expect(updated.eventType).toBe("memory.updated");

    // Filtering by event type.
    expect((await wh().listDeadLetters({ webhookId: hook.id, patterns: ["memory.updated"] })).deliveries.map((l) => l.id)).toEqual([updated.id]);
    expect((await wh().listDeadLetters({ webhookId: hook.id, patterns: ["*.created"] })).deliveries.map((l) => l.id)).toEqual([created.id]);
    expect((await wh().listDeadLetters({ webhookId: hook.id, patterns: ["memory.*"] })).deliveries).toHaveLength(2);
    expect((await wh().listDeadLetters({ webhookId: hook.id, patterns: ["dream.*"] })).deliveries).toHaveLength(0);

    const ev = await systemEvent("tidings.delivery.dead_lettered", (data) => data.delivery_id === created.id);
    expect(ev.data).toMatchObject({ webhook_id: hook.id, event_id: createdId, event_type: "memory.created", attempts: 2, last_status_code: 500, last_error: "HTTP 500", url: rx.url });
    await systemEvent("tidings.delivery.dead_lettered", (data) => data.delivery_id === updated.id);

    rx.respond(() => ({ status: 200 }));
    // Only the named delivery.
    expect((await wh().redriveDeadLetters({ webhookId: hook.id, deliveryIds: [updated.id] })).redriven).toBe(1);
    const redriven = await deliveryWhen(updated.id, DeliveryStatus.SUCCEEDED);
    expect(redriven.delivery).toMatchObject({ lastStatusCode: 200, lastError: "" });
    expect(redriven.attempts.map((a) => a.statusCode)).toEqual([500, 500, 200]);
    expect((await wh().listDeadLetters({ webhookId: hook.id })).deliveries.map((l) => l.id)).toEqual([created.id]);
    expect((await wh().getDelivery({ id: created.id })).delivery?.status).toBe(DeliveryStatus.DEAD);

    // Everything left.
    expect((await wh().redriveDeadLetters({ webhookId: hook.id })).redriven).toBe(1);
    await deliveryWhen(created.id, DeliveryStatus.SUCCEEDED);
    expect((await wh().listDeadLetters({ webhookId: hook.id })).deliveries).toHaveLength(0);
    expect((await wh().redriveDeadLetters({ webhookId: hook.id })).redriven).toBe(0);
    expect(rx.requests.slice(4).map((r) => r.json?.id).sort()).toEqual([createdId, updatedId].sort());
  });

  it("RetryDelivery sends a succeeded delivery again", async () => {
    const run = newRun();
    const rx = await receiver(() => ({ status: 200 }));
    const hook = await createHook(rx.url, run, { retryPolicy: fast(3, 50) });
    const pub = await publish(run);
    const d = await deliveryWhen((await firstDelivery(hook.id)).id, DeliveryStatus.SUCCEEDED);
    expect(rx.requests).toHaveLength(1);

    const { delivery } = await wh().retryDelivery({ id: d.delivery!.id });
    expect(delivery?.status).toBe(DeliveryStatus.PENDING);
    const [a, b] = (await rx.waitFor(2, 10_000)) as [typeof rx.requests[0], typeof rx.requests[0]];
    expect(a.headers["webhook-id"]).toBe(pub.id);
    expect(b.headers["webhook-id"]).toBe(a.headers["webhook-id"]);
    expect(b.json?.id).toBe(pub.id);
    const again = await deliveryWhen(d.delivery!.id, DeliveryStatus.SUCCEEDED);
    expect(again.attempts.map((x) => x.statusCode)).toEqual([200, 200]);
    await sleep(200);
    expect(rx.requests).toHaveLength(2);
  });

  it("disables an endpoint after max_consecutive_failures and keeps its deliveries pending", async () => {
    const run = newRun();
    const rx = await receiver(() => ({ status: 500 }));
    const hook = await createHook(rx.url, run, { retryPolicy: fast(20, 50), failurePolicy: { maxConsecutiveFailures: 3 } });
    expect(hook.failurePolicy?.maxConsecutiveFailures).toBe(3);
    // One batch, so both are routed before the endpoint can be disabled.
    const batch = await callJson(t.url, "PublishBatch", { entries: [{ event: eventOf(run) }, { event: eventOf(run) }] });
    expect(batch.status, JSON.stringify(batch.body)).toBe(200);
    const ids = (batch.body.results as Array<{ id: string }>).map((r) => r.id).sort();

    const disabled = await eventually(async () => {
      const w = (await wh().getWebhook({ id: hook.id })).webhook!;
      return w.enabled ? undefined : w;
    }, 10_000, "the webhook to be disabled");
    expect(disabled.disabledReason).toContain("3 attempts failed in a row");
    const off = await systemEvent("tidings.webhook.disabled", (data) => data.webhook_id === hook.id);
    expect(off.data).toMatchObject({ consecutive_failures: 3, last_status_code: 500 });

    await sleep(300); // requests in flight when it was disabled finish
    const sent = rx.requests.length;
    expect(sent).toBeGreaterThanOrEqual(3);
    await sleep(400); // many retry delays: nothing more is sent
    expect(rx.requests).toHaveLength(sent);
    const pending = await wh().listDeliveries({ webhookId: hook.id, status: DeliveryStatus.PENDING });
    expect(pending.deliveries.map((d) => d.eventId).sort()).toEqual(ids);
    expect((await wh().listDeliveries({ webhookId: hook.id })).deliveries).toHaveLength(2);
    expect((await wh().getWebhookStats({ id: hook.id })).consecutiveFailures).toBeGreaterThanOrEqual(3);

    // Enabling resets the failure count: still failing, it takes 3 more failures to disable it again.
    const reenable = () => wh().updateWebhook({ webhook: { id: hook.id, enabled: true }, updateMask: { paths: ["enabled"] } });
    const again = await reenable();
    expect(again.webhook).toMatchObject({ enabled: true, disabledReason: "" });
    const redisabled = await eventually(async () => {
      const w = (await wh().getWebhook({ id: hook.id })).webhook!;
      return w.enabled ? undefined : w;
    }, 10_000, "the webhook to be disabled again");
    expect(redisabled.disabledReason).toContain("3 attempts failed in a row");
    expect(rx.requests.length - sent).toBeGreaterThanOrEqual(3);
    await sleep(300);
    const sent2 = rx.requests.length;
    expect((await wh().listDeliveries({ webhookId: hook.id, status: DeliveryStatus.PENDING })).deliveries).toHaveLength(2);

    rx.respond(() => ({ status: 200 }));
    const { webhook } = await reenable();
    expect(webhook).toMatchObject({ enabled: true, disabledReason: "" });
    await eventually(async () => {
      const ok = await wh().listDeliveries({ webhookId: hook.id, status: DeliveryStatus.SUCCEEDED });
      return ok.deliveries.length === 2 ? ok : undefined;
    }, 10_000, "both deliveries to succeed");
    expect(rx.requests.slice(sent2).map((r) => r.json?.id).sort()).toEqual(ids);
    expect((await wh().getWebhookStats({ id: hook.id })).consecutiveFailures).toBe(0);
  });

  it("ReplayEvents sends a sequence or time range, with or without the filters", async () => {
    const run = newRun();
    const base = new Date(Date.UTC(2021, 0, 1, 0, 0, 0));
    const at = (s: number) => new Date(base.getTime() + s * 1000);
    const events = [];
    for (let i = 0; i < 5; i++) events.push(await publish(run, "memory.created", at(i)));
    const excluded = await publish(run, "memory.updated", at(5)); // not matched by the webhook's pattern

    const rx = await receiver(() => ({ status: 200 }));
    const hook = await createHook(rx.url, run, { patterns: ["memory.created"], retryPolicy: fast(3, 50) });
    await sleep(300);
    expect(rx.requests).toHaveLength(0); // created after the events

    const bySeq = await wh().replayEvents({ webhookId: hook.id, range: { case: "sequenceRange", value: { first: events[0]!.sequence, last: events[4]!.sequence } } });
    expect(bySeq.scheduled).toBe(5);
    await rx.waitFor(5, 10_000);
    expect(rx.requests.map((r) => r.json?.id).sort()).toEqual(events.map((e) => e.id).sort());
    const listed = await eventually(async () => {
      const l = (await wh().listDeliveries({ webhookId: hook.id })).deliveries;
      return l.length === 5 && l.every((d) => d.status === DeliveryStatus.SUCCEEDED) ? l : undefined;
    }, 10_000, "five replayed deliveries to succeed");
    expect(listed.every((d) => d.replay)).toBe(true);

    // Events 1 and 2 (times base+1s, base+2s): start inclusive, end exclusive.
    const byTime = await wh().replayEvents({
      webhookId: hook.id,
      range: { case: "timeRange", value: { startTime: timestampFromDate(at(1)), endTime: timestampFromDate(at(3)) } },
    });
    expect(byTime.scheduled).toBe(2);
    await rx.waitFor(7, 10_000);
    expect(rx.requests.slice(5).map((r) => r.json?.id).sort()).toEqual([events[1]!.id, events[2]!.id].sort());

    // The memory.updated event: filtered out, unless the filters are ignored.
    const only = { case: "sequenceRange" as const, value: { first: excluded.sequence, last: excluded.sequence } };
    expect((await wh().replayEvents({ webhookId: hook.id, range: only })).scheduled).toBe(0);
    expect((await wh().replayEvents({ webhookId: hook.id, range: only, ignoreFilters: true })).scheduled).toBe(1);
    const [, , , , , , , last] = await rx.waitFor(8, 10_000);
    expect(last?.json).toMatchObject({ id: excluded.id, type: "memory.updated" });

    const all = await eventually(async () => {
      const l = (await wh().listDeliveries({ webhookId: hook.id })).deliveries;
      return l.length === 8 && l.every((d) => d.status === DeliveryStatus.SUCCEEDED) ? l : undefined;
    }, 10_000, "eight replayed deliveries to succeed");
    expect(all.every((d) => d.replay)).toBe(true);
    await sleep(200);
    expect(rx.requests).toHaveLength(8);
  });

  it("records answers whose bodies hold NUL bytes, which PostgreSQL text cannot store", async () => {
    const run = newRun();
    const rx = await receiver((_, i) => (i === 0 ? { status: 500, body: "bad\u0000news\u0000" } : { status: 200, body: "ok\u0000" }));
    const hook = await createHook(rx.url, run, { retryPolicy: fast(3, 50) });
    await publish(run);
    const d = await deliveryWhen((await firstDelivery(hook.id)).id, DeliveryStatus.SUCCEEDED);
    // The first answer was recorded as a failure and retried once, not sent again and again.
    expect(d.attempts.map((a) => [a.statusCode, a.responseExcerpt])).toEqual([[500, "bad\uFFFDnews\uFFFD"], [200, "ok\uFFFD"]]);
    expect(rx.requests).toHaveLength(2);
  });

  it("records a timed-out attempt with status 0, then retries", async () => {
    const run = newRun();
    const rx = await receiver((_, i) => (i === 0 ? { status: 200, delayMs: 2000 } : { status: 200 }));
    const hook = await createHook(rx.url, run, { timeout: durationFromMs(300), retryPolicy: fast(3, 50) });
    expect(durationMs(hook.timeout!)).toBe(300);
    await publish(run);
    const d = await deliveryWhen((await firstDelivery(hook.id)).id, DeliveryStatus.SUCCEEDED);
    expect(d.attempts).toHaveLength(2);
    const [first, second] = d.attempts as [typeof d.attempts[0], typeof d.attempts[0]];
    expect(first.statusCode).toBe(0);
    expect(first.error).toMatch(/timed out/);
    expect(durationMs(first.duration!)).toBeGreaterThanOrEqual(250);
    expect(durationMs(first.duration!)).toBeLessThan(1500);
    expect(second).toMatchObject({ number: 2, statusCode: 200, error: "" });
    expect(rx.requests).toHaveLength(2);
  });

  it("records reset connections with status 0, retries and dead-letters them", async () => {
    const run = newRun();
    let connections = 0;
    const sockets = new Set<net.Socket>();
    const server = net.createServer((s) => {
      connections++;
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => sockets.delete(s));
      s.once("data", () => s.resetAndDestroy()); // RST once the request arrives
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanups.push(() => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(r));
    });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    const hook = await createHook(url, run, { retryPolicy: fast(3, 50) });
    const pub = await publish(run);

    const first = await firstDelivery(hook.id);
    const d = await deliveryWhen(first.id, DeliveryStatus.DEAD);
    expect(d.delivery).toMatchObject({ attempts: 3, lastStatusCode: 0, eventId: pub.id });
    expect(d.delivery?.lastError).not.toBe("");
    expect(d.attempts.map((a) => a.number)).toEqual([1, 2, 3]);
    for (const a of d.attempts) {
      expect(a.statusCode).toBe(0);
      expect(a.error).toMatch(/ECONNRESET|other side closed|socket/i);
    }
    expect(connections).toBeGreaterThanOrEqual(3);
    expect((await wh().listDeadLetters({ webhookId: hook.id })).deliveries.map((l) => l.id)).toEqual([first.id]);
    const ev = await systemEvent("tidings.delivery.dead_lettered", (data) => data.delivery_id === first.id);
    expect(ev.data).toMatchObject({ webhook_id: hook.id, attempts: 3 });
  });
});
