import { type Kysely, sql } from "kysely";
import type { EventCatalog } from "../catalog/catalog.js";
import type { TypePattern } from "../filtering/type-pattern.js";
import type { Database } from "../storage/schema.js";
import { type EventRow, StoredEvent } from "./stored-event.js";

const eventColumns = ["sequence", "id", "type", "source", "subject", "time", "attributes", "payload"] as const;

/** Filters a read can push into SQL. */
export interface LogQuery {
  /** Only types matching one of these patterns (the catalog's, when the read runs); undefined = every type. */
  patterns?: readonly TypePattern[] | undefined;
  /** Attributes the event must carry with these values. */
  attributes?: Record<string, string>;
  startTime?: Date | undefined;
  endTime?: Date | undefined;
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
  constructor(
    private readonly db: Kysely<Database>,
    private readonly catalog: EventCatalog,
  ) {}

  /** The last committed sequence. */
  async headSequence(): Promise<bigint> {
    const row = await this.db.selectFrom("tidings_log_head").select("last_sequence").executeTakeFirstOrThrow();
    return BigInt(row.last_sequence);
  }

  /** Events with `after < sequence <= upTo` in sequence order, at most `limit`. */
  async readRange(after: bigint, upTo: bigint | undefined, limit: number, query: LogQuery = {}): Promise<StoredEvent[]> {
    return this.page({ ...query, after, upTo, limit, descending: false });
  }

  /** One page of history, ascending or descending. */
  async page(q: LogQuery & { after?: bigint; before?: bigint; upTo?: bigint | undefined; limit: number; descending: boolean }): Promise<StoredEvent[]> {
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

  #query(q: LogQuery & { after?: bigint; before?: bigint; upTo?: bigint | undefined; limit: number; descending: boolean }, types: readonly string[] | undefined): Promise<EventRow[]> {
    let query = this.db.selectFrom("tidings_events").select(eventColumns);
    if (q.after !== undefined && q.after > 0n) query = query.where("sequence", ">", q.after.toString());
    if (q.upTo !== undefined) query = query.where("sequence", "<=", q.upTo.toString());
    if (q.before !== undefined) query = query.where("sequence", "<", q.before.toString());
    if (types) query = query.where("type", "in", [...types]);
    if (q.attributes && Object.keys(q.attributes).length > 0) {
      query = query.where(sql<boolean>`attributes @> ${JSON.stringify(q.attributes)}::jsonb`);
    }
    if (q.startTime) query = query.where("time", ">=", q.startTime);
    if (q.endTime) query = query.where("time", "<", q.endTime);
    return query.orderBy("sequence", q.descending ? "desc" : "asc").limit(q.limit).execute() as Promise<EventRow[]>;
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
    const row = await this.db
      .selectFrom("tidings_events")
      .select((eb) => eb.fn.min("sequence").as("first"))
      .where("time", ">=", time)
      .executeTakeFirst();
    if (row?.first === null || row?.first === undefined) return this.headSequence();
    return BigInt(row.first as string | bigint) - 1n;
  }
}
