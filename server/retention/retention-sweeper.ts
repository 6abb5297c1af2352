import { type Kysely, sql } from "kysely";
import { TimeSummary } from "../event-log/time-summary.js";
import type { Logger } from "../logging/logger.js";
import { type Database, deliveryStatus } from "../storage/schema.js";

export interface RetentionOptions {
  /** Events recorded longer ago than this are removed; 0 keeps every event. */
  eventsMs: number;
  /** Succeeded deliveries (with their attempts) last changed longer ago than this are removed; 0 keeps them. */
  deliveriesMs: number;
  /** Dead letters (with their attempts) last changed longer ago than this are removed; 0 keeps them. */
  deadLettersMs: number;
  /** Rows one statement removes: small enough that no writer waits long behind it. */
  batchSize: number;
}

export interface SweepResult {
  events: number;
  deliveries: number;
  deadLetters: number;
}

/**
 * Removes what is older than the configured windows, in bounded batches: each batch is one
 * short statement over at most `batchSize` rows, with a yield between batches, so publishers and
 * the dispatcher never wait long behind it. Pending deliveries are never removed. Several nodes
 * may sweep at once: each batch locks its rows with SKIP LOCKED, so they share the work.
 *
 * Events go oldest first by sequence. Sequences follow commit order and recorded_at is the time
 * of the commit, so the first `batchSize` events in sequence order hold every old one there is
 * to find next; reading only those keeps a sweep of a 10M-event log that has nothing to remove
 * at one short index read, instead of a scan for rows that are not there.
 */
export class RetentionSweeper {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly options: RetentionOptions,
    private readonly logger: Logger,
    /** Forgets the blocks of the log that removing events emptied. */
    private readonly timeSummary = new TimeSummary(db),
  ) {}

  /** One sweep: batches until nothing older than the windows is left. `now` is for tests. */
  async sweepOnce(now = new Date(), shouldStop: () => boolean = () => false): Promise<SweepResult> {
    const result: SweepResult = { events: 0, deliveries: 0, deadLetters: 0 };
    const { eventsMs, deliveriesMs, deadLettersMs, batchSize } = this.options;
    if (deliveriesMs > 0) result.deliveries = await this.#drain(() => this.#deliveries(deliveryStatus.succeeded, new Date(now.getTime() - deliveriesMs)), shouldStop);
    if (deadLettersMs > 0) result.deadLetters = await this.#drain(() => this.#deliveries(deliveryStatus.dead, new Date(now.getTime() - deadLettersMs)), shouldStop);
    if (eventsMs > 0) result.events = await this.#drain(() => this.#events(new Date(now.getTime() - eventsMs)), shouldStop);
    if (result.events > 0) await this.timeSummary.forgetRemovedBlocks();
    if (result.events + result.deliveries + result.deadLetters > 0) {
      this.logger.info("retention removed old rows", { ...result, batchSize });
    }
    return result;
  }

  async #drain(batch: () => Promise<number>, shouldStop: () => boolean): Promise<number> {
    let total = 0;
    for (;;) {
      const removed = await batch();
      total += removed;
      if (removed < this.options.batchSize || shouldStop()) return total;
      // Let other work through between batches.
      await new Promise((r) => setImmediate(r));
    }
  }

  async #events(cutoff: Date): Promise<number> {
    const res = await sql`
      DELETE FROM tidings_events WHERE sequence IN (
        SELECT sequence FROM (
          SELECT sequence, recorded_at FROM tidings_events ORDER BY sequence LIMIT ${this.options.batchSize} FOR UPDATE SKIP LOCKED
        ) oldest
        WHERE recorded_at < ${cutoff})`.execute(this.db);
    return Number(res.numAffectedRows ?? 0);
  }

  async #deliveries(status: number, cutoff: Date): Promise<number> {
    // Attempts go with their delivery, in the same statement (they have no foreign key: see
    // migration 0007). A finished delivery gets no new attempts, so none can be left behind.
    const res = await sql<{ deleted: number }>`
      WITH gone AS (
        DELETE FROM tidings_deliveries WHERE id IN (
          SELECT id FROM tidings_deliveries
          WHERE status = ${status} AND updated_at < ${cutoff}
          LIMIT ${this.options.batchSize}
          FOR UPDATE SKIP LOCKED)
        RETURNING id
      ), attempts AS (
        DELETE FROM tidings_delivery_attempts a USING gone WHERE a.delivery_id = gone.id
      )
      SELECT count(*)::int AS deleted FROM gone`.execute(this.db);
    return Number(res.rows[0]?.deleted ?? 0);
  }
}
