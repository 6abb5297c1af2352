import { type Kysely, type RawBuilder, sql } from "kysely";
import type { Logger } from "../logging/logger.js";
import type { Database } from "../storage/schema.js";

/** Sequences per block (see migration 0011). */
export const timeBlockSize = 4096n;

/** The first block the summary does not hold yet. */
const firstUnsummarizedBlock = sql<bigint>`coalesce((SELECT max(block) + 1 FROM tidings_time_blocks), 0)`;
/** The first block not sealed yet: some of its sequences are not handed out. */
const firstUnsealedBlock = sql<bigint>`(SELECT (last_sequence + 1) / ${timeBlockSize.toString()}::bigint FROM tidings_log_head WHERE id = 1)`;

/**
 * The latest and earliest event time per block of 4,096 sequences (`tidings_time_blocks`), for
 * finding the first event in log order at or after a time, or the last one before a time,
 * without walking the log from its start or its head: an event's time is its publisher's, so no
 * index orders the log by it, and the walk took 1.2 s at 10M events. The first block whose
 * latest time is at or after the time holds the first such event, unless retention deleted the
 * events that made it so; then the next one does. Likewise the last block whose earliest time
 * is before a time holds the last event before it (migration 0013).
 *
 * Only sealed blocks are summarized (every sequence in them handed out, and committed: the
 * head row moves in the transaction that inserts its events, so a statement that sees the head
 * sees them). Their events never change, and retention only deletes, so a block's latest time
 * stays an upper bound and its earliest a lower one. A reader summarizes what sealed since the
 * last read; a log that has grown by more than one statement's worth since (a large log's first
 * read after an upgrade that added or emptied the summary) is summarized in the background, a
 * statement at a time, while reads use what is there.
 */
