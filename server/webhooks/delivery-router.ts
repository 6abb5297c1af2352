import { randomUUID } from "node:crypto";
import { type Kysely, sql } from "kysely";
import type { EventCatalog } from "../catalog/catalog.js";
import { EventReader } from "../event-log/event-reader.js";
import { uuidV7 } from "../event-log/uuid-v7.js";
import { compileFilter, defaultFilterLimits, type FilterLimits, savedFilterLimits } from "../filtering/cel-filter.js";
import { createEventMatcher, type EventMatcher } from "../filtering/event-matcher.js";
import { parseTypePattern } from "../filtering/type-pattern.js";
import type { Logger } from "../logging/logger.js";
import { type EventFields, StoredEvent } from "../event-log/stored-event.js";
import { integerArrayLiteral, textArrayLiteral } from "../storage/array-literals.js";
import { preparedMarker } from "../storage/prepared-statements.js";
import type { CommitRider } from "../event-log/append-queue.js";
import { type Database, maxSequence, type StoredRetryPolicy, type StoredSecret } from "../storage/schema.js";
import { leasedWindowCtes, type WindowLease } from "./delivery-windows.js";

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

/**
 * A delivery the router leased to this node, with what sending it needs. Its row is not written
 * yet: the routing statement recorded it in a window (migration 0014, delivery-windows.ts) with
 * the other deliveries it leased, which share the window's id and lease token.
 */
export interface RoutedDelivery {
  id: string;
  leaseToken: string;
  endpoint: EndpointRow;
  event: StoredEvent;
  windowId: string;
}

/**
 * Events after `after` up to `upTo` (at most `limit`) that are in memory, in order from after + 1;
 * [] when `after` is the last event in memory; undefined when memory does not reach `after`.
 */
export type KnownEvents = (after: bigint, upTo: bigint, limit: number) => StoredEvent[] | undefined;

export interface RouteResult {
  /** Events routed (the cursor moved past them): 0 when caught up, nobody to route to, or another node routes. */
  eventsRouted: number;
  /** Deliveries leased to this node, in one window (empty when none were). */
  leased: RoutedDelivery[];
  /** Events this pass read from the database, not finding them in memory (routed or not). */
  eventsReadBack: number;
  /** Deliveries created without a lease (no room here, or a batching, ordered or rate-limited endpoint): the claim sends them. */
  unleased: number;
}

/**
 * How far behind an append's first event the router may be for the append to route its own
 * events (planInCommit): about a group or two in flight, which a pass routes in the meantime.
 * Further behind, the router is working through a backlog and the append could not route.
 */
