import { Code, type ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, type Timestamp, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Kysely, type Selectable, sql } from "kysely";
import type { Dispatcher } from "undici";
import {
  type Delivery,
  DeliveryAttemptSchema,
  DeliverySchema,
  DeliveryStatus,
  type Webhook,
  WebhookSchema,
} from "../../gen/tidings/v1/webhook_pb.js";
import { EnabledFilter, WebhookService } from "../../gen/tidings/v1/webhook_service_pb.js";
import type { EventCatalog } from "../catalog/catalog.js";
import type { FieldViolation } from "../catalog/payload-validation.js";
import { EventReader } from "../event-log/event-reader.js";
import { uuidV7 } from "../event-log/uuid-v7.js";
import { compileFilter, type FilterLimits, savedFilterLimits } from "../filtering/cel-filter.js";
import { createEventMatcher } from "../filtering/event-matcher.js";
import { parseTypePattern, TypePatternError } from "../filtering/type-pattern.js";
import { fieldError, invalidArgument } from "../rpc/errors.js";
import { dateOf } from "../rpc/timestamps.js";
import { decodePageToken, fingerprint, pageSizeOf, toPage } from "../rpc/page-token.js";
import type { Database, DeliveriesTable, DeliveryAttemptsTable, StoredSecret, WebhooksTable } from "../storage/schema.js";
import { countWindowed } from "./delivery-counts.js";
import { buildPingRequest } from "./delivery-request.js";
import type { AddressPolicy } from "./http/address-policy.js";
import { sendRequest } from "./http-sender.js";
import { generateWebhookSecret } from "./signing.js";
import { readWebhookInput, secretProblem, type UpdatableField, updatableFields, type WebhookSettings } from "./webhook-input.js";

/** Tidings' own events about endpoints. */
export interface WebhookLifecycleEvents {
  created(w: Webhook): void;
  updated(w: Webhook, changedFields: string[]): void;
  deleted(w: Webhook): void;
}

export interface WebhookServiceDeps {
  db: Kysely<Database>;
  catalog: EventCatalog;
  agent: Dispatcher;
  addressPolicy: AddressPolicy;
  events: WebhookLifecycleEvents;
  /** Tells the dispatcher there is new work (redrive, retry, replay). */
  wakeDispatcher(): void;
  /** An endpoint was created, changed or deleted here: the router must look again at once. */
  endpointsChanged(): void;
  /** What a new or changed endpoint's filter may cost. */
  filterLimits: FilterLimits;
}

const idPattern = /^[a-z]+_[0-9a-f-]{36}$/;
const day = 24 * 3_600_000;
const pages = { defaultSize: 50, maxSize: 500 };
type WebhookRow = Selectable<WebhooksTable>;

