import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sql } from "kysely";
import { silentLogger } from "../server/logging/logger.js";
import { openDatabase, type DatabaseHandle } from "../server/storage/open-database.js";
import { integerArrayLiteral, textArrayLiteral, timestampArrayLiteral } from "../server/storage/array-literals.js";
import { createTestStorage, type TestStorage } from "./helpers/database.js";

/**
 * The array literals the webhook and append statements send instead of JS arrays: whatever the
 * values, the database reads back exactly what was given (on PostgreSQL with DATABASE_URL set,
 * else on PGlite, the embedded default).
 */
describe("array literals", () => {
  let storage: TestStorage;
  let handle: DatabaseHandle;

  beforeAll(async () => {
    storage = await createTestStorage();
    handle = await openDatabase({ databaseUrl: storage.databaseUrl, dataDir: storage.dataDir, poolSize: 2, logger: silentLogger });
  });
  afterAll(async () => {
    await handle?.close();
    await storage?.drop();
  });

  it("reads text back unchanged: quotes, backslashes, braces, commas, spaces, NULL as a word, the empty string, non-ASCII", async () => {
    const values = ['plain', 'with "quotes"', "back\\slash", "\\\"", "{braces}", "a,b", " padded ", "NULL", "null", "", "line\nbreak\ttab", "ünïcødé 🎉", "'single'"];
    const { rows } = await sql<{ v: string | null }>`SELECT v FROM unnest(${textArrayLiteral(values)}::text[]) WITH ORDINALITY AS t(v, i) ORDER BY i`.execute(handle.db);
    expect(rows.map((r) => r.v)).toEqual(values);
  });

  it("reads integers and bigints (as decimal strings) back unchanged", async () => {
    const ints = [0, -1, 2147483647, -2147483648, 42];
    const bigs = ["0", "9223372036854775807", "-9223372036854775808", "123"];
    const { rows } = await sql<{ ints: number[]; bigs: string[] }>`SELECT ${integerArrayLiteral(ints)}::int[] AS ints, ${integerArrayLiteral(bigs)}::bigint[]::text[] AS bigs`.execute(handle.db);
    expect(rows[0]).toEqual({ ints, bigs });
  });

  it("reads times back to the millisecond, whatever the session's time zone, equal neighbours included", async () => {
    const times = [new Date("2026-12-06T23:59:59.999Z"), new Date("2026-12-06T23:59:59.999Z"), new Date("0001-01-01T00:00:00.000Z"), new Date("9999-12-31T23:59:59.999Z"), new Date(0)];
    const got = await handle.db.connection().execute(async (db) => {
      await sql`SET TIME ZONE 'Pacific/Chatham'`.execute(db);
      const { rows } = await sql<{ ms: string }>`SELECT (extract(epoch FROM t) * 1000)::bigint::text AS ms FROM unnest(${timestampArrayLiteral(times)}::timestamptz[]) WITH ORDINALITY AS u(t, i) ORDER BY i`.execute(db);
      await sql`RESET TIME ZONE`.execute(db);
      return rows.map((r) => Number(r.ms));
    });
    expect(got).toEqual(times.map((t) => t.getTime()));
  });

  it("makes empty arrays", async () => {
    const { rows } = await sql<{ n: number }>`SELECT cardinality(${textArrayLiteral([])}::text[]) + cardinality(${integerArrayLiteral([])}::int[]) + cardinality(${timestampArrayLiteral([])}::timestamptz[]) AS n`.execute(handle.db);
    expect(rows[0]!.n).toBe(0);
  });
});
