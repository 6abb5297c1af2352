/**
 * Reads with a time window (ListEvents start_time/end_time, Subscribe start_time) choose between
 * the ordered walk of the log and reading the window through the time index (EventReader's
 * #timeWindowEstimate). A read oldest first may start at the start time's first event and one
 * newest first at the end time's last (found in the time summary, or for a recent time through
 * the time index), look for its page near there first, and, if the look finds less than a page,
 * read the pattern's types through their own index between both edges. Every way must return
 * exactly the matching events. Small thresholds make every path run on a small log; the bench's
 * growth scenario shows the plans at 10M.
 */
import { type KyselyPlugin, sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EventCatalog, loadCatalog } from "../server/catalog/catalog.js";
import { AppendQueue, type NewEvent } from "../server/event-log/append-queue.js";
import { EventReader } from "../server/event-log/event-reader.js";
import { uuidV7 } from "../server/event-log/uuid-v7.js";
import { parseTypePattern } from "../server/filtering/type-pattern.js";
import { silentLogger } from "../server/logging/logger.js";
import { type DatabaseHandle, openDatabase } from "../server/storage/open-database.js";
import { createTestStorage, type TestStorage } from "./helpers/database.js";

let storage: TestStorage;
let database: DatabaseHandle;
let catalog: EventCatalog;
const day = 86_400_000;
const start = Date.parse("2026-10-01T00:00:00Z");
const types = ["memory.created", "memory.updated", "gap.detected", "file.changed"];
/** A little over three blocks of the time summary (timeBlockSize), so that reads use it. */
const total = 12_500;

beforeAll(async () => {
  storage = await createTestStorage();
  database = await openDatabase({ databaseUrl: storage.databaseUrl, dataDir: storage.dataDir, poolSize: 4, logger: silentLogger });
  catalog = await loadCatalog();
  const queue = new AppendQueue(database.db, { maxEventsPerCommit: 1000, onCommitted: () => {}, logger: silentLogger, oneStatementAppends: database.kind === "postgres" });
  // 30 days of events, in time order, except that every 7th was published with a time a day
  // late: an event's time is its publisher's, and need not follow the log.
  const events: NewEvent[] = Array.from({ length: total }, (_, i) => ({
    id: uuidV7(),
    type: types[i % types.length]!,
    source: "test/time-window",
    subject: "",
    time: new Date(start + (i * 30 * day) / total + (i % 7 === 0 ? day : 0)),
    attributes: { n: String(i) },
    payload: new Uint8Array(),
    idChosenByPublisher: false,
    idempotencyKey: undefined,
    requestHash: undefined,
  }));
  for (let i = 0; i < total; i += 500) await queue.append(events.slice(i, i + 500));
  await queue.close();
  await sql`ANALYZE tidings_events`.execute(database.db);
});
afterAll(async () => {
  await database?.close();
  await storage?.drop();
});

