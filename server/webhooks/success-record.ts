import { type CompiledQuery, type Kysely, sql } from "kysely";
import { integerArrayLiteral, textArrayLiteral, timestampArrayLiteral } from "../storage/array-literals.js";
import { preparedMarker } from "../storage/prepared-statements.js";
import { deliveryStatus } from "../storage/schema.js";

/** A delivery whose request succeeded, as the node holding its lease knows it. */
export interface SuccessRow {
  deliveryId: string;
  leaseToken: string;
  statusCode: number;
  startedAt: Date;
  durationMs: number;
  responseExcerpt: string;
}

/** A success the database recorded: the delivery, and seconds from its creation to the record. */
export interface RecordedSuccess {
  delivery_id: string;
  latency: number;
}

/**
 * Marks deliveries succeeded and records their successful attempts on their own rows, in the
 * one UPDATE (see migration 0009: an attempt row beside each success cost PostgreSQL a tenth
 * of its CPU per delivery), fenced by the lease token: a delivery whose lease another node took
 * over is left alone, and is missing from the rows returned.
 *
 * Run prepared on the lookup session (see LookupSession), whose one plan finds each named row
 * by primary key whatever the table held when it was made. `status + 0 = 1` keeps the partial
 * index of pending deliveries out of that plan: without statistics (a table never analysed)
 * PostgreSQL took `status = 1` for a rare value and read every pending delivery through that
 * index into a hash join, for each statement (4,000 index entries for 72 rows in a webhook
 * backlog). The lease token alone already implies a pending delivery; the status check is a
 * guard.
 */
export function recordSuccessesStatement<DB>(db: Kysely<DB>, rows: readonly SuccessRow[], nodeId: string): CompiledQuery<RecordedSuccess> {
  // Array literals made here (see storage/array-literals.ts), not JS arrays for pg to format.
  const col = <V>(pick: (r: SuccessRow) => V) => rows.map(pick);
  return sql<RecordedSuccess>`${sql.raw(preparedMarker)}
    WITH c AS (
      SELECT * FROM unnest(
        ${textArrayLiteral(col((r) => r.deliveryId))}::text[], ${textArrayLiteral(col((r) => r.leaseToken))}::text[], ${integerArrayLiteral(col((r) => r.statusCode))}::int[],
        ${timestampArrayLiteral(col((r) => r.startedAt))}::timestamptz[], ${integerArrayLiteral(col((r) => Math.round(r.durationMs)))}::int[],
        ${textArrayLiteral(col((r) => r.responseExcerpt))}::text[]
      ) AS c(id, token, code, started_at, duration_ms, excerpt)
    ), done AS (
      UPDATE tidings_deliveries d
      SET status = ${deliveryStatus.succeeded}, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
          last_status_code = c.code, last_error = '', updated_at = now(),
          success_started_at = c.started_at, success_duration_ms = c.duration_ms, success_response_excerpt = c.excerpt,
          success_node = ${nodeId}
      FROM c
      WHERE d.id = c.id AND d.lease_token = c.token AND d.status + 0 = 1
      RETURNING d.id, d.created_at
    )
    SELECT id AS delivery_id, extract(epoch FROM clock_timestamp() - created_at)::float8 AS latency FROM done`.compile(db);
}
