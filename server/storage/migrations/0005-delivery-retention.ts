import { type Kysely, type Migration, sql } from "kysely";

/**
 * Retention removes finished deliveries (succeeded or dead) by when they last changed; this index
 * finds them without reading the pending ones or the whole table.
 */
export const deliveryRetentionMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`CREATE INDEX tidings_deliveries_finished ON tidings_deliveries (status, updated_at) WHERE status <> 1`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`DROP INDEX tidings_deliveries_finished`.execute(db);
  },
};
