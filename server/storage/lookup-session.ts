import { type CompiledQuery, type Kysely } from "kysely";
import pg from "pg";
import type { Logger } from "../logging/logger.js";
import { sendMarkedStatementsPrepared } from "./prepared-statements.js";

/**
 * Runs statements that find their rows by key in a table that keeps growing, as prepared
 * statements whose plan can only be index lookups, whatever the table's size or statistics.
 *
 * Recording webhook successes is such a statement (an UPDATE of the deliveries named in it,
 * found by primary key; see recordSuccessesStatement). Prepared on a pooled connection,
 * PostgreSQL keeps the plan it chose while the table was small (a sequential scan and a hash
 * join) until the table's statistics change, which without autovacuum is never, so every
 * statement of a 20,000-delivery backlog read the whole table; it was therefore planned at
 * every execution, which at 500 deliveries/s (a few successes a statement) cost PostgreSQL
 * more than running it: its log put parse and plan at 0.56 ms a statement against 0.38 ms for
 * the execution. This connection turns sequential scans, hash joins and merge joins off
 * (enable_seqscan, enable_hashjoin, enable_mergejoin), so the one plan left is the nested loop
 * of index lookups, and makes PostgreSQL keep the plan it makes first (plan_cache_mode =
 * force_generic_plan): each statement is parsed and planned once per connection. It is a
 * connection of its own because those settings would mislead the planner for the statements
 * that do read many rows.
 */
export interface LookupSession {
  /** Runs the statement (marked with preparedMarker to be prepared) and returns its rows. */
  run<R>(query: CompiledQuery<R>): Promise<R[]>;
  close(): Promise<void>;
}

export const lookupApplicationName = "tidings-lookups";

/**
 * The planner settings of a lookup session: index lookups in nested loops only. And no JIT
 * compilation: a disabled plan node still costs 10^10, so any plan that keeps one (a sequential
 * scan of a table with no usable index) passes jit_above_cost and would be compiled at every
 * execution, for statements that touch a handful of rows. A routing statement made to record
 * successes on this session did (an experiment, not kept): 2 ms of PostgreSQL time per event.
 */
const lookupPlannerSettings = "SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off; SET plan_cache_mode = force_generic_plan; SET jit = off";

export interface PgLookupSessionOptions {
  /**
   * Commit without waiting for the WAL flush (synchronous_commit = off on the connection). Only
   * for statements whose loss in a crash of PostgreSQL is harmless: such a commit is visible
   * and atomic at once, and durable within about three wal_writer_delay (600 ms by default), or
   * as soon as any later durable commit flushes the WAL past it.
   */
  asynchronousCommit?: boolean;
}

/**
 * A LookupSession on a connection of its own, opened on first use. If the connection fails,
 * the statement fails (its caller retries as it would after any database error) and the next
 * one opens a new connection.
 */
export function pgLookupSession(url: string, logger: Logger, options: PgLookupSessionOptions = {}): LookupSession {
  let client: Promise<pg.Client> | undefined;
  let closed = false;
  const open = (): Promise<pg.Client> => {
    // Named, so that it can be told apart in pg_stat_activity.
    const c = new pg.Client({ connectionString: url, application_name: lookupApplicationName });
    const ready = (async () => {
      await c.connect();
      await c.query(lookupPlannerSettings);
      if (options.asynchronousCommit) await c.query("SET synchronous_commit = off");
      sendMarkedStatementsPrepared(c as pg.PoolClient);
      return c;
    })();
    const forget = () => {
      if (client === ready) client = undefined;
    };
    // Without a listener, a connection that dies between statements would crash the process.
    c.on("error", (err) => {
      logger.warn("the lookup connection failed; the next statement opens a new one", { err });
      forget();
      c.end().catch(() => {});
    });
    ready.catch(forget);
    return ready;
  };
  return {
    async run<R>(query: CompiledQuery<R>): Promise<R[]> {
      if (closed) throw new Error("the lookup session is closed");
      const c = await (client ??= open());
      const res = await c.query(query.sql, query.parameters as unknown[]);
      return res.rows as R[];
    },
    async close() {
      closed = true;
      const c = await client?.catch(() => undefined);
      client = undefined;
      await c?.end().catch(() => {});
    },
  };
}

/** Statements run through Kysely as they are (PGlite: one connection, no plans to keep). */
export function kyselyLookupSession(db: Kysely<unknown>): LookupSession {
  return {
    async run<R>(query: CompiledQuery<R>): Promise<R[]> {
      return (await db.executeQuery(query)).rows;
    },
    async close() {},
  };
}
