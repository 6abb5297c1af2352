import { create, fromBinary, type JsonObject, toBinary } from "@bufbuild/protobuf";
import { AnySchema, TimestampSchema } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EventSchema } from "../gen/tidings/v1/event_pb.js";
import { PublishBatchRequestSchema, PublishRequestSchema } from "../gen/tidings/v1/event_service_pb.js";
import { foundFreeOfNul } from "../server/rpc/nul-refusal.js";
import { decodedFields, publishRequestDecoders, tryDecodePublishBatchRequest, tryDecodePublishRequest } from "../server/rpc/publish-request-decoding.js";

// Text that fromBinary returns as encoded: it drops a leading U+FEFF, which the decoders leave to
// it (a case of its own below).
const text = fc.string({ unit: "binary", maxLength: 12 }).filter((t) => !t.startsWith("\uFEFF"));
const event = fc.record({
  id: text,
  source: text,
  type: text,
  subject: text,
  datacontenttype: text,
  // fast-check likes to try "__proto__" as a key; the decoders leave that to fromBinary (a case below).
  attributes: fc.dictionary(text.filter((k) => k !== "__proto__"), text, { maxKeys: 4 }),
  sequence: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  time: fc.option(fc.record({ seconds: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), nanos: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) }), { nil: undefined }),
  payload: fc.oneof(
    fc.constant({ case: undefined }),
    fc.record({ case: fc.constant("data" as const), value: fc.dictionary(text, fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }).map((j) => j as JsonObject) }),
    fc.record({ case: fc.constant("protoData" as const), value: fc.record({ typeUrl: text, value: fc.uint8Array({ maxLength: 16 }) }).map((a) => create(AnySchema, a)) }),
  ),
});
const publishRequest = fc.record({ event: fc.option(event, { nil: undefined }), idempotencyKey: text });
const batch = fc.array(publishRequest, { maxLength: 5 });

