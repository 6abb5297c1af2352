import { type Kysely, type RawBuilder, type SelectQueryBuilder, sql } from "kysely";
import type { EventCatalog } from "../catalog/catalog.js";
import type { TypePattern } from "../filtering/type-pattern.js";
import type { Database } from "../storage/schema.js";
import { type EventRow, StoredEvent } from "./stored-event.js";
import { timeBlockSize, TimeSummary } from "./time-summary.js";

const eventColumns = ["sequence", "id", "type", "source", "subject", "time", "attributes", "payload"] as const;

/** Most types a read runs one ordered scan each for (see #query); a pattern matching more reads them with `type IN`. */
const maxTypesPerUnion = 16;

/** Filters a read can push into SQL. */
export interface LogQuery {
  /** Only types matching one of these patterns (the catalog's, when the read runs); undefined = every type. */
  patterns?: readonly TypePattern[] | undefined;
  /** Attributes the event must carry with these values. */
  attributes?: Record<string, string>;
  startTime?: Date | undefined;
  endTime?: Date | undefined;
}

/** A page of a read: its filters, where it starts (the cursor), how many and which way. */
export type PageQuery = LogQuery & { after?: bigint; before?: bigint; upTo?: bigint | undefined; limit: number; descending: boolean };

/**
 * A read's filters on the events' own columns, as conditions any query over them takes (the
 * log itself, a span of it in a subquery, the planner's estimate of a window).
 */
function eventFilters(f: { types?: readonly string[] | undefined; startTime?: Date | undefined; endTime?: Date | undefined; attributes?: Record<string, string> | undefined }): Array<RawBuilder<boolean>> {
  const conditions: Array<RawBuilder<boolean>> = [];
  if (f.types) conditions.push(f.types.length > 0 ? sql<boolean>`type IN (${sql.join(f.types)})` : sql<boolean>`false`);
  if (f.startTime) conditions.push(sql<boolean>`time >= ${f.startTime}`);
  if (f.endTime) conditions.push(sql<boolean>`time < ${f.endTime}`);
  if (f.attributes && Object.keys(f.attributes).length > 0) conditions.push(sql<boolean>`attributes @> ${JSON.stringify(f.attributes)}::jsonb`);
  return conditions;
}

/** A page's cursor as conditions on the sequence: after it, up to it, before it. */
function cursorFilters(c: { after?: bigint | undefined; upTo?: bigint | undefined; before?: bigint | undefined }): Array<RawBuilder<boolean>> {
  const conditions: Array<RawBuilder<boolean>> = [];
  if (c.after !== undefined && c.after > 0n) conditions.push(sql<boolean>`sequence > ${c.after.toString()}`);
  if (c.upTo !== undefined) conditions.push(sql<boolean>`sequence <= ${c.upTo.toString()}`);
  if (c.before !== undefined) conditions.push(sql<boolean>`sequence < ${c.before.toString()}`);
  return conditions;
}

/** How an EventReader reads time windows; the defaults are the server's. */
export interface EventReaderOptions {
  /** The planner's estimate of a time window's events up to which it is read through the time index. */
  smallTimeWindowRows?: number;
  /**
   * The planner's estimate of the events at or after a time up to which the first of them is
   * found through the time index, not the time summary (see #firstAtOrAfter).
   */
  recentTimeRows?: number;
  /**
   * A window whose estimate is at least this many pages of matches first looks for its page in
   * the `probeSpan` sequences from its edge in the read's order: its first event read oldest
   * first, its last newest first (see #query). 0: always; Infinity: never.
   */
  probeMatchesPerPage?: number;
  probeSpan?: bigint;
  /**
   * Finds a time's place in a large log (cursorBeforeTime, and the edges of a window); the
   * server passes one that logs.
   */
  timeSummary?: TimeSummary;
}

/**
 * Queries over the event log.
 *
 * Every node's catalog may lag a registration made on another node by a moment. Two things
 * keep that from losing events: a row of a type the catalog does not know makes it catch up
 * before the row is handed out, and a read that pushed a pattern's types into SQL checks,
 * after the read, whether the catalog was behind (a registered type's events cannot commit
 * before its registration, so a read that could see them is followed by a check that sees
 * the registration) and reads again if so.
 */
