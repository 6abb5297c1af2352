import { create, createFileRegistry, type DescMessage, fromJson, ScalarType, toBinary } from "@bufbuild/protobuf";
import {
  AnySchema,
  ApiSchema,
  DurationSchema,
  FeatureSetSchema,
  FieldMaskSchema,
  ListValueSchema,
  StructSchema,
  TimestampSchema,
  TypeSchema,
  ValueSchema,
  FileDescriptorProtoSchema,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  file_google_protobuf_wrappers,
} from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { EventSchema } from "../gen/tidings/v1/event_pb.js";
import { SubscribeRequestSchema } from "../gen/tidings/v1/event_service_pb.js";
import { WebhookSchema } from "../gen/tidings/v1/webhook_pb.js";
import { loadCatalog } from "../server/catalog/catalog.js";
import { encodePayload, encodesWithoutReflection, encodeWithoutReflection } from "../server/catalog/payload-encoding.js";
import { randomMessage, seededRandom } from "./helpers/random-message.js";

const strings = ["", "a", "hot", "mem_123", "ünïcödé", "🎉 emoji", "\u0000nul", "x".repeat(200), "__proto__", "line\nbreak"];

const int = (rnd: () => number, lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
const pick = <T>(rnd: () => number, xs: readonly T[]): T => xs[int(rnd, 0, xs.length - 1)]!;

/** Scalars at their edges: zero and minus zero, extremes of every range, NaN and infinities, non-ASCII and NUL. */
function randomScalar(rnd: () => number, scalar: ScalarType): unknown {
  const zero = rnd() < 0.2;
  switch (scalar) {
    case ScalarType.STRING:
      return zero ? "" : pick(rnd, strings) + (rnd() < 0.5 ? String(int(rnd, 0, 1e6)) : "");
    case ScalarType.BOOL:
      return zero ? false : rnd() < 0.5;
    case ScalarType.DOUBLE:
      return zero ? pick(rnd, [0, -0]) : pick(rnd, [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e300, -2.5, rnd() * 1e6, Number.MIN_VALUE]);
    case ScalarType.FLOAT:
      return zero ? 0 : Math.fround(pick(rnd, [-1.5, 3.4e38, rnd() * 1000, Number.NaN]));
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return zero ? 0 : pick(rnd, [-2147483648, 2147483647, -1, int(rnd, -1e9, 1e9)]);
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return zero ? 0 : pick(rnd, [4294967295, 1, int(rnd, 0, 4e9)]);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return zero ? 0n : pick(rnd, [-9223372036854775808n, 9223372036854775807n, -1n, BigInt(int(rnd, -1e9, 1e9)) * 1000003n]);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return zero ? 0n : pick(rnd, [18446744073709551615n, 1n, BigInt(int(rnd, 0, 2e9)) * 1000003n]);
    case ScalarType.BYTES:
      return zero ? new Uint8Array(0) : Uint8Array.from({ length: int(rnd, 1, 40) }, () => int(rnd, 0, 255));
  }
  throw new Error(`scalar ${scalar}`);
}

const messages = { scalar: randomScalar, maxDepth: 3, maxItems: 4, skip: 0.35, unknownEnum: 0.1, unknownFields: 0.1 };

/** A map field's entry message, as protoc declares it. */
function mapEntry(name: string, key: FieldDescriptorProto_Type, value: FieldDescriptorProto_Type) {
  return {
    name,
    options: { mapEntry: true },
    field: [
      { name: "key", number: 1, label: FieldDescriptorProto_Label.OPTIONAL, type: key, jsonName: "key" },
      { name: "value", number: 2, label: FieldDescriptorProto_Label.OPTIONAL, type: value, jsonName: "value" },
    ],
  };
}

function expectSameBytes(desc: DescMessage, seeds: number) {
  const covered = encodesWithoutReflection(desc);
  for (let seed = 1; seed <= seeds; seed++) {
    const message = randomMessage(seededRandom(seed), desc, messages).message;
    const theirs = Buffer.from(toBinary(desc, message));
    // A covered type must never go to toBinary; an uncovered one always does.
    const own = encodeWithoutReflection(desc, message);
    if ((own !== undefined) !== covered) throw new Error(`${desc.typeName}, seed ${seed}: ${covered ? "went to toBinary" : "was not left to toBinary"}`);
    const ours = Buffer.from(encodePayload(desc, message));
    if (!ours.equals(theirs)) throw new Error(`${desc.typeName}, seed ${seed}: ${ours.toString("hex")} != ${theirs.toString("hex")}`);
  }
}

describe("payload encoding without reflection", () => {
  it("writes the very bytes toBinary writes, for every catalog type, and takes none of them to toBinary", async () => {
    const catalog = await loadCatalog();
    expect(catalog.list().length).toBeGreaterThan(10);
    for (const entry of catalog.list()) {
      expect(encodesWithoutReflection(entry.message), entry.message.typeName).toBe(true);
      expectSameBytes(entry.message, 300);
    }
  });

  it("writes the very bytes toBinary writes for every kind of field: oneofs, maps, packed lists, explicit presence, well-known types, unknown fields", () => {
    // Event: a oneof holding a Struct and an Any, a map, a Timestamp. SubscribeRequest, Webhook:
    // enums, repeated strings, optional fields. Type and Api: repeated messages, enums.
    // FeatureSet: proto2-style explicit presence. Value, ListValue: recursion through Struct.
    for (const desc of [EventSchema, SubscribeRequestSchema, WebhookSchema, TypeSchema, ApiSchema, FeatureSetSchema, ValueSchema, ListValueSchema, StructSchema, TimestampSchema, DurationSchema, AnySchema, FieldMaskSchema]) {
      expect(encodesWithoutReflection(desc), desc.typeName).toBe(true);
      expectSameBytes(desc, 300);
    }
  });

  const scalarTypes = [
    FieldDescriptorProto_Type.DOUBLE, FieldDescriptorProto_Type.FLOAT, FieldDescriptorProto_Type.INT64, FieldDescriptorProto_Type.UINT64,
    FieldDescriptorProto_Type.INT32, FieldDescriptorProto_Type.FIXED64, FieldDescriptorProto_Type.FIXED32, FieldDescriptorProto_Type.BOOL,
    FieldDescriptorProto_Type.UINT32, FieldDescriptorProto_Type.SFIXED32, FieldDescriptorProto_Type.SFIXED64, FieldDescriptorProto_Type.SINT32,
    FieldDescriptorProto_Type.SINT64, FieldDescriptorProto_Type.STRING, FieldDescriptorProto_Type.BYTES,
  ];

  it("returns a buffer of the payload's own size, which later encodings leave alone", async () => {
    const desc = (await loadCatalog()).get("memory.created")!.message;
    const first = fromJson(desc, { memory_id: "m-1", tier: "hot", tags: ["a"] });
    const second = fromJson(desc, { memory_id: "m-2-longer", content: "x".repeat(100_000) }); // larger than the scratch buffer
    const third = fromJson(desc, { memory_id: "m-3", tier: "cold" });
    const encoded = [first, second, third].map((m) => encodePayload(desc, m));
    [first, second, third].forEach((m, i) => {
      expect(Buffer.from(encoded[i]!).equals(Buffer.from(toBinary(desc, m)))).toBe(true);
      // Kept with its event: a view of a larger buffer would keep that alive too.
      expect(encoded[i]!.buffer.byteLength).toBe(encoded[i]!.byteLength);
    });
  });

  it("covers every scalar type in lists, maps and explicit presence, and hands a type it does not cover to toBinary, whole: a wrapper field, a map with integer keys", () => {
    // protobuf-es holds a singular wrapper field unwrapped (a plain number) and a map's integer
    // keys as strings: left to it, the type and every type that contains it.
    const file = create(FileDescriptorProtoSchema, {
      name: "test/uncovered.proto",
      package: "test",
      syntax: "proto3",
      dependency: ["google/protobuf/wrappers.proto"],
      messageType: [
        {
          name: "Uncovered",
          field: [
            { name: "count", number: 1, label: FieldDescriptorProto_Label.OPTIONAL, type: FieldDescriptorProto_Type.MESSAGE, typeName: ".google.protobuf.Int32Value", jsonName: "count" },
            { name: "name", number: 2, label: FieldDescriptorProto_Label.OPTIONAL, type: FieldDescriptorProto_Type.STRING, jsonName: "name" },
          ],
        },
        {
          name: "Numbered",
          field: [{ name: "by_number", number: 1, label: FieldDescriptorProto_Label.REPEATED, type: FieldDescriptorProto_Type.MESSAGE, typeName: ".test.Numbered.ByNumberEntry", jsonName: "byNumber" }],
          nestedType: [mapEntry("ByNumberEntry", FieldDescriptorProto_Type.INT32, FieldDescriptorProto_Type.STRING)],
        },
        {
          // Covered: every scalar type in packed and unpacked lists and in a map's values, an enum list.
          name: "Lists",
          field: [
            ...scalarTypes.map((type, i) => ({ name: `packed_${i}`, number: i + 1, label: FieldDescriptorProto_Label.REPEATED, type, jsonName: `packed${i}` })),
            ...scalarTypes.map((type, i) => ({ name: `plain_${i}`, number: 100 + i, label: FieldDescriptorProto_Label.REPEATED, type, jsonName: `plain${i}`, options: { packed: false } })),
            ...scalarTypes.map((type, i) => ({ name: `single_${i}`, number: 200 + i, label: FieldDescriptorProto_Label.OPTIONAL, type, jsonName: `single${i}`, proto3Optional: i % 2 === 0, oneofIndex: i % 2 === 0 ? i / 2 : undefined })),
            { name: "modes", number: 300, label: FieldDescriptorProto_Label.REPEATED, type: FieldDescriptorProto_Type.ENUM, typeName: ".test.Mode", jsonName: "modes" },
            { name: "by_name", number: 301, label: FieldDescriptorProto_Label.REPEATED, type: FieldDescriptorProto_Type.MESSAGE, typeName: ".test.Lists.ByNameEntry", jsonName: "byName" },
          ],
          // proto3 optional fields each sit in a synthetic oneof of their own.
          oneofDecl: scalarTypes.filter((_, i) => i % 2 === 0).map((_, j) => ({ name: `_single_${2 * j}` })),
          nestedType: [mapEntry("ByNameEntry", FieldDescriptorProto_Type.STRING, FieldDescriptorProto_Type.SINT64)],
        },
        {
          name: "Outer",
          field: [{ name: "inner", number: 1, label: FieldDescriptorProto_Label.OPTIONAL, type: FieldDescriptorProto_Type.MESSAGE, typeName: ".test.Uncovered", jsonName: "inner" }],
        },
      ],
      enumType: [{ name: "Mode", value: [{ name: "MODE_UNSPECIFIED", number: 0 }, { name: "MODE_ON", number: 1 }, { name: "MODE_OFF", number: 2 }] }],
    });
    const registry = createFileRegistry(file, (name) => (name === "google/protobuf/wrappers.proto" ? file_google_protobuf_wrappers : undefined));
    const cases: Array<[string, Record<string, unknown>]> = [
      ["test.Uncovered", { count: 7, name: "seven" }],
      ["test.Numbered", { byNumber: { "3": "three", "-1": "minus one" } }],
      ["test.Outer", { inner: { count: 0, name: "zero" } }],
    ];
    const lists = registry.getMessage("test.Lists")!;
    expect(lists.fields.filter((f) => f.fieldKind === "list" && f.packed).length).toBeGreaterThan(10);
    expect(encodesWithoutReflection(lists)).toBe(true);
    expectSameBytes(lists, 500);
    for (const [typeName, json] of cases) {
      const desc = registry.getMessage(typeName)!;
      expect(encodesWithoutReflection(desc), typeName).toBe(false);
      const message = fromJson(desc, json as never);
      expect(Buffer.from(encodePayload(desc, message)).equals(Buffer.from(toBinary(desc, message))), typeName).toBe(true);
      expectSameBytes(desc, 50);
    }
  });
});
