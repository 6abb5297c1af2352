import { type Kysely, type Migration, sql } from "kysely";

/**
 * The latest event time in each block of 4,096 sequences, for finding the first event in log
 * order at or after a time (Subscribe's start_time) without walking the log from its start.
 * An event's time is its publisher's, so no index orders the log by it; this summary says which
 * blocks hold any event at or after a time, and the first such block is read alone. Rows are
 * written by reads and, in the background, at startup, only for sealed blocks (every sequence
 * in them already handed out), whose events never change: a block's latest time stays an upper
 * bound after retention deletes some of its events, and retention drops the rows of blocks it
 * emptied. See event-log/time-summary.ts and EventReader.cursorBeforeTime.
 */
export const timeBlocksMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`CREATE TABLE tidings_time_blocks (
      block bigint PRIMARY KEY,
      max_time timestamptz NOT NULL
    )`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`DROP TABLE tidings_time_blocks`.execute(db);
  },
};
