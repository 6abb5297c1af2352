import { type CompiledQuery, type Kysely, type RawBuilder, sql } from "kysely";
import type { StoredEvent } from "../event-log/stored-event.js";
import { integerArrayLiteral, textArrayLiteral } from "../storage/array-literals.js";

/**
 * Delivery windows (migration 0014): the deliveries one routing statement leased to a node, in
 * one row, until each has a row of its own. A delivery's row is inserted once: at its first
 * outcome (recordSuccessesStatement inserts it succeeded; a failure inserts it leased and then
 * records the attempt as any claimed delivery's), or leased and unanswered when it has had no
 * outcome for a while (a slow endpoint), when the node stops, or when the window's lease has
 * run out (its node died: recoverExpiredWindowsStatement). Each such insert skips a delivery
 * that has a row already (its id is fixed when it is routed) and one whose webhook is gone: it
 * locks the webhooks' rows FOR KEY SHARE, so a DeleteWebhook either waits for it and then
 * deletes what it inserted, or has committed and nothing is inserted.
 */

/** Who holds a window: its id, the lease token its deliveries share, and the node. */
export interface WindowLease {
  id: string;
  token: string;
  nodeId: string;
}

/** A delivery as its window records it. */
export interface WindowDelivery {
  id: string;
  webhookId: string;
  event: StoredEvent;
  leaseMs: number;
}

/**
 * The CTE that records a routing statement's leased deliveries as one window row, if the CTE
 * named `guard` returned a row (the router's cursor moved); nothing when none were leased. The
 * window's lease is the longest of its deliveries'.
 */
export function leasedWindowCtes(window: WindowLease, deliveries: readonly WindowDelivery[], guard: RawBuilder<unknown>): RawBuilder<unknown> {
  if (deliveries.length === 0) return sql``;
  const col = <V>(pick: (d: WindowDelivery) => V) => deliveries.map(pick);
  const leaseMs = deliveries.reduce((max, d) => Math.max(max, d.leaseMs), 0);
  return sql`, leased_window AS (
        INSERT INTO tidings_delivery_windows (id, lease_owner, lease_token, lease_expires_at, delivery_ids, webhook_ids, event_sequences)
        SELECT ${window.id}, ${window.nodeId}, ${window.token}, now() + ${leaseMs} * interval '1 millisecond',
               ${textArrayLiteral(col((d) => d.id))}::text[], ${textArrayLiteral(col((d) => d.webhookId))}::text[],
               ${integerArrayLiteral(col((d) => d.event.sequence.toString()))}::bigint[]
        WHERE EXISTS (SELECT 1 FROM ${guard})
      )`;
}

/** A routed delivery whose row may not exist yet, as the node holding its window knows it. */
export interface UnwrittenDelivery {
  id: string;
  webhookId: string;
  eventSequence: bigint;
  eventId: string;
  eventType: string;
  windowId: string;
  leaseToken: string;
}

/**
 * The CTEs that insert window deliveries' rows, pending with one attempt and leased, from a CTE
 * `d` (id, webhook_id, seq, event_id, event_type, lease_owner, lease_token, lease_expires_at,
 * created_at): skipping rows that exist and, under a FOR KEY SHARE lock on their webhooks' rows,
 * webhooks that are gone (see above).
 */
const insertLeasedRows = sql`, live AS (
      SELECT id FROM tidings_webhooks WHERE id IN (SELECT webhook_id FROM d) FOR KEY SHARE
    ), written AS (
      INSERT INTO tidings_deliveries (id, webhook_id, event_sequence, event_id, event_type, next_attempt_at, attempts, lease_owner, lease_token, lease_expires_at, created_at)
      SELECT d.id, d.webhook_id, d.seq, d.event_id, d.event_type, d.created_at, 1, d.lease_owner, d.lease_token, d.lease_expires_at, d.created_at
      FROM d JOIN live ON live.id = d.webhook_id
      ON CONFLICT (id) DO NOTHING
    )`;

/**
 * Inserts the rows of `deliveries` as they stand while in flight (pending, one attempt, leased
 * with their window's lease), skipping rows that exist and webhooks that are gone, and deletes
 * the windows `closing` (whose every delivery then has a row). Run in the failure path's
 * transaction before the attempt is recorded, before leases are given back, and for windows
 * whose deliveries have waited too long for an outcome.
 */
export function writeUnwrittenStatement<DB>(db: Kysely<DB>, deliveries: readonly UnwrittenDelivery[], closing: readonly string[], nodeId: string): CompiledQuery<unknown> {
  const col = <V>(pick: (d: UnwrittenDelivery) => V) => deliveries.map(pick);
  return sql`
    WITH d AS (
      SELECT u.id, u.webhook_id, u.seq, u.event_id, u.event_type, ${nodeId}::text AS lease_owner, u.token AS lease_token,
             coalesce(w.lease_expires_at, now()) AS lease_expires_at, coalesce(w.created_at, now()) AS created_at
      FROM unnest(${textArrayLiteral(col((d) => d.id))}::text[], ${textArrayLiteral(col((d) => d.webhookId))}::text[],
                  ${integerArrayLiteral(col((d) => d.eventSequence.toString()))}::bigint[], ${textArrayLiteral(col((d) => d.eventId))}::text[],
                  ${textArrayLiteral(col((d) => d.eventType))}::text[], ${textArrayLiteral(col((d) => d.windowId))}::text[],
                  ${textArrayLiteral(col((d) => d.leaseToken))}::text[])
        AS u(id, webhook_id, seq, event_id, event_type, window_id, token)
      LEFT JOIN tidings_delivery_windows w ON w.id = u.window_id
    )${insertLeasedRows}
    DELETE FROM tidings_delivery_windows WHERE id = ANY(${textArrayLiteral(closing)}::text[])`.compile(db);
}

/**
 * Windows whose lease ran out (their node died, or stalled past every lease) become rows: each
 * delivery that has none is inserted leased to the window's node with its lapsed lease, so the
 * claim that follows takes it over as it takes over any lapsed lease (it records the attempt
 * that never reported and sends again). At most `limit` windows a statement, skipping windows
 * another node is recovering or writing.
 */
export function recoverExpiredWindowsStatement<DB>(db: Kysely<DB>, limit: number): CompiledQuery<{ windows: number }> {
  return sql<{ windows: number }>`
    WITH expired AS (
      DELETE FROM tidings_delivery_windows WHERE id IN (
        SELECT id FROM tidings_delivery_windows WHERE lease_expires_at < now()
        ORDER BY lease_expires_at LIMIT ${limit} FOR UPDATE SKIP LOCKED)
      RETURNING *
    ), d AS (
      -- The events' ids and types are the log's (an event deleted since by retention leaves them
      -- empty: the claim then finds no event, and the attempt fails as for any delivery of one).
      SELECT x.lease_owner, x.lease_token, x.lease_expires_at, x.created_at, u.id, u.webhook_id, u.seq,
             coalesce(e.id, '') AS event_id, coalesce(e.type, '') AS event_type
      FROM expired x, unnest(x.delivery_ids, x.webhook_ids, x.event_sequences) AS u(id, webhook_id, seq)
      LEFT JOIN tidings_events e ON e.sequence = u.seq
    )${insertLeasedRows}
    SELECT count(*)::int AS windows FROM expired`.compile(db);
}
