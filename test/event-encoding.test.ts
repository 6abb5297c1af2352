import { create, toBinary, type JsonObject } from "@bufbuild/protobuf";
import { AnySchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EventSchema } from "../gen/tidings/v1/event_pb.js";
import type { EventCatalog } from "../server/catalog/catalog.js";
import { StoredEvent } from "../server/event-log/stored-event.js";
import { encodeEventWithLength, type EventPayload } from "../server/rpc/event-encoding.js";

// A stored event's catalog is only consulted for its type's entry, which the encoder is not given.
const noCatalog = { get: () => undefined } as unknown as EventCatalog;

const text = fc.string({ unit: "binary", maxLength: 40 });
const storedEvents = fc.record({
  sequence: fc.bigInt({ min: 0n, max: 2n ** 63n - 1n }),
  id: text,
  type: text,
  source: text,
  subject: text,
  // Before 1970 too: a negative second count, and negative nanos as protobuf-es computes them.
  time: fc.date({ min: new Date(-50_000_000_000_000), max: new Date(50_000_000_000_000), noInvalidDate: true }),
  attributes: fc.dictionary(fc.string({ maxLength: 12 }).filter((k) => k !== "__proto__"), text, { maxKeys: 6 }),
  payload: fc.uint8Array({ maxLength: 64 }),
});

/** What protobuf-es writes for the same event: the reference. */
function reference(e: StoredEvent, payload: EventPayload): Uint8Array {
  return toBinary(
    EventSchema,
    create(EventSchema, {
      id: e.id,
      source: e.source,
      type: e.type,
      subject: e.subject,
      time: timestampFromDate(e.time),
      datacontenttype: payload.kind === "json" ? "application/json" : "application/protobuf",
      attributes: e.attributes,
      sequence: e.sequence,
      payload: payload.kind === "json" ? { case: "data", value: payload.data } : { case: "protoData", value: create(AnySchema, { typeUrl: payload.typeUrl, value: payload.value }) },
    }),
  );
}

/** Ours, after checking that its length prefix is right. */
function ours(e: StoredEvent, payload: EventPayload): Uint8Array {
  const bytes = encodeEventWithLength(e, payload);
  const reader = new BinaryReader(bytes);
  const length = reader.uint32();
  expect(reader.pos + length).toBe(bytes.length);
  return bytes.subarray(reader.pos);
}

describe("the hand-written Event encoder", () => {
  it("writes the very bytes protobuf-es writes, for any stored event and either payload form", () => {
    fc.assert(
      fc.property(storedEvents, text, fc.dictionary(fc.string({ maxLength: 8 }).filter((k) => k !== "__proto__"), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 }), (row, typeUrl, json) => {
        const event = new StoredEvent(row, noCatalog);
        const proto: EventPayload = { kind: "proto", typeUrl, value: row.payload };
        const asJson: EventPayload = { kind: "json", data: json as JsonObject };
        expect(Buffer.from(ours(event, proto)).equals(reference(event, proto))).toBe(true);
        expect(Buffer.from(ours(event, asJson)).equals(reference(event, asJson))).toBe(true);
      }),
      { numRuns: 2_000 },
    );
  });

  it("leaves out empty strings, a zero time and sequence 0, and keeps empty map values", () => {
    const event = new StoredEvent({ sequence: 0n, id: "", type: "", source: "", subject: "", time: new Date(0), attributes: { k: "" }, payload: new Uint8Array() }, noCatalog);
    const payload: EventPayload = { kind: "proto", typeUrl: "", value: new Uint8Array() };
    expect(Buffer.from(ours(event, payload)).equals(reference(event, payload))).toBe(true);
  });
});
