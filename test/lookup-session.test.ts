import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sql } from "kysely";
import pg from "pg";
import { silentLogger } from "../server/logging/logger.js";
import { lookupApplicationName, pgLookupSession } from "../server/storage/lookup-session.js";
import { openDatabase, type DatabaseHandle } from "../server/storage/open-database.js";
import { preparedMarker, sendMarkedStatementsPrepared } from "../server/storage/prepared-statements.js";
import { createTestStorage, needsPostgres, type TestStorage } from "./helpers/database.js";

/**
 * The lookup session keeps a prepared statement's plan on index lookups however much its table
 * grows after the plan was made: the property webhook successes are recorded with.
 */
describe.runIf(needsPostgres("the lookup session's plans"))("lookup session", () => {
  let storage: TestStorage;
  let handle: DatabaseHandle;

  beforeAll(async () => {
    storage = await createTestStorage();
    handle = await openDatabase({ databaseUrl: storage.databaseUrl, dataDir: "", poolSize: 2, logger: silentLogger });
    await sql`CREATE TABLE lookup_test (id text PRIMARY KEY, hits int NOT NULL DEFAULT 0)`.execute(handle.db);
    await sql`INSERT INTO lookup_test (id) VALUES ('k0')`.execute(handle.db);
  });
  afterAll(async () => {
    await handle?.close();
    await storage?.drop();
  });

  // Shaped like the statement that records successes: rows named in arrays, joined by key.
  const compiled = (ids: string[]) =>
    sql<{ id: string }>`${sql.raw(preparedMarker)} UPDATE lookup_test t SET hits = t.hits + 1 FROM unnest(${ids}::text[]) AS c(id) WHERE t.id = c.id RETURNING t.id`.compile(handle.db);

  it("plans a prepared statement made on a small table as index lookups, and keeps them once the table grew", async () => {
    const session = pgLookupSession(storage.databaseUrl!, silentLogger);
    // The control: the same statement prepared on an ordinary connection.
    const plain = new pg.Client({ connectionString: storage.databaseUrl });
    await plain.connect();
    // Planned once, as the session plans, but with every kind of plan allowed.
    await plain.query("SET plan_cache_mode = force_generic_plan");
    sendMarkedStatementsPrepared(plain as pg.PoolClient);
    try {
      // Enough executions on the one-row table for PostgreSQL to settle on a generic plan.
      for (let i = 0; i < 10; i++) {
        expect(await session.run(compiled(["k0"]))).toEqual([{ id: "k0" }]);
        expect((await plain.query(compiled(["k0"]).sql, [["k0"]])).rows).toEqual([{ id: "k0" }]);
      }
      await sql`INSERT INTO lookup_test (id) SELECT 'k' || g FROM generate_series(1, 50000) g`.execute(handle.db);

      const explain = async (run: (q: string) => Promise<Array<Record<string, string>>>) => {
        const name = (await run("SELECT name FROM pg_prepared_statements WHERE statement LIKE '%lookup_test%'"))[0]!["name"];
        return (await run(`EXPLAIN EXECUTE ${name}('{k1,k2}')`)).map((r) => r["QUERY PLAN"]).join("\n");
      };
      // Planned once: every execution used the one generic plan.
      const counts = await session.run(sql.raw<{ generic_plans: string; custom_plans: string }>("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%lookup_test%'").compile(handle.db));
      expect(counts.map((c) => [Number(c.generic_plans), Number(c.custom_plans)])).toEqual([[10, 0]]);
      const sessionPlan = await explain((q) => session.run(sql.raw<Record<string, string>>(q).compile(handle.db)));
      const plainPlan = await explain(async (q) => (await plain.query(q)).rows);
      expect(sessionPlan).toContain("Index Scan using lookup_test_pkey");
      expect(sessionPlan).not.toContain("Seq Scan on lookup_test");
      // What the session exists to prevent: the plan made while the table was small.
      expect(plainPlan).toContain("Seq Scan on lookup_test");
      expect(await session.run(compiled(["k1", "k2", "nope"]))).toEqual(expect.arrayContaining([{ id: "k1" }, { id: "k2" }]));
    } finally {
      await plain.end();
      await session.close();
    }
  });

  it("opens a new connection after its connection is killed", async () => {
    const session = pgLookupSession(storage.databaseUrl!, silentLogger);
    try {
      expect(await session.run(compiled(["k0"]))).toEqual([{ id: "k0" }]);
      await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ${lookupApplicationName} AND datname = current_database()`.execute(handle.db);
      // The statement that meets the dead connection may fail (its caller retries); the next one works.
      const outcomes: string[] = [];
      for (let i = 0; i < 3 && outcomes.at(-1) !== "ok"; i++) {
        outcomes.push(await session.run(compiled(["k0"])).then(() => "ok", () => "failed"));
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(outcomes.at(-1)).toBe("ok");
      expect(outcomes.length).toBeLessThanOrEqual(2);
    } finally {
      await session.close();
    }
  });
});
