/**
 * GET /metrics in the Prometheus text format, scraped from a real server after real traffic:
 * publishes (one refused), a Subscribe stream, and a webhook delivered to a real receiver.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startReceiver } from "./helpers/receiver.js";
import { callJson, eventually, memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

/** The samples of a scrape: `name{labels}` → value. */
async function scrape(): Promise<{ contentType: string | null; samples: Map<string, number> }> {
  const res = await fetch(`${t.url}/metrics`);
  expect(res.status).toBe(200);
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return { contentType: res.headers.get("content-type"), samples };
}

describe("/metrics", () => {
  it("counts publishes by type and refusals by code and type, times the calls, and follows streams and webhook deliveries", async () => {
    const before = (await scrape()).samples;
    const published = (s: Map<string, number>) => s.get('tidings_events_published_total{type="memory.created"}') ?? 0;

    for (const id of ["m1", "m2", "m3"]) expect((await callJson(t.url, "Publish", { event: memoryCreated(id) })).status).toBe(200);
    expect((await callJson(t.url, "Publish", { event: { type: "memory.created" } })).status).toBe(400); // no source
    const batch = await callJson(t.url, "PublishBatch", { entries: [{ event: memoryCreated("b1") }, { event: memoryCreated("b2") }] });
    expect(batch.status).toBe(200);
    // A batch refused for one bad entry refuses (and counts) all of its events; a made-up type
    // is counted as unknown, not under its own name.
    const refusedBatch = await callJson(t.url, "PublishBatch", { entries: [{ event: memoryCreated("b3") }, { event: { type: "made.up", source: "x" } }] });
    expect(refusedBatch.status).toBe(400);

    // A batch of two types is counted under each.
    const fileChanged = (s: Map<string, number>) => s.get('tidings_events_published_total{type="file.changed"}') ?? 0;
    const mixed = await callJson(t.url, "PublishBatch", { entries: [{ event: memoryCreated("b4") }, { event: { type: "file.changed", source: "t", data: { file_path: "/x", change_type: "modified" } } }, { event: memoryCreated("b5") }] });
    expect(mixed.status).toBe(200);

    const { contentType, samples } = await scrape();
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(published(samples) - published(before)).toBe(7);
    expect(fileChanged(samples) - fileChanged(before)).toBe(1);
    expect((samples.get('tidings_publish_rejected_total{method="Publish",code="invalid_argument"}') ?? 0) - (before.get('tidings_publish_rejected_total{method="Publish",code="invalid_argument"}') ?? 0)).toBe(1);
    const rejectedEvents = (s: Map<string, number>, labels: string) => s.get(`tidings_events_rejected_total{${labels}}`) ?? 0;
    expect(rejectedEvents(samples, 'type="memory.created",code="invalid_argument"') - rejectedEvents(before, 'type="memory.created",code="invalid_argument"')).toBe(2);
    expect(rejectedEvents(samples, 'type="unknown",code="invalid_argument"') - rejectedEvents(before, 'type="unknown",code="invalid_argument"')).toBe(1);
    expect([...samples.keys()].some((k) => k.includes("made.up"))).toBe(false);
    expect((samples.get('tidings_publish_duration_seconds_count{method="Publish"}') ?? 0) - (before.get('tidings_publish_duration_seconds_count{method="Publish"}') ?? 0)).toBe(4);
    expect((samples.get('tidings_publish_duration_seconds_count{method="PublishBatch"}') ?? 0) - (before.get('tidings_publish_duration_seconds_count{method="PublishBatch"}') ?? 0)).toBe(3);
    expect(samples.get("tidings_process_resident_memory_bytes")).toBeGreaterThan(0);

    // A stream: counted while open, with its lag behind the head.
    const ac = new AbortController();
    const stream = t.client().subscribe({ patterns: ["memory.*"] }, { signal: ac.signal })[Symbol.asyncIterator]();
    await stream.next(); // the first heartbeat: the stream is open
    try {
      expect((await scrape()).samples.get("tidings_streams_active")).toBe(1);
      expect((await scrape()).samples.get('tidings_stream_lag_events{of="max"}')).toBe(0);
    } finally {
      ac.abort();
      await stream.return?.();
    }
    await eventually(async () => ((await scrape()).samples.get("tidings_streams_active") === 0 ? true : undefined), 5_000, "the stream to close");

    // A webhook: an attempt by outcome, its duration, and the deliveries in the database.
    const rx = await startReceiver(() => ({ status: 200 }));
    try {
      const { webhook } = await t.webhooks().createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"] } });
      expect((await callJson(t.url, "Publish", { event: memoryCreated("hooked") })).status).toBe(200);
      await rx.waitFor(1);
      const after = await eventually(async () => {
        const s = (await scrape()).samples;
        return (s.get('tidings_webhook_attempts_total{outcome="success"}') ?? 0) >= 1 ? s : undefined;
      }, 5_000, "a successful attempt in /metrics");
      expect(after.get('tidings_webhook_attempt_duration_seconds_count{outcome="success"}')).toBeGreaterThanOrEqual(1);
      // From the delivery's creation to its success: on a healthy loopback receiver, well under 5 s.
      expect(after.get("tidings_webhook_delivery_latency_seconds_count")).toBe(1);
      expect(after.get('tidings_webhook_delivery_latency_seconds_bucket{le="5"}')).toBe(1);
      expect(after.get("tidings_webhook_delivery_latency_seconds_sum")).toBeGreaterThan(0);
      expect(after.get('tidings_webhook_deliveries{status="succeeded"}')).toBeGreaterThanOrEqual(1);
      expect(after.get('tidings_webhook_deliveries{status="dead"}')).toBe(0);
      expect(after.has('tidings_webhook_deliveries{status="pending"}')).toBe(true);
      expect(after.get("tidings_webhook_lease_takeovers_total")).toBe(0);
      await t.webhooks().deleteWebhook({ id: webhook!.id });
    } finally {
      await rx.close();
    }
    if (t.server.databaseKind === "postgres") {
      const s = (await scrape()).samples;
      expect(s.get('tidings_db_pool_connections{state="total"}')).toBeGreaterThan(0);
      expect(s.has('tidings_db_pool_connections{state="waiting"}')).toBe(true);
    }
  });

  it("answers GET and HEAD only", async () => {
    expect((await fetch(`${t.url}/metrics`, { method: "HEAD" })).status).toBe(200);
    const post = await fetch(`${t.url}/metrics`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });
});
