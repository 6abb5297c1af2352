import { type Kysely, sql } from "kysely";
import type { Database } from "../storage/schema.js";

/**
 * How many deliveries the database holds in each of these statuses (0 for one with none), for
 * every node. Counting succeeded deliveries reads the largest part of the table: ask only for
 * the statuses the caller reports.
 */
export async function countDeliveries(db: Kysely<Database>, statuses: readonly number[]): Promise<Map<number, number>> {
  const rows = await sql<{ status: number; n: string }>`
    SELECT status, count(*) AS n FROM tidings_deliveries WHERE status = ANY(${[...statuses]}::smallint[]) GROUP BY status`.execute(db);
  const counts = new Map(statuses.map((s) => [s, 0]));
  for (const r of rows.rows) counts.set(Number(r.status), Number(r.n));
  return counts;
}
