import { randomUUID } from "node:crypto";
import { type Kysely, sql } from "kysely";
import type { EventCatalog } from "../catalog/catalog.js";
import { EventReader } from "../event-log/event-reader.js";
import { uuidV7 } from "../event-log/uuid-v7.js";
import { compileFilter, defaultFilterLimits, type FilterLimits, savedFilterLimits } from "../filtering/cel-filter.js";
import { createEventMatcher, type EventMatcher } from "../filtering/event-matcher.js";
import { parseTypePattern } from "../filtering/type-pattern.js";
import type { Logger } from "../logging/logger.js";
import type { StoredEvent } from "../event-log/stored-event.js";
import { preparedMarker } from "../storage/prepared-statements.js";
import { type Database, maxSequence, type StoredRetryPolicy, type StoredSecret } from "../storage/schema.js";

/** An enabled endpoint as the router and the dispatcher read it: what routing and sending need. */
export interface EndpointRow {
  id: string;
  patterns: string[];
  attributes: Record<string, string>;
  filter: string;
  updated_at: string;
  from_sequence: string;
  url: string;
  headers: Record<string, string>;
  secrets: StoredSecret[];
  retry_policy: StoredRetryPolicy;
  timeout_ms: number;
  batch_max_events: number;
  batch_max_wait_ms: number;
  rate_limit: number;
  ordered: boolean;
  content_mode: number;
  max_consecutive_failures: number;
  max_failing_ms: string | number;
  /** The endpoint's health row records failures (as of this read). */
  failing: boolean;
}

/**
 * How many new deliveries the routing node can send soon. The router leases those to it in the
 * same statement that creates them, so they need no claim: routing, claiming and reading the
 * events again were three trips through the database for every delivery, one after another.
 */
export interface LeaseBudget {
  nodeId: string;
  /**
   * Deliveries a pass should make at most: it stops before the event that would take it past
   * this (though a pass always routes at least one event). Deliveries beyond what the node can
   * lease are created unleased, and a claim then writes each of them again and reads its event
   * back; with ten endpoints, routing as many events as there was room for sent nine in ten
   * deliveries that way.
   */
  maxDeliveries: number;
  /** Takes a slot for one delivery to this endpoint; false when the node holds enough for it. */
  take(webhookId: string): boolean;
  /** The lease of a delivery to an endpoint with this request timeout. */
  leaseMs(timeoutMs: number): number;
}

/** A delivery the router created already leased to this node, with what sending it needs. */
export interface RoutedDelivery {
  id: string;
  leaseToken: string;
  endpoint: EndpointRow;
  event: StoredEvent;
}

/**
 * Events after `after` up to `upTo` (at most `limit`) that are in memory, in order from after + 1;
 * [] when `after` is the last event in memory; undefined when memory does not reach `after`.
 */
export type KnownEvents = (after: bigint, upTo: bigint, limit: number) => StoredEvent[] | undefined;

export interface RouteResult {
  /** Events routed (the cursor moved past them): 0 when caught up, nobody to route to, or another node routes. */
  eventsRouted: number;
  /** Deliveries created and leased to this node. */
  leased: RoutedDelivery[];
  /** Events this pass read from the database, not finding them in memory (routed or not). */
  eventsReadBack: number;
  /** Deliveries created without a lease (no room here, or a batching, ordered or rate-limited endpoint): the claim sends them. */
  unleased: number;
}

const nothingRouted: RouteResult = { eventsRouted: 0, eventsReadBack: 0, leased: [], unleased: 0 };

/**
 * Materialises deliveries from the durable log: for each new event, one pending delivery per
 * enabled endpoint whose patterns, attributes and filter match. The deliveries and the
 * router's cursor move in one transaction, so a crash loses nothing and routes nothing twice;
 * publishing never waits for it, however many endpoints there are. One node routes at a time
 * (the cursor row is locked with SKIP LOCKED; the others skip). Deliveries the routing node has
 * room for are leased to it as they are created (see LeaseBudget).
 */
