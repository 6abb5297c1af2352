import type { ColumnType } from "kysely";

/** The tables as Kysely sees them. The SQL that creates them is in ./migrations. */
export interface Database {
  tidings_events: EventsTable;
  tidings_log_head: LogHeadTable;
}

/** The event log: one row per event, in sequence order. */
export interface EventsTable {
  sequence: ColumnType<string | bigint, bigint | string, never>;
  id: string;
  type: string;
  source: string;
  subject: string;
  time: ColumnType<Date, Date | string, never>;
  attributes: ColumnType<Record<string, string>, string, never>;
  /** The payload as the type's message in protobuf binary. */
  payload: ColumnType<Uint8Array, Uint8Array, never>;
  idempotency_key: string | null;
  /** SHA-256 of the publish request, to tell a retry from a different event under the same key. */
  request_hash: Uint8Array | null;
  recorded_at: ColumnType<Date, never, never>;
}

/**
 * A single row holding the last sequence handed out. Every writer locks it for the length of its
 * transaction, so transactions commit in sequence order and a reader of `sequence > cursor`
 * never skips an event that commits later with a smaller sequence.
 */
export interface LogHeadTable {
  id: ColumnType<number, never, never>;
  last_sequence: ColumnType<string | bigint, never, bigint | string>;
}