export function createWebhookService(deps: WebhookServiceDeps): ServiceImpl<typeof WebhookService> {
  const { db, catalog } = deps;
  const inputContext = { registry: catalog.registry, addressPolicy: deps.addressPolicy, filterLimits: deps.filterLimits };

  const noWebhook = (id: string, field: string) => fieldError(Code.NotFound, [{ field, description: `no webhook with id "${id}"` }]);
  const findWebhook = async (id: string, field = "id"): Promise<WebhookRow> => {
    if (!id) throw invalidArgument(field, "is required");
    const row = id.length <= 64 ? await db.selectFrom("tidings_webhooks").selectAll().where("id", "=", id).executeTakeFirst() : undefined;
    if (!row) throw noWebhook(id, field);
    return row;
  };
  const findDelivery = async (id: string): Promise<Selectable<DeliveriesTable>> => {
    if (!id) throw invalidArgument("id", "is required");
    const row = id.length <= 64 ? await db.selectFrom("tidings_deliveries").selectAll().where("id", "=", id).executeTakeFirst() : undefined;
    if (!row) throw fieldError(Code.NotFound, [{ field: "id", description: `no delivery with id "${id}"` }]);
    return row;
  };

  return {
    async createWebhook(req) {
      const w = req.webhook;
      if (!w) throw invalidArgument("webhook", "is required");
      const violations: FieldViolation[] = [];
      if (w.id) violations.push({ field: "webhook.id", description: "is assigned by the server; leave it empty" });
      const settings = readWebhookInput(w, updatableFields.filter((f) => f !== "enabled"), inputContext, violations) as WebhookSettings;
      const problem = w.secret ? secretProblem(w.secret) : undefined;
      if (problem) violations.push({ field: "webhook.secret", description: problem });
      if (violations.length > 0) throw fieldError(Code.InvalidArgument, violations);
      const secret = w.secret || generateWebhookSecret();
      const head = await new EventReader(db, catalog).headSequence();
      const row = await db.insertInto("tidings_webhooks").values({
        id: `wh_${uuidV7()}`,
        // Create reads every field, so every column is present.
        ...(settingsToColumns(settings) as Required<ReturnType<typeof settingsToColumns>>),
        enabled: !req.startDisabled,
        secrets: JSON.stringify([{ secret, expires_at: null }] satisfies StoredSecret[]),
        disabled_reason: "",
        // Only events published from now on: older ones are for ReplayEvents.
        from_sequence: head.toString(),
      }).returningAll().executeTakeFirstOrThrow();
      const webhook = toApiWebhook(row, { secret });
      deps.events.created(webhook);
      deps.endpointsChanged();
      return { webhook };
    },

    async getWebhook(req) {
      return { webhook: toApiWebhook(await findWebhook(req.id)) };
    },

    async updateWebhook(req) {
      const w = req.webhook;
      if (!w) throw invalidArgument("webhook", "is required");
      const paths = req.updateMask?.paths ?? [];
      if (paths.length === 0) throw invalidArgument("update_mask", `must name the fields to change: ${updatableFields.join(", ")}`);
      const violations: FieldViolation[] = [];
      paths.forEach((p, i) => {
        if (!(updatableFields as readonly string[]).includes(p)) {
          violations.push({ field: `update_mask.paths[${i}]`, description: `"${p}" cannot be updated; updatable: ${updatableFields.join(", ")}` });
        }
      });
      const fields = paths.filter((p): p is UpdatableField => (updatableFields as readonly string[]).includes(p));
      const settings = readWebhookInput(w, fields, inputContext, violations);
      if (violations.length > 0) throw fieldError(Code.InvalidArgument, violations);
      const existing = await findWebhook(w.id, "webhook.id");
      const reenable = settings.enabled === true && !existing.enabled;
      const row = await db.updateTable("tidings_webhooks")
        .set({
          ...settingsToColumns(settings),
          ...(reenable ? { disabled_reason: "", consecutive_failures: 0, failing_since: null } : {}),
          updated_at: new Date(),
        })
        .where("id", "=", existing.id)
        .returningAll()
        .executeTakeFirstOrThrow();
      const webhook = toApiWebhook(row);
      deps.events.updated(webhook, fields);
      deps.endpointsChanged();
      if (reenable) deps.wakeDispatcher();
      return { webhook };
    },

    async deleteWebhook(req) {
      const row = await findWebhook(req.id);
      await db.transaction().execute(async (trx) => {
        // The webhook first: its delete takes the router's row (migration 0010), so a routing
        // statement under way commits before the deletes below start, and they see its rows.
        // Deliveries and attempts have no foreign keys (migrations 0012 and 0007), so they are
        // deleted here, the deliveries before their attempts: an attempt being recorded
        // meanwhile waits for the deleted delivery's row lock and then finds no delivery to
        // record against, so none is left behind.
        await trx.deleteFrom("tidings_webhooks").where("id", "=", row.id).execute();
        await trx.deleteFrom("tidings_deliveries").where("webhook_id", "=", row.id).execute();
        await trx.deleteFrom("tidings_delivery_attempts").where("webhook_id", "=", row.id).execute();
      });
      deps.events.deleted(toApiWebhook(row));
      return {};
    },

    async listWebhooks(req) {
      const pageSize = pageSizeOf(req.pageSize, pages.defaultSize, pages.maxSize);
      if (!(req.enabled in EnabledFilter)) throw invalidArgument("enabled", `unknown filter ${req.enabled}`);
      const print = fingerprint(["webhooks", req.enabled]);
      const after = req.pageToken ? decodePageToken(req.pageToken, print, idPattern) : undefined;
      let q = db.selectFrom("tidings_webhooks").selectAll();
      if (req.enabled !== EnabledFilter.UNSPECIFIED) q = q.where("enabled", "=", req.enabled === EnabledFilter.ENABLED);
      if (after) q = q.where("id", ">", after);
      const rows = await q.orderBy("id").limit(pageSize + 1).execute();
      const { items, nextPageToken } = toPage(rows, pageSize, print, (r) => r.id, (r) => toApiWebhook(r, { redactHeaders: true }));
      return { webhooks: items, nextPageToken };
    },

    async rotateWebhookSecret(req) {
      const problem = req.secret ? secretProblem(req.secret) : undefined;
      if (problem) throw invalidArgument("secret", problem);
      const graceMs = req.gracePeriod ? durationMs(req.gracePeriod) : day;
      if (graceMs < 0 || graceMs > 30 * day) throw invalidArgument("grace_period", "must be between 0s and 30 days");
      const row = await findWebhook(req.id);
      const now = Date.now();
      const previousExpiry = new Date(now + graceMs);
      const secret = req.secret || generateWebhookSecret();
      // The previous secrets that still sign keep signing until the grace period ends.
      const kept = row.secrets
        .filter((s) => s.expires_at === null || Date.parse(s.expires_at) > now)
        .map((s) => ({ secret: s.secret, expires_at: new Date(Math.min(previousExpiry.getTime(), s.expires_at ? Date.parse(s.expires_at) : Infinity)).toISOString() }))
        .filter((s) => graceMs > 0 && s.secret !== secret);
      const updated = await db.updateTable("tidings_webhooks")
        .set({ secrets: JSON.stringify([{ secret, expires_at: null }, ...kept]), updated_at: new Date() })
        .where("id", "=", row.id).returningAll().executeTakeFirstOrThrow();
      return { webhook: toApiWebhook(updated, { secret }), previousSecretExpireTime: timestampFromDate(previousExpiry) };
    },

    async testWebhook(req) {
      const row = await findWebhook(req.id);
      const request = buildPingRequest(
        { contentMode: row.content_mode, headers: row.headers, secrets: activeSecrets(row.secrets) },
        row.id,
        `ping_${uuidV7()}`,
      );
      const o = await sendRequest(deps.agent, row.url, request, row.timeout_ms);
      return {
        success: o.statusCode >= 200 && o.statusCode < 300,
        attempt: create(DeliveryAttemptSchema, {
          number: 1,
          time: timestampFromDate(o.startedAt),
          duration: durationFromMs(o.durationMs),
          statusCode: o.statusCode,
          responseExcerpt: o.responseExcerpt,
          error: o.error,
        }),
      };
    },

    async listDeliveries(req) {
      const pageSize = pageSizeOf(req.pageSize, pages.defaultSize, pages.maxSize);
      if (req.status !== DeliveryStatus.UNSPECIFIED && !(req.status in DeliveryStatus)) throw invalidArgument("status", `unknown status ${req.status}`);
      const range = timeRange(req.startTime, req.endTime);
      const print = fingerprint(["deliveries", req.webhookId, req.status, req.eventId, range]);
      const before = req.pageToken ? decodePageToken(req.pageToken, print, idPattern) : undefined;
      let q = db.selectFrom("tidings_deliveries").selectAll();
      if (req.webhookId) q = q.where("webhook_id", "=", req.webhookId);
      if (req.status) q = q.where("status", "=", req.status);
      if (req.eventId) q = q.where("event_id", "=", req.eventId);
      if (range.start) q = q.where("created_at", ">=", range.start);
      if (range.end) q = q.where("created_at", "<", range.end);
      if (before) q = q.where("id", "<", before);
      const rows = await q.orderBy("id", "desc").limit(pageSize + 1).execute();
      const { items, nextPageToken } = toPage(rows, pageSize, print, (r) => r.id, toApiDelivery);
      return { deliveries: items, nextPageToken };
    },

    async getDelivery(req) {
      const row = await findDelivery(req.id);
      const failed = await db.selectFrom("tidings_delivery_attempts").selectAll().where("delivery_id", "=", row.id).orderBy("id").execute();
      // The successful attempt, if any, is on the delivery's row (migration 0009), and is its last.
      const success = successAttemptOf(row);
      return { delivery: toApiDelivery(row), attempts: [...failed, ...(success ? [success] : [])].map(toApiAttempt) };
    },

    async retryDelivery(req) {
      await findDelivery(req.id);
      const updated = await db.transaction().execute(async (trx) => {
        // Locked, so that no success is recorded between the check and the move below.
        const row = await trx.selectFrom("tidings_deliveries").selectAll().where("id", "=", req.id).forUpdate().executeTakeFirstOrThrow();
        if (row.lease_expires_at && row.lease_expires_at.getTime() > Date.now()) {
          throw fieldError(Code.FailedPrecondition, [{ field: "id", description: "the delivery is being attempted right now" }]);
        }
        // A retried success keeps its attempt: the row's success record becomes an attempt row,
        // and the row is free for the success to come.
        const success = successAttemptOf(row);
        if (success) {
          const { id: _, ...attempt } = success;
          await trx.insertInto("tidings_delivery_attempts").values(attempt).execute();
        }
        return trx.updateTable("tidings_deliveries")
          .set({
            status: DeliveryStatus.PENDING, next_attempt_at: new Date(), updated_at: new Date(),
            success_started_at: null, success_duration_ms: null, success_response_excerpt: null, success_node: null,
          })
          .where("id", "=", row.id).returningAll().executeTakeFirstOrThrow();
      });
      deps.wakeDispatcher();
      return { delivery: toApiDelivery(updated) };
    },

    async listDeadLetters(req) {
      const pageSize = pageSizeOf(req.pageSize, pages.defaultSize, pages.maxSize);
      await catalog.refreshIfStale(); // dead letters of a type registered on another node a moment ago
      const types = typesOf(req.patterns, catalog);
      const range = timeRange(req.startTime, req.endTime);
      const print = fingerprint(["dead", req.webhookId, req.patterns, range]);
      const before = req.pageToken ? decodePageToken(req.pageToken, print, idPattern) : undefined;
      if (types?.length === 0) return { deliveries: [], nextPageToken: "" };
      let q = db.selectFrom("tidings_deliveries").selectAll().where("status", "=", DeliveryStatus.DEAD);
      if (req.webhookId) q = q.where("webhook_id", "=", req.webhookId);
      if (types) q = q.where("event_type", "in", types);
      if (range.start) q = q.where("updated_at", ">=", range.start);
      if (range.end) q = q.where("updated_at", "<", range.end);
      if (before) q = q.where("id", "<", before);
      const rows = await q.orderBy("id", "desc").limit(pageSize + 1).execute();
      const { items, nextPageToken } = toPage(rows, pageSize, print, (r) => r.id, toApiDelivery);
      return { deliveries: items, nextPageToken };
    },

    async redriveDeadLetters(req) {
      const webhook = await findWebhook(req.webhookId, "webhook_id");
      const range = timeRange(req.startTime, req.endTime);
      const badId = req.deliveryIds.findIndex((id) => !idPattern.test(id));
      if (badId >= 0) throw invalidArgument(`delivery_ids[${badId}]`, "is not a delivery id");
      let q = db.updateTable("tidings_deliveries")
        .set({ status: DeliveryStatus.PENDING, attempts: 0, next_attempt_at: new Date(), last_error: "", updated_at: new Date() })
        .where("webhook_id", "=", webhook.id)
        .where("status", "=", DeliveryStatus.DEAD);
      if (req.deliveryIds.length > 0) q = q.where("id", "in", req.deliveryIds);
      if (range.start) q = q.where("updated_at", ">=", range.start);
      if (range.end) q = q.where("updated_at", "<", range.end);
      const res = await q.executeTakeFirst();
      deps.wakeDispatcher();
      return { redriven: Number(res.numUpdatedRows) };
    },

    async replayEvents(req) {
      const webhook = await findWebhook(req.webhookId, "webhook_id");
      const range = req.range;
      let bounds: { after: bigint; upTo?: bigint; startTime?: Date; endTime?: Date };
      if (range.case === "sequenceRange") {
        const { first, last } = range.value;
        if (first === 0n) throw invalidArgument("sequence_range.first", "must be at least 1");
        if (last < first) throw invalidArgument("sequence_range.last", "must not be before first");
        bounds = { after: first - 1n, upTo: last };
      } else if (range.case === "timeRange") {
        const t = timeRange(range.value.startTime, range.value.endTime, "time_range.");
        if (!t.start || !t.end) throw invalidArgument(t.start ? "time_range.end_time" : "time_range.start_time", "is required");
        bounds = { after: 0n, startTime: t.start, endTime: t.end };
      } else {
        throw invalidArgument("range", "is required: time_range or sequence_range");
      }
      const matcher = req.ignoreFilters
        ? undefined
        : createEventMatcher(webhook.patterns.map(parseTypePattern), webhook.attributes,
            webhook.filter ? compileFilter(webhook.filter, catalog.registry, savedFilterLimits(deps.filterLimits)) : undefined);
      const reader = new EventReader(db, catalog);
      let scheduled = 0;
      for (let after = bounds.after; ;) {
        const events = await reader.page({ after, upTo: bounds.upTo, startTime: bounds.startTime, endTime: bounds.endTime, patterns: matcher?.patterns, attributes: matcher?.attributes, limit: 1000, descending: false });
        const rows = events.filter((e) => !matcher || matcher.matches(e)).map((e) => ({
          id: `dlv_${uuidV7()}`, webhook_id: webhook.id, event_sequence: e.sequence.toString(), event_id: e.id, event_type: e.type, replay: true,
        }));
        if (rows.length > 0) {
          await db.transaction().execute(async (trx) => {
            // The webhook's row, locked until these deliveries commit: a DeleteWebhook waits for
            // them and deletes them with the rest; one that came first leaves no row to lock, and
            // no delivery is written for a webhook that is gone (there is no foreign key to
            // refuse it: migration 0012).
            const alive = await trx.selectFrom("tidings_webhooks").select("id").where("id", "=", webhook.id).forKeyShare().executeTakeFirst();
            if (!alive) throw noWebhook(webhook.id, "webhook_id");
            await trx.insertInto("tidings_deliveries").values(rows).execute();
          });
        }
        scheduled += rows.length;
        if (events.length < 1000) break;
        after = events[events.length - 1]!.sequence;
      }
      deps.wakeDispatcher();
      return { scheduled };
    },

    async getWebhookStats(req) {
      const windowMs = req.window ? durationMs(req.window) : day;
      if (windowMs <= 0 || windowMs > 90 * day) throw invalidArgument("window", "must be between 1ms and 90 days");
      const row = await findWebhook(req.id);
      const counts = await db.selectFrom("tidings_deliveries").select(["status", (eb) => eb.fn.countAll<string>().as("n")])
        .where("webhook_id", "=", row.id).groupBy("status").execute();
      const count = (s: DeliveryStatus) => BigInt(counts.find((c) => c.status === s)?.n ?? 0);
      const since = new Date(Date.now() - windowMs);
      const a = await sql<{ attempts: string; ok: string; p50: number | null; p90: number | null; p99: number | null }>`
        SELECT count(*) AS attempts,
               count(*) FILTER (WHERE status_code BETWEEN 200 AND 299) AS ok,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY duration_ms) AS p90,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99
        FROM (
          SELECT status_code, duration_ms FROM tidings_delivery_attempts WHERE webhook_id = ${row.id} AND started_at >= ${since}
          UNION ALL
          -- Successes are recorded on their deliveries' rows (migration 0009). updated_at, set when
          -- the success was recorded, is never before the attempt started: the retention index
          -- (status, updated_at, webhook_id) finds the window's candidates without the heap.
          SELECT last_status_code, success_duration_ms FROM tidings_deliveries
          WHERE status = ${sql.lit(DeliveryStatus.SUCCEEDED)} AND updated_at >= ${since} AND webhook_id = ${row.id} AND success_started_at >= ${since}
        ) a`.execute(db);
      const s = a.rows[0]!;
      const attempts = Number(s.attempts);
      const ms = (v: number | null) => (v === null ? undefined : durationFromMs(Math.round(Number(v))));
      return {
        pending: count(DeliveryStatus.PENDING) + BigInt(await countWindowed(db, row.id)),
        succeeded: count(DeliveryStatus.SUCCEEDED),
        dead: count(DeliveryStatus.DEAD),
        attempts: BigInt(attempts),
        successRate: attempts === 0 ? 0 : Number(s.ok) / attempts,
        latencyP50: ms(s.p50),
        latencyP90: ms(s.p90),
        latencyP99: ms(s.p99),
        lastSuccessTime: row.last_success_at ? timestampFromDate(row.last_success_at) : undefined,
        lastFailureTime: row.last_failure_at ? timestampFromDate(row.last_failure_at) : undefined,
        consecutiveFailures: row.consecutive_failures,
      };
    },
  };
}

