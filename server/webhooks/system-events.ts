import { create, type JsonObject } from "@bufbuild/protobuf";
import { EventSchema } from "../../gen/tidings/v1/event_pb.js";
import type { Webhook } from "../../gen/tidings/v1/webhook_pb.js";
import type { EventCatalog } from "../catalog/catalog.js";
import type { AppendQueue } from "../event-log/append-queue.js";
import type { Logger } from "../logging/logger.js";
import { prepareEvent } from "../rpc/event-envelope.js";
import type { DispatcherEvents } from "./delivery-dispatcher.js";
import type { WebhookLifecycleEvents } from "./webhook-service.js";

/** The source of the events Tidings publishes about itself. */
export const systemSource = "tidings";

/** Publishes one of Tidings' own events; never throws. */
export type SystemPublisher = (type: string, subject: string, data: JsonObject) => void;

/**
 * Tidings' own events (operational and security ones) go through the same validation as a
 * client's publish, with source "tidings"; a failure is logged, never thrown into the caller.
 */
export function systemPublisher(catalog: EventCatalog, appendQueue: AppendQueue, logger: Logger): SystemPublisher {
  return (type, subject, data) => {
    const event = create(EventSchema, { type, source: systemSource, subject, payload: { case: "data", value: data } });
    const prepared = prepareEvent(event, "", "event", catalog, Number.MAX_SAFE_INTEGER, "idempotency_key");
    if (!prepared.ok) {
      logger.error("an operational event does not fit its schema", { type, violations: prepared.violations });
      return;
    }
    appendQueue.append([prepared.event]).catch((err) => logger.warn("could not publish an operational event", { type, err }));
  };
}

/**
 * Publishes Tidings' operational events (tidings.webhook.*, tidings.delivery.*) into its own
 * log, so they can be subscribed to and webhooked like any other.
 */
export function createSystemEvents(publish: SystemPublisher): WebhookLifecycleEvents & DispatcherEvents {
  const summary = (w: Webhook): JsonObject => ({ webhook_id: w.id, url: w.url, description: w.description, event_types: w.patterns });
  return {
    created: (w) => publish("tidings.webhook.created", w.id, summary(w)),
    updated: (w, changed) => publish("tidings.webhook.updated", w.id, { ...summary(w), changed_fields: changed }),
    deleted: (w) => publish("tidings.webhook.deleted", w.id, summary(w)),
    disabled: (d) => publish("tidings.webhook.disabled", d.webhookId, {
      webhook_id: d.webhookId, reason: d.reason, url: d.url, consecutive_failures: d.consecutiveFailures, last_status_code: d.lastStatusCode, last_error: d.lastError,
    }),
    deadLettered: (d) => publish("tidings.delivery.dead_lettered", d.deliveryId, {
      delivery_id: d.deliveryId, webhook_id: d.webhookId, event_id: d.eventId, event_type: d.eventType, attempts: d.attempts,
      last_status_code: d.lastStatusCode, last_error: d.lastError, url: d.url,
    }),
  };
}
