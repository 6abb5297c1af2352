import { type CompiledQuery, type Kysely, sql } from "kysely";
import { integerArrayLiteral, textArrayLiteral, timestampArrayLiteral } from "../storage/array-literals.js";
import { preparedMarker } from "../storage/prepared-statements.js";
import { deliveryStatus } from "../storage/schema.js";
import type { UnwrittenDelivery } from "./delivery-windows.js";

/** A delivery whose request succeeded, as the node holding its lease knows it. */
export interface SuccessRow {
  deliveryId: string;
  leaseToken: string;
  statusCode: number;
  startedAt: Date;
  durationMs: number;
  responseExcerpt: string;
  /** Set while the delivery may have no row yet (it was routed in a window, migration 0014): the row to insert. */
  unwritten?: UnwrittenDelivery;
}

/** A success the database recorded: the delivery, and seconds from its creation to the record. */
export interface RecordedSuccess {
  delivery_id: string;
  latency: number;
}

/**
 * Records successful attempts on their deliveries' own rows (see migration 0009: an attempt row
 * beside each success cost PostgreSQL a tenth of its CPU per delivery), fenced by the lease
 * token: a delivery whose lease another node took over is left alone, and is missing from the
 * rows returned. A delivery routed in a window and not written yet (its row's fields given;
 * the others have an empty webhook_id here) is inserted already succeeded (migration 0014: its
 * one row, where a leased row and then its update cost twice the heap rows and index entries),
 * created when its window was (the routing statement's time, as every delivery's row was when
 * routing inserted it); if its row was written meanwhile (its window ran out, or a slow answer
 * had it written leased), the insert becomes the same fenced update. The windows `closing` are
 * deleted in the same statement: every delivery in them has a row once it commits. The inserts
 * lock their webhooks' rows FOR KEY SHARE and skip a webhook that is gone (see
 * delivery-windows.ts).
 *
 * Run prepared on the lookup session (see LookupSession), whose one plan finds each named row
 * by primary key whatever the table held when it was made. `status + 0 = 1` keeps the partial
 * index of pending deliveries out of that plan: without statistics (a table never analysed)
 * PostgreSQL took `status = 1` for a rare value and read every pending delivery through that
 * index into a hash join, for each statement (4,000 index entries for 72 rows in a webhook
 * backlog). The lease token alone already implies a pending delivery; the status check is a
 * guard.
 */
export function recordSuccessesStatement<DB>(db: Kysely<DB>, rows: readonly SuccessRow[], nodeId: string, closing: readonly string[] = []): CompiledQuery<RecordedSuccess> {
  // Array literals made here (see storage/array-literals.ts), not JS arrays for pg to format.
  const col = <V>(pick: (r: SuccessRow) => V) => rows.map(pick);
  const unwritten = (pick: (u: UnwrittenDelivery) => string) => col((r) => (r.unwritten ? pick(r.unwritten) : ""));
  return sql<RecordedSuccess>`${sql.raw(preparedMarker)}
    WITH c AS (
      SELECT * FROM unnest(
        ${textArrayLiteral(col((r) => r.deliveryId))}::text[], ${textArrayLiteral(col((r) => r.leaseToken))}::text[], ${integerArrayLiteral(col((r) => r.statusCode))}::int[],
        ${timestampArrayLiteral(col((r) => r.startedAt))}::timestamptz[], ${integerArrayLiteral(col((r) => Math.round(r.durationMs)))}::int[],
        ${textArrayLiteral(col((r) => r.responseExcerpt))}::text[], ${textArrayLiteral(unwritten((u) => u.webhookId))}::text[],
        ${integerArrayLiteral(col((r) => r.unwritten?.eventSequence.toString() ?? "0"))}::bigint[], ${textArrayLiteral(unwritten((u) => u.eventId))}::text[],
        ${textArrayLiteral(unwritten((u) => u.eventType))}::text[], ${textArrayLiteral(unwritten((u) => u.windowId))}::text[]
      ) AS c(id, token, code, started_at, duration_ms, excerpt, webhook_id, seq, event_id, event_type, window_id)
    ), live AS (
      SELECT id FROM tidings_webhooks WHERE id IN (SELECT webhook_id FROM c WHERE webhook_id <> '') FOR KEY SHARE
    ), inserted AS (
      INSERT INTO tidings_deliveries AS d (id, webhook_id, event_sequence, event_id, event_type, status, attempts, next_attempt_at, last_status_code,
                                           success_started_at, success_duration_ms, success_response_excerpt, success_node, created_at, updated_at)
      SELECT c.id, c.webhook_id, c.seq, c.event_id, c.event_type, ${deliveryStatus.succeeded}, 1, coalesce(w.created_at, now()), c.code,
             c.started_at, c.duration_ms, c.excerpt, ${nodeId}, coalesce(w.created_at, now()), now()
      FROM c JOIN live ON live.id = c.webhook_id LEFT JOIN tidings_delivery_windows w ON w.id = c.window_id
      ON CONFLICT (id) DO UPDATE
      SET status = ${deliveryStatus.succeeded}, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
          last_status_code = excluded.last_status_code, last_error = '', updated_at = now(),
          success_started_at = excluded.success_started_at, success_duration_ms = excluded.success_duration_ms,
          success_response_excerpt = excluded.success_response_excerpt, success_node = excluded.success_node
      WHERE d.lease_token = (SELECT token FROM c WHERE c.id = d.id) AND d.status + 0 = 1
      RETURNING d.id, d.created_at
    ), updated AS (
      UPDATE tidings_deliveries d
      SET status = ${deliveryStatus.succeeded}, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
          last_status_code = c.code, last_error = '', updated_at = now(),
          success_started_at = c.started_at, success_duration_ms = c.duration_ms, success_response_excerpt = c.excerpt,
          success_node = ${nodeId}
      FROM c
      WHERE d.id = c.id AND c.webhook_id = '' AND d.lease_token = c.token AND d.status + 0 = 1
      RETURNING d.id, d.created_at
    ), closed AS (
      DELETE FROM tidings_delivery_windows WHERE id = ANY(${textArrayLiteral(closing)}::text[])
    )
    SELECT id AS delivery_id, extract(epoch FROM clock_timestamp() - created_at)::float8 AS latency FROM inserted
    UNION ALL
    SELECT id AS delivery_id, extract(epoch FROM clock_timestamp() - created_at)::float8 AS latency FROM updated`.compile(db);
}
