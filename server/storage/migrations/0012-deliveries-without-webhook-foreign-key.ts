import { type Kysely, type Migration, sql } from "kysely";

/**
 * Deliveries lose their foreign key to webhooks. Every routed delivery checked it with a query
 * of its own (PostgreSQL's referential-integrity trigger, a KEY SHARE lock on the webhook's row
 * per inserted row), inside the append statement that holds the log's head row: in a webhook
 * backlog to one endpoint that was 5–6 µs of PostgreSQL's 61–68 µs per delivery (alternated
 * scratch runs, dropping the constraint on the case's database).
 *
 * Nothing needs the check, because nothing can insert a delivery for a webhook that is gone:
 * - Routing (a routing pass, or routing in an append's statement) inserts only if the router's
 *   row still carries the endpoints' version it routed with, compared on the row's latest
 *   version under its lock. Deleting a webhook bumps that version first (a BEFORE DELETE
 *   statement trigger, migration 0010): a routing statement either committed before the delete
 *   took the router's row, and then the delete's own DELETE of the deliveries, a statement that
 *   starts after it, sees and removes its rows; or it finds the new version and inserts nothing.
 * - A replay locks the webhook's row (FOR KEY SHARE) in the transaction that inserts each page,
 *   and stops with not_found once the row is gone.
 * The delete that relied on ON DELETE CASCADE, DeleteWebhook, now deletes the deliveries itself.
 */
export const deliveriesWithoutWebhookForeignKeyMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`ALTER TABLE tidings_deliveries DROP CONSTRAINT tidings_deliveries_webhook_id_fkey`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`DELETE FROM tidings_deliveries d WHERE NOT EXISTS (SELECT 1 FROM tidings_webhooks w WHERE w.id = d.webhook_id)`.execute(db);
    await sql`ALTER TABLE tidings_deliveries ADD CONSTRAINT tidings_deliveries_webhook_id_fkey
      FOREIGN KEY (webhook_id) REFERENCES tidings_webhooks (id) ON DELETE CASCADE`.execute(db);
  },
};
