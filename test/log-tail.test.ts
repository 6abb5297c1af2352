/**
 * The log tail's window of recent events (LogTail.recent), which subscribers that fell behind
 * catch up from instead of the database. Real events, appended to a real database, reach the
 * tail the way a server's commits do.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EventCatalog, loadCatalog } from "../server/catalog/catalog.js";
import { AppendQueue, type NewEvent } from "../server/event-log/append-queue.js";
import { EventReader, type LogQuery } from "../server/event-log/event-reader.js";
import type { StoredEvent } from "../server/event-log/stored-event.js";
import { createEventMatcher } from "../server/filtering/event-matcher.js";
import { uuidV7 } from "../server/event-log/uuid-v7.js";
import { silentLogger } from "../server/logging/logger.js";
import { type DatabaseHandle, openDatabase } from "../server/storage/open-database.js";
import { LogTail } from "../server/streaming/log-tail.js";
import { runSubscription } from "../server/streaming/subscription.js";
import { createTestStorage, type TestStorage } from "./helpers/database.js";
import { eventually } from "./helpers/test-server.js";

const poolSize = 4;
let storage: TestStorage;
let database: DatabaseHandle;
let catalog: EventCatalog;
let reader: EventReader;

beforeAll(async () => {
  storage = await createTestStorage();
  database = await openDatabase({ databaseUrl: storage.databaseUrl, dataDir: storage.dataDir, poolSize, logger: silentLogger });
  catalog = await loadCatalog();
  reader = new EventReader(database.db, catalog);
});
afterAll(async () => {
  await database?.close();
  await storage?.drop();
});

const event = (payloadBytes = 8): NewEvent => ({
  id: uuidV7(),
  type: "memory.created",
  source: "test/tail",
  subject: "",
  time: new Date(),
  attributes: {},
  payload: new Uint8Array(payloadBytes),
  idChosenByPublisher: false,
  idempotencyKey: undefined,
  requestHash: undefined,
});

/** A tail fed by an append queue, as in the server; `listen` attaches a listener so the tail keeps rows. */
async function tailWithQueue(recentEvents: number, recentBytes = 1 << 30) {
  const tail = new LogTail(reader, { pollIntervalMs: 60_000, readLimit: 1000, recentEvents, recentBytes, logger: silentLogger });
  await tail.start();
  tail.attach({ offer() {}, close() {} });
  const queue = new AppendQueue(database.db, {
    maxEventsPerCommit: 1000,
    onCommitted: (_head, written) => tail.offerCommitted(reader.fromCommitted(written)),
    logger: silentLogger,
    oneStatementAppends: database.kind === "postgres",
  });
  return { tail, queue, start: tail.position };
}

