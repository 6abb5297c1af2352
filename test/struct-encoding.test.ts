import { fromBinary, fromJson, type JsonObject, toBinary, toJson } from "@bufbuild/protobuf";
import { StructSchema } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodedStructSize, writeStruct } from "../server/rpc/struct-encoding.js";

function encode(json: JsonObject): Buffer {
  const sizes: number[] = [];
  const size = encodedStructSize(json, sizes);
  const out = Buffer.alloc(size);
  expect(writeStruct(json, sizes, out, 0)).toBe(size);
  return out;
}

describe("the hand-written Struct encoder", () => {
  it("writes the very bytes protobuf-es writes, for any JSON object", () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ unit: "binary" }), fc.jsonValue({ maxDepth: 4 }), { maxKeys: 12 }), (json) => {
        const object = json as JsonObject;
        const ours = encode(object);
        const theirs = toBinary(StructSchema, fromJson(StructSchema, object));
        expect(Buffer.from(theirs).equals(ours)).toBe(true);
      }),
      { numRuns: 2_000 },
    );
  });

  it("leaves out an own __proto__ key, as protobuf-es does (found by the property above)", () => {
    const json = JSON.parse('{"a": 1, "__proto__": {"b": 2}, "c": {"__proto__": false, "d": true}}') as JsonObject;
    expect(Object.keys(json)).toContain("__proto__");
    const ours = encode(json);
    expect(Buffer.from(toBinary(StructSchema, fromJson(StructSchema, json))).equals(ours)).toBe(true);
    expect(toJson(StructSchema, fromBinary(StructSchema, ours))).toEqual({ a: 1, c: { d: true } });
  });

  it("round-trips nesting, lists, every scalar, multi-byte text and long values", () => {
    const json: JsonObject = {
      memory_id: "m-1",
      "ключ": "значение ✓ 🎉",
      n: 1.5,
      big: 2 ** 53,
      negative: -3,
      yes: true,
      no: false,
      nothing: null,
      list: [1, "two", [3, { four: 4 }], null, false],
      nested: { deeper: { deepest: { empty: {}, emptyList: [] } } },
      long: "x".repeat(20_000),
    };
    expect(toJson(StructSchema, fromBinary(StructSchema, encode(json)))).toEqual(json);
  });
});
