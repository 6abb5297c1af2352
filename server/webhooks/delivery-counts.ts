import { type Kysely, sql } from "kysely";
import { type Database, deliveryStatus } from "../storage/schema.js";

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
  if (counts.has(deliveryStatus.pending)) counts.set(deliveryStatus.pending, counts.get(deliveryStatus.pending)! + (await countWindowed(db)));
  return counts;
}

/**
 * Deliveries in flight that only their routing window records (migration 0014), of one webhook
 * or all: pending deliveries without a row yet. Open windows are few (each lasts until its
 * deliveries' outcomes, or about a second), so this reads little.
 */
export async function countWindowed(db: Kysely<Database>, webhookId?: string): Promise<number> {
  const res = await sql<{ n: string }>`
    SELECT count(*) AS n FROM tidings_delivery_windows w, unnest(w.delivery_ids, w.webhook_ids) AS d(id, webhook_id)
    WHERE ${webhookId === undefined ? sql`true` : sql`d.webhook_id = ${webhookId}`}
      AND NOT EXISTS (SELECT 1 FROM tidings_deliveries x WHERE x.id = d.id)`.execute(db);
  return Number(res.rows[0]?.n ?? 0);
}
