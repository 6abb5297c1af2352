import { type Kysely, type Migration, sql } from "kysely";

/**
 * Event types registered at runtime (RegisterEventTypes): one row per .proto file, and a
 * single-row revision counter. A registration locks the counter row for its transaction, so
 * registrations from different nodes apply one after the other, each checked against the last.
 */
export const registeredTypesMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`CREATE TABLE tidings_registered_files (
      name text PRIMARY KEY,
      descriptor bytea NOT NULL,
      revision bigint NOT NULL,
      registered_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
    await sql`CREATE TABLE tidings_catalog_head (
      id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
      revision bigint NOT NULL DEFAULT 0
    )`.execute(db);
    await sql`INSERT INTO tidings_catalog_head DEFAULT VALUES`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`DROP TABLE tidings_catalog_head`.execute(db);
    await sql`DROP TABLE tidings_registered_files`.execute(db);
  },
};
