import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sql } from "kysely";
import pg from "pg";
import { silentLogger } from "../server/logging/logger.js";
import { lookupApplicationName, type LookupSession, pgLookupSession } from "../server/storage/lookup-session.js";
import { openDatabase, type DatabaseHandle } from "../server/storage/open-database.js";
import { preparedMarker, sendMarkedStatementsPrepared } from "../server/storage/prepared-statements.js";
import { recordSuccessesStatement, type SuccessRow } from "../server/webhooks/success-record.js";
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

  /** EXPLAIN's output as one text. */
  const planText = (rows: Array<Record<string, string>>) => rows.map((r) => r["QUERY PLAN"]).join("\n");
  /** A statement of any text, run on the session. */
  const onSession = (session: LookupSession, text: string) => session.run(sql.raw<Record<string, string>>(text).compile(handle.db));

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
        return planText(await run(`EXPLAIN EXECUTE ${name}('{k1,k2}')`));
      };
      // Planned once: every execution used the one generic plan.
      const counts = await session.run(sql.raw<{ generic_plans: string; custom_plans: string }>("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%lookup_test%'").compile(handle.db));
      expect(counts.map((c) => [Number(c.generic_plans), Number(c.custom_plans)])).toEqual([[10, 0]]);
      const sessionPlan = await explain((q) => onSession(session, q));
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

  it("records webhook successes by key, and only with the lease token, however small the table was when the statement was planned", async () => {
    const session = pgLookupSession(storage.databaseUrl!, silentLogger);
    const success = (deliveryId: string, leaseToken: string): SuccessRow => ({ deliveryId, leaseToken, statusCode: 200, startedAt: new Date(), durationMs: 3, responseExcerpt: "ok" });
    try {
      await sql`INSERT INTO tidings_webhooks (id, url, secrets, retry_policy, timeout_ms, max_consecutive_failures, max_failing_ms, from_sequence)
        VALUES ('wh_lookup', 'http://127.0.0.1:9/', '[]', '{}', 1000, 10, 60000, 0)`.execute(handle.db);
      const deliveries = (from: number, to: number) => sql`INSERT INTO tidings_deliveries (id, webhook_id, event_sequence, event_id, event_type, lease_token)
        SELECT 'dlv_' || g, 'wh_lookup', g, 'evt_' || g, 'memory.created', 'token_' || g FROM generate_series(${from}::int, ${to}::int) g`.execute(handle.db);
      // A new deployment: one delivery when the statement is first planned, and planned for good.
      await deliveries(0, 0);
      for (let i = 0; i < 10; i++) expect(await session.run(recordSuccessesStatement(handle.db, [success("dlv_none", "x")], "node-a"))).toEqual([]);
      await deliveries(1, 50_000);

      const statement = recordSuccessesStatement(handle.db, [success("dlv_5", "token_5"), success("dlv_7", "not its token"), success("dlv_none", "x")], "node-a");
      const [prepared] = await session.run(sql.raw<{ name: string; generic_plans: string }>("SELECT name, generic_plans FROM pg_prepared_statements WHERE statement LIKE '%tidings_deliveries%'").compile(handle.db));
      expect(Number(prepared!.generic_plans)).toBe(10);
      // EXECUTE takes its parameters as literals: arrays in PostgreSQL's text form.
      const text = (v: unknown) => (v instanceof Date ? v.toISOString() : String(v));
      const literal = (p: unknown) => (Array.isArray(p) ? `{${p.map((v) => `"${text(v).replace(/["\\]/g, "\\$&")}"`).join(",")}}` : text(p));
      const literals = statement.parameters.map((p) => `'${literal(p).replaceAll("'", "''")}'`).join(", ");
      const plan = planText(await onSession(session, `EXPLAIN (ANALYZE, BUFFERS) EXECUTE ${prepared!.name}(${literals})`));
      // Each named row: one primary key lookup, inside a loop over the named rows. (Rows to
      // insert, routed deliveries without a row yet, find their webhook and window by key too:
      // no Seq Scan anywhere in the plan.)
      expect(plan).toMatch(/Nested Loop[^\n]*\n[^\n]*\n\s*->\s+CTE Scan on c c_\d+/);
      expect(plan).toMatch(/Index Scan using tidings_deliveries_pkey on tidings_deliveries d(_\d+)?[^\n]*\n\s*Index Cond: \(id = c(_\d+)?\.id\)/);
      expect(plan).not.toContain("Seq Scan");
      // A few pages for three rows, not the 50,000-row table's hundreds.
      const hits = [...plan.matchAll(/shared hit=(\d+)/g)].map((m) => Number(m[1]));
      expect(Math.max(...hits), plan).toBeLessThan(60);
      // EXPLAIN ANALYZE ran it: dlv_5 is recorded; dlv_7, whose token is another's, is not.
      const rows = await sql<{ id: string; status: number; success_node: string | null; success_response_excerpt: string | null }>`
        SELECT id, status, success_node, success_response_excerpt FROM tidings_deliveries WHERE id IN ('dlv_5', 'dlv_7') ORDER BY id`.execute(handle.db);
      expect(rows.rows).toEqual([
        { id: "dlv_5", status: 2, success_node: "node-a", success_response_excerpt: "ok" },
        { id: "dlv_7", status: 1, success_node: null, success_response_excerpt: null },
      ]);
      expect(await session.run(recordSuccessesStatement(handle.db, [success("dlv_9", "token_9"), success("dlv_5", "token_5")], "node-a"))).toEqual([
        { delivery_id: "dlv_9", latency: expect.any(Number) },
      ]);
      // A routed delivery without a row (its window is not in the table here) is inserted
      // succeeded; recorded again, it meets its own row, whose lease token is gone, and is left alone.
      const routed = (deliveryId: string): SuccessRow => ({
        ...success(deliveryId, "window_token"),
        unwritten: { id: deliveryId, webhookId: "wh_lookup", eventSequence: 60_001n, eventId: "evt_new", eventType: "memory.created", windowId: "win_gone", leaseToken: "window_token" },
      });
      expect(await session.run(recordSuccessesStatement(handle.db, [routed("dlv_new"), success("dlv_11", "token_11")], "node-a"))).toEqual(expect.arrayContaining([
        { delivery_id: "dlv_new", latency: expect.any(Number) },
        { delivery_id: "dlv_11", latency: expect.any(Number) },
      ]));
      expect(await session.run(recordSuccessesStatement(handle.db, [routed("dlv_new")], "node-a"))).toEqual([]);
      const inserted = await sql<{ status: number; attempts: number; event_sequence: string; lease_token: string | null }>`
        SELECT status, attempts, event_sequence::text, lease_token FROM tidings_deliveries WHERE id = 'dlv_new'`.execute(handle.db);
      expect(inserted.rows).toEqual([{ status: 2, attempts: 1, event_sequence: "60001", lease_token: null }]);
    } finally {
      await session.close();
    }
  });

  it("never compiles its statements with JIT, though a disabled plan node costs past jit_above_cost", async () => {
    const session = pgLookupSession(storage.databaseUrl!, silentLogger);
    const plain = new pg.Client({ connectionString: storage.databaseUrl });
    await plain.connect();
    try {
      // No index: the sequential scan the session disables is the only plan there is.
      await sql`CREATE TABLE lookup_unindexed (id text, n int)`.execute(handle.db);
      const explain = "EXPLAIN (ANALYZE) SELECT count(*) FROM lookup_unindexed WHERE id = 'x'";
      const sessionPlan = planText(await onSession(session, explain));
      expect(sessionPlan).toContain("Seq Scan on lookup_unindexed");
      expect(sessionPlan).not.toContain("JIT:");
      // On whatever the server's own setting is; pg_jit_available() then says whether LLVM is there.
      await plain.query("SET jit = on");
      const jitAvailable = (await plain.query("SELECT pg_jit_available() AS on")).rows[0].on === true;
      if (!jitAvailable) {
        if (process.env.CI) throw new Error("the JIT control needs a PostgreSQL with JIT (llvmjit), as CI's has");
        console.log("lookup session JIT control skipped: this PostgreSQL has no JIT, so nothing could be compiled either way");
        return;
      }
      // The control: the same settings with JIT allowed compile this one-page scan.
      await plain.query("SET enable_seqscan = off");
      const plainPlan = planText((await plain.query(explain)).rows);
      expect(plainPlan).toContain("JIT:");
    } finally {
      await plain.end();
      await session.close();
    }
  });

  it("commits without waiting for the WAL flush only when opened for that, as the server's session for webhook successes is", async () => {
    const show = (session: LookupSession) => onSession(session, "SHOW synchronous_commit");
    const durable = pgLookupSession(storage.databaseUrl!, silentLogger);
    const asynchronous = pgLookupSession(storage.databaseUrl!, silentLogger, { asynchronousCommit: true });
    try {
      expect(await show(durable)).toEqual([{ synchronous_commit: "on" }]);
      expect(await show(asynchronous)).toEqual([{ synchronous_commit: "off" }]);
      expect(await show(handle.lookups)).toEqual([{ synchronous_commit: "off" }]);
      // The rest of the server's connections still wait for the flush: a Publish answers after it.
      expect((await sql<{ synchronous_commit: string }>`SHOW synchronous_commit`.execute(handle.db)).rows).toEqual([{ synchronous_commit: "on" }]);
    } finally {
      await durable.close();
      await asynchronous.close();
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