describe("LogTail.recent", () => {
  it("serves any range inside the window from memory, the same events the log holds, bounded by upTo and limit", async () => {
    const { tail, queue, start } = await tailWithQueue(100);
    try {
      for (let i = 0; i < 5; i++) await queue.append([event(), event(), event()]); // 5 batches of 3
      expect(tail.position).toBe(start + 15n);
      const all = tail.recent(start, tail.position, 1000)!;
      expect(all.map((e) => e.sequence)).toEqual(Array.from({ length: 15 }, (_, i) => start + 1n + BigInt(i)));
      const fromLog = await reader.readRange(start, tail.position, 1000);
      expect(all.map((e) => e.id)).toEqual(fromLog.map((e) => e.id));
      // Starting inside a batch, ending before the head, and cut by the limit.
      expect(tail.recent(start + 4n, start + 11n, 1000)!.map((e) => e.sequence)).toEqual([5n, 6n, 7n, 8n, 9n, 10n, 11n].map((n) => start + n));
      expect(tail.recent(start + 4n, tail.position, 2)!.map((e) => e.sequence)).toEqual([start + 5n, start + 6n]);
      // At the head there is nothing to catch up: attach instead.
      expect(tail.recent(tail.position, tail.position, 10)).toBeUndefined();
    } finally {
      await queue.close();
      await tail.stop();
    }
  });

  it("forgets the oldest batches past its bounds, and answers undefined for a cursor before the window", async () => {
    const { tail, queue, start } = await tailWithQueue(6, 1_000);
    try {
      for (let i = 0; i < 4; i++) await queue.append([event(), event()]); // 8 events in 4 batches; 6 kept
      expect(tail.recent(start, tail.position, 100)).toBeUndefined();
      expect(tail.recent(start + 1n, tail.position, 100)).toBeUndefined();
      expect(tail.recent(start + 2n, tail.position, 100)!.map((e) => e.sequence)).toEqual([3n, 4n, 5n, 6n, 7n, 8n].map((n) => start + n));
      // Large payloads: the byte bound keeps only the newest batch.
      await queue.append([event(600)]);
      await queue.append([event(600)]);
      expect(tail.recent(start + 8n, tail.position, 100)).toBeUndefined();
      expect(tail.recent(start + 9n, tail.position, 100)!.map((e) => e.sequence)).toEqual([start + 10n]);
    } finally {
      await queue.close();
      await tail.stop();
    }
  });

  it("another node's commit, read from the log, joins the window in order: no gap", async () => {
    const { tail, queue, start } = await tailWithQueue(100);
    // A second writer, like another node: the tail does not hear of its commit.
    const other = new AppendQueue(database.db, { maxEventsPerCommit: 1000, onCommitted: () => {}, logger: silentLogger, oneStatementAppends: database.kind === "postgres" });
    try {
      await queue.append([event()]);
      await other.append([event()]);
      await queue.append([event()]); // offered, but does not follow the tail's position: read from the log
      await new Promise((r) => setTimeout(r, 200));
      tail.wake();
      await new Promise((r) => setTimeout(r, 200));
      expect(tail.position).toBe(start + 3n);
      expect(tail.recent(start, tail.position, 100)!.map((e) => e.sequence)).toEqual([start + 1n, start + 2n, start + 3n]);
      expect(tail.recent(start + 1n, tail.position, 100)!.map((e) => e.sequence)).toEqual([start + 2n, start + 3n]);
    } finally {
      await other.close();
      await queue.close();
      await tail.stop();
    }
  });
});

/** Ends a test's subscription (its signal), then its append queue and its tail. */
async function endAll(o: { abort: AbortController; queue: AppendQueue; tail: LogTail }): Promise<void> {
  o.abort.abort();
  await o.queue.close();
  await o.tail.stop();
}

/** The real reader, noting each range it is asked for (the catch-up's reads from the database). */
class NotingReader extends EventReader {
  readonly reads: Array<{ after: bigint; upTo: bigint | undefined; rows: Promise<StoredEvent[]> }> = [];
  override readRange(after: bigint, upTo: bigint | undefined, limit: number, query?: LogQuery): Promise<StoredEvent[]> {
    const rows = super.readRange(after, upTo, limit, query);
    this.reads.push({ after, upTo, rows });
    return rows;
  }
}

/**
 * 1,250 events in five commits, and a subscription from before the first that reads them with
 * pages of 500. The tail's window keeps only the newest commit (250 events): the first 1,000
 * come from the database.
 */
async function catchingUp() {
  const { tail, queue, start } = await tailWithQueue(100);
  for (let i = 0; i < 5; i++) await queue.append(Array.from({ length: 250 }, () => event()));
  const noting = new NotingReader(database.db, catalog);
  const abort = new AbortController();
  const stream = runSubscription({
    reader: noting, tail, matcher: createEventMatcher([], {}, undefined), cursor: start,
    bufferEvents: 10_000, heartbeatMs: 60_000, pageSize: 500, signal: abort.signal,
  });
  return { tail, queue, start, noting, stream, abort };
}

