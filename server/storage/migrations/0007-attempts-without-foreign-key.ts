import { type Kysely, type Migration, sql } from "kysely";

/**
 * Attempts lose their foreign key to deliveries. Every recorded success checked it with a
 * query of its own per attempt (PostgreSQL's referential-integrity trigger): 14–18 µs of
 * PostgreSQL's time per delivery in a webhook backlog, about a tenth of all it spent per
 * delivery. Nothing needs the check: an attempt is only ever written together with its
 * delivery's row, holding that row's lock: a success from the UPDATE's RETURNING in the same
 * statement, a failure or a lease takeover in the transaction that updated or locked it. So it
 * cannot name a delivery that does not exist. The two deletes that relied on ON DELETE
 * CASCADE, retention and DeleteWebhook, now delete the attempts themselves.
 */
export const attemptsWithoutForeignKeyMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`ALTER TABLE tidings_delivery_attempts DROP CONSTRAINT tidings_delivery_attempts_delivery_id_fkey`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`DELETE FROM tidings_delivery_attempts a WHERE NOT EXISTS (SELECT 1 FROM tidings_deliveries d WHERE d.id = a.delivery_id)`.execute(db);
    await sql`ALTER TABLE tidings_delivery_attempts ADD CONSTRAINT tidings_delivery_attempts_delivery_id_fkey
      FOREIGN KEY (delivery_id) REFERENCES tidings_deliveries (id) ON DELETE CASCADE`.execute(db);
  },
};
