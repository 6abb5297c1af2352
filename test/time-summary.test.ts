/**
 * Subscribe's start_time in a large log: EventReader.cursorBeforeTime finds the first event at
 * or after a time through the time summary (TimeSummary, migrations 0011 and 0013) instead of
 * walking the log; a time window read newest first finds the last event before its end time the
 * same way. Both must give exactly the answer of a scan over every event, with times out of log
 * order (an event's time is its publisher's), after retention deleted the start of the log, and
 * as the log grows past the blocks already summarized.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EventCatalog, loadCatalog } from "../server/catalog/catalog.js";
import { AppendQueue, type NewEvent } from "../server/event-log/append-queue.js";
import { EventReader } from "../server/event-log/event-reader.js";
import { timeBlockSize, TimeSummary } from "../server/event-log/time-summary.js";
import { timeBlocksEarliestMigration } from "../server/storage/migrations/0013-time-blocks-earliest.js";
import { uuidV7 } from "../server/event-log/uuid-v7.js";
import { RetentionSweeper } from "../server/retention/retention-sweeper.js";
import { createJsonLogger, silentLogger } from "../server/logging/logger.js";
import { type DatabaseHandle, openDatabase } from "../server/storage/open-database.js";
import { createTestStorage, type TestStorage } from "./helpers/database.js";

const minute = 60_000;
const start = Date.parse("2026-11-01T00:00:00Z");

let storage: TestStorage;
let database: DatabaseHandle;
let catalog: EventCatalog;
let queue: AppendQueue;
/** Every event appended, by sequence (index 0 is sequence 1). */
const times: number[] = [];

/** `count` events a minute apart from where the last left off; `odd(i)` moves some off the timeline. */
async function append(count: number, odd: (i: number) => number | undefined = () => undefined): Promise<void> {
  const events: NewEvent[] = [];
  for (let k = 0; k < count; k++) {
    const i = times.length;
    const t = odd(i) ?? start + i * minute;
    times.push(t);
    events.push({ id: uuidV7(), type: "memory.created", source: "test/time-summary", subject: "", time: new Date(t), attributes: {}, payload: new Uint8Array(), idChosenByPublisher: false, idempotencyKey: undefined, requestHash: undefined });
  }
  for (let i = 0; i < events.length; i += 1000) await queue.append(events.slice(i, i + 1000));
}

/** The answer by brute force: the cursor before the first remaining event at or after `t`. */
function expected(t: number, firstRemaining: number): bigint {
  for (let s = firstRemaining; s <= times.length; s++) if (times[s - 1]! >= t) return BigInt(s - 1);
  return BigInt(times.length);
}

/** By brute force: the last remaining event before `t`, undefined for none. */
function expectedLast(t: number, firstRemaining: number): bigint | undefined {
  for (let s = times.length; s >= firstRemaining; s--) if (times[s - 1]! < t) return BigInt(s);
  return undefined;
}

beforeAll(async () => {
  storage = await createTestStorage();
  database = await openDatabase({ databaseUrl: storage.databaseUrl, dataDir: storage.dataDir, poolSize: 4, logger: silentLogger });
  catalog = await loadCatalog();
  queue = new AppendQueue(database.db, { maxEventsPerCommit: 1000, onCommitted: () => {}, logger: silentLogger, oneStatementAppends: database.kind === "postgres" });
  // Three sealed blocks and part of a fourth. Event 100 was published with a time 60 days ahead
  // (block 0 then holds a match for every time up to that), every 50th a day late.
  await append(Number(timeBlockSize) * 3 + 500, (i) => (i === 99 ? start + 60 * 24 * 60 * minute : i % 50 === 0 ? start + i * minute + 24 * 60 * minute : undefined));
}, 120_000);
afterAll(async () => {
  await queue?.close();
  await database?.close();
  await storage?.drop();
});

