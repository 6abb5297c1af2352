import { type Kysely, sql } from "kysely";
import type { EventCatalog } from "../catalog/catalog.js";
import type { Database } from "../storage/schema.js";
import { type EventRow, StoredEvent } from "./stored-event.js";

const eventColumns = ["sequence", "id", "type", "source", "subject", "time", "attributes", "payload"] as const;

/** Filters a read can push into SQL. */
export interface LogQuery {
  /** Only these types; undefined = every type. An empty list matches nothing. */
  types?: readonly string[] | undefined;
  /** Attributes the event must carry with these values. */
  attributes?: Record<string, string>;
  startTime?: Date | undefined;
  endTime?: Date | undefined;
}

/** Queries over the event log. */
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
    if (q.types && q.types.length === 0) return [];
    let query = this.db.selectFrom("tidings_events").select(eventColumns);
    if (q.after !== undefined && q.after > 0n) query = query.where("sequence", ">", q.after.toString());
    if (q.upTo !== undefined) query = query.where("sequence", "<=", q.upTo.toString());
    if (q.before !== undefined) query = query.where("sequence", "<", q.before.toString());
    if (q.types) query = query.where("type", "in", [...q.types]);
    if (q.attributes && Object.keys(q.attributes).length > 0) {
      query = query.where(sql<boolean>`attributes @> ${JSON.stringify(q.attributes)}::jsonb`);
    }
    if (q.startTime) query = query.where("time", ">=", q.startTime);
    if (q.endTime) query = query.where("time", "<", q.endTime);
    const rows = await query.orderBy("sequence", q.descending ? "desc" : "asc").limit(q.limit).execute();
    return rows.map((r) => new StoredEvent(r as EventRow, this.catalog));
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
    return rows.map((r) => new StoredEvent(r as EventRow, this.catalog));
  }

  async getById(id: string): Promise<StoredEvent | undefined> {
    const row = await this.db.selectFrom("tidings_events").select(eventColumns).where("id", "=", id).executeTakeFirst();
    return row ? new StoredEvent(row as EventRow, this.catalog) : undefined;
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
