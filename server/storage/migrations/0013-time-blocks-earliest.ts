import { type Kysely, type Migration, sql } from "kysely";

/**
 * The time summary (migration 0011) gains each block's earliest event time, so that a window
 * read newest first can start at the last event before its end time instead of walking back
 * from the head: the last block whose earliest time is before the end holds that event.
 *
 * The summary is derived from the log, so it is emptied rather than filled here: the server
 * summarizes the log again in the background when it starts (TimeSummary.start, a statement per
 * million events or so, with a log line at the start and end), and reads walk the log from where
 * it has got to meanwhile, as after the upgrade that added it. Filling it here would read the
 * whole log inside the migration, before the server answers anything. The default marks a row
 * written without the column (a node still on the previous version, during a rolling upgrade) as
 * possibly holding events before any time: it is searched, never skipped.
 */
export const timeBlocksEarliestMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`TRUNCATE tidings_time_blocks`.execute(db);
    await sql`ALTER TABLE tidings_time_blocks ADD COLUMN min_time timestamptz NOT NULL DEFAULT '-infinity'`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`ALTER TABLE tidings_time_blocks DROP COLUMN min_time`.execute(db);
  },
};