const maxRiderGap = 256n;

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
   * No lock is held between statements. The state (cursor, head, enabled endpoints and their
   * version) is read in one snapshot; the deliveries are inserted and the cursor moved in one
   * statement, which does nothing if the cursor moved meanwhile (another node routed those
   * events, or an append did: planInCommit) or the endpoints' version did (migration 0010: any
   * change to what routing or sending reads of them). So an endpoint created before an event
   * committed is always routed that event. When the node routed last and the events are in
   * memory, the state read is skipped: the guarded statement alone tells whether the remembered
   * state still holds, and the pass is one statement instead of two.
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
    // The remembered state stays while this reads, for appends' riders (planInCommit): their
    // statements check it, and an append may route past what this read sees, so the further
    // cursor is kept (as #route does).
    const state = await this.#readState();
    const before = this.#state;
    this.#state = !state || state.webhooks.length === 0 ? undefined
      : before && before.version === state.version && before.last > state.last ? { ...state, last: before.last } : state;
    if (!state || state.head < state.last) return nothingRouted;
    if (state.head === state.last) return nothingRouted;
    if (state.webhooks.length === 0) {
      this.#noEndpointsUntil = Date.now() + this.idleRecheckMs;
      // Nobody to deliver to: skip ahead instead of reading every event.
      await this.#insert([], state, state.head, { id: "", token: "", nodeId: "" });
      return nothingRouted;
    }
    const inMemory = known?.(state.last, state.head, readLimit);
    if (inMemory?.length) return (await this.#route(state, inMemory, budget)) ?? nothingRouted;
    const events = await new EventReader(this.db, this.catalog).readRange(state.last, state.head, readLimit);
    if (events.length === 0) return nothingRouted;
    const routed = await this.#route(state, events, budget);
    return { ...(routed ?? nothingRouted), eventsReadBack: events.length };
  }

  /**
   * Routes events that are about to be appended in the append's own statement (see
   * AppendQueueOptions.commitRider): one statement and one wake-up per group fewer than a
   * routing pass after the commit, and the deliveries can be sent as soon as it answers.
   *
   * `base` is the sequence the append queue expects before the group's first event (the head
   * after every group it has sent). Only when this node routed last and the router is at most
   * `maxRiderGap` events behind that (a pass routing the groups before it may finish first),
   * every enabled endpoint's deliveries can be leased here (no batching, ordering or rate limit)
   * and there is room for all of them. The statement locks the router row with SKIP LOCKED, only
   * if the head is at `base` (a routing pass or an endpoint change under way makes it route
   * nothing, and a pass routes the group later: publishing never waits for routing), and moves
   * the cursor and inserts the deliveries only if the row's latest version has the cursor at
   * `base` and the endpoints' version is the state's.
   */
  planInCommit(events: readonly EventFields[], base: bigint, budget: LeaseBudget): InCommitPlan | undefined {
    const state = this.#state;
    if (!state || state.webhooks.length === 0 || this.idle) return undefined;
    if (state.webhooks.some((w) => w.batch_max_events > 0 || w.ordered || w.rate_limit > 0)) return undefined;
    if (base < state.last || base - state.last > maxRiderGap) return undefined;
    // More events than room for one delivery each: a backlog in the making, which passes route
    // as room frees up (a PublishBatch of 1,000 to one endpoint, with room for 256).
    if (events.length > budget.maxDeliveries) return undefined;
    const stored = events.map((e, i) => new StoredEvent({ ...e, sequence: base + BigInt(i + 1) }, this.catalog));
    const window = { id: `win_${uuidV7()}`, token: randomUUID(), nodeId: budget.nodeId };
    const leased: RoutedDelivery[] = [];
    const leaseMs: number[] = [];
    // Each endpoint's matcher and start once per plan, not per event (#matcherFor keys its cache by a JSON text).
    const endpoints = state.webhooks.map((w) => ({ w, matcher: this.#matcherFor(w), from: BigInt(w.from_sequence) }));
    for (const event of stored) {
      for (const { w, matcher, from } of endpoints) {
        if (event.sequence <= from || !matcher.matches(event)) continue;
        if (leased.length >= budget.maxDeliveries || !budget.take(w.id)) return undefined;
        leased.push({ id: `dlv_${uuidV7()}`, leaseToken: window.token, endpoint: w, event, windowId: window.id });
        leaseMs.push(budget.leaseMs(w.timeout_ms));
      }
    }
    const to = base + BigInt(events.length);
    return {
      leased,
      rider: {
        // The router row is locked only if the head is where this plan predicted (else nothing
        // here can route), and by id alone, so the lock follows the row to its latest version (an
        // earlier group's statement may have moved it after this one's snapshot was taken); the
        // UPDATE compares what the lock returned.
        ctes: sql`, router_locked AS (
            SELECT last_sequence, endpoints_version FROM tidings_webhook_router
            WHERE id = 1 AND (SELECT base FROM head) = ${base.toString()}
            FOR UPDATE SKIP LOCKED
          ), router_moved AS (
            UPDATE tidings_webhook_router r SET last_sequence = ${to.toString()}
            FROM router_locked l
            WHERE r.id = 1 AND l.last_sequence = ${base.toString()} AND l.endpoints_version = ${state.version}
            RETURNING 1
          )${leasedWindowCtes(window, leased.map((d, i) => ({ id: d.id, webhookId: d.endpoint.id, event: d.event, leaseMs: leaseMs[i]! })), sql`router_moved`)}`,
        result: sql<boolean>`EXISTS (SELECT 1 FROM router_moved)`,
        settle: (outcome) => {
          if (outcome?.result !== true) return;
          const now = this.#state;
          if (now && now.version === state.version && now.last < to) this.#state = { ...now, last: to, head: now.head > to ? now.head : to };
        },
      },
    };
  }

  async #readState(): Promise<RouterState | undefined> {
    const res = await sql<{ last_sequence: string; head: string; webhooks: EndpointRow[]; endpoints_version: string }>`
      SELECT r.last_sequence::text, h.last_sequence::text AS head, r.endpoints_version::text,
        (SELECT coalesce(json_agg(w), '[]'::json) FROM (
          SELECT id, patterns, attributes, "filter", updated_at::text AS updated_at, from_sequence::text AS from_sequence,
                 url, headers, secrets, retry_policy, timeout_ms, batch_max_events, batch_max_wait_ms, rate_limit, ordered,
                 content_mode, max_consecutive_failures, max_failing_ms,
                 (consecutive_failures > 0 OR failing_since IS NOT NULL) AS failing
          FROM tidings_webhooks WHERE enabled ORDER BY id) w) AS webhooks
      FROM tidings_webhook_router r CROSS JOIN tidings_log_head h
      WHERE r.id = 1`.execute(this.db);
    const row = res.rows[0];
    return row && { last: BigInt(row.last_sequence), head: BigInt(row.head), webhooks: row.webhooks, version: row.endpoints_version };
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
    const window = { id: `win_${uuidV7()}`, token: randomUUID() };
    let routed = 0;
    const matched: Array<(typeof endpoints)[number]> = [];
    for (const event of events) {
      matched.length = 0;
      for (const e of endpoints) if (event.sequence > e.from && e.matcher.matches(event)) matched.push(e);
      if (budget && routed > 0 && rows.length + matched.length > budget.maxDeliveries) break;
      routed++;
      for (const { w, leasable } of matched) {
        const id = `dlv_${uuidV7()}`;
        const leaseMs = leasable && budget!.take(w.id) ? budget!.leaseMs(w.timeout_ms) : 0;
        // A batching endpoint's deliveries wait for the batch to fill, at most max_wait.
        rows.push({ id, w, event, waitMs: w.batch_max_events > 0 ? w.batch_max_wait_ms : 0, leaseMs });
        if (leaseMs > 0) leased.push({ id, leaseToken: window.token, endpoint: w, event, windowId: window.id });
      }
    }
    const routedTo = events[routed - 1]!.sequence;
    if (!(await this.#insert(rows, state, routedTo, { ...window, nodeId: budget?.nodeId ?? "" }))) return undefined;
    // An append may have routed further meanwhile (planInCommit): the cursor only moves on.
    const now = this.#state;
    this.#state = { ...state, last: now && now.version === state.version && now.last > routedTo ? now.last : routedTo };
    if (state.webhooks.some((w) => w.batch_max_events > 0)) await this.#flushFullBatches(state.webhooks);
    if (rows.length > 0) this.logger.debug("deliveries routed", { events: routed, deliveries: rows.length, leased: leased.length });
    return { eventsRouted: routed, eventsReadBack: 0, leased, unleased: rows.length - leased.length };
  }

  /**
   * The deliveries and the cursor in one statement, if the cursor is still at state.last and the
   * endpoints' version is still state's; false otherwise (another node or an append routed, or
   * an endpoint changed). The version is compared on the router row's latest version, which
   * the UPDATE re-reads if it changed after the statement's snapshot. Deliveries leased to this
   * node go into one window row (leasedWindowCtes); the others are inserted as pending rows for
   * a claim.
   */
  async #insert(rows: NewDelivery[], state: RouterState, routedTo: bigint, window: WindowLease): Promise<boolean> {
    const unleased = rows.filter((r) => r.leaseMs === 0);
    const col = <V>(pick: (r: NewDelivery) => V) => unleased.map(pick);
    const res = await sql<{ moved: number }>`${sql.raw(preparedMarker)}
      WITH moved AS (
        UPDATE tidings_webhook_router SET last_sequence = ${routedTo.toString()}
        WHERE id = 1 AND last_sequence = ${state.last.toString()} AND endpoints_version = ${state.version}
        RETURNING 1
      ), inserted AS (
        INSERT INTO tidings_deliveries (id, webhook_id, event_sequence, event_id, event_type, next_attempt_at)
        SELECT d.id, d.webhook_id, d.seq, d.event_id, d.event_type, now() + d.wait_ms * interval '1 millisecond'
        FROM unnest(${textArrayLiteral(col((r) => r.id))}::text[], ${textArrayLiteral(col((r) => r.w.id))}::text[],
                    ${integerArrayLiteral(col((r) => r.event.sequence.toString()))}::bigint[], ${textArrayLiteral(col((r) => r.event.id))}::text[],
                    ${textArrayLiteral(col((r) => r.event.type))}::text[], ${integerArrayLiteral(col((r) => r.waitMs))}::int[])
          AS d(id, webhook_id, seq, event_id, event_type, wait_ms)
        WHERE EXISTS (SELECT 1 FROM moved)
      )${leasedWindowCtes(window, rows.filter((r) => r.leaseMs > 0).map((r) => ({ id: r.id, webhookId: r.w.id, event: r.event, leaseMs: r.leaseMs })), sql`moved`)}
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

/** The router's view: its cursor, the head, and the enabled endpoints with their version (tidings_webhook_router.endpoints_version). */
interface RouterState {
  last: bigint;
  head: bigint;
  webhooks: EndpointRow[];
  version: string;
}

/** Deliveries routed in an append's statement (DeliveryRouter.planInCommit): leased to this node if the rider's result is true. */
export interface InCommitPlan {
  leased: RoutedDelivery[];
  rider: CommitRider;
}

interface NewDelivery {
  id: string;
  w: EndpointRow;
  event: StoredEvent;
  waitMs: number;
  /** The lease's length when the delivery is leased to this node as it is routed, else 0. */
  leaseMs: number;
}