export class TimeSummary {
  #catchingUp: Promise<void> | undefined;
  #stopped = false;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly logger?: Logger,
    /** Blocks summarized per statement: by default about a million events, a fraction of a second to read. */
    private readonly blocksPerStatement = 256n,
  ) {}

  /**
   * Summarizes up to one statement's worth of newly sealed blocks, and starts the background
   * catch-up if more are waiting. Returns the first block not summarized: events from
   * `covered × 4096` on must be read from the log itself.
   */
  async update(): Promise<bigint> {
    // Most reads come when no block sealed since the last: asking first costs a third of the
    // summarizing statement, which takes longer to plan than to find nothing (0.17 against
    // 0.49 ms a call at 10M events, warm), and a read with both edges of a window asks twice.
    const known = await this.#progress();
    if (known.covered >= known.sealed) return known.covered;
    const progress = await this.#summarizeNext();
    if (progress.covered < progress.sealed) this.#startCatchUp(progress);
    return progress.covered;
  }

  /**
   * Brings the summary up to the head in the background: at startup, so that a log that grew
   * without it (before the upgrade that added it) is summarized before reads need it.
   */
  start(): void {
    this.#startCatchUp(undefined);
  }

  /** One background catch-up at a time, none once stopped. */
  #startCatchUp(first: { covered: bigint; sealed: bigint } | undefined): void {
    if (this.#catchingUp === undefined && !this.#stopped) this.#catchingUp = this.#catchUp(first).finally(() => (this.#catchingUp = undefined));
  }

  /** Resolves once no background catch-up is running. */
  async settled(): Promise<void> {
    while (this.#catchingUp !== undefined) await this.#catchingUp;
  }

  /** Ends a background catch-up after its current statement (before the pool closes). */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.settled();
  }

  /**
   * Drops the rows of blocks that retention emptied: every block before the first event left
   * (they hold nothing a read could find), except the last summarized block, from which the
   * summary goes on. Returns how many rows went.
   */
  async forgetRemovedBlocks(): Promise<number> {
    const res = await sql`
      DELETE FROM tidings_time_blocks
      WHERE block < (SELECT min(sequence) FROM tidings_events) / ${timeBlockSize.toString()}::bigint
        AND block < (SELECT max(block) FROM tidings_time_blocks)`.execute(this.db);
    return Number(res.numAffectedRows ?? 0);
  }

  /** The first summarized block at or after `from` whose latest time is at or after `time`. */
  async firstCandidate(from: bigint, time: Date): Promise<bigint | undefined> {
    return this.#block(sql`SELECT min(block)::text AS block FROM tidings_time_blocks WHERE block >= ${from.toString()} AND max_time >= ${time}`);
  }

  /** The last summarized block before `before` whose earliest time is before `time`. */
  async lastCandidate(before: bigint, time: Date): Promise<bigint | undefined> {
    return this.#block(sql`SELECT max(block)::text AS block FROM tidings_time_blocks WHERE block < ${before.toString()} AND min_time < ${time}`);
  }

  /** The block a one-row statement names; undefined for none (NULL). */
  async #block(statement: RawBuilder<unknown>): Promise<bigint | undefined> {
    const block = (await sql<{ block: string | null }>`${statement}`.execute(this.db)).rows[0]?.block;
    return block === null || block === undefined ? undefined : BigInt(block);
  }

  /** How far the summary goes, and how far it could: the first block not summarized, and not sealed. */
  async #progress(): Promise<{ covered: bigint; sealed: bigint }> {
    const res = await sql<{ covered: string; sealed: string }>`
      SELECT ${firstUnsummarizedBlock}::text AS covered, coalesce(${firstUnsealedBlock}, 0)::text AS sealed`.execute(this.db);
    const row = res.rows[0]!;
    return { covered: BigInt(row.covered), sealed: BigInt(row.sealed) };
  }

  /** Statements until the summary reaches the head; `first` is one already run, if any. */
  async #catchUp(first: { covered: bigint; sealed: bigint } | undefined): Promise<void> {
    const started = performance.now();
    let announced = false;
    try {
      let progress = first ?? (await this.#summarizeNext());
      while (progress.covered < progress.sealed && !this.#stopped) {
        // Said only when there is more than one statement's worth: a large log's first time.
        if (!announced) {
          const blocks = progress.sealed - progress.covered;
          this.logger?.info("summarizing event times for start_time and time-window reads", { blocks: blocks.toString(), events: (blocks * timeBlockSize).toString() });
          announced = true;
        }
        progress = await this.#summarizeNext();
        this.logger?.debug("summarizing event times", { covered: progress.covered.toString(), sealed: progress.sealed.toString() });
      }
      if (announced && !this.#stopped) this.logger?.info("event times summarized", { ms: Math.round(performance.now() - started) });
    } catch (err) {
      // Reads walk the log from where the summary ends meanwhile; the next read starts again.
      this.logger?.warn("summarizing event times failed; start_time and time-window reads walk the log meanwhile", { err });
    }
  }

  /**
   * One statement: the next blocks after the last summarized, up to the last sealed one or
   * blocksPerStatement of them. A block whose events are all gone is summarized as latest
   * -infinity and earliest infinity: never a candidate.
   * Nodes summarizing at the same time write the same rows; the second one's are skipped.
   */
  async #summarizeNext(): Promise<{ covered: bigint; sealed: bigint }> {
    const res = await sql<{ covered: string; sealed: string }>`
      WITH span AS (
        SELECT lo, greatest(lo, least(sealed, lo + ${this.blocksPerStatement.toString()}::bigint)) AS hi, sealed
        FROM (SELECT ${firstUnsummarizedBlock} AS lo, ${firstUnsealedBlock} AS sealed) bounds
      ), latest AS (
        SELECT e.sequence / ${timeBlockSize.toString()}::bigint AS block, max(e.time) AS max_time, min(e.time) AS min_time
        FROM span, tidings_events e
        WHERE e.sequence >= span.lo * ${timeBlockSize.toString()}::bigint AND e.sequence < span.hi * ${timeBlockSize.toString()}::bigint
        GROUP BY 1
      ), added AS (
        INSERT INTO tidings_time_blocks (block, max_time, min_time)
        SELECT b.block, coalesce(latest.max_time, '-infinity'), coalesce(latest.min_time, 'infinity')
        FROM span CROSS JOIN generate_series(span.lo, span.hi - 1) AS b(block)
        LEFT JOIN latest ON latest.block = b.block
        ON CONFLICT (block) DO NOTHING
      )
      SELECT hi::text AS covered, sealed::text AS sealed FROM span`.execute(this.db);
    const row = res.rows[0]!;
    return { covered: BigInt(row.covered), sealed: BigInt(row.sealed) };
  }
}
