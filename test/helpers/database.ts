import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";

/** Where a test server keeps its events: a throwaway Postgres database, or a PGlite directory. */
export interface TestStorage {
  databaseUrl: string | undefined;
  dataDir: string;
  kind: "postgres" | "pglite";
  drop(): Promise<void>;
}

/**
 * With DATABASE_URL set (CI always sets it) every call creates a new database on that server,
 * so suites never see each other's events; without it, a new PGlite directory.
 */
export async function createTestStorage(): Promise<TestStorage> {
  const base = process.env.DATABASE_URL;
  const dataDir = await mkdtemp(join(tmpdir(), "tidings-test-"));
  if (!base) {
    return { databaseUrl: undefined, dataDir, kind: "pglite", drop: () => rm(dataDir, { recursive: true, force: true }) };
  }
  const name = `tidings_t_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    databaseUrl: url.toString(),
    dataDir,
    kind: "postgres",
    async drop() {
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** True when the suite runs on real PostgreSQL, which multi-node tests need. */
export const onPostgres = Boolean(process.env.DATABASE_URL);

/**
 * For suites that need PostgreSQL (several processes on one database): true on PostgreSQL;
 * otherwise prints why the suite is skipped, and fails outright under CI, which must never skip.
 */
export function needsPostgres(suite: string): boolean {
  if (onPostgres) return true;
  if (process.env.CI) throw new Error(`${suite} needs PostgreSQL: CI must set DATABASE_URL`);
  console.log(`skipped: ${suite} needs PostgreSQL (set DATABASE_URL); PGlite is one process's database`);
  return false;
}