export class EventReader {
  private readonly smallTimeWindowRows: number;
  private readonly recentTimeRows: number;
  private readonly probeMatchesPerPage: number;
  private readonly probeSpan: bigint;
  private readonly timeSummary: TimeSummary;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly catalog: EventCatalog,
    options: EventReaderOptions = {},
  ) {
    this.smallTimeWindowRows = options.smallTimeWindowRows ?? 300_000;
    this.recentTimeRows = options.recentTimeRows ?? Number(timeBlockSize);
    this.probeMatchesPerPage = options.probeMatchesPerPage ?? 10;
    this.probeSpan = options.probeSpan ?? 2n * timeBlockSize;
    this.timeSummary = options.timeSummary ?? new TimeSummary(db);
  }

  /** The last committed sequence. */
  async headSequence(): Promise<bigint> {
    const row = await this.db.selectFrom("tidings_log_head").select("last_sequence").executeTakeFirstOrThrow();
    return BigInt(row.last_sequence);
  }

  /** Events with `after < sequence <= upTo` in sequence order, at most `limit`. */
  async readRange(after: bigint, upTo: bigint | undefined, limit: number, query: LogQuery = {}): Promise<StoredEvent[]> {
    const unfiltered = query.patterns === undefined && !query.startTime && !query.endTime && Object.keys(query.attributes ?? {}).length === 0;
    const end = after + BigInt(limit);
    if (unfiltered && upTo !== undefined && end < upTo) {
      // Committed sequences have no gaps, so the first `limit` events after `after` are exactly
      // (after, after + limit]. Saying so in the query keeps its plan right without statistics:
      // on a table never analysed (autovacuum off, or a fresh database) PostgreSQL took
      // (after, upTo] for a few rows, read all of it by bitmap and sorted it to keep `limit`
      // (2,910 rows read for 68 when routing a webhook backlog). Retention leaves a hole at
      // the start of the log; a short page may be one, so it is read again without the bound.
      const page = await this.page({ ...query, after, upTo: end, limit, descending: false });
      if (page.length === limit) return page;
    }
    return this.page({ ...query, after, upTo, limit, descending: false });
  }

  /** One page of history, ascending or descending. */
  async page(q: PageQuery): Promise<StoredEvent[]> {
    for (let attempt = 0; ; attempt++) {
      const revision = this.catalog.revision;
      const types = q.patterns ? this.catalog.matching(q.patterns).map((e) => e.name) : undefined;
      const rows = types?.length === 0 ? [] : await this.#query(q, types);
      if (attempt === 0 && q.patterns !== undefined) {
        await this.catalog.refreshIfStale();
        if (this.catalog.revision !== revision) continue; // the types pushed into SQL may have been too few
        return rows.map((r) => new StoredEvent(r, this.catalog));
      }
      return this.#toEvents(rows);
    }
  }

  async #query(q: PageQuery, types: readonly string[] | undefined): Promise<EventRow[]> {
    let query = this.db.selectFrom("tidings_events").select(eventColumns);
    for (const condition of [...cursorFilters(q), ...eventFilters({ attributes: q.attributes })]) query = query.where(condition);
    const order = q.descending ? "desc" : "asc";
    if (types && types.length > 1 && types.length <= maxTypesPerUnion && !q.startTime && !q.endTime) {
      // A pattern that matches several types, `type IN (...)`, cannot take its order from the
      // (type, sequence) index: PostgreSQL walked the log in sequence order and threw away the
      // other types, however rare the pattern's were (16,500-39,000 rows read for a page of 101
      // at 10M events, newest first). One ordered scan per type, merged (a Merge Append that
      // stops after a page), lets the planner take the type index for a rare type.
      return this.#mergedByType(query, types, order, q.limit);
    }
    for (const condition of eventFilters({ types, startTime: q.startTime, endTime: q.endTime })) query = query.where(condition);
    if (!q.startTime && !q.endTime) return query.orderBy("sequence", order).limit(q.limit).execute() as Promise<EventRow[]>;
    const estimate = await this.#timeWindowEstimate(q.startTime, q.endTime, types);
    const small = estimate !== undefined && estimate <= this.smallTimeWindowRows;
    const probing = estimate !== undefined && estimate >= this.probeMatchesPerPage * q.limit;
    const edgeTime = q.descending ? q.endTime : q.startTime;
    if (edgeTime && (probing || !small)) {
      // Nothing before the window's first event in log order can match, read oldest first, nor
      // after its last one, read newest first: the walk starts at that event, found in the time
      // summary with a few lookups, not at the log's start or head (or the cursor, if that is
      // further out). At 10M events, a 1-day window from the log's middle over every type took
      // 1.2 s oldest first, the walk throwing away the 5M events before it, and newest first
      // 0.8 s (on a faster machine), throwing away the 5M after it.
      // Read oldest first from a time on, over every type, the window is "every event at or
      // after the start time": what #firstAtOrAfter would ask the planner again.
      const edge = q.descending ? await this.#lastBefore(edgeTime) : await this.#firstAtOrAfter(edgeTime, !q.endTime && !types ? estimate : undefined);
      if (edge === undefined) return [];
      const cursorInside = q.descending ? q.before !== undefined && q.before <= edge : q.after !== undefined && q.after >= edge;
      if (!cursorInside) query = query.where("sequence", q.descending ? "<=" : ">=", edge.toString());
      if (probing) {
        // A window with many matches has its page close to that event: look in the probeSpan
        // sequences from it (or from the cursor) only, which bounds the work if the estimate
        // was wrong. A full page there is the page: it holds the window's first matches in
        // the read's order. Read through the time index instead, a 1-day window of "memory.*"
        // (240,000 events) took 130 ms at 10M events, to sort all of them and keep 101.
        const near = q.descending
          ? await this.#walkSpan(cursorInside ? q.before! - 1n : edge, -this.probeSpan, q, types)
          : await this.#walkSpan(cursorInside ? q.after! + 1n : edge, this.probeSpan, q, types);
        if (near.length === q.limit) return near;
        const farTime = q.descending ? q.startTime : q.endTime;
        if (types && types.length <= maxTypesPerUnion && farTime) {
          // Too few matches near the edge: a pattern whose types are a small part of the
          // window. Bound the window's other side in log order too, and read each type's own
          // index over that range, merged, rather than every event of the window through the
          // time index: on 10M seeded events, a 1-day window of dream.* (1% of the log) 31.7 ->
          // 11.1 ms (median of 9); its types' index scans read 102 rows, the time index the
          // day's 333,000.
          const far = q.descending ? await this.#firstAtOrAfter(farTime) : await this.#lastBefore(farTime);
          if (far === undefined) return [];
          return this.#mergedByType(query.where("sequence", q.descending ? ">=" : "<=", far.toString()), types, order, q.limit);
        }
      }
    }
    // A small time window is read through the time index and sorted (see #timeWindowEstimate).
    return (small
      ? query.orderBy(sql`sequence + 0`, order)
      : query.orderBy("sequence", order)
    ).limit(q.limit).execute() as Promise<EventRow[]>;
  }

  /**
   * The first `limit` events of `query` in `order` for any of `types`: one ordered scan of the
   * (type, sequence) index per type, merged (a Merge Append that stops after a page).
   */
  async #mergedByType(query: SelectQueryBuilder<Database, "tidings_events", EventRow>, types: readonly string[], order: "asc" | "desc", limit: number): Promise<EventRow[]> {
    const perType = types.map((type) => sql`(${query.where("type", "=", type).orderBy("sequence", order).limit(limit)})`);
    const merged = await sql<EventRow>`
      SELECT * FROM (${sql.join(perType, sql` UNION ALL `)}) AS by_type
      ORDER BY sequence ${sql.raw(order)} LIMIT ${limit}`.execute(this.db);
    return merged.rows;
  }

  /**
   * The first `q.limit` events of `q` among the `|span|` sequences from `from` (upwards, read
   * oldest first, for a positive span; downwards, newest first, for a negative one), walking
   * that span of the primary key in order and filtering. The span is read in a subquery that
   * the planner cannot flatten (OFFSET 0), so that it stays that walk: left to itself, the
   * planner combined the type and time indexes and sorted (3.5 ms for a 1-hour window at 10M
   * events, against 0.1 ms), taking the filters for independent of the span.
   */
  async #walkSpan(from: bigint, span: bigint, q: PageQuery, types: readonly string[] | undefined): Promise<EventRow[]> {
    const [lo, hi] = span > 0n ? [from, from + span] : [from + span + 1n, from + 1n];
    const order = span > 0n ? "asc" : "desc";
    let inSpan = this.db.selectFrom("tidings_events").select(eventColumns).where("sequence", ">=", lo.toString()).where("sequence", "<", hi.toString());
    for (const condition of cursorFilters(q)) inSpan = inSpan.where(condition);
    let near = this.db.selectFrom(inSpan.orderBy("sequence", order).offset(0).as("near")).selectAll();
    for (const condition of eventFilters({ ...q, types })) near = near.where(condition);
    return (await near.orderBy("sequence", order).limit(q.limit).execute()) as EventRow[];
  }

  /**
   * How many events the planner expects in a time window (EXPLAIN, no execution), which decides
   * how the window is read. A small one (smallTimeWindowRows, 300,000 by default: about 0.1–0.2 s
   * of reading at most) is read through the time index and sorted. An event's time is its
   * publisher's and need not follow the sequence, so PostgreSQL cannot see that a window's
   * events sit together in the log: asked for the first page in sequence order, it walks the log
   * from the start and filters on time, which grows with the log (1 s for a 1-day window at 10M
   * events). Ordering by `sequence + 0` takes the primary key's order away, and the planner then
   * reads the window by its index: work that grows with the window, not the log. A large window
   * keeps the ordered walk, which finds its matches quickly there.
   */
  async #timeWindowEstimate(start: Date | undefined, end: Date | undefined, types: readonly string[] | undefined): Promise<number | undefined> {
    let probe = this.db.selectFrom("tidings_events").select(sql`1`.as("one"));
    for (const condition of eventFilters({ types, startTime: start, endTime: end })) probe = probe.where(condition);
    const plan = await probe.explain<{ "QUERY PLAN": Array<{ Plan: { "Plan Rows": number } }> }>("json");
    return plan[0]?.["QUERY PLAN"]?.[0]?.Plan["Plan Rows"];
  }

  /** Events this node has just committed, as a read would return them (their types are known here). */
  fromCommitted(rows: readonly EventRow[]): StoredEvent[] {
    return rows.map((r) => new StoredEvent(r, this.catalog));
  }

  /** Rows to events, after letting the catalog catch up if a row's type is new to it. */
  async #toEvents(rows: readonly EventRow[]): Promise<StoredEvent[]> {
    if (rows.some((r) => !this.catalog.get(r.type))) await this.catalog.refreshIfStale();
    return rows.map((r) => new StoredEvent(r, this.catalog));
  }

  /** The events with these sequences, in sequence order (missing ones are left out). */
  async bySequences(sequences: readonly bigint[]): Promise<StoredEvent[]> {
    if (sequences.length === 0) return [];
    const rows = await this.db
      .selectFrom("tidings_events")
      .select(eventColumns)
      .where("sequence", "in", sequences.map(String))
      .orderBy("sequence")
      .execute();
    return this.#toEvents(rows as EventRow[]);
  }

  async getById(id: string): Promise<StoredEvent | undefined> {
    const row = await this.db.selectFrom("tidings_events").select(eventColumns).where("id", "=", id).executeTakeFirst();
    return row ? (await this.#toEvents([row as EventRow]))[0] : undefined;
  }

  /** The cursor just before the first event in log order whose time is at or after `time`. */
  async cursorBeforeTime(time: Date): Promise<bigint> {
    const first = await this.#firstAtOrAfter(time);
    return first === undefined ? this.headSequence() : first - 1n;
  }

  /**
   * The first event in log order whose time is at or after `time`; undefined for none.
   * `rowsAfter` is the planner's estimate of events at or after `time`, if the caller has it.
   */
  async #firstAtOrAfter(time: Date, rowsAfter?: number): Promise<bigint | undefined> {
    // For a recent time, read the few events after it through the time index and keep the
    // lowest sequence; for one further back, find its block in the time summary, which reads
    // one block (4,096 events) at most. The time index reads every event after the time, so it
    // pays for fewer than a block's only. With up to 300,000 (smallTimeWindowRows, as before),
    // a start time in the last day of the growth bench's log took up to 40 ms: on 1M events
    // over 3 days, cursorBeforeTime at random times p90 19.2 -> 2.3 ms, p99 31.8 -> 4.2 ms.
    const after = rowsAfter ?? (await this.#timeWindowEstimate(time, undefined, undefined));
    return after !== undefined && after <= this.recentTimeRows
      ? this.#boundSequence("min", sql`time >= ${time}`, sql`sequence + 0`)
      : this.#firstAtOrAfterByBlocks(time);
  }

  /**
   * The first event at or after `time` by the time summary: the first block whose latest time
   * is at or after it holds the answer, read alone by primary key (at most 4,096 events). If
   * that block's matching events are gone (retention), the search goes on after them. Blocks
   * not summarized yet are walked in sequence order, as every read did before the summary.
   */
  async #firstAtOrAfterByBlocks(time: Date): Promise<bigint | undefined> {
    const covered = await this.timeSummary.update();
    let from = 0n;
    for (;;) {
      const block = await this.timeSummary.firstCandidate(from, time);
      if (block === undefined) break;
      const lo = block * timeBlockSize;
      const hi = lo + timeBlockSize;
      const first = await this.#boundSequence("min", sql`sequence >= ${lo.toString()} AND sequence < ${hi.toString()} AND time >= ${time}`, sql`sequence`);
      if (first !== undefined) return first;
      const next = await this.#boundSequence("min", sql`sequence >= ${hi.toString()}`, sql`sequence`);
      if (next === undefined) return undefined;
      from = next / timeBlockSize > block ? next / timeBlockSize : block + 1n;
    }
    return this.#boundSequence("min", sql`sequence >= ${(covered * timeBlockSize).toString()} AND time >= ${time}`, sql`sequence`);
  }

  /**
   * The last event in log order whose time is before `time`; undefined for none. As
   * #firstAtOrAfter, the other way: for a time few events are at or after, walk back from the
   * head; otherwise search the time summary's blocks from the last.
   */
  async #lastBefore(time: Date): Promise<bigint | undefined> {
    const atOrAfter = await this.#timeWindowEstimate(time, undefined, undefined);
    return atOrAfter !== undefined && atOrAfter <= this.recentTimeRows
      ? this.#boundSequence("max", sql`time < ${time}`, sql`sequence`)
      : this.#lastBeforeByBlocks(time);
  }

  /**
   * The last event before `time` by the time summary: the events after the summarized blocks
   * first (walked back from the head), then the last block whose earliest time is before it,
   * read alone by primary key. If that block's matching events are gone (retention), the
   * search goes on below the events left before it.
   */
  async #lastBeforeByBlocks(time: Date): Promise<bigint | undefined> {
    const covered = await this.timeSummary.update();
    const tail = await this.#boundSequence("max", sql`sequence >= ${(covered * timeBlockSize).toString()} AND time < ${time}`, sql`sequence`);
    if (tail !== undefined) return tail;
    let below = covered;
    for (;;) {
      const block = await this.timeSummary.lastCandidate(below, time);
      if (block === undefined) return undefined;
      const lo = block * timeBlockSize;
      const last = await this.#boundSequence("max", sql`sequence >= ${lo.toString()} AND sequence < ${(lo + timeBlockSize).toString()} AND time < ${time}`, sql`sequence`);
      if (last !== undefined) return last;
      const previous = await this.#boundSequence("max", sql`sequence < ${lo.toString()}`, sql`sequence`);
      if (previous === undefined) return undefined;
      below = previous / timeBlockSize + 1n;
    }
  }

  /** min or max of `of`, a sequence, over the events `where` holds for; undefined for none. */
  async #boundSequence(bound: "min" | "max", where: RawBuilder<unknown>, of: RawBuilder<unknown>): Promise<bigint | undefined> {
    const res = await sql<{ bound: string | null }>`SELECT ${sql.raw(bound)}(${of})::text AS bound FROM tidings_events WHERE ${where}`.execute(this.db);
    const value = res.rows[0]?.bound;
    return value === null || value === undefined ? undefined : BigInt(value);
  }
}
