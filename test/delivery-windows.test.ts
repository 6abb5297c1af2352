/**
 * Deliveries routed and leased to a node are recorded as one window row per routing statement,
 * and each delivery's own row is written once (migration 0014, server/webhooks/delivery-windows.ts):
 * already succeeded at its first success; leased while in flight once it has gone
 * deliveryUnwrittenMs without an outcome, or when the node stops; never for a webhook that is
 * gone. A node killed mid-window is in test/faults/dispatcher-killed.test.ts. PostgreSQL only:
 * the tests watch the tables from a session of their own.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { DeliveryStatus } from "../sdk/index.js";
import { silentLogger } from "../server/logging/logger.js";
import { lookupApplicationName } from "../server/storage/lookup-session.js";
import { deliveryWindowsMigration } from "../server/storage/migrations/0014-delivery-windows.js";
import { openDatabase } from "../server/storage/open-database.js";
import { createTestStorage, needsPostgres } from "./helpers/database.js";
import { startReceiver } from "./helpers/receiver.js";
import { callJson, eventually, memoryCreated, startTestServer, type TestServerOptions } from "./helpers/test-server.js";

const cleanup: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

describe.runIf(needsPostgres("delivery windows"))("delivery windows: a delivery's row written once", () => {
  /** A server on a fresh database, a session on it, and a receiver answering as `answer` says. */
  async function setUp(answer: Parameters<typeof startReceiver>[0], config: TestServerOptions["config"] = {}) {
    const t = await startTestServer({ config });
    cleanup.push(() => t.close());
    const db = new pg.Client({ connectionString: t.storage.databaseUrl });
    await db.connect();
    cleanup.push(() => db.end());
    const rx = await startReceiver(answer);
    cleanup.push(() => rx.close());
    const count = async (query: string, params: unknown[] = []) => (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${query}`, params)).rows[0]!.n;
    return { t, db, rx, count, hooks: t.webhooks() };
  }

  it("a success inserts its delivery's row already succeeded, never updates it, and the window goes with the last one", async () => {
    const { t, db, rx, count, hooks } = await setUp(() => ({ status: 200 }));
    // Every UPDATE of a delivery row, counted by a trigger of the test's own.
    await db.query(`CREATE TABLE test_delivery_updates (id text NOT NULL)`);
    await db.query(`CREATE FUNCTION test_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO test_delivery_updates VALUES (NEW.id); RETURN NEW; END $$`);
    await db.query(`CREATE TRIGGER test_count_update AFTER UPDATE ON tidings_deliveries FOR EACH ROW EXECUTE FUNCTION test_count_update()`);
    const { webhook } = await hooks.createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"] } });
    const before = t.server.deliveryStats();
    // Fewer than the node holds for one endpoint (8 requests x 4): each is leased as it is routed.
    const n = 24;
    const res = await callJson(t.url, "PublishBatch", { entries: Array.from({ length: n }, (_, i) => ({ event: memoryCreated(`once-${i}`) })) });
    expect(res.status).toBe(200);
    await rx.waitFor(n, 10_000);
    await eventually(async () => ((await count("tidings_deliveries WHERE webhook_id = $1 AND status = 2", [webhook!.id])) === n ? true : undefined), 10_000, "every success recorded");
    const stats = t.server.deliveryStats();
    expect(stats.leasedAsRouted - before.leasedAsRouted, "every delivery was leased as it was routed").toBe(n);
    expect(stats.claimed - before.claimed).toBe(0);
    expect(stats.writtenUnanswered - before.writtenUnanswered).toBe(0);
    expect(await count("test_delivery_updates"), "no delivery row was updated").toBe(0);
    expect(await count("tidings_delivery_windows"), "every window went with its last delivery").toBe(0);
    const rows = await db.query(`SELECT status, attempts, lease_token, success_node IS NOT NULL AS success_recorded, created_at <= updated_at AS ordered
      FROM tidings_deliveries WHERE webhook_id = $1`, [webhook!.id]);
    expect(new Set(rows.rows.map((r) => JSON.stringify(r)))).toEqual(new Set([JSON.stringify({ status: 2, attempts: 1, lease_token: null, success_recorded: true, ordered: true })]));
    // Each event exactly once, and the API shows each delivery with its one attempt.
    expect(new Set(rx.requests.map((r) => r.headers["webhook-id"])).size).toBe(n);
    const listed = (await hooks.listDeliveries({ webhookId: webhook!.id, pageSize: 100 })).deliveries;
    expect(listed).toHaveLength(n);
    const { attempts } = await hooks.getDelivery({ id: listed[0]!.id });
    expect(attempts.map((a) => [a.number, a.statusCode])).toEqual([[1, 200]]);
  });

  it("a delivery in flight past delivery-unwritten-ms shows as pending with its attempt under way, then succeeds once", async () => {
    const { t, rx, count, hooks } = await setUp(() => ({ status: 200, delayMs: 2_500 }), { deliveryUnwrittenMs: 300 });
    const { webhook } = await hooks.createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"] } });
    const res = await callJson(t.url, "Publish", { event: memoryCreated("slow") });
    expect(res.status).toBe(200);
    await rx.waitFor(1, 10_000);
    const requestAt = rx.requests[0]!.at;
    const pending = await eventually(async () => (await hooks.listDeliveries({ webhookId: webhook!.id })).deliveries[0], 2_000, "the delivery in flight to show");
    expect(Date.now() - requestAt, "shown while the request is still under way").toBeLessThan(2_500);
    expect(pending.status).toBe(DeliveryStatus.PENDING);
    expect(pending.attempts).toBe(1);
    expect(await count("tidings_delivery_windows"), "its window went when its row was written").toBe(0);
    expect(t.server.deliveryStats().writtenUnanswered).toBe(1);
    const done = await eventually(async () => {
      const d = (await hooks.getDelivery({ id: pending.id })).delivery;
      return d?.status === DeliveryStatus.SUCCEEDED ? d : undefined;
    }, 10_000, "the success to be recorded");
    expect(done.attempts).toBe(1);
    expect((await hooks.getDelivery({ id: pending.id })).attempts.map((a) => [a.number, a.statusCode])).toEqual([[1, 200]]);
    expect(rx.requests).toHaveLength(1);
  });

  it("a webhook deleted while its delivery is in flight gets no row back, whether the delete commits before the answer or while it is recorded", async () => {
    // No row is written for the delivery in flight before its answer (deliveryUnwrittenMs is long).
    const { t, db, rx, count, hooks } = await setUp(() => ({ status: 200, delayMs: 700 }), { deliveryUnwrittenMs: 60_000 });
    // Deleted before the answer: the success finds no webhook and inserts nothing.
    const { webhook: first } = await hooks.createWebhook({ webhook: { url: `${rx.url}?w=first`, patterns: ["memory.created"] } });
    expect((await callJson(t.url, "Publish", { event: memoryCreated("deleted-before") })).status).toBe(200);
    await rx.waitFor(1, 10_000);
    // In flight with no row of its own: the stats count it from its window.
    expect(await count("tidings_deliveries")).toBe(0);
    expect((await hooks.getWebhookStats({ id: first!.id })).pending).toBe(1n);
    expect((await t.admin().getStats({})).queueSize).toBe(1n);
    await hooks.deleteWebhook({ id: first!.id });
    await eventually(async () => ((await count("tidings_delivery_windows")) === 0 ? true : undefined), 10_000, "the window to close with the answer");
    expect(await count("tidings_deliveries WHERE webhook_id = $1", [first!.id])).toBe(0);

    // Deleted while the success is recorded: DeleteWebhook's transaction, held open after it
    // deleted the webhook's row, makes the success statement wait for it (FOR KEY SHARE); once
    // it commits, the success inserts nothing.
    const { webhook: second } = await hooks.createWebhook({ webhook: { url: `${rx.url}?w=second`, patterns: ["memory.created"] } });
    expect((await callJson(t.url, "Publish", { event: memoryCreated("deleted-during") })).status).toBe(200);
    await rx.waitFor(2, 10_000);
    const deleting = new pg.Client({ connectionString: t.storage.databaseUrl });
    await deleting.connect();
    cleanup.push(() => deleting.end());
    await deleting.query("BEGIN");
    await deleting.query("DELETE FROM tidings_webhooks WHERE id = $1", [second!.id]);
    await eventually(async () => {
      const waiting = await db.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND application_name = $1`, [lookupApplicationName]);
      return waiting.rows.length > 0 || undefined;
    }, 10_000, "the success statement to wait for the delete");
    await deleting.query("DELETE FROM tidings_deliveries WHERE webhook_id = $1", [second!.id]);
    await deleting.query("COMMIT");
    await eventually(async () => ((await count("tidings_delivery_windows")) === 0 ? true : undefined), 10_000, "the window to close");
    expect(await count("tidings_deliveries WHERE webhook_id = $1", [second!.id])).toBe(0);

    // The node goes on: a webhook that stays gets its delivery recorded.
    const { webhook: kept } = await hooks.createWebhook({ webhook: { url: `${rx.url}?w=kept`, patterns: ["memory.created"] } });
    expect((await callJson(t.url, "Publish", { event: memoryCreated("kept") })).status).toBe(200);
    await eventually(async () => ((await count("tidings_deliveries WHERE webhook_id = $1 AND status = 2", [kept!.id])) === 1 ? true : undefined), 10_000, "the kept webhook's success");
  });

  it("VACUUMs the windows' table after every 1,000 windows it deleted, so their space is used again", async () => {
    const { t, db, rx, count, hooks } = await setUp(() => ({ status: 200 }));
    await hooks.createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"] } });
    const vacuumed = async () => (await db.query("SELECT vacuum_count::int AS n FROM pg_stat_user_tables WHERE relname = 'tidings_delivery_windows'")).rows[0].n as number;
    expect(await vacuumed()).toBe(0);
    // One Publish at a time: each is routed in its own statement, in a window of its own.
    const n = 1_100;
    for (let i = 0; i < n; i++) expect((await callJson(t.url, "Publish", { event: memoryCreated(`vacuum-${i}`) })).status).toBe(200);
    await eventually(async () => ((await count("tidings_deliveries WHERE status = 2")) === n ? true : undefined), 20_000, "every success recorded");
    expect(t.server.deliveryStats().routedInCommit, "most were routed in their append's statement").toBeGreaterThan(n / 2);
    await eventually(async () => ((await vacuumed()) >= 1 ? true : undefined), 10_000, "a VACUUM of the windows' table");
  });

  it("migrating down writes open windows as the leased rows they stand for, skipping rows that exist and webhooks that are gone", async () => {
    const { t, db, rx, count, hooks } = await setUp(() => ({ status: 200 }));
    const { webhook } = await hooks.createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"] } });
    const res = await callJson(t.url, "PublishBatch", { entries: [0, 1].map((i) => ({ event: memoryCreated(`down-${i}`) })) });
    expect(res.status).toBe(200);
    await eventually(async () => ((await count("tidings_deliveries WHERE status = 2")) === 2 ? true : undefined), 10_000, "both successes recorded");
    await t.stop();
    const [first, second] = res.body.results as Array<{ id: string; sequence: string }>;
    const existing = (await db.query<{ id: string }>("SELECT id FROM tidings_deliveries WHERE event_id = $1", [first!.id])).rows[0]!.id;
    // A window as a node that died would leave it: one delivery with a row already, one
    // without, and one to a webhook that is gone.
    await db.query(`INSERT INTO tidings_delivery_windows (id, lease_owner, lease_token, lease_expires_at, delivery_ids, webhook_ids, event_sequences)
      VALUES ('win_down', 'gone-node', 'tok', now() + interval '1 minute', $1, $2, $3)`,
      [[existing, "dlv_down_new", "dlv_down_orphan"], [webhook!.id, webhook!.id, "wh_deleted"], [first!.sequence, second!.sequence, second!.sequence]]);
    const handle = await openDatabase({ databaseUrl: t.storage.databaseUrl, dataDir: t.storage.dataDir, poolSize: 2, logger: silentLogger });
    cleanup.push(() => handle.close());
    await deliveryWindowsMigration.down!(handle.db as Kysely<unknown>);
    const rows = await db.query(`SELECT id, status, attempts, lease_owner, lease_token, event_id FROM tidings_deliveries WHERE id LIKE 'dlv_down_%' OR id = $1 ORDER BY id`, [existing]);
    expect(rows.rows).toEqual([
      { id: "dlv_down_new", status: 1, attempts: 1, lease_owner: "gone-node", lease_token: "tok", event_id: second!.id },
      { id: existing, status: 2, attempts: 1, lease_owner: null, lease_token: null, event_id: first!.id },
    ].sort((a, b) => (a.id < b.id ? -1 : 1)));
    expect((await db.query("SELECT to_regclass('tidings_delivery_windows') AS t")).rows[0].t).toBeNull();
    await deliveryWindowsMigration.up(handle.db as Kysely<unknown>);
    expect(await count("tidings_delivery_windows")).toBe(0);
  });

  it("a node stopped with deliveries in flight writes their rows leased; restarted, it takes them over when the leases run out", async () => {
    const storage = await createTestStorage();
    cleanup.push(() => storage.drop());
    let healthy = false;
    const rx = await startReceiver(() => (healthy ? { status: 200 } : { hang: true }));
    cleanup.push(() => rx.close());
    const config = { nodeId: "stopping", deliveryUnwrittenMs: 60_000, deliveryLeaseMarginMs: 300, shutdownGraceMs: 200 };
    const t = await startTestServer({ storage, config });
    cleanup.push(() => t.stop());
    const { webhook } = await t.webhooks().createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"], timeout: durationFromMs(1_000) } });
    const n = 3;
    const res = await callJson(t.url, "PublishBatch", { entries: Array.from({ length: n }, (_, i) => ({ event: memoryCreated(`stop-${i}`) })) });
    expect(res.status).toBe(200);
    await rx.waitFor(n, 10_000);
    await t.stop(); // the requests hang past the grace period: abandoned, their rows written leased
    const db = new pg.Client({ connectionString: storage.databaseUrl });
    await db.connect();
    cleanup.push(() => db.end());
    const rows = await db.query(`SELECT status, attempts, lease_owner FROM tidings_deliveries WHERE webhook_id = $1`, [webhook!.id]);
    expect(rows.rows).toEqual(Array.from({ length: n }, () => ({ status: 1, attempts: 1, lease_owner: "stopping" })));
    expect((await db.query("SELECT count(*)::int AS n FROM tidings_delivery_windows")).rows[0].n).toBe(0);

    healthy = true;
    await t.restart();
    const hooks = t.webhooks();
    await eventually(async () => {
      const { deliveries } = await hooks.listDeliveries({ webhookId: webhook!.id, status: DeliveryStatus.SUCCEEDED });
      return deliveries.length === n ? true : undefined;
    }, 15_000, "the deliveries taken over and sent again");
    for (const d of (await hooks.listDeliveries({ webhookId: webhook!.id })).deliveries) {
      const { attempts } = await hooks.getDelivery({ id: d.id });
      expect(attempts.map((a) => a.number)).toEqual([1, 2]);
      expect(attempts[0]!.error).toContain("lease of node stopping expired");
      expect(attempts[1]!.statusCode).toBe(200);
    }
    expect(rx.requests).toHaveLength(2 * n);
  });
});
