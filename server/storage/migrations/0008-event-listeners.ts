import { type Kysely, type Migration, sql } from "kysely";

/**
 * The nodes listening for commit notifications, each until its registration runs out (renewed
 * while the node's LISTEN connection lives). A node NOTIFYs only when another node listens:
 * alone, its NOTIFY reached nobody but itself, and cost PostgreSQL a sixth of its CPU per
 * published event (the notification queue, the database-wide lock every notifying commit
 * takes, and waking the node's own listening backend) for a ring the node then ignored.
 */
export const eventListenersMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`CREATE TABLE tidings_event_listeners (
      id text PRIMARY KEY,
      listening_until timestamptz NOT NULL
    )`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`DROP TABLE tidings_event_listeners`.execute(db);
  },
};
