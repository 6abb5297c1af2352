import { type JsonObject, toJson } from "@bufbuild/protobuf";
import { ContentMode } from "../../gen/tidings/v1/webhook_pb.js";
import type { EventCatalog } from "../catalog/catalog.js";
import type { StoredEvent } from "../event-log/stored-event.js";
import { signWebhook } from "./signing.js";

export interface OutgoingRequest {
  headers: Record<string, string>;
  body: string;
}

export interface RequestTarget {
  contentMode: ContentMode;
  headers: Record<string, string>;
  /** Secrets that sign now (two during a rotation). */
  secrets: string[];
}

const userAgent = "Tidings-Webhooks/0.1";

/** The event as Standard Webhooks JSON: {type, timestamp, data} and the rest of the envelope. */
export function standardPayload(event: StoredEvent, catalog: EventCatalog): JsonObject {
  return {
    id: event.id,
    type: event.type,
    timestamp: event.time.toISOString(),
    source: event.source,
    ...(event.subject ? { subject: event.subject } : {}),
    attributes: event.attributes,
    sequence: event.sequence.toString(),
    data: payloadJson(event, catalog),
  };
}

function payloadJson(event: StoredEvent, catalog: EventCatalog): JsonObject {
  if (!event.entry) return {};
  return toJson(event.entry.message, event.data(), { registry: catalog.registry, useProtoFieldName: true }) as JsonObject;
}

function cloudEvent(event: StoredEvent, catalog: EventCatalog): JsonObject {
  return {
    specversion: "1.0",
    id: event.id,
    source: event.source,
    type: event.type,
    ...(event.subject ? { subject: event.subject } : {}),
    time: event.time.toISOString(),
    datacontenttype: "application/json",
    tidingssequence: event.sequence.toString(),
    data: payloadJson(event, catalog),
  };
}

/**
 * Builds the signed request for one event or a batch. A single event's body is rendered once per
 * node and content mode (StoredEvent.renderedWith), and only signed per endpoint: to ten endpoints,
 * the same event was converted to JSON ten times. An endpoint with batching gets every
 * request in the batch form, however many events it holds, so its receiver parses one shape:
 * Standard mode sends {"type": "tidings.batch", "data": {"events": [...]}}, CloudEvents modes a
 * JSON array (application/cloudevents-batch+json; binary mode has no batch form in CloudEvents).
 */
export function buildDeliveryRequest(target: RequestTarget, events: readonly StoredEvent[], catalog: EventCatalog, messageId: string, asBatch: boolean, now = new Date()): OutgoingRequest {
  let contentType = "application/json";
  const extra: Record<string, string> = {};
  let body: string;
  const single = !asBatch && events.length === 1 ? events[0]! : undefined;
  switch (target.contentMode) {
    case ContentMode.CLOUDEVENTS_BINARY:
      if (single) {
        extra["ce-specversion"] = "1.0";
        extra["ce-id"] = single.id;
        extra["ce-source"] = single.source;
        extra["ce-type"] = single.type;
        extra["ce-time"] = single.time.toISOString();
        if (single.subject) extra["ce-subject"] = single.subject;
        extra["ce-tidingssequence"] = single.sequence.toString();
        body = single.renderedWith("webhook-body-data", dataBody, catalog, undefined);
        break;
      }
    // falls through: a batch goes as structured CloudEvents
    case ContentMode.CLOUDEVENTS_STRUCTURED:
      contentType = single ? "application/cloudevents+json" : "application/cloudevents-batch+json";
      body = single
        ? single.renderedWith("webhook-body-cloudevent", cloudEventBody, catalog, undefined)
        : JSON.stringify(events.map((e) => cloudEvent(e, catalog)));
      break;
    default:
      body = single
        ? single.renderedWith("webhook-body-standard", standardBody, catalog, undefined)
        : JSON.stringify({ type: "tidings.batch", timestamp: now.toISOString(), data: { events: events.map((e) => standardPayload(e, catalog)) } });
  }
  return signed(target, messageId, body, contentType, extra, now);
}

// A single event's bodies, rendered once per node (StoredEvent.renderedWith: no closure per delivery).
const dataBody = (event: StoredEvent, catalog: EventCatalog) => JSON.stringify(payloadJson(event, catalog));
const cloudEventBody = (event: StoredEvent, catalog: EventCatalog) => JSON.stringify(cloudEvent(event, catalog));
const standardBody = (event: StoredEvent, catalog: EventCatalog) => JSON.stringify(standardPayload(event, catalog));

/** The ping TestWebhook sends. */
export function buildPingRequest(target: RequestTarget, webhookId: string, messageId: string, now = new Date()): OutgoingRequest {
  const body = JSON.stringify({ id: messageId, type: "tidings.ping", timestamp: now.toISOString(), data: { webhook_id: webhookId } });
  return signed(target, messageId, body, "application/json", {}, now);
}

function signed(target: RequestTarget, messageId: string, body: string, contentType: string, extra: Record<string, string>, now: Date): OutgoingRequest {
  const signature = signWebhook({ id: messageId, timestamp: Math.floor(now.getTime() / 1000), body, secrets: target.secrets });
  return {
    body,
    headers: { ...target.headers, ...extra, ...signature, "content-type": contentType, "user-agent": userAgent },
  };
}
