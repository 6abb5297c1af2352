import { afterAll, describe, expect, it } from "vitest";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { createTestStorage, needsPostgres } from "./helpers/database.js";
import { startReceiver } from "./helpers/receiver.js";
import { callJson, eventually, memoryCreated, startTestServer } from "./helpers/test-server.js";

/**
 * Several dispatcher nodes on one PostgreSQL: no attempt sent twice, routing follows changes
 * made elsewhere; and what DeleteWebhook leaves in the database, which only a direct look shows.
 * A dispatcher killed mid-delivery is a fault scenario: test/faults/dispatcher-killed.test.ts.
 */
describe.runIf(needsPostgres("webhook dispatchers on several nodes"))("webhook dispatchers on several nodes", () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it("two nodes share the work and never send the same attempt twice", async () => {
    const storage = await createTestStorage();
    cleanup.push(() => storage.drop());
    // Small per-node limits and a slow receiver, so that one node cannot do all the work alone.
    const config = { dispatcherMaxInFlightPerEndpoint: 2, nodeId: "" };
    const a = await startTestServer({ storage, config: { ...config, nodeId: "node-a" } });
    const b = await startTestServer({ storage, config: { ...config, nodeId: "node-b" } });
    cleanup.push(() => a.stop(), () => b.stop());
    const rx = await startReceiver(() => ({ status: 200, delayMs: 5 + Math.random() * 15 }));
    cleanup.push(() => rx.close());
    const { webhook } = await a.webhooks().createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"] } });

    const total = 200;
    await Promise.all(Array.from({ length: total / 20 }, (_, i) =>
      callJson((i % 2 ? a : b).url, "PublishBatch", { entries: Array.from({ length: 20 }, (_, j) => ({ event: memoryCreated(`n-${i}-${j}`) })) })));
    await rx.waitFor(total, 30_000);
    await new Promise((r) => setTimeout(r, 300)); // anything sent twice would arrive by now

    const ids = rx.requests.map((r) => r.headers["webhook-id"]);
    expect(new Set(ids).size).toBe(total);
    expect(rx.requests).toHaveLength(total);
    await withDatabase(storage.databaseUrl, async (db) => {
      // Every attempt succeeded, so each is recorded on its delivery's row (success_node), none as an attempt row.
      const failed = await db.query<{ n: string }>("SELECT count(*) AS n FROM tidings_delivery_attempts WHERE webhook_id = $1", [webhook!.id]);
      expect(Number(failed.rows[0]!.n)).toBe(0);
      const attempts = await db.query<{ node: string; n: string }>("SELECT success_node AS node, count(*) AS n FROM tidings_deliveries WHERE webhook_id = $1 AND success_node IS NOT NULL GROUP BY success_node", [webhook!.id]);
      const byNode = Object.fromEntries(attempts.rows.map((r) => [r.node, Number(r.n)]));
      expect(Object.values(byNode).reduce((x, y) => x + y, 0)).toBe(total);
      expect(Object.keys(byNode).sort()).toEqual(["node-a", "node-b"]);
      const done = await db.query<{ n: string }>("SELECT count(*) AS n FROM tidings_deliveries WHERE webhook_id = $1 AND status = 2 AND attempts = 1", [webhook!.id]);
      expect(Number(done.rows[0]!.n)).toBe(total);
    });
  });

  it("deleting a webhook deletes its deliveries and their attempts, and leaves the other webhooks' alone", async () => {
    // Attempts have no foreign key to deliveries (migration 0007): DeleteWebhook removes them
    // itself. Checked in the database, since no API shows an attempt once its webhook is gone.
    // Every delivery fails once before it succeeds, so that each has an attempt row (a failure)
    // and a success recorded on its own row (migration 0009).
    const storage = await createTestStorage();
    cleanup.push(() => storage.drop());
    const a = await startTestServer({ storage });
    cleanup.push(() => a.stop());
    const failedOnce = new Set<string>();
    const rx = await startReceiver((r) => {
      const key = `${r.path} ${String(r.headers["webhook-id"])}`;
      if (failedOnce.has(key)) return { status: 200 };
      failedOnce.add(key);
      return { status: 500 };
    });
    cleanup.push(() => rx.close());
    const hooks = a.webhooks();
    const retryPolicy = { maxAttempts: 3, schedule: [durationFromMs(50)] };
    const { webhook: gone } = await hooks.createWebhook({ webhook: { url: `${rx.url}?w=gone`, patterns: ["memory.created"], retryPolicy } });
    const { webhook: kept } = await hooks.createWebhook({ webhook: { url: `${rx.url}?w=kept`, patterns: ["memory.created"], retryPolicy } });
    const res = await callJson(a.url, "PublishBatch", { entries: Array.from({ length: 3 }, (_, i) => ({ event: memoryCreated(`delete-${i}`) })) });
    expect(res.status).toBe(200);
    await rx.waitFor(12, 10_000);
    await withDatabase(storage.databaseUrl, async (db) => {
      const counts = async (webhookId: string) => {
        const r = await db.query<{ deliveries: number; attempts: number; successes: number }>(
          `SELECT (SELECT count(*)::int FROM tidings_deliveries WHERE webhook_id = $1) AS deliveries,
                  (SELECT count(*)::int FROM tidings_delivery_attempts WHERE webhook_id = $1) AS attempts,
                  (SELECT count(*)::int FROM tidings_deliveries WHERE webhook_id = $1 AND success_started_at IS NOT NULL) AS successes`, [webhookId]);
        return r.rows[0]!;
      };
      // The successes are recorded a moment after the receiver has them.
      await eventually(async () => ((await counts(gone!.id)).successes >= 3 ? true : undefined), 5_000, "the first webhook's successes to be recorded");
      expect(await counts(gone!.id)).toEqual({ deliveries: 3, attempts: 3, successes: 3 });
      await hooks.deleteWebhook({ id: gone!.id });
      expect(await counts(gone!.id)).toEqual({ deliveries: 0, attempts: 0, successes: 0 });
      await eventually(async () => ((await counts(kept!.id)).successes >= 3 ? true : undefined), 5_000, "the second webhook's successes to be recorded");
      expect(await counts(kept!.id)).toEqual({ deliveries: 3, attempts: 3, successes: 3 });
    });
  });

  /**
   * DeleteWebhook's transaction, as the service runs it, held open after its first statement:
   * what runs beside it meets the webhook's row deleted but not yet committed. commit() runs the
   * rest (deliveries, then attempts) and commits.
   */
  async function deletingWebhook(url: string | undefined, webhookId: string) {
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    let open = true;
    const end = async () => {
      if (!open) return; // pg's end() on an ended client never resolves
      open = false;
      await db.end();
    };
    cleanup.push(end); // a test that fails before commit() must not leave the transaction open
    await db.query("BEGIN");
    await db.query("DELETE FROM tidings_webhooks WHERE id = $1", [webhookId]);
    return {
      async commit() {
        try {
          await db.query("DELETE FROM tidings_deliveries WHERE webhook_id = $1", [webhookId]);
          await db.query("DELETE FROM tidings_delivery_attempts WHERE webhook_id = $1", [webhookId]);
          await db.query("COMMIT");
        } finally {
          await end();
        }
      },
    };
  }

  const deliveriesOf = (url: string | undefined, webhookId: string) =>
    withDatabase(url, async (db) => (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM tidings_deliveries WHERE webhook_id = $1", [webhookId])).rows[0]!.n);

  /** One server on its own database, and a receiver that answers 200. */
  async function oneNode() {
    const storage = await createTestStorage();
    cleanup.push(() => storage.drop());
    const a = await startTestServer({ storage });
    cleanup.push(() => a.stop());
    const rx = await startReceiver(() => ({ status: 200 }));
    cleanup.push(() => rx.close());
    return { storage, a, rx, hooks: a.webhooks() };
  }

  // Deliveries have no foreign key to their webhook (migration 0012): these two show that
  // nothing writes a delivery for a webhook being deleted, whichever way the race goes.
  it("a replay racing DeleteWebhook waits for it, answers not_found and writes no delivery", async () => {
    const { storage, a, rx, hooks } = await oneNode();
    const { webhook } = await hooks.createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"] } });
    const res = await callJson(a.url, "PublishBatch", { entries: Array.from({ length: 3 }, (_, i) => ({ event: memoryCreated(`replay-race-${i}`) })) });
    expect(res.status).toBe(200);
    const sequences = (res.body.results as Array<{ sequence: string }>).map((r) => BigInt(r.sequence));
    await rx.waitFor(3, 10_000);

    const deleting = await deletingWebhook(storage.databaseUrl, webhook!.id);
    let settled = false;
    const replay = hooks.replayEvents({ webhookId: webhook!.id, range: { case: "sequenceRange", value: { first: sequences[0]!, last: sequences[2]! } } })
      .then(() => undefined, (err: unknown) => ConnectError.from(err))
      .finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 400));
    expect(settled, "the replay waits for the webhook's row").toBe(false);
    await deleting.commit();
    const err = await replay;
    expect(err?.code).toBe(Code.NotFound);
    expect(err?.rawMessage).toContain("webhook_id");
    expect(await deliveriesOf(storage.databaseUrl, webhook!.id)).toBe(0);
  });

  it("an event published while DeleteWebhook is under way is answered at once and routed to no deleted webhook", async () => {
    const { storage, a, rx, hooks } = await oneNode();
    const { webhook: gone } = await hooks.createWebhook({ webhook: { url: `${rx.url}?w=gone`, patterns: ["memory.created"] } });
    const { webhook: kept } = await hooks.createWebhook({ webhook: { url: `${rx.url}?w=kept`, patterns: ["memory.created"] } });
    const first = await callJson(a.url, "Publish", { event: memoryCreated("route-race-before") });
    expect(first.status).toBe(200);
    await rx.waitFor(2, 10_000); // routed in the append's statement, from what the node remembers

    const deleting = await deletingWebhook(storage.databaseUrl, gone!.id);
    // The delete holds the router's row (its trigger bumped the endpoints' version): the append
    // must not wait for it, only leave the routing to a later pass.
    const published = await Promise.race([
      callJson(a.url, "Publish", { event: memoryCreated("route-race-during") }),
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 5_000)),
    ]);
    expect(published?.status, "Publish answered while the delete is under way").toBe(200);
    await new Promise((r) => setTimeout(r, 300)); // a routing pass, waiting for the router's row meanwhile
    await deleting.commit();

    const kepts = await rx.waitFor(3, 10_000);
    const during = kepts.filter((r) => r.headers["webhook-id"] === published!.body.id);
    expect(during.map((r) => r.path)).toEqual([`${new URL(rx.url).pathname}?w=kept`]);
    await new Promise((r) => setTimeout(r, 500)); // a wrong delivery would arrive by now
    expect(rx.requests.filter((r) => r.headers["webhook-id"] === published!.body.id)).toHaveLength(1);
    expect(await deliveriesOf(storage.databaseUrl, gone!.id)).toBe(0);
    expect(await deliveriesOf(storage.databaseUrl, kept!.id)).toBe(2);
  });

  it("a node routing from remembered state sees an endpoint changed elsewhere before routing its next event", async () => {
    // Node A routes its own commits from memory and does not re-read the endpoints while its
    // routing statement finds them unchanged. The change is made straight in the database, as
    // another node's would land, but without the system event a change through the API also
    // publishes (which would make A read everything afresh anyway): the next event published on
    // A must be routed with the change.
    const storage = await createTestStorage();
    cleanup.push(() => storage.drop());
    // A long poll interval: A's passes come from its own commits only, never from a timer that
    // would read the endpoints afresh anyway.
    const a = await startTestServer({ storage, config: { nodeId: "node-a", dispatcherPollIntervalMs: 60_000 } });
    cleanup.push(() => a.stop());
    const rx = await startReceiver(() => ({ status: 200 }));
    cleanup.push(() => rx.close());
    const { webhook } = await a.webhooks().createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"] } });
    for (let i = 0; i < 3; i++) {
      const res = await callJson(a.url, "Publish", { event: memoryCreated(`before-${i}`) });
      expect(res.status).toBe(200);
      await rx.waitFor(i + 1); // one at a time: each is routed from what node A remembers
    }
    await withDatabase(storage.databaseUrl, async (db) => {
      await db.query(`UPDATE tidings_webhooks SET patterns = '["file.changed"]' WHERE id = $1`, [webhook!.id]);
    });
    const skipped = await callJson(a.url, "Publish", { event: memoryCreated("after-change") });
    expect(skipped.status).toBe(200);
    const routed = await callJson(a.url, "Publish", { event: { type: "file.changed", source: "pm", data: { file_path: "/tmp/x", change_type: "modified", size: 1 } } });
    expect(routed.status).toBe(200);
    const requests = await rx.waitFor(4, 10_000);
    await new Promise((r) => setTimeout(r, 500)); // a wrongly routed memory.created would arrive by now
    expect(rx.requests.map((r) => r.headers["webhook-id"])).not.toContain(skipped.body.id);
    expect(requests[3]!.headers["webhook-id"]).toBe(routed.body.id);
  });
});

/** Runs `use` with its own connection to the test database, closed afterwards. */
async function withDatabase<T>(url: string | undefined, use: (db: pg.Client) => Promise<T>): Promise<T> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    return await use(db);
  } finally {
    await db.end();
  }
}
