import { mkdir } from "node:fs/promises";
import { PGlite } from "@electric-sql/pglite";
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import type { Logger } from "../logging/logger.js";
import { type Doorbell, pgDoorbell, silentDoorbell } from "./doorbell.js";
import { kyselyLookupSession, type LookupSession, pgLookupSession } from "./lookup-session.js";
import { migrateToLatest } from "./migrations/index.js";
import { plannerSettingStatements, plannerStartupOptions } from "./planner-settings.js";
import { sendMarkedStatementsPrepared } from "./prepared-statements.js";
import { PGliteDialect } from "./pglite/pglite-dialect.js";
import type { Database } from "./schema.js";

export interface DatabaseHandle {
  db: Kysely<Database>;
  kind: "postgres" | "pglite";
  /** Rings when another node (or this one) commits events. */
  doorbell: Doorbell;
  /**
   * For statements that find rows by key in growing tables, planned once as index lookups (see
   * LookupSession). On PostgreSQL its commits do not wait for the WAL flush: only what a crash
   * may lose runs there (webhook successes).
   */
  lookups: LookupSession;
  /** The PostgreSQL pool's connections now; undefined for PGlite, which has none. */
  poolStats(): { total: number; idle: number; waiting: number } | undefined;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  databaseUrl: string | undefined;
  dataDir: string;
  poolSize: number;
  logger: Logger;
}

/** Opens PostgreSQL (with a URL) or embedded PGlite, and migrates it to the latest schema. */
export async function openDatabase(options: OpenDatabaseOptions): Promise<DatabaseHandle> {
  const handle = options.databaseUrl ? await openPostgres(options.databaseUrl, options) : await openPGlite(options);
  try {
    const applied = await migrateToLatest(handle.db as Kysely<unknown>);
    if (applied.length > 0) options.logger.info("migrations applied", { migrations: applied });
    await handle.doorbell.announce();
  } catch (err) {
    await handle.close();
    throw err;
  }
  return handle;
}

async function openPostgres(url: string, options: OpenDatabaseOptions): Promise<DatabaseHandle> {
  const pool = new pg.Pool({ connectionString: url, max: options.poolSize, options: plannerStartupOptions });
  // An idle client that loses its server emits 'error' on the pool; without a listener the
  // process would crash. The next query gets a fresh connection.
  pool.on("error", (err) => options.logger.warn("idle database connection failed", { err }));
  // A client checked out of the pool has no listener of the pool's: if its connection dies
  // mid-query (a database restart), the query fails and the client also emits 'error', which,
  // unheard, would crash the process (found by the fault suite). The pool drops the client.
  pool.on("connect", (client) => {
    client.on("error", (err) => options.logger.warn("database connection failed", { err }));
    sendMarkedStatementsPrepared(client);
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  const doorbell = await pgDoorbell(url, options.logger);
  // The session records webhook successes, and nothing else: a success lost in a crash of
  // PostgreSQL leaves its delivery leased, so it is sent again once the lease expires (with the
  // same webhook-id), which at-least-once allows. Not waiting for the flush took the p99 from
  // publish to receiver at 500 events/s from 18.9 to 12.7 ms (median of 6 alternated pairs),
  // and PostgreSQL's CPU per event from 680 to 576 µs: the publish's commit no longer queues
  // behind a success's WAL flush. Appends and everything else stay durable commits.
  const lookups = pgLookupSession(url, options.logger, { asynchronousCommit: true });
  return {
    db,
    kind: "postgres",
    doorbell,
    lookups,
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    async close() {
      await doorbell.close();
      await lookups.close();
      await db.destroy();
    },
  };
}

async function openPGlite(options: OpenDatabaseOptions): Promise<DatabaseHandle> {
  if (!options.dataDir.startsWith("memory://")) await mkdir(options.dataDir, { recursive: true });
  const pglite = await PGlite.create(options.dataDir);
  // Its one session plans as the server's PostgreSQL sessions do (see planner-settings.ts).
  await pglite.exec(plannerSettingStatements);
  const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
  return {
    db,
    kind: "pglite",
    // PGlite belongs to this process alone: every commit is local and wakes readers directly.
    doorbell: silentDoorbell,
    lookups: kyselyLookupSession(db as Kysely<unknown>),
    poolStats: () => undefined,
    async close() {
      await db.destroy();
      await pglite.close();
    },
  };
}