/** What fromBinary does with the bytes: its message, or its error. */
function reference(schema: typeof PublishRequestSchema | typeof PublishBatchRequestSchema, bytes: Uint8Array) {
  try {
    return { value: fromBinary(schema, bytes) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

function decoded(schema: typeof PublishRequestSchema | typeof PublishBatchRequestSchema, bytes: Uint8Array) {
  try {
    return { value: publishRequestDecoders.get(schema)!(bytes) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

describe("the publish request decoders", () => {
  it("decode what protobuf-es encodes to the very message fromBinary returns, without falling back", () => {
    fc.assert(
      fc.property(batch, (entries) => {
        const bytes = toBinary(PublishBatchRequestSchema, create(PublishBatchRequestSchema, { entries }));
        const ours = tryDecodePublishBatchRequest(bytes);
        expect(ours).toBeDefined();
        expect(ours).toStrictEqual(fromBinary(PublishBatchRequestSchema, bytes));
        for (const entry of entries) {
          const one = toBinary(PublishRequestSchema, create(PublishRequestSchema, entry));
          expect(tryDecodePublishRequest(one)).toStrictEqual(fromBinary(PublishRequestSchema, one));
        }
      }),
      { numRuns: 1_000 },
    );
  });

  it("give fromBinary's result or its error for damaged bytes: flipped, cut short, spliced", () => {
    const damaged = batch.chain((entries) => {
      const bytes = toBinary(PublishBatchRequestSchema, create(PublishBatchRequestSchema, { entries }));
      return fc.tuple(fc.constant(bytes), fc.nat(Math.max(0, bytes.length - 1)), fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 6 }), fc.nat(2));
    }).map(([bytes, at, byte, extra, how]) => {
      const b = Buffer.from(bytes);
      if (how === 0 && b.length > 0) b[at] = byte;
      if (how === 1) return new Uint8Array(b.subarray(0, at));
      if (how === 2) return new Uint8Array(Buffer.concat([b.subarray(0, at), extra, b.subarray(at)]));
      return new Uint8Array(b);
    });
    fc.assert(
      fc.property(damaged, (bytes) => {
        expect(decoded(PublishBatchRequestSchema, bytes)).toStrictEqual(reference(PublishBatchRequestSchema, bytes));
        expect(decoded(PublishRequestSchema, bytes)).toStrictEqual(reference(PublishRequestSchema, bytes));
      }),
      { numRuns: 3_000 },
    );
  });

  it("leave the cases they do not handle to fromBinary, with the same result", () => {
    const e = (init: Parameters<typeof create<typeof EventSchema>>[1]) => toBinary(EventSchema, create(EventSchema, init));
    const request = (eventBytes: Uint8Array, tail: number[] = []) => new Uint8Array([0x0a, eventBytes.length, ...eventBytes, ...tail]);
    const data = e({ payload: { case: "data", value: { a: 1 } } });
    const proto = e({ payload: { case: "protoData", value: create(AnySchema, { typeUrl: "t", value: new Uint8Array([1]) }) } });
    /** An event whose payload is the Struct {"a": <the Value `value`>}. */
    const structEvent = (value: number[]) => {
      const entry = [0x0a, 0x01, 0x61, 0x12, value.length, ...value];
      return new Uint8Array([0x3a, entry.length + 2, 0x0a, entry.length, ...entry]);
    };
    /** A Struct map entry {"a": <bool_value b>}. */
    const boolEntry = (b: number) => [0x0a, 0x07, 0x0a, 0x01, 0x61, 0x12, 0x02, 0x20, b];
    const cases: Array<[string, Uint8Array]> = [
      ["an unknown field", request(e({ id: "x" }), [0x58, 0x01])],
      ["an unknown field in the event", request(new Uint8Array([...e({ id: "x" }), 0x68, 0x01]))],
      ["the event twice (merged)", request(e({ id: "x" }), [0x0a, 0x02, 0x12, 0x00])],
      ["data, then proto_data (the last wins)", request(new Uint8Array([...data, ...proto]))],
      ["invalid UTF-8", request(new Uint8Array([0x0a, 0x02, 0xc3, 0x28]))],
      ["a __proto__ attribute", request(e({ attributes: JSON.parse('{"__proto__": "v"}') as Record<string, string> }))],
      ["the time twice", request(new Uint8Array([...e({ time: create(TimestampSchema, { seconds: 1n }) }), ...toBinary(EventSchema, create(EventSchema, { time: create(TimestampSchema, { nanos: 5 }) }))]))],
      ["a wrong wire type", request(new Uint8Array([0x08, 0x01]))],
      ["an attribute key that is U+FEFF (fromBinary drops it)", request(e({ attributes: { "\uFEFF": "v" } }))],
      ["an id starting with U+FEFF", request(e({ id: "\uFEFFx" }))],
      ["a type_url starting with U+FEFF", request(e({ payload: { case: "protoData", value: create(AnySchema, { typeUrl: "\uFEFFt", value: new Uint8Array([1]) }) } }))],
      // A JSON payload (Struct, field 7) whose member "a" is unusual: fromBinary's defaults and merging.
      ["a Value with two members (the last wins)", request(structEvent([0x20, 0x01, 0x1a, 0x01, 0x78]))],
      ["an empty Value (null)", request(structEvent([]))],
      ["a Struct entry without a value", request(new Uint8Array([0x3a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0x61]))],
      ["a Struct key given twice (the last wins)", request(new Uint8Array([0x3a, 18, ...boolEntry(0), ...boolEntry(1)]))],
    ];
    for (const [name, bytes] of cases) {
      expect(tryDecodePublishRequest(bytes), name).toBeUndefined();
      expect(decoded(PublishRequestSchema, bytes), name).toStrictEqual(reference(PublishRequestSchema, bytes));
    }
  });

  it("honour fromBinary's recursion limit in a deeply nested Struct", () => {
    for (const depth of [90, 95, 96, 97, 98, 99]) {
      let json: JsonObject = {};
      for (let i = 0; i < depth; i++) json = { n: json };
      const bytes = toBinary(PublishRequestSchema, create(PublishRequestSchema, { event: { payload: { case: "data", value: json } } }));
      expect(decoded(PublishRequestSchema, bytes)).toStrictEqual(reference(PublishRequestSchema, bytes));
      const batched = toBinary(PublishBatchRequestSchema, create(PublishBatchRequestSchema, { entries: [{ event: { payload: { case: "data", value: json } } }] }));
      expect(decoded(PublishBatchRequestSchema, batched)).toStrictEqual(reference(PublishBatchRequestSchema, batched));
    }
  });

  it("mark a request free of NUL only when none of its text fields holds one (the NUL check then skips it)", () => {
    const clean = { id: "i", source: "s", type: "t", subject: "u", datacontenttype: "d", attributes: { k: "v" }, payload: { case: "protoData" as const, value: create(AnySchema, { typeUrl: "x", value: new Uint8Array([0, 0]) }) } };
    const withNul: Array<[string, NonNullable<Parameters<typeof create<typeof PublishRequestSchema>>[1]>]> = [
      ["id", { event: { ...clean, id: "a\0" } }],
      ["source", { event: { ...clean, source: "\0" } }],
      ["type", { event: { ...clean, type: "t\0" } }],
      ["subject", { event: { ...clean, subject: "\0u" } }],
      ["datacontenttype", { event: { ...clean, datacontenttype: "d\0" } }],
      ["an attribute key", { event: { ...clean, attributes: { "k\0": "v" } } }],
      ["an attribute value", { event: { ...clean, attributes: { k: "\0" } } }],
      ["proto_data.type_url", { event: { ...clean, payload: { case: "protoData", value: create(AnySchema, { typeUrl: "x\0", value: new Uint8Array() }) } } }],
      ["idempotency_key", { event: clean, idempotencyKey: "k\0" }],
    ];
    const cleanBytes = toBinary(PublishRequestSchema, create(PublishRequestSchema, { event: clean, idempotencyKey: "k" }));
    expect(foundFreeOfNul.has(tryDecodePublishRequest(cleanBytes)!)).toBe(true);
    // A NUL in a JSON payload is spared by the check, and the decoder leaves the Struct's text alone.
    const structBytes = toBinary(PublishRequestSchema, create(PublishRequestSchema, { event: { ...clean, payload: { case: "data", value: { a: "\0" } } } }));
    expect(foundFreeOfNul.has(tryDecodePublishRequest(structBytes)!)).toBe(true);
    for (const [where, init] of withNul) {
      const bytes = toBinary(PublishRequestSchema, create(PublishRequestSchema, init));
      expect(foundFreeOfNul.has(tryDecodePublishRequest(bytes)!), where).toBe(false);
      const batch = toBinary(PublishBatchRequestSchema, create(PublishBatchRequestSchema, { entries: [{ event: clean }, init] }));
      expect(foundFreeOfNul.has(tryDecodePublishBatchRequest(batch)!), where).toBe(false);
    }
  });

  it("know every field of the messages they decode (a new field in the protos fails this until they learn it)", () => {
    for (const schema of [PublishBatchRequestSchema, PublishRequestSchema, EventSchema, TimestampSchema, AnySchema]) {
      expect(decodedFields[schema.typeName], schema.typeName).toEqual(schema.fields.map((f) => f.number).sort((a, b) => a - b));
    }
  });
});
