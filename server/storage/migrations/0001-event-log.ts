import { type Kysely, type Migration, sql } from "kysely";

/** The event log, its head row, and the indexes history queries use. */
export const eventLogMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`CREATE TABLE tidings_log_head (
      id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
      last_sequence bigint NOT NULL
    )`.execute(db);
    await sql`INSERT INTO tidings_log_head (id, last_sequence) VALUES (1, 0)`.execute(db);
    await sql`CREATE TABLE tidings_events (
      sequence bigint PRIMARY KEY,
      id text NOT NULL UNIQUE,
      type text NOT NULL,
      source text NOT NULL,
      subject text NOT NULL DEFAULT '',
      time timestamptz NOT NULL,
      attributes jsonb NOT NULL DEFAULT '{}',
      payload bytea NOT NULL,
      idempotency_key text UNIQUE,
      request_hash bytea,
      recorded_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
    await sql`CREATE INDEX tidings_events_type_sequence ON tidings_events (type, sequence)`.execute(db);
    await sql`CREATE INDEX tidings_events_time ON tidings_events (time)`.execute(db);
    await sql`CREATE INDEX tidings_events_attributes ON tidings_events USING gin (attributes jsonb_path_ops)`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`DROP TABLE tidings_events`.execute(db);
    await sql`DROP TABLE tidings_log_head`.execute(db);
  },
};