describe("the cursor before a time, through the time summary", () => {
  // Thresholds of 0 send every lookup to the summary, as a far-back time in a large log goes.
  const reader = (timeSummary = summary) => new EventReader(database.db, catalog, { recentTimeRows: 0, smallTimeWindowRows: 0, timeSummary });
  let summary: TimeSummary;
  /** Both lookups agree with the scan at every probe: the first event at or after, the last before. */
  const agreeWithTheScan = async (firstRemaining: number, timeSummary = summary) => {
    for (const t of probes()) {
      const at = new Date(t).toISOString();
      expect(await reader(timeSummary).cursorBeforeTime(new Date(t)), at).toBe(expected(t, firstRemaining));
      // The newest event of a window that ends at t is the last one before it.
      const newest = await reader(timeSummary).page({ endTime: new Date(t), limit: 1, descending: true });
      expect(newest[0]?.sequence, `newest before ${at}`).toBe(expectedLast(t, firstRemaining));
    }
  };
  const probes = () => [
    start - minute, start, start + 1, start + 2_000 * minute, start + 4_095 * minute, start + 4_096 * minute, start + 4_097 * minute,
    start + 9_000 * minute + 30_000, start + (times.length - 10) * minute, start + (times.length + 5) * minute,
    start + 30 * 24 * 60 * minute, start + 60 * 24 * 60 * minute, start + 60 * 24 * 60 * minute + 1,
  ];

  it("gives the scan's answer, the event published far ahead included, and summarizes every sealed block", async () => {
    summary = new TimeSummary(database.db, silentLogger);
    await agreeWithTheScan(1);
    await summary.settled();
    const blocks = await sql<{ n: number }>`SELECT count(*)::int AS n FROM tidings_time_blocks`.execute(database.db);
    expect(blocks.rows[0]!.n).toBe(Math.floor((times.length + 1) / Number(timeBlockSize)));
  });

  it("summarizes the blocks sealed since, as the log grows, and still agrees with the scan", async () => {
    await append(Number(timeBlockSize) * 2);
    await agreeWithTheScan(1);
    await summary.settled();
    const blocks = await sql<{ n: number }>`SELECT count(*)::int AS n FROM tidings_time_blocks`.execute(database.db);
    expect(blocks.rows[0]!.n).toBe(Math.floor((times.length + 1) / Number(timeBlockSize)));
  });

  it("goes on past blocks whose matching events retention deleted", async () => {
    // The start of the log, the event published far ahead with it: block 0 still says it
    // holds a match for every time, and blocks 1 and part of 2 are gone too.
    const gone = Number(timeBlockSize) * 2 + 100;
    await sql`DELETE FROM tidings_events WHERE sequence <= ${gone}`.execute(database.db);
    await agreeWithTheScan(gone + 1);
  });

  it("summarizes a log that grew by more than one statement's worth in the background, and answers meanwhile", async () => {
    // The upgrade that added the earliest times (migration 0013) empties the summary: the
    // first read on a large log starts the catch-up and answers from what is there plus a
    // walk of the rest. Down and up again here, on a summary that has rows.
    expect(Number((await sql<{ n: number }>`SELECT count(*)::int AS n FROM tidings_time_blocks`.execute(database.db)).rows[0]!.n)).toBeGreaterThan(0);
    await timeBlocksEarliestMigration.down!(database.db);
    await timeBlocksEarliestMigration.up(database.db);
    // One block per statement, so that this small log takes several.
    const lines: Array<{ msg: string; blocks?: string }> = [];
    const fresh = new TimeSummary(database.db, createJsonLogger("info", (line) => lines.push(JSON.parse(line))), 1n);
    const t = start + 9_000 * minute + 30_000;
    expect(await new EventReader(database.db, catalog, { recentTimeRows: 0, timeSummary: fresh }).cursorBeforeTime(new Date(t))).toBe(expected(t, Number(timeBlockSize) * 2 + 101));
    await fresh.settled();
    // The read summarized one block itself and left the rest to the catch-up, which said so.
    expect(lines.map((l) => l.msg)).toEqual(["summarizing event times for start_time and time-window reads", "event times summarized"]);
    expect(lines[0]!.blocks).toBe(String(Math.floor((times.length + 1) / Number(timeBlockSize)) - 1));
    const blocks = await sql<{ n: number; gone: number }>`SELECT count(*)::int AS n, count(*) FILTER (WHERE max_time = '-infinity')::int AS gone FROM tidings_time_blocks`.execute(database.db);
    // Blocks 0 and 1 lost all their events: summarized as -infinity, never a candidate.
    expect(blocks.rows[0]).toEqual({ n: Math.floor((times.length + 1) / Number(timeBlockSize)), gone: 2 });
    const earliest = await sql<{ empty: number; unknown: number }>`SELECT count(*) FILTER (WHERE min_time = 'infinity')::int AS empty, count(*) FILTER (WHERE min_time = '-infinity')::int AS unknown FROM tidings_time_blocks`.execute(database.db);
    expect(earliest.rows[0]).toEqual({ empty: 2, unknown: 0 });
    await agreeWithTheScan(Number(timeBlockSize) * 2 + 101, fresh);
  });

  it("forgets, when retention removes events, the blocks it emptied, and still agrees with the scan", async () => {
    // Through the sweeper, as a server's retention runs: the events up to the middle of block 3
    // were recorded two hours ago, and events are kept for one.
    const upTo = Number(timeBlockSize) * 3 + 50;
    await sql`UPDATE tidings_events SET recorded_at = now() - interval '2 hours' WHERE sequence <= ${upTo}`.execute(database.db);
    const blocks = async () => (await sql<{ block: string }>`SELECT block::text FROM tidings_time_blocks ORDER BY block`.execute(database.db)).rows.map((r) => Number(r.block));
    const sealed = Math.floor((times.length + 1) / Number(timeBlockSize));
    expect(await blocks()).toEqual(Array.from({ length: sealed }, (_, b) => b));
    const removed = await new RetentionSweeper(database.db, { eventsMs: 3_600_000, deliveriesMs: 0, deadLettersMs: 0, batchSize: 1000 }, silentLogger, summary).sweepOnce();
    expect(removed.events).toBe(upTo - (Number(timeBlockSize) * 2 + 100));
    // Blocks 0 to 2 hold nothing now; block 3 keeps its row, as does the last.
    expect(await blocks()).toEqual(Array.from({ length: sealed - 3 }, (_, b) => b + 3));
    await agreeWithTheScan(upTo + 1);
  });
});