describe("catch-up (runSubscription)", () => {
  it("reads the next page from the database while it sends one, and the rest from the tail's window: every event once, in order", async () => {
    const { tail, queue, start, noting, stream, abort } = await catchingUp();
    try {
      const got: StoredEvent[] = [];
      let readsAtFirstEvent = -1;
      for await (const item of stream) {
        if (item.kind !== "event") continue;
        if (got.length === 0) readsAtFirstEvent = noting.reads.length;
        got.push(item.event);
        if (got.length === 1250) break;
      }
      // While the first page was being sent, the second was already asked for.
      expect(readsAtFirstEvent).toBe(2);
      expect(noting.reads.map((r) => r.after)).toEqual([start, start + 500n]);
      expect(got.map((e) => e.sequence)).toEqual(Array.from({ length: 1250 }, (_, i) => start + 1n + BigInt(i)));
      const fromLog = await reader.readRange(start, tail.position, 2000);
      expect(got.map((e) => e.id)).toEqual(fromLog.map((e) => e.id));
    } finally {
      await endAll({ abort, queue, tail });
    }
  });

  it("a stream that ends while a page is being read ahead lets that read finish and give its connection back", async () => {
    const { tail, queue, start, noting, stream, abort } = await catchingUp();
    try {
      let seen = 0;
      for await (const item of stream) {
        if (item.kind === "event" && ++seen === 10) break; // the read of events 501-1000 is under way
      }
      expect(noting.reads.map((r) => r.after)).toEqual([start, start + 500n]);
      // Nobody waits for the abandoned read, but it completes (a failure would be an unhandled
      // rejection, which fails the run)...
      expect((await noting.reads[1]!.rows).map((e) => e.sequence)).toEqual(Array.from({ length: 500 }, (_, i) => start + 501n + BigInt(i)));
      // ...and its connection is back: as many queries at once as the pool has connections all
      // get one (with one held for good, this would wait until the test timed out).
      const held = await Promise.all(Array.from({ length: poolSize }, () => sql<{ one: number }>`SELECT 1 AS one, pg_sleep(0.05)`.execute(database.db)));
      expect(held.map((r) => r.rows[0]!.one)).toEqual(Array(poolSize).fill(1));
    } finally {
      await endAll({ abort, queue, tail });
    }
  });
});

describe("live (runSubscription attached to the tail)", () => {
  /** A subscription from the tail's position, past its first heartbeat and attached. */
  async function live() {
    const { tail, queue, start } = await tailWithQueue(100);
    const abort = new AbortController();
    const stream = runSubscription({
      reader, tail, matcher: createEventMatcher([], {}, undefined), cursor: start,
      bufferEvents: 10_000, heartbeatMs: 60_000, pageSize: 500, signal: abort.signal,
    });
    const first = await stream.next();
    expect(first.done === false && first.value.kind).toBe("heartbeat");
    const listenersBefore = tail.listenerCount;
    const pending = stream.next(); // attaches, then waits for a batch
    await new Promise((r) => setTimeout(r, 20));
    expect(tail.listenerCount).toBe(listenersBefore + 1);
    return { tail, queue, start, abort, stream, pending, listenersBefore };
  }

  it("hands out a batch's events one by one without waiting again: poll() has each of them at hand", async () => {
    const { tail, queue, start, abort, stream, pending } = await live();
    try {
      await queue.append([event(), event(), event()]);
      const got = [await pending];
      // The rest of the batch is there already: no wait (fill) for it.
      for (let r = stream.poll(); r !== undefined; r = stream.poll()) got.push(r);
      expect(got.map((r) => (r.done === false && r.value.kind === "event" ? r.value.cursor : undefined))).toEqual([start + 1n, start + 2n, start + 3n]);
      // Then nothing is at hand until the next commit.
      expect(stream.poll()).toBeUndefined();
      await queue.append([event()]);
      const next = await stream.next();
      expect(next.done === false && next.value.kind === "event" && next.value.event.sequence).toBe(start + 4n);
    } finally {
      await endAll({ abort, queue, tail });
    }
  });

  it("two next() calls at once, as an async generator queues them: each gets its own event, in order", async () => {
    const { queue, start, abort, stream, pending, tail } = await live();
    try {
      const second = stream.next(); // asked before the first is answered
      await queue.append([event()]);
      const third = stream.next();
      await queue.append([event(), event()]);
      const got = await Promise.all([pending, second, third]);
      expect(got.map((r) => (r.done === false && r.value.kind === "event" ? r.value.cursor : undefined))).toEqual([start + 1n, start + 2n, start + 3n]);
    } finally {
      await endAll({ abort, queue, tail });
    }
  });

  it("return() while a next() waits ends both and detaches from the tail", async () => {
    const { tail, queue, abort, stream, pending, listenersBefore } = await live();
    try {
      await expect(stream.return()).resolves.toEqual({ done: true, value: undefined });
      // The waiting next() is not left hanging (a Connect write loop would never finish).
      await expect(pending).resolves.toEqual({ done: true, value: undefined });
      expect(tail.listenerCount).toBe(listenersBefore);
      expect(stream.poll()).toEqual({ done: true, value: undefined });
      // Events after it went nowhere: nothing is queued for a stream that ended.
      await queue.append([event()]);
      expect(stream.poll()).toEqual({ done: true, value: undefined });
    } finally {
      await endAll({ abort, queue, tail });
    }
  });
});

