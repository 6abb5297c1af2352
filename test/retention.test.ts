/**
 * Retention (server/retention/retention-sweeper.ts) on a real database: old events, finished
 * deliveries with their attempts, and dead letters go, in bounded batches; pending deliveries and
 * anything inside its window stay. Time moves by handing the sweep a later `now`.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadCatalog } from "../server/catalog/catalog.js";
import { ConfigError, loadConfig } from "../server/config/config.js";
import { EventReader } from "../server/event-log/event-reader.js";
import { AppendQueue, type NewEvent } from "../server/event-log/append-queue.js";
import { uuidV7 } from "../server/event-log/uuid-v7.js";
import { silentLogger } from "../server/logging/logger.js";
import { RetentionSweeper } from "../server/retention/retention-sweeper.js";
import { type DatabaseHandle, openDatabase } from "../server/storage/open-database.js";
import { deliveryStatus } from "../server/storage/schema.js";
import { createTestStorage, type TestStorage } from "./helpers/database.js";

let storage: TestStorage;
let database: DatabaseHandle;
const hour = 3_600_000;

beforeAll(async () => {
  storage = await createTestStorage();
  database = await openDatabase({ databaseUrl: storage.databaseUrl, dataDir: storage.dataDir, poolSize: 4, logger: silentLogger });
});
afterAll(async () => {
  await database?.close();
  await storage?.drop();
});

const event = (): NewEvent => ({
  id: uuidV7(), type: "memory.created", source: "test/retention", subject: "", time: new Date(), attributes: {},
  payload: new Uint8Array(), idChosenByPublisher: false, idempotencyKey: undefined, requestHash: undefined,
});

const count = async (table: string, where = sql`true`) =>
  Number((await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.table(table)} WHERE ${where}`.execute(database.db)).rows[0]!.n);

describe("retention", () => {
  it("leaves a hole at the start of the log that reads from before it step over", async () => {
    // EventReader.readRange bounds an unfiltered read to (after, after + limit], which is exact
    // while sequences have no gaps; retention's hole at the start is the one gap there is.
    const queue = new AppendQueue(database.db, { maxEventsPerCommit: 1000, onCommitted: () => {}, logger: silentLogger, oneStatementAppends: database.kind === "postgres" });
    await queue.append(Array.from({ length: 100 }, event));
    await queue.close();
    const seqs = (await sql<{ sequence: string }>`SELECT sequence FROM tidings_events ORDER BY sequence`.execute(database.db)).rows.map((r) => BigInt(r.sequence));
    const first = seqs[0]!;
    const head = seqs.at(-1)!;
    await sql`DELETE FROM tidings_events WHERE sequence < ${(first + 60n).toString()}`.execute(database.db);
    const reader = new EventReader(database.db, await loadCatalog());
    const read = async (after: bigint, limit: number) => (await reader.readRange(after, head, limit)).map((e) => e.sequence);
    const range = (from: bigint, n: number) => Array.from({ length: n }, (_, i) => from + BigInt(i));
    expect(await read(first - 1n, 20)).toEqual(range(first + 60n, 20)); // entirely inside the hole
    expect(await read(first + 50n, 15)).toEqual(range(first + 60n, 15)); // partly inside it
    expect(await read(first + 70n, 10)).toEqual(range(first + 71n, 10)); // past it: the bounded read
    expect(await read(head - 5n, 10)).toEqual(range(head - 4n, 5)); // near the head
    await sql`DELETE FROM tidings_events`.execute(database.db);
  });

  it("removes old events, finished deliveries with their attempts and dead letters, in batches, and keeps the rest", async () => {
    const queue = new AppendQueue(database.db, { maxEventsPerCommit: 1000, onCommitted: () => {}, logger: silentLogger, oneStatementAppends: database.kind === "postgres" });
    for (let i = 0; i < 5; i++) await queue.append(Array.from({ length: 50 }, event));
    await queue.close();
    const sequences = (await sql<{ sequence: string }>`SELECT sequence FROM tidings_events ORDER BY sequence`.execute(database.db)).rows.map((r) => r.sequence);
    // Deliveries of the first events to one endpoint: 20 succeeded, 10 dead, 5 pending, each with an attempt.
    await sql`INSERT INTO tidings_webhooks (id, url, patterns, secrets, retry_policy, timeout_ms, max_consecutive_failures, max_failing_ms, from_sequence, enabled)
      VALUES ('wh_ret', 'https://example.com/hook', '["memory.created"]', '[]', '{}', 1000, 10, 3600000, 0, false)`.execute(database.db);
    const statuses = [...Array(20).fill(deliveryStatus.succeeded), ...Array(10).fill(deliveryStatus.dead), ...Array(5).fill(deliveryStatus.pending)] as number[];
    for (const [i, status] of statuses.entries()) {
      const id = `dlv_ret_${i}`;
      await sql`INSERT INTO tidings_deliveries (id, webhook_id, event_sequence, event_id, event_type, status) VALUES (${id}, 'wh_ret', ${sequences[i]!}, ${`evt_${i}`}, 'memory.created', ${status})`.execute(database.db);
      await sql`INSERT INTO tidings_delivery_attempts (delivery_id, webhook_id, number, started_at, duration_ms, status_code) VALUES (${id}, 'wh_ret', 1, now(), 5, 200)`.execute(database.db);
    }
    expect(await count("tidings_events")).toBe(250);

    const sweeper = (windows: { eventsMs: number; deliveriesMs: number; deadLettersMs: number }) =>
      new RetentionSweeper(database.db, { ...windows, batchSize: 40 }, silentLogger);

    // Nothing is old yet: nothing goes.
    expect(await sweeper({ eventsMs: hour, deliveriesMs: hour, deadLettersMs: hour }).sweepOnce()).toEqual({ events: 0, deliveries: 0, deadLetters: 0 });
    expect(await count("tidings_events")).toBe(250);

    // Two hours later, with windows of one hour for deliveries, three for dead letters, none for events.
    const later = new Date(Date.now() + 2 * hour);
    expect(await sweeper({ eventsMs: 0, deliveriesMs: hour, deadLettersMs: 3 * hour }).sweepOnce(later)).toEqual({ events: 0, deliveries: 20, deadLetters: 0 });
    expect(await count("tidings_deliveries", sql`status = ${deliveryStatus.succeeded}`)).toBe(0);
    expect(await count("tidings_deliveries", sql`status = ${deliveryStatus.dead}`)).toBe(10);
    expect(await count("tidings_delivery_attempts")).toBe(15); // the succeeded deliveries' attempts went with them

    // A day later, every window passed: 250 events in batches of 40, the dead letters; pending deliveries stay.
    const muchLater = new Date(Date.now() + 24 * hour);
    expect(await sweeper({ eventsMs: hour, deliveriesMs: hour, deadLettersMs: hour }).sweepOnce(muchLater)).toEqual({ events: 250, deliveries: 0, deadLetters: 10 });
    expect(await count("tidings_events")).toBe(0);
    expect(await count("tidings_deliveries")).toBe(5);
    expect(await count("tidings_deliveries", sql`status = ${deliveryStatus.pending}`)).toBe(5);
    expect(await count("tidings_delivery_attempts")).toBe(5);
    // The log's head does not move back: new events continue the sequence.
    const head = await sql<{ last_sequence: string }>`SELECT last_sequence FROM tidings_log_head`.execute(database.db);
    expect(head.rows[0]!.last_sequence).toBe(sequences.at(-1));
  });

  it("stops between batches when asked (shutdown)", async () => {
    const queue = new AppendQueue(database.db, { maxEventsPerCommit: 1000, onCommitted: () => {}, logger: silentLogger, oneStatementAppends: database.kind === "postgres" });
    await queue.append(Array.from({ length: 100 }, event));
    await queue.close();
    const removed = await new RetentionSweeper(database.db, { eventsMs: hour, deliveriesMs: 0, deadLettersMs: 0, batchSize: 30 }, silentLogger)
      .sweepOnce(new Date(Date.now() + 2 * hour), () => true);
    expect(removed.events).toBe(30);
    expect(await count("tidings_events")).toBe(70);
  });

  it("the windows are settings, and a sweep interval under a second is refused", () => {
    const c = loadConfig(["--event-retention-hours", "48", "--delivery-retention-hours", "0"], {});
    expect(c.eventRetentionHours).toBe(48);
    expect(c.deliveryRetentionHours).toBe(0);
    expect(c.deadLetterRetentionHours).toBe(2160);
    expect(() => loadConfig(["--retention-interval-ms", "10"], {})).toThrow(ConfigError);
  });
});
