import { createHash } from "node:crypto";
import { create, type JsonObject, toJson } from "@bufbuild/protobuf";
import { AnySchema, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { WireType } from "@bufbuild/protobuf/wire";
import { type Event, EventSchema } from "../../gen/tidings/v1/event_pb.js";
import { PayloadFormat, type SubscribeResponse, SubscribeResponseSchema } from "../../gen/tidings/v1/event_service_pb.js";
import type { EventCatalog } from "../catalog/catalog.js";
import { binaryPayloadPasses } from "../catalog/binary-payload-check.js";
import { encodePayload } from "../catalog/payload-encoding.js";
import { type FieldViolation, parseBinaryPayload, parseJsonPayload } from "../catalog/payload-validation.js";
import type { NewEvent } from "../event-log/append-queue.js";
import type { StoredEvent } from "../event-log/stored-event.js";
import { uuidV7 } from "../event-log/uuid-v7.js";
import { nulRefused } from "../storage/schema.js";
import { encodeEventWithLength } from "./event-encoding.js";
import { isValidTimestamp, timestampRange } from "./timestamps.js";

/** Limits on the envelope; the payload limit is configurable. */
export const envelopeLimits = {
  idLength: 256,
  sourceLength: 1024,
  subjectLength: 1024,
  idempotencyKeyLength: 256,
  attributes: 64,
  attributeValueLength: 1024,
} as const;

const attributeKeyPattern = /^[a-z0-9_][a-z0-9_.-]{0,63}$/;
const controlCharacters = /[\u0000-\u001f\u007f]/;

export type PreparedEvent =
  | { ok: true; event: NewEvent }
  | { ok: false; violations: FieldViolation[]; tooLarge: boolean };

/**
 * Runs a check against the catalog, and once more after the catalog catches up when it was
 * refused and this node's catalog was behind: another node may have registered the type, or a
 * new field of it, a moment ago. Costs a query only for refused requests.
 */
export async function withFreshCatalog<T extends { ok: boolean; tooLarge?: boolean }>(catalog: EventCatalog, check: () => T): Promise<T> {
  const revision = catalog.revision;
  const first = check();
  if (first.ok || first.tooLarge) return first;
  await catalog.refreshIfStale();
  return catalog.revision !== revision ? check() : first;
}

/**
 * Checks a published event against the envelope rules and its type's schema, and turns it
 * into a row. Collects every violation, with paths under `path` ("event", "entries[3].event").
 */
export function prepareEvent(
  event: Event | undefined,
  idempotencyKey: string,
  path: string,
  catalog: EventCatalog,
  maxPayloadBytes: number,
  keyPath: string,
): PreparedEvent {
  // No closures here: this runs for every published event, and each closure made per call cost
  // a function allocation (and, compiled by tsx, a name set on it) that showed in profiles.
  const violations: FieldViolation[] = [];
  if (!event) {
    violations.push({ field: path, description: "is required" });
    return { ok: false, violations, tooLarge: false };
  }
  const v = new ViolationList(violations, path);
  const entry = event.type ? catalog.get(event.type) : undefined;
  if (!event.type) v.add("type", "is required");
  else if (!entry) v.add("type", `unknown event type "${event.type}"; ListEventTypes lists the catalog`);
  if (!event.source) v.add("source", "is required");
  else if (event.source.length > envelopeLimits.sourceLength) v.add("source", `is longer than ${envelopeLimits.sourceLength} characters`);
  else if (event.source.includes("\0")) v.add("source", nulRefused);
  if (event.id.length > envelopeLimits.idLength) v.add("id", `is longer than ${envelopeLimits.idLength} characters`);
  else if (controlCharacters.test(event.id)) v.add("id", "must not contain control characters");
  if (event.subject.length > envelopeLimits.subjectLength) v.add("subject", `is longer than ${envelopeLimits.subjectLength} characters`);
  else if (event.subject.includes("\0")) v.add("subject", nulRefused);
  if (event.sequence !== 0n) v.add("sequence", "is assigned by the server; leave it unset");
  if (event.time && !isValidTimestamp(event.time)) v.add("time", timestampRange);
  const attributeKeys = Object.keys(event.attributes);
  if (attributeKeys.length > envelopeLimits.attributes) v.add("attributes", `has more than ${envelopeLimits.attributes} entries`);
  for (const key of attributeKeys) {
    const value = event.attributes[key]!;
    if (!attributeKeyPattern.test(key)) v.add(`attributes["${key}"]`, "key must be 1-64 characters of [a-z0-9_.-], starting with a letter, digit or _");
    else if (value.length > envelopeLimits.attributeValueLength) v.add(`attributes["${key}"]`, `value is longer than ${envelopeLimits.attributeValueLength} characters`);
    else if (value.includes("\0")) v.add(`attributes["${key}"]`, nulRefused);
  }
  if (idempotencyKey.length > envelopeLimits.idempotencyKeyLength) {
    violations.push({ field: keyPath, description: `is longer than ${envelopeLimits.idempotencyKeyLength} characters` });
  } else if (idempotencyKey.includes("\0")) {
    violations.push({ field: keyPath, description: nulRefused });
  }

  let payloadAccepted = false;
  let payload: Uint8Array | undefined;
  let decoded: NewEvent["decoded"];
  const payloadCase = event.payload.case;
  if (payloadCase === undefined) {
    v.add("data", "is required: the payload as JSON in `data`, or packed in `proto_data`");
  } else if (entry) {
    if (payloadCase === "data") {
      const parsed = parseJsonPayload(entry.message, event.payload.value, `${path}.data`, catalog.registry);
      violations.push(...parsed.violations);
      if (parsed.message) {
        payload = encodePayload(entry.message, parsed.message);
        decoded = { schema: entry.message, message: parsed.message };
      }
      payloadAccepted = parsed.message !== undefined;
    } else {
      const any = event.payload.value;
      if (any.typeUrl !== entry.typeUrl) {
        v.add("proto_data.type_url", `is "${any.typeUrl}" but type "${entry.name}" takes ${entry.typeUrl}`);
      } else {
        // Most payloads pass: the wire format is walked without decoding it, and only a payload
        // that does not plainly pass is decoded, for its exact violations (if any).
        if (binaryPayloadPasses(entry.message, any.value)) payloadAccepted = true;
        else {
          const parsed = parseBinaryPayload(entry.message, any.value, `${path}.proto_data`);
          violations.push(...parsed.violations);
          payloadAccepted = parsed.message !== undefined;
        }
        payload = any.value;
      }
    }
  }
  if (payload && payload.length > maxPayloadBytes) {
    violations.length = 0;
    v.add(payloadCase === "data" ? "data" : "proto_data", `payload is ${payload.length} bytes encoded, more than the limit of ${maxPayloadBytes}`);
    return { ok: false, violations, tooLarge: true };
  }
  if (violations.length > 0 || !entry || !payloadAccepted || !payload) return { ok: false, violations, tooLarge: false };

  const idChosenByPublisher = event.id !== "";
  return {
    ok: true,
    event: {
      id: idChosenByPublisher ? event.id : uuidV7(),
      idChosenByPublisher,
      type: entry.name,
      source: event.source,
      subject: event.subject,
      time: event.time ? timestampDate(event.time) : new Date(),
      attributes: event.attributes,
      payload,
      decoded,
      idempotencyKey: idempotencyKey === "" ? undefined : idempotencyKey,
      // Only a keyed publish is ever compared with another; hashing every event showed in profiles.
      requestHash: idempotencyKey === "" ? undefined : requestHash(event, payload),
    },
  };
}

/** Violations of one event, each field named under the event's path. */
class ViolationList {
  constructor(
    private readonly list: FieldViolation[],
    private readonly path: string,
  ) {}
  add(field: string, description: string): void {
    this.list.push({ field: `${this.path}.${field}`, description });
  }
}

/** What makes two publishes "the same request" for an idempotency key. */
function requestHash(event: Event, payload: Uint8Array): Uint8Array {
  const attributes = Object.keys(event.attributes).sort().map((k) => [k, event.attributes[k]]);
  const time = event.time ? `${event.time.seconds}.${event.time.nanos}` : "";
  return createHash("sha256")
    .update(JSON.stringify([event.id, event.type, event.source, event.subject, time, attributes]))
    .update(payload)
    .digest();
}

/** A stored event as the API serves it, with the payload in the requested form. */
export function toApiEvent(stored: StoredEvent, format: PayloadFormat, catalog: EventCatalog): Event {
  // A type no longer in the catalog cannot be rendered as JSON: serve its bytes packed instead.
  const proto = format === PayloadFormat.PROTO || !stored.entry;
  return stored.renderedWith(proto ? "api-proto" : "api-json", renderApiEvent, proto, catalog);
}

/**
 * The stream message for an event, for a subscriber whose stream is protobuf binary. The event
 * is encoded once per node and payload format and carried as an already-encoded field 1
 * (`event`), which protobuf-es writes out as it is (an unknown field of this message object):
 * encoding the whole event for every subscriber was most of a fan-out's CPU. Decoded by any
 * client, it is the same message as create(SubscribeResponseSchema, { message: event, cursor }).
 * Not for JSON streams: JSON serialization leaves unknown fields out.
 */
export function binaryEventResponse(stored: StoredEvent, format: PayloadFormat, catalog: EventCatalog, cursor: bigint): SubscribeResponse {
  const proto = format === PayloadFormat.PROTO || !stored.entry;
  // A stream's cursor at an event is that event's sequence, so every subscriber of this node
  // gets the very same message: one object, which the binary fast path encodes once (its
  // envelope is cached by the message) however many subscribers it goes to. Shared, so never
  // changed after it is made.
  if (cursor === stored.sequence) return stored.renderedWith(proto ? "stream-message-proto" : "stream-message-json", streamMessage, format, catalog);
  return streamMessageAt(stored, format, catalog, cursor);
}

function streamMessage(stored: StoredEvent, format: PayloadFormat, catalog: EventCatalog): SubscribeResponse {
  return streamMessageAt(stored, format, catalog, stored.sequence);
}

function streamMessageAt(stored: StoredEvent, format: PayloadFormat, catalog: EventCatalog, cursor: bigint): SubscribeResponse {
  const proto = format === PayloadFormat.PROTO || !stored.entry;
  const field = stored.renderedWith(proto ? "stream-field-proto" : "stream-field-json", encodedEventField, format, catalog);
  const message = create(SubscribeResponseSchema, { cursor });
  message.$unknown = [{ no: subscribeResponseEventField, wireType: WireType.LengthDelimited, data: field }];
  return message;
}

/**
 * The event as field 1 of a SubscribeResponse is written: its length, then its bytes, written
 * by event-encoding.ts from the stored event (the JSON payload as toApiEvent renders it).
 */
function encodedEventField(stored: StoredEvent, format: PayloadFormat, catalog: EventCatalog): Uint8Array {
  const entry = stored.entry;
  if (format === PayloadFormat.PROTO || !entry) {
    return encodeEventWithLength(stored, { kind: "proto", typeUrl: entry?.typeUrl ?? unknownTypeUrl(stored.type), value: stored.payload });
  }
  return encodeEventWithLength(stored, { kind: "json", data: jsonPayload(stored, catalog) });
}

const subscribeResponseEventField = SubscribeResponseSchema.field.event.number;

const unknownTypeUrl = (type: string) => `type.googleapis.com/unknown.${type}`;

/** The payload as JSON, with proto field names; rendered once per node. */
function jsonPayload(stored: StoredEvent, catalog: EventCatalog): JsonObject {
  return stored.renderedWith("json-payload", renderJsonPayload, catalog, undefined);
}

function renderJsonPayload(stored: StoredEvent, catalog: EventCatalog): JsonObject {
  return toJson(stored.entry!.message, stored.data(), { registry: catalog.registry, useProtoFieldName: true }) as JsonObject;
}

function renderApiEvent(stored: StoredEvent, proto: boolean, catalog: EventCatalog): Event {
  const typeUrl = stored.entry?.typeUrl ?? unknownTypeUrl(stored.type);
  return create(EventSchema, {
    id: stored.id,
    source: stored.source,
    type: stored.type,
    subject: stored.subject,
    time: timestampFromDate(stored.time),
    datacontenttype: proto ? "application/protobuf" : "application/json",
    attributes: stored.attributes,
    sequence: stored.sequence,
    payload: proto
      ? { case: "protoData", value: create(AnySchema, { typeUrl, value: stored.payload }) }
      : { case: "data", value: jsonPayload(stored, catalog) },
  });
}