describe("live, polled (a consumer that polls, as the gRPC fast path does)", () => {
  /** A subscription polled from the tail's position: past its first heartbeat, attached, and a fill() waiting for the tail. */
  async function polled(o: { bufferEvents: number; heartbeatMs: number }) {
    const { tail, queue, start } = await tailWithQueue(100);
    const abort = new AbortController();
    let fallbacks = 0;
    const stream = runSubscription({
      reader, tail, matcher: createEventMatcher([], {}, undefined), cursor: start,
      bufferEvents: o.bufferEvents, heartbeatMs: o.heartbeatMs, pageSize: 500, signal: abort.signal,
      onFallback: () => fallbacks++,
    });
    expect(stream.poll()).toBeUndefined(); // nothing until it starts, at the first fill()
    await stream.fill();
    expect(stream.poll()).toMatchObject({ done: false, value: { kind: "heartbeat", cursor: start } });
    expect(stream.poll()).toBeUndefined();
    const listenersBefore = tail.listenerCount;
    await stream.fill(); // at the tail already: attaches, with nothing at hand yet
    expect(tail.listenerCount).toBe(listenersBefore + 1);
    expect(stream.poll()).toBeUndefined();
    const waiting = stream.fill(); // waits for the tail
    return { tail, queue, start, abort, stream, waiting, listenersBefore, fallbacks: () => fallbacks };
  }

  /** Polls until `count` events came (filling when nothing is at hand); their cursors. */
  async function pollEvents(stream: ReturnType<typeof runSubscription>, count: number): Promise<bigint[]> {
    const got: bigint[] = [];
    while (got.length < count) {
      const r = stream.poll();
      if (r === undefined) await stream.fill();
      else if (r.done === true) throw new Error(`the stream ended after ${got.length} events`);
      else if (r.value.kind === "event") got.push(r.value.cursor);
    }
    return got;
  }

  it("one fill() per batch from the tail, then the whole batch at hand; nothing more until the next commit", async () => {
    const { tail, queue, start, abort, stream, waiting } = await polled({ bufferEvents: 10_000, heartbeatMs: 60_000 });
    try {
      await queue.append([event(), event(), event()]);
      await waiting;
      const got = [stream.poll(), stream.poll(), stream.poll()].map((r) => (r?.done === false && r.value.kind === "event" ? r.value.cursor : undefined));
      expect(got).toEqual([start + 1n, start + 2n, start + 3n]);
      expect(stream.poll()).toBeUndefined();
      const next = stream.fill();
      await queue.append([event()]);
      await next;
      expect(stream.poll()).toMatchObject({ done: false, value: { kind: "event", cursor: start + 4n } });
    } finally {
      await endAll({ abort, queue, tail });
    }
  });

  it("a subscriber that overflows its queue while nobody polls reads the rest from the log: every event once, in order, then live again", async () => {
    const { tail, queue, start, abort, stream, listenersBefore, fallbacks } = await polled({ bufferEvents: 5, heartbeatMs: 60_000 });
    try {
      for (let i = 0; i < 4; i++) await queue.append([event(), event(), event()]); // 12 queued > 5
      expect(await pollEvents(stream, 12)).toEqual(Array.from({ length: 12 }, (_, i) => start + BigInt(i + 1)));
      expect(fallbacks()).toBe(1);
      // Caught up: it waits on the tail again, and takes the next commit from it.
      const next = pollEvents(stream, 1);
      await eventually(async () => (tail.listenerCount === listenersBefore + 1 ? true : undefined), 5_000, "the subscriber to attach again");
      await queue.append([event()]);
      expect(await next).toEqual([start + 13n]);
      expect(fallbacks()).toBe(1);
    } finally {
      await endAll({ abort, queue, tail });
    }
  });

  it("a heartbeat when nothing was sent for heartbeatMs: fill() wakes for it", async () => {
    const { tail, queue, start, abort, stream, waiting } = await polled({ bufferEvents: 10_000, heartbeatMs: 150 });
    try {
      const since = Date.now();
      await waiting;
      let r = stream.poll();
      while (r === undefined) {
        await stream.fill();
        r = stream.poll();
      }
      expect(r).toMatchObject({ done: false, value: { kind: "heartbeat", cursor: start } });
      expect(Date.now() - since).toBeGreaterThanOrEqual(100); // 150 ms after the first heartbeat, less what polled() took after it
      abort.abort();
      expect(stream.poll()).toEqual({ done: true, value: undefined });
      expect(tail.listenerCount).toBe(1); // detached: only tailWithQueue's own listener is left
    } finally {
      await endAll({ abort, queue, tail });
    }
  });
});

