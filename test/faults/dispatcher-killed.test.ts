/**
 * A webhook dispatcher killed with SIGKILL while its requests are in flight (PostgreSQL; real
 * server processes): another node started on the same database takes the work over when the
 * leases run out, re-sends every delivery once, and records the cut-off attempt as what it was.
 * Then the killed node is started again with the same arguments and environment: it re-sends
 * nothing that was already delivered, and delivers new events itself. The deliveries in flight
 * at the kill have no rows yet, only their routing window (migration 0014): the other node
 * writes them from it once its lease has run out.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { createWebhookClient, DeliveryStatus } from "../../sdk/index.js";
import { createTestStorage, needsPostgres } from "../helpers/database.js";
import { startReceiver } from "../helpers/receiver.js";
import { spawnServer } from "../helpers/server-process.js";
import { callJson, memoryCreated } from "../helpers/test-server.js";
import { reportFault } from "./report.js";

const cleanup: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

const inFlight = 5;
const afterRestart = 5;

describe.runIf(needsPostgres("a dispatcher killed mid-delivery"))("a dispatcher killed mid-delivery", () => {
  it("another node takes its work over when the leases expire; the restarted node re-sends nothing and delivers again", async () => {
    const storage = await createTestStorage();
    cleanup.push(() => storage.drop());
    const env = {
      DATABASE_URL: storage.databaseUrl!,
      TIDINGS_WEBHOOK_ALLOW_LIST: "loopback",
      TIDINGS_DELIVERY_LEASE_MARGIN_MS: "500",
      TIDINGS_DISPATCHER_POLL_INTERVAL_MS: "50",
      // Rows of deliveries in flight are written only at their outcome here, however long it takes.
      TIDINGS_DELIVERY_UNWRITTEN_MS: "600000",
    };
    let healthy = false;
    const rx = await startReceiver(() => (healthy ? { status: 200 } : { hang: true }));
    cleanup.push(() => rx.close());
    const first = await spawnServer(["--node-id", "doomed"], env);
    cleanup.push(() => first.kill("SIGKILL"));
    const { webhook } = await createWebhookClient({ baseUrl: first.url }).createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"], timeout: durationFromMs(3000) } });
    const webhookId = webhook!.id;
    const published = await callJson(first.url, "PublishBatch", { entries: Array.from({ length: inFlight }, (_, i) => ({ event: memoryCreated(`k-${i}`) })) });
    expect(published.status).toBe(200);
    const eventIds = published.body.results.map((r: { id: string }) => r.id).sort();

    await rx.waitFor(inFlight); // every request is in flight on the doomed node, unanswered
    await first.kill("SIGKILL");
    healthy = true;
    const db = new pg.Client({ connectionString: storage.databaseUrl });
    await db.connect();
    cleanup.push(() => db.end());
    const atKill = (await db.query<{ rows: number; windowed: number }>(`SELECT (SELECT count(*)::int FROM tidings_deliveries) AS rows,
      (SELECT coalesce(sum(cardinality(delivery_ids)), 0)::int FROM tidings_delivery_windows) AS windowed`)).rows[0];
    expect(atKill, "the deliveries in flight were only in their routing window").toEqual({ rows: 0, windowed: inFlight });

    // Another node on the same database. Leases are 3 s + 0.5 s from the claim; after that it re-sends every delivery.
    const second = await spawnServer(["--node-id", "survivor"], env);
    cleanup.push(() => second.kill("SIGKILL"));
    const client = createWebhookClient({ baseUrl: second.url });
    const succeeded = async () => (await client.listDeliveries({ webhookId, status: DeliveryStatus.SUCCEEDED })).deliveries.length;
    const deadline = Date.now() + 20_000;
    while ((await succeeded()) < inFlight && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const lostAfterTakeover = inFlight - (await succeeded());

    const resent = rx.requests.slice(inFlight).map((r) => r.json.id).sort();
    expect(lostAfterTakeover, "deliveries not succeeded 20 s after the kill").toBe(0);
    expect(resent).toEqual(eventIds);
    const { deliveries } = await client.listDeliveries({ webhookId });
    expect(deliveries).toHaveLength(inFlight);
    for (const d of deliveries) {
      const { attempts } = await client.getDelivery({ id: d.id });
      expect(attempts.map((a) => a.number)).toEqual([1, 2]);
      expect(attempts[0]!.error).toContain("lease of node doomed expired");
      expect(attempts[1]!.statusCode).toBe(200);
    }

    // The killed node again, alone, started the way it was: it sees the work done and sends none of it again.
    expect(await second.kill("SIGTERM")).toBe(0);
    const restarted = await spawnServer(["--node-id", "doomed"], env);
    cleanup.push(() => restarted.kill("SIGKILL"));
    const again = await callJson(restarted.url, "PublishBatch", { entries: Array.from({ length: afterRestart }, (_, i) => ({ event: memoryCreated(`r-${i}`) })) });
    expect(again.status).toBe(200);
    const newIds = again.body.results.map((r: { id: string }) => r.id).sort();
    await rx.waitFor(2 * inFlight + afterRestart);
    await new Promise((r) => setTimeout(r, 500)); // anything sent twice would arrive by now (ten poll intervals)
    expect(rx.requests.slice(2 * inFlight).map((r) => r.json.id).sort()).toEqual(newIds);
    const restartedClient = createWebhookClient({ baseUrl: restarted.url });
    const all = (await restartedClient.listDeliveries({ webhookId, pageSize: 100 })).deliveries;
    expect(all).toHaveLength(inFlight + afterRestart);
    const notSucceeded = all.filter((d) => d.status !== DeliveryStatus.SUCCEEDED).length;
    for (const d of all.filter((d) => newIds.includes(d.eventId))) {
      const { attempts } = await restartedClient.getDelivery({ id: d.id });
      expect(attempts.map((a) => [a.number, a.statusCode])).toEqual([[1, 200]]);
    }
    reportFault({
      scenario: "a dispatcher killed mid-delivery",
      load: `${inFlight} deliveries in flight to a hanging receiver, then ${afterRestart} more after the restart`,
      faults: "SIGKILL of the dispatcher node mid-delivery; another node on the same database; the killed node restarted",
      lost: notSucceeded,
      notes: `lost counts deliveries not succeeded, of ${all.length}; the other node re-sent all ${inFlight} once the leases expired (attempt 1 recorded as the expired lease, attempt 2 succeeded); the restarted node re-sent none and delivered ${afterRestart} new`,
    });
    expect(notSucceeded).toBe(0);
    process.stdout.write(`\ndispatcher killed: SIGKILL with ${inFlight} deliveries in flight; another node re-sent each once after the leases expired, both attempts recorded; the killed node, restarted, sent nothing twice and delivered ${afterRestart} new events\n`);
  });
});