export class DeliveryRouter {
  readonly #matchers = new Map<string, { version: string; matcher: EventMatcher }>();
  /**
   * Until when the router knows that no endpoint is enabled. Without endpoints, routing is only
   * moving the cursor to the head, which can wait: a transaction per commit showed in profiles.
   * An endpoint created or enabled on this node clears it at once (endpointsChanged); one made
   * on another node is seen within `idleRecheckMs` — and its deliveries start at its own
   * from_sequence, so nothing is missed meanwhile.
   */
  #noEndpointsUntil = 0;
  /** What the router's last successful pass on this node left: valid until the guarded insert says otherwise. */
  #state: RouterState | undefined;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly catalog: EventCatalog,
    private readonly logger: Logger,
    private readonly batchSize = 500,
    private readonly idleRecheckMs = 1_000,
    /** The step budget of each filter evaluation (--max-filter-steps). */
    private readonly filterLimits: FilterLimits = defaultFilterLimits,
  ) {}

  /** True while the router knows of no enabled endpoint: there can be nothing to deliver. */
  get idle(): boolean {
    return Date.now() < this.#noEndpointsUntil;
  }

  endpointsChanged(): void {
    this.#noEndpointsUntil = 0;
  }

  /**
   * Routes the next events: at most `limit` (and the router's batch size), and no more than make
   * `budget.maxDeliveries` deliveries; leases what `budget` has room for. `known` may supply the
   * events from memory (this node's own commits, and what its log tail holds), which saves
   * reading them back.
   *
   * No lock is held between statements. The state (cursor, head, enabled endpoints) is read in
   * one snapshot; the deliveries are inserted and the cursor moved in one statement, which does
   * nothing if the cursor moved meanwhile (another node routed those events) or the enabled
   * endpoints changed (their fingerprint: ids, versions, health). So an endpoint created before
   * an event committed is always routed that event. When the node routed last and the events
   * are in memory, the state read is skipped: the guarded statement alone tells whether the
   * remembered state still holds, and the pass is one statement instead of two.
   */
  async routeOnce(budget?: LeaseBudget, limit = this.batchSize, known?: KnownEvents, onlyKnown = false): Promise<RouteResult> {
    if (this.idle) return nothingRouted;
    const readLimit = Math.max(1, Math.min(limit, this.batchSize));
    const remembered = this.#state;
    if (remembered && known) {
      // Up to the largest sequence: as far as the events in memory go.
      const events = known(remembered.last, maxSequence, readLimit);
      // Routed up to the last event in memory and past the head the last read saw, and every
      // event since is one of this node's own: nothing new, and nothing to read.
      if (events?.length === 0 && onlyKnown && remembered.last >= remembered.head) return nothingRouted;
      if (events && events.length > 0) {
        const routed = await this.#route(remembered, events, budget);
        if (routed) return routed;
      }
    }
    this.#state = undefined;
    const state = await this.#readState();
    if (!state || state.head < state.last) return nothingRouted;
    if (state.webhooks.length > 0) this.#state = state;
    if (state.head === state.last) return nothingRouted;
    if (state.webhooks.length === 0) {
      this.#noEndpointsUntil = Date.now() + this.idleRecheckMs;
      // Nobody to deliver to: skip ahead instead of reading every event.
      await this.#insert([], state, state.head, "");
      return nothingRouted;
    }
    const inMemory = known?.(state.last, state.head, readLimit);
    if (inMemory?.length) return (await this.#route(state, inMemory, budget)) ?? nothingRouted;
    const events = await new EventReader(this.db, this.catalog).readRange(state.last, state.head, readLimit);
    if (events.length === 0) return nothingRouted;
    const routed = await this.#route(state, events, budget);
    return { ...(routed ?? nothingRouted), eventsReadBack: events.length };
  }

  async #readState(): Promise<RouterState | undefined> {
    const res = await sql<{ last_sequence: string; head: string; webhooks: EndpointRow[]; fingerprint: string }>`
      SELECT r.last_sequence::text, h.last_sequence::text AS head,
        (SELECT coalesce(json_agg(w), '[]'::json) FROM (
          SELECT id, patterns, attributes, "filter", updated_at::text AS updated_at, from_sequence::text AS from_sequence,
                 url, headers, secrets, retry_policy, timeout_ms, batch_max_events, batch_max_wait_ms, rate_limit, ordered,
                 content_mode, max_consecutive_failures, max_failing_ms,
                 (consecutive_failures > 0 OR failing_since IS NOT NULL) AS failing
          FROM tidings_webhooks WHERE enabled ORDER BY id) w) AS webhooks,
        ${endpointsFingerprint} AS fingerprint
      FROM tidings_webhook_router r CROSS JOIN tidings_log_head h
      WHERE r.id = 1`.execute(this.db);
    const row = res.rows[0];
    return row && { last: BigInt(row.last_sequence), head: BigInt(row.head), webhooks: row.webhooks, fingerprint: row.fingerprint };
  }

  /** Routes `events` (which follow state.last) as of `state`; undefined when the state no longer holds. */
  async #route(state: RouterState, events: StoredEvent[], budget: LeaseBudget | undefined): Promise<RouteResult | undefined> {
    const rows: NewDelivery[] = [];
    const leased: RoutedDelivery[] = [];
    const endpoints = state.webhooks.map((w) => ({
      w,
      matcher: this.#matcherFor(w),
      from: BigInt(w.from_sequence),
      // Batching, ordered and rate-limited endpoints are sent by the claim, which knows their rules.
      leasable: budget !== undefined && w.batch_max_events === 0 && !w.ordered && w.rate_limit === 0,
    }));
    // Event by event, each to all its endpoints: the cursor moves past whole events only.
    let routed = 0;
    const matched: Array<(typeof endpoints)[number]> = [];
    for (const event of events) {
      matched.length = 0;
      for (const e of endpoints) if (event.sequence > e.from && e.matcher.matches(event)) matched.push(e);
      if (budget && routed > 0 && rows.length + matched.length > budget.maxDeliveries) break;
      routed++;
      for (const { w, leasable } of matched) {
        const id = `dlv_${uuidV7()}`;
        const token = leasable && budget!.take(w.id) ? randomUUID() : "";
        // A batching endpoint's deliveries wait for the batch to fill, at most max_wait.
        rows.push({ id, w, event, waitMs: w.batch_max_events > 0 ? w.batch_max_wait_ms : 0, token, leaseMs: token ? budget!.leaseMs(w.timeout_ms) : 0 });
        if (token) leased.push({ id, leaseToken: token, endpoint: w, event });
      }
    }
    const routedTo = events[routed - 1]!.sequence;
    if (!(await this.#insert(rows, state, routedTo, budget?.nodeId ?? ""))) return undefined;
    this.#state = { ...state, last: routedTo };
    if (state.webhooks.some((w) => w.batch_max_events > 0)) await this.#flushFullBatches(state.webhooks);
    if (rows.length > 0) this.logger.debug("deliveries routed", { events: routed, deliveries: rows.length, leased: leased.length });
    return { eventsRouted: routed, eventsReadBack: 0, leased, unleased: rows.length - leased.length };
  }

  /**
   * The deliveries and the cursor in one statement, if the cursor is still at state.last and the
   * enabled endpoints still have state's fingerprint; false otherwise (another node routed, or
   * an endpoint changed). A leased delivery counts its attempt now, as a claim would: attempts
   * is the number of attempts started or about to start.
   */
  async #insert(rows: NewDelivery[], state: RouterState, routedTo: bigint, nodeId: string): Promise<boolean> {
    const col = <V>(pick: (r: NewDelivery) => V) => rows.map(pick);
    const res = await sql<{ moved: number }>`${sql.raw(preparedMarker)}
      WITH moved AS (
        UPDATE tidings_webhook_router SET last_sequence = ${routedTo.toString()}
        WHERE id = 1 AND last_sequence = ${state.last.toString()} AND ${endpointsFingerprint} = ${state.fingerprint}
        RETURNING 1
      ), inserted AS (
        INSERT INTO tidings_deliveries (id, webhook_id, event_sequence, event_id, event_type, next_attempt_at, attempts, lease_owner, lease_token, lease_expires_at)
        SELECT d.id, d.webhook_id, d.seq, d.event_id, d.event_type, now() + d.wait_ms * interval '1 millisecond',
               CASE WHEN d.token = '' THEN 0 ELSE 1 END,
               CASE WHEN d.token = '' THEN NULL ELSE ${nodeId} END,
               NULLIF(d.token, ''),
               CASE WHEN d.token = '' THEN NULL ELSE now() + d.lease_ms * interval '1 millisecond' END
        FROM unnest(${col((r) => r.id)}::text[], ${col((r) => r.w.id)}::text[], ${col((r) => r.event.sequence.toString())}::bigint[],
                    ${col((r) => r.event.id)}::text[], ${col((r) => r.event.type)}::text[], ${col((r) => r.waitMs)}::int[],
                    ${col((r) => r.token)}::text[], ${col((r) => r.leaseMs)}::int[])
          AS d(id, webhook_id, seq, event_id, event_type, wait_ms, token, lease_ms)
        WHERE EXISTS (SELECT 1 FROM moved)
      )
      SELECT count(*)::int AS moved FROM moved`.execute(this.db);
    return Number(res.rows[0]?.moved ?? 0) > 0;
  }

  /**
   * Full batches need not wait for max_wait: the oldest whole multiple of max_events pending
   * deliveries become due now; a partial remainder keeps waiting for its batch to fill.
   */
  async #flushFullBatches(webhooks: readonly EndpointRow[]): Promise<void> {
    for (const w of webhooks) {
      if (w.batch_max_events === 0) continue;
      await sql`
        UPDATE tidings_deliveries SET next_attempt_at = now()
        WHERE id IN (
          SELECT id FROM tidings_deliveries
          WHERE webhook_id = ${w.id} AND status = 1 AND lease_owner IS NULL
          ORDER BY event_sequence
          LIMIT (SELECT (count(*) / ${w.batch_max_events}) * ${w.batch_max_events}
                 FROM tidings_deliveries WHERE webhook_id = ${w.id} AND status = 1 AND lease_owner IS NULL))
        AND next_attempt_at > now()`.execute(this.db);
    }
  }

  #matcherFor(w: EndpointRow): EventMatcher {
    // Keyed by what the matcher is made of, not by updated_at: two changes can share a millisecond.
    const version = JSON.stringify([w.patterns, w.attributes, w.filter]);
    const cached = this.#matchers.get(w.id);
    if (cached?.version === version) return cached.matcher;
    // Filters were checked when the endpoint was saved, so compiling cannot fail here.
    const matcher = createEventMatcher(
      w.patterns.map(parseTypePattern),
      w.attributes,
      w.filter ? compileFilter(w.filter, this.catalog.registry, savedFilterLimits(this.filterLimits)) : undefined,
    );
    this.#matchers.set(w.id, { version, matcher });
    return matcher;
  }
}

/** The router's view: its cursor, the head, and the enabled endpoints with their fingerprint. */
interface RouterState {
  last: bigint;
  head: bigint;
  webhooks: EndpointRow[];
  fingerprint: string;
}

/**
 * Changes whenever anything the router or a sender reads of the enabled endpoints does (one is
 * created, deleted, enabled, disabled or updated, a secret rotated, the health flag flips), even
 * twice within the same millisecond; compared in the routing statement itself.
 */
const endpointsFingerprint = sql<string>`(SELECT md5(coalesce(string_agg(row(
    id, updated_at, patterns, attributes, "filter", from_sequence, url, headers, secrets, retry_policy, timeout_ms,
    batch_max_events, batch_max_wait_ms, rate_limit, ordered, content_mode, max_consecutive_failures, max_failing_ms,
    consecutive_failures > 0 OR failing_since IS NOT NULL)::text, ',' ORDER BY id), '')) FROM tidings_webhooks WHERE enabled)`;

interface NewDelivery {
  id: string;
  w: EndpointRow;
  event: StoredEvent;
  waitMs: number;
  /** The lease token when the delivery is leased to this node as it is created, else "". */
  token: string;
  leaseMs: number;
}