describe("a read that fails (runSubscription)", () => {
  /** The real reader, except that reading a range fails as a lost connection does. */
  class FailingReader extends EventReader {
    override readRange(): Promise<StoredEvent[]> {
      return Promise.reject(Object.assign(new Error("Connection terminated unexpectedly"), { code: "ECONNRESET" }));
    }
  }

  it("fill() resolves, the poll() after it throws the failure once, then the stream is over and detached", async () => {
    const { tail, queue } = await tailWithQueue(100);
    await queue.append([event()]); // the log holds events before the tail's window: cursor 0 reads them
    const abort = new AbortController();
    const stream = runSubscription({
      reader: new FailingReader(database.db, catalog), tail, matcher: createEventMatcher([], {}, undefined), cursor: 0n,
      bufferEvents: 100, heartbeatMs: 60_000, pageSize: 500, signal: abort.signal,
    });
    try {
      await stream.fill();
      expect(stream.poll()).toMatchObject({ done: false, value: { kind: "heartbeat" } });
      await expect(stream.fill()).resolves.toBeUndefined();
      expect(() => stream.poll()).toThrow("Connection terminated unexpectedly");
      expect(stream.poll()).toEqual({ done: true, value: undefined });
      await expect(stream.fill()).resolves.toBeUndefined();
      expect(tail.listenerCount).toBe(1); // never attached: only tailWithQueue's own listener

      // Through next(), as Connect's stream loop reads it: the failure rejects the call.
      const viaNext = runSubscription({
        reader: new FailingReader(database.db, catalog), tail, matcher: createEventMatcher([], {}, undefined), cursor: 0n,
        bufferEvents: 100, heartbeatMs: 60_000, pageSize: 500, signal: abort.signal,
      });
      expect((await viaNext.next()).value).toMatchObject({ kind: "heartbeat" });
      await expect(viaNext.next()).rejects.toThrow("Connection terminated unexpectedly");
      await expect(viaNext.next()).resolves.toEqual({ done: true, value: undefined });
    } finally {
      await endAll({ abort, queue, tail });
    }
  });
});
