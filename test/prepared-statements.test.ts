/**
 * The statements that run for every publish, routing pass and delivery are sent as named
 * prepared statements on PostgreSQL (server/storage/prepared-statements.ts): parsed once per
 * connection. Checked on the server's own view of a session, pg_prepared_statements; the
 * statements that carry the marker run in every webhook and publish test.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { preparedMarker, sendMarkedStatementsPrepared } from "../server/storage/prepared-statements.js";
import { createTestStorage, needsPostgres, type TestStorage } from "./helpers/database.js";

describe.runIf(needsPostgres("prepared statements (a PostgreSQL session's pg_prepared_statements)"))("prepared statements on PostgreSQL", () => {
  let storage: TestStorage;
  let pool: pg.Pool;
  beforeAll(async () => {
    storage = await createTestStorage();
    pool = new pg.Pool({ connectionString: storage.databaseUrl, max: 1 });
    pool.on("connect", (client) => sendMarkedStatementsPrepared(client));
  });
  afterAll(async () => {
    await pool?.end();
    await storage?.drop();
  });

  const prepared = async () => (await pool.query<{ name: string; statement: string }>("SELECT name, statement FROM pg_prepared_statements ORDER BY name")).rows;

  it("a marked statement is prepared once per connection and reused; an unmarked one is not prepared", async () => {
    const marked = `${preparedMarker} SELECT $1::int + 1 AS n`;
    expect((await pool.query(marked, [1])).rows).toEqual([{ n: 2 }]);
    expect((await pool.query(marked, [41])).rows).toEqual([{ n: 42 }]);
    expect((await pool.query("SELECT $1::int * 2 AS n", [21])).rows).toEqual([{ n: 42 }]);
    const statements = await prepared();
    expect(statements).toHaveLength(1);
    expect(statements[0]!.name).toMatch(/^tidings_[0-9a-f]{24}$/);
    expect(statements[0]!.statement).toBe(marked);
    // Another text under the same marker is another statement, never the first one's name.
    expect((await pool.query(`${preparedMarker} SELECT $1::text AS s`, ["x"])).rows).toEqual([{ s: "x" }]);
    expect(new Set((await prepared()).map((s) => s.name)).size).toBe(2);
  });
});
