import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Kysely, sql } from "kysely";
import { silentLogger } from "../server/logging/logger.js";
import { openDatabase, type DatabaseHandle } from "../server/storage/open-database.js";
import { plannerSettings } from "../server/storage/planner-settings.js";
import type { Database } from "../server/storage/schema.js";
import { createTestStorage, needsPostgres, type TestStorage } from "./helpers/database.js";

/**
 * Events in the log, shaped like the growth benchmark's seeded log (bench/lib/seed-log.ts): a
 * few types mixed at random, rows of a few hundred bytes. About one in `rareEvery` is of the
 * rare type.
 */
const events = 60_000;
const rareEvery = 33;

/** The plan of one page of the rare type after the log's middle, as EventReader reads one type. */
async function rareTypePagePlan(db: Kysely<Database>, randomPageCostOverride?: number): Promise<string> {
  const explain = sql<{ "QUERY PLAN": string }>`
    EXPLAIN SELECT sequence, id, type, source, subject, time, attributes, payload FROM tidings_events
    WHERE sequence > ${String(events / 2)} AND type IN ('gap.detected') ORDER BY sequence LIMIT 101`;
  const rows = randomPageCostOverride === undefined
    ? (await explain.execute(db)).rows
    : await db.transaction().execute(async (tx) => {
        await sql`SET LOCAL random_page_cost = ${sql.raw(String(randomPageCostOverride))}`.execute(tx);
        return (await explain.execute(tx)).rows;
      });
  return rows.map((r) => r["QUERY PLAN"]).join("\n");
}

/**
 * The server's sessions plan with random_page_cost 1.1 and without JIT compilation
 * (server/storage/planner-settings.ts), so that a page of a type of a few percent of the log is
 * read through the type index instead of a walk of the primary key that throws the other types
 * away, and no short statement is compiled first.
 */
describe("planner settings of the server's sessions", () => {
  let storage: TestStorage;
  let handle: DatabaseHandle;

  beforeAll(async () => {
    storage = await createTestStorage();
    handle = await openDatabase({ databaseUrl: storage.databaseUrl, dataDir: storage.dataDir, poolSize: 3, logger: silentLogger });
    await sql`
      INSERT INTO tidings_events (sequence, id, type, source, time, payload)
      SELECT g, 'e-' || g, CASE WHEN hashint4(g) % ${rareEvery} = 0 THEN 'gap.detected' ELSE (ARRAY['memory.created', 'memory.accessed', 'synapse.fired', 'debate.vote'])[1 + abs(hashint4(g) % 4)] END, 'test',
             now() - make_interval(secs => ${events} - g), convert_to(repeat('x', 250), 'UTF8')
      FROM generate_series(1, ${events}) g`.execute(handle.db);
    await sql`UPDATE tidings_log_head SET last_sequence = ${events} WHERE id = 1`.execute(handle.db);
    await sql`ANALYZE tidings_events`.execute(handle.db);
  }, 60_000);
  afterAll(async () => {
    await handle?.close();
    await storage?.drop();
  });

  it("every pooled session starts with the lower random_page_cost, and without JIT compilation", async () => {
    // Three at once, each holding its connection for a moment, so that each runs on its own.
    const shown = await Promise.all(
      [1, 2, 3].map(async () => (await sql<{ cost: string; jit: string; pid: number }>`SELECT current_setting('random_page_cost') AS cost, current_setting('jit') AS jit, pg_backend_pid() AS pid, pg_sleep(0.2)`.execute(handle.db)).rows[0]!),
    );
    expect(shown.map((s) => [s.cost, s.jit])).toEqual(Array(3).fill([plannerSettings.random_page_cost, plannerSettings.jit]));
    if (handle.kind === "postgres") expect(new Set(shown.map((s) => s.pid)).size).toBe(3);
  });

  it("reads a page of a rare type through the type index, where PostgreSQL's default walks the primary key", async () => {
    const plan = await rareTypePagePlan(handle.db);
    expect(plan).toMatch(/Index Scan using tidings_events_type_sequence .*\n\s+Index Cond: \(\(type = 'gap.detected'::text\) AND \(sequence > '30000'::bigint\)\)/);
    expect(plan).not.toMatch(/tidings_events_pkey/);
    // The control: the same statement planned with PostgreSQL's default cost of a random page.
    const defaultPlan = await rareTypePagePlan(handle.db, 4);
    expect(defaultPlan).toMatch(/Index Scan using tidings_events_pkey/);
    expect(defaultPlan).toMatch(/Filter: \(type = 'gap.detected'::text\)/);
  });

  it.runIf(needsPostgres("a database URL's own options"))("lets a database URL's own options parameter choose another value", async () => {
    const url = new URL(storage.databaseUrl!);
    url.searchParams.set("options", "-c random_page_cost=2 -c jit=on");
    const other = await openDatabase({ databaseUrl: url.toString(), dataDir: "", poolSize: 1, logger: silentLogger });
    try {
      const shown = (await sql<{ cost: string; jit: string }>`SELECT current_setting('random_page_cost') AS cost, current_setting('jit') AS jit`.execute(other.db)).rows[0]!;
      expect(shown).toEqual({ cost: "2", jit: "on" });
    } finally {
      await other.close();
    }
  });
});
