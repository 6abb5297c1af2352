import { type Kysely, type Migration, sql } from "kysely";

/**
 * The dispatcher claims due deliveries ORDER BY next_attempt_at, event_sequence LIMIT n: with
 * an index in exactly that order, the claim reads the first n entries instead of sorting every
 * due delivery.
 */
export const deliveryClaimOrderMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`CREATE INDEX tidings_deliveries_due_order ON tidings_deliveries (next_attempt_at, event_sequence) WHERE status = 1`.execute(db);
    await sql`DROP INDEX tidings_deliveries_due`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`CREATE INDEX tidings_deliveries_due ON tidings_deliveries (next_attempt_at) WHERE status = 1`.execute(db);
    await sql`DROP INDEX tidings_deliveries_due_order`.execute(db);
  },
};