function settingsToColumns(s: Partial<WebhookSettings>) {
  return {
    ...(s.url !== undefined && { url: s.url }),
    ...(s.description !== undefined && { description: s.description }),
    ...(s.patterns !== undefined && { patterns: JSON.stringify(s.patterns) }),
    ...(s.attributes !== undefined && { attributes: JSON.stringify(s.attributes) }),
    ...(s.filter !== undefined && { filter: s.filter }),
    ...(s.headers !== undefined && { headers: JSON.stringify(s.headers) }),
    ...(s.retryPolicy !== undefined && { retry_policy: JSON.stringify(s.retryPolicy) }),
    ...(s.timeoutMs !== undefined && { timeout_ms: s.timeoutMs }),
    ...(s.batchMaxEvents !== undefined && { batch_max_events: s.batchMaxEvents, batch_max_wait_ms: s.batchMaxWaitMs ?? 0 }),
    ...(s.rateLimit !== undefined && { rate_limit: s.rateLimit }),
    ...(s.ordered !== undefined && { ordered: s.ordered }),
    ...(s.enabled !== undefined && { enabled: s.enabled }),
    ...(s.contentMode !== undefined && { content_mode: s.contentMode }),
    ...(s.maxConsecutiveFailures !== undefined && { max_consecutive_failures: s.maxConsecutiveFailures, max_failing_ms: s.maxFailingMs ?? 0 }),
  };
}

