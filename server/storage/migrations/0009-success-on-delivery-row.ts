import { type Kysely, type Migration, sql } from "kysely";

/**
 * A delivery's successful attempt is recorded on the delivery's own row, in the statement that
 * marks it succeeded; tidings_delivery_attempts keeps the attempts that failed (and successes
 * recorded before this migration, or moved there when a succeeded delivery is retried). A
 * success ends a delivery, so a row holds at most one. The attempt row written beside every
 * success was a tenth of PostgreSQL's CPU per delivery in a webhook backlog (a heap row, three
 * index entries and its sequence), for a record that repeats the delivery's own.
 *
 * The retention index also carries webhook_id, so the successes of one endpoint within a
 * window (GetWebhookStats) are found from index entries alone, as the attempts' own index
 * (webhook_id, started_at) found them.
 */
export const successOnDeliveryRowMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`ALTER TABLE tidings_deliveries
      ADD COLUMN success_started_at timestamptz,
      ADD COLUMN success_duration_ms integer,
      ADD COLUMN success_response_excerpt text,
      ADD COLUMN success_node text`.execute(db);
    await sql`DROP INDEX tidings_deliveries_finished`.execute(db);
    await sql`CREATE INDEX tidings_deliveries_finished ON tidings_deliveries (status, updated_at, webhook_id) WHERE status <> 1`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    // Nothing is lost going back: the successes recorded on rows become attempt rows again.
    await sql`INSERT INTO tidings_delivery_attempts (delivery_id, webhook_id, number, started_at, duration_ms, status_code, response_excerpt, error, node)
      SELECT id, webhook_id, attempts, success_started_at, success_duration_ms, last_status_code, success_response_excerpt, '', success_node
      FROM tidings_deliveries WHERE success_started_at IS NOT NULL`.execute(db);
    await sql`DROP INDEX tidings_deliveries_finished`.execute(db);
    await sql`CREATE INDEX tidings_deliveries_finished ON tidings_deliveries (status, updated_at) WHERE status <> 1`.execute(db);
    await sql`ALTER TABLE tidings_deliveries
      DROP COLUMN success_started_at, DROP COLUMN success_duration_ms, DROP COLUMN success_response_excerpt, DROP COLUMN success_node`.execute(db);
  },
};
