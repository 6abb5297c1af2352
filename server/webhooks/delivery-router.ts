import { type Kysely, sql } from "kysely";
import type { EventCatalog } from "../catalog/catalog.js";
import { EventReader } from "../event-log/event-reader.js";
import { uuidV7 } from "../event-log/uuid-v7.js";
import { compileFilter } from "../filtering/cel-filter.js";
import { createEventMatcher, type EventMatcher } from "../filtering/event-matcher.js";
import { parseTypePattern } from "../filtering/type-pattern.js";
import type { Logger } from "../logging/logger.js";
import type { Database } from "../storage/schema.js";

/** What the router needs of an endpoint. */
interface RoutableWebhook {
  id: string;
  patterns: string[];
  attributes: Record<string, string>;
  filter: string;
  updated_at: Date;
  from_sequence: string | bigint;
  batch_max_events: number;
  batch_max_wait_ms: number;
}

/**
 * Materialises deliveries from the durable log: for each new event, one pending delivery per
 * enabled endpoint whose patterns, attributes and filter match. The deliveries and the
 * router's cursor move in one transaction, so a crash loses nothing and routes nothing twice;
 * publishing never waits for it, however many endpoints there are. One node routes at a time
 * (the cursor row is locked with SKIP LOCKED; the others skip).
 */
export class DeliveryRouter {
  readonly #matchers = new Map<string, { version: number; matcher: EventMatcher }>();
  /**
   * Until when the router knows that no endpoint is enabled. Without endpoints, routing is only
   * moving the cursor to the head, which can wait: a transaction per commit showed in profiles.
   * An endpoint created or enabled on this node clears it at once (endpointsChanged); one made
   * on another node is seen within `idleRecheckMs` — and its deliveries start at its own
   * from_sequence, so nothing is missed meanwhile.
   */
  #noEndpointsUntil = 0;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly catalog: EventCatalog,
    private readonly logger: Logger,
    private readonly batchSize = 500,
    private readonly idleRecheckMs = 1_000,
  ) {}

  /** True while the router knows of no enabled endpoint: there can be nothing to deliver. */
  get idle(): boolean {
    return Date.now() < this.#noEndpointsUntil;
  }

  endpointsChanged(): void {
    this.#noEndpointsUntil = 0;
  }

  /** Routes the next events; returns how many it looked at (0: caught up, nobody to route to, or another node routes). */
  async routeOnce(): Promise<number> {
    if (this.idle) return 0;
    return this.db.transaction().execute(async (trx) => {
      const cursor = await sql<{ last_sequence: string }>`
        SELECT last_sequence FROM tidings_webhook_router WHERE id = 1 FOR UPDATE SKIP LOCKED`.execute(trx);
      if (cursor.rows.length === 0) return 0;
      const last = BigInt(cursor.rows[0]!.last_sequence);
      const reader = new EventReader(trx, this.catalog);
      // The head is read before the endpoints: one created after this read starts after it.
      const head = await reader.headSequence();
      if (head <= last) return 0;
      const webhooks = await trx
        .selectFrom("tidings_webhooks")
        .select(["id", "patterns", "attributes", "filter", "updated_at", "from_sequence", "batch_max_events", "batch_max_wait_ms"])
        .where("enabled", "=", true)
        .execute();
      if (webhooks.length === 0) {
        this.#noEndpointsUntil = Date.now() + this.idleRecheckMs;
        // Nobody to deliver to: skip ahead instead of reading every event.
        await trx.updateTable("tidings_webhook_router").set({ last_sequence: head.toString() }).where("id", "=", 1).execute();
        return 0;
      }
      const events = await reader.readRange(last, head, this.batchSize);
      if (events.length === 0) return 0;
      const now = Date.now();
      const rows = [];
      for (const w of webhooks) {
        const matcher = this.#matcherFor(w);
        const from = BigInt(w.from_sequence);
        for (const event of events) {
          if (event.sequence <= from || !matcher.matches(event)) continue;
          rows.push({
            id: `dlv_${uuidV7()}`,
            webhook_id: w.id,
            event_sequence: event.sequence.toString(),
            event_id: event.id,
            event_type: event.type,
            // A batching endpoint's deliveries wait for the batch to fill, at most max_wait.
            next_attempt_at: new Date(now + (w.batch_max_events > 0 ? w.batch_max_wait_ms : 0)),
          });
        }
      }
      for (let i = 0; i < rows.length; i += 1000) {
        await trx.insertInto("tidings_deliveries").values(rows.slice(i, i + 1000)).execute();
      }
      await this.#flushFullBatches(trx, webhooks);
      await trx.updateTable("tidings_webhook_router").set({ last_sequence: events[events.length - 1]!.sequence.toString() }).where("id", "=", 1).execute();
      if (rows.length > 0) this.logger.debug("deliveries routed", { events: events.length, deliveries: rows.length });
      return events.length;
    });
  }

  /**
   * Full batches need not wait for max_wait: the oldest whole multiple of max_events pending
   * deliveries become due now; a partial remainder keeps waiting for its batch to fill.
   */
  async #flushFullBatches(trx: Kysely<Database>, webhooks: readonly RoutableWebhook[]): Promise<void> {
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
        AND next_attempt_at > now()`.execute(trx);
    }
  }

  #matcherFor(w: RoutableWebhook): EventMatcher {
    const version = w.updated_at.getTime();
    const cached = this.#matchers.get(w.id);
    if (cached?.version === version) return cached.matcher;
    // Filters were checked when the endpoint was saved, so compiling cannot fail here.
    const matcher = createEventMatcher(
      w.patterns.map(parseTypePattern),
      w.attributes,
      w.filter ? compileFilter(w.filter, this.catalog.registry) : undefined,
    );
    this.#matchers.set(w.id, { version, matcher });
    return matcher;
  }
}