function activeSecrets(secrets: readonly StoredSecret[]): string[] {
  const now = Date.now();
  return secrets.filter((s) => s.expires_at === null || Date.parse(s.expires_at) > now).map((s) => s.secret);
}

/** A webhook as the API shows it: never the secret (unless just made), headers redacted in lists. */
function toApiWebhook(row: WebhookRow, show: { secret?: string; redactHeaders?: boolean } = {}): Webhook {
  const p = row.retry_policy;
  return create(WebhookSchema, {
    id: row.id,
    url: row.url,
    description: row.description,
    patterns: row.patterns,
    attributes: row.attributes,
    filter: row.filter,
    headers: show.redactHeaders ? Object.fromEntries(Object.keys(row.headers).map((k) => [k, "<redacted>"])) : row.headers,
    secret: show.secret ?? "",
    retryPolicy: {
      maxAttempts: p.maxAttempts,
      schedule: (p.scheduleMs ?? []).map(durationFromMs),
      baseDelay: p.baseMs !== undefined ? durationFromMs(p.baseMs) : undefined,
      multiplier: p.multiplier ?? 0,
      maxDelay: p.maxMs !== undefined ? durationFromMs(p.maxMs) : undefined,
    },
    timeout: durationFromMs(row.timeout_ms),
    batching: row.batch_max_events > 0 ? { maxEvents: row.batch_max_events, maxWait: durationFromMs(row.batch_max_wait_ms) } : undefined,
    rateLimit: row.rate_limit,
    ordered: row.ordered,
    enabled: row.enabled,
    contentMode: row.content_mode,
    failurePolicy: { maxConsecutiveFailures: row.max_consecutive_failures, maxFailingDuration: durationFromMs(Number(row.max_failing_ms)) },
    disabledReason: row.disabled_reason,
    createTime: timestampFromDate(row.created_at),
    updateTime: timestampFromDate(row.updated_at),
  });
}

