import { create, toBinary } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PublishBatchResponseSchema, PublishResponseSchema } from "../gen/tidings/v1/event_service_pb.js";
import { encodedFields, encodePublishBatchResponse, encodePublishResponse, publishResponseEncoders } from "../server/rpc/publish-response-encoding.js";

const response = fc.record({
  id: fc.oneof(fc.constant(""), fc.uuid(), fc.string({ unit: "binary", maxLength: 40 })),
  sequence: fc.oneof(fc.constant(0n), fc.bigInt({ min: 1n, max: 2n ** 31n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
  time: fc.option(
    fc.record({
      seconds: fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 2n ** 35n }), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n })),
      nanos: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 999_999_999 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })),
    }).map((t) => create(TimestampSchema, t)),
    { nil: undefined },
  ),
  duplicate: fc.boolean(),
}).map((r) => create(PublishResponseSchema, r));

describe("the publish response encoders", () => {
  it("write the very bytes toBinary writes", () => {
    fc.assert(
      fc.property(fc.array(response, { maxLength: 6 }), (results) => {
        for (const r of results) expect(Buffer.from(encodePublishResponse(r)!).equals(toBinary(PublishResponseSchema, r))).toBe(true);
        const batch = create(PublishBatchResponseSchema, { results });
        expect(Buffer.from(encodePublishBatchResponse(batch)!).equals(toBinary(PublishBatchResponseSchema, batch))).toBe(true);
        // As the handler returns it: a plain object, not made with create().
        const plainBatch = { results } as unknown as Parameters<typeof encodePublishBatchResponse>[0];
        expect(Buffer.from(publishResponseEncoders.get(PublishBatchResponseSchema)!(plainBatch)).equals(toBinary(PublishBatchResponseSchema, batch))).toBe(true);
      }),
      { numRuns: 2_000 },
    );
  });

  it("leave a message with unknown fields to toBinary, which keeps them", () => {
    const r = create(PublishResponseSchema, { id: "x", sequence: 5n });
    r.$unknown = [{ no: 99, wireType: 0, data: new Uint8Array([1]) }];
    expect(encodePublishResponse(r)).toBeUndefined();
    expect(Buffer.from(publishResponseEncoders.get(PublishResponseSchema)!(r)).equals(toBinary(PublishResponseSchema, r))).toBe(true);
  });

  it("know every field of the messages they encode (a new field in the protos fails this until they learn it)", () => {
    for (const schema of [PublishBatchResponseSchema, PublishResponseSchema, TimestampSchema]) {
      expect(encodedFields[schema.typeName], schema.typeName).toEqual(schema.fields.map((f) => f.number).sort((a, b) => a - b));
    }
  });
});