describe("reads with a time window", () => {
  const windows: Array<[string, Date | undefined, Date | undefined]> = [
    ["one hour", new Date(start + 10 * day), new Date(start + 10 * day + 3_600_000)],
    ["one day", new Date(start + 12 * day), new Date(start + 13 * day)],
    ["ten days", new Date(start + 10 * day), new Date(start + 20 * day)],
    // Events 2,500 and 5,000 have exactly these times: the first is in, the second out.
    ["six days, from one event's time to another's", new Date(start + 6 * day), new Date(start + 12 * day)],
    ["from a time on", new Date(start + 27 * day), undefined],
    ["up to a time", undefined, new Date(start + 2 * day)],
    ["everything", new Date(start - day), new Date(start + 40 * day)],
  ];

  /** Every way of reading a window: each path forced, and the server's defaults. */
  const readers = () => ({
    // The window's edges are found through the time summary for the walks and through the time
    // index for the index reads (recentTimeRows), so that both ways of finding them run too. A
    // look of 300 sequences finds less than a page of 257 for "memory.*" and "gap.*", which are
    // then read through their types' index between the window's edges.
    walk: new EventReader(database.db, catalog, { smallTimeWindowRows: 0, recentTimeRows: 0, probeMatchesPerPage: Infinity }),
    index: new EventReader(database.db, catalog, { smallTimeWindowRows: 1e12, recentTimeRows: 1e12, probeMatchesPerPage: Infinity }),
    "look near, then walk": new EventReader(database.db, catalog, { smallTimeWindowRows: 0, recentTimeRows: 0, probeMatchesPerPage: 0, probeSpan: 300n }),
    "look near, then index": new EventReader(database.db, catalog, { smallTimeWindowRows: 1e12, recentTimeRows: 1e12, probeMatchesPerPage: 0, probeSpan: 300n }),
    defaults: new EventReader(database.db, catalog),
  });
  const pageSize = 257;

  it.each(windows)("every way of reading returns exactly the matching events, page by page: %s", async (_name, startTime, endTime) => {
    const all = await new EventReader(database.db, catalog).page({ limit: total, descending: false });
    expect(all).toHaveLength(total);
    for (const descending of [false, true]) {
      for (const pattern of [undefined, "memory.*", "gap.*"]) {
        const patterns = pattern === undefined ? undefined : [parseTypePattern(pattern)];
        // The answer by brute force, from every event.
        const matching = all
          .filter((e) => (pattern === undefined || e.type.startsWith(pattern.slice(0, -1))) && (!startTime || e.time >= startTime) && (!endTime || e.time < endTime))
          .map((e) => e.sequence);
        if (descending) matching.reverse();
        expect(matching.length).toBeGreaterThan(0);
        for (const [way, reader] of Object.entries(readers())) {
          let cursor: bigint | undefined;
          const seen: bigint[] = [];
          for (let page = 0; page <= total / pageSize + 1; page++) {
            const got = await reader.page({ patterns, startTime, endTime, limit: pageSize, descending, ...(descending ? { before: cursor } : { after: cursor }) });
            seen.push(...got.map((e) => e.sequence));
            if (got.length < pageSize) break;
            cursor = got[got.length - 1]!.sequence;
          }
          expect(seen, `${way}, ${pattern ?? "every type"}, ${descending ? "newest" : "oldest"} first`).toEqual(matching);
        }
      }
    }
  });

  it("a window from a time on, read oldest first over every type, asks the planner for its size once", async () => {
    // The window is then "every event at or after the start time", which is also what finding
    // its first event asks: one EXPLAIN answers both.
    let explains = 0;
    const counting: KyselyPlugin = {
      transformQuery: (args) => {
        if ((args.node as { explain?: unknown }).explain) explains++;
        return args.node;
      },
      transformResult: async (args) => args.result,
    };
    const reader = new EventReader(database.db.withPlugin(counting), catalog, { smallTimeWindowRows: 0, recentTimeRows: 1e12 });
    const startTime = new Date(start + 27 * day);
    const got = await reader.page({ startTime, limit: 10, descending: false });
    expect(got.map((e) => e.time >= startTime)).toEqual(Array(10).fill(true));
    expect(explains).toBe(1);
    // With an end time too, the window is another question than its first event's: two.
    explains = 0;
    await reader.page({ startTime, endTime: new Date(start + 28 * day), limit: 10, descending: false });
    expect(explains).toBe(2);
  });

  it("the cursor before a time is the same either way", async () => {
    const walk = new EventReader(database.db, catalog, { recentTimeRows: 0 });
    const indexed = new EventReader(database.db, catalog, { recentTimeRows: 1e12 });
    for (const at of [start - day, start + 3 * day, start + 15.5 * day, start + 29.9 * day, start + 60 * day]) {
      const time = new Date(at);
      expect(await indexed.cursorBeforeTime(time)).toBe(await walk.cursorBeforeTime(time));
    }
  });
});

describe("reads of a pattern that matches several types", () => {
  // Such reads run one ordered scan per type and merge them (EventReader.#query); the pages must
  // be exactly those of the log filtered by type, in either direction, with attributes too.
  it("page through exactly the matching events, in order, either way", async () => {
    const reader = new EventReader(database.db, catalog);
    const all = await reader.page({ limit: total, descending: false });
    for (const [pattern, attributes] of [["memory.*", undefined], ["memory.*", { n: "12" }], ["gap.*", undefined]] as const) {
      const patterns = [parseTypePattern(pattern)];
      const prefix = pattern.slice(0, -1);
      const matching = all.filter((e) => e.type.startsWith(prefix) && (attributes === undefined || e.attributes.n === attributes.n));
      expect(matching.length).toBeGreaterThan(0);
      for (const descending of [false, true]) {
        const expected = (descending ? [...matching].reverse() : matching).map((e) => e.sequence);
        const seen: bigint[] = [];
        let cursor: bigint | undefined;
        for (let page = 0; page <= total / 137 + 1; page++) {
          const got = await reader.page({ patterns, attributes, limit: 137, descending, ...(descending ? { before: cursor } : { after: cursor }) });
          seen.push(...got.map((e) => e.sequence));
          if (got.length < 137) break;
          cursor = got[got.length - 1]!.sequence;
        }
        expect(seen).toEqual(expected);
      }
    }
  });
});