function toApiDelivery(row: Selectable<DeliveriesTable>): Delivery {
  return create(DeliverySchema, {
    id: row.id,
    webhookId: row.webhook_id,
    eventId: row.event_id,
    eventType: row.event_type,
    eventSequence: BigInt(row.event_sequence),
    status: row.status,
    attempts: row.attempts,
    nextAttemptTime: row.status === DeliveryStatus.PENDING ? timestampFromDate(row.next_attempt_at) : undefined,
    lastStatusCode: row.last_status_code,
    lastError: row.last_error,
    replay: row.replay,
    createTime: timestampFromDate(row.created_at),
    updateTime: timestampFromDate(row.updated_at),
  });
}

/** The successful attempt recorded on a delivery's row, as an attempt row (id "": it has none of its own). */
function successAttemptOf(row: Selectable<DeliveriesTable>): Selectable<DeliveryAttemptsTable> | undefined {
  if (row.success_started_at === null) return undefined;
  return {
    id: "",
    delivery_id: row.id,
    webhook_id: row.webhook_id,
    number: row.attempts,
    started_at: row.success_started_at,
    duration_ms: row.success_duration_ms ?? 0,
    status_code: row.last_status_code,
    response_excerpt: row.success_response_excerpt ?? "",
    error: "",
    node: row.success_node ?? "",
  };
}

function toApiAttempt(row: Selectable<DeliveryAttemptsTable>) {
  return create(DeliveryAttemptSchema, {
    number: row.number,
    time: timestampFromDate(row.started_at),
    duration: durationFromMs(row.duration_ms),
    statusCode: row.status_code,
    responseExcerpt: row.response_excerpt,
    error: row.error,
  });
}

function timeRange(start: Timestamp | undefined, end: Timestamp | undefined, prefix = ""): { start?: Date; end?: Date } {
  const s = start ? dateOf(start, `${prefix}start_time`) : undefined;
  const e = end ? dateOf(end, `${prefix}end_time`) : undefined;
  if (s && e && e <= s) throw invalidArgument(`${prefix}end_time`, "must be after start_time");
  return { start: s, end: e };
}

function typesOf(patterns: readonly string[], catalog: EventCatalog): string[] | undefined {
  if (patterns.length === 0) return undefined;
  const parsed = patterns.map((p, i) => {
    try {
      return parseTypePattern(p);
    } catch (err) {
      if (err instanceof TypePatternError) throw invalidArgument(`patterns[${i}]`, err.message);
      throw err;
    }
  });
  return catalog.matching(parsed).map((e) => e.name);
}
