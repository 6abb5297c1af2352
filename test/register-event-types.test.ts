import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FieldDescriptorProto_Label, FieldDescriptorProto_Type, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BadRequestSchema, PreconditionFailureSchema } from "../gen/google/rpc/error_details_pb.js";
import type { Event } from "../gen/tidings/v1/event_pb.js";
import { buildSet, shopProto, shopV1Fields } from "./helpers/descriptor-sets.js";
import { createTestStorage, needsPostgres, type TestStorage } from "./helpers/database.js";
import { fileContainingSymbol } from "./helpers/reflection-client.js";
import { collect } from "./helpers/stream.js";
import { callJson, eventually, startTestServer, type TestServer } from "./helpers/test-server.js";

/** The refusal a call ends with; fails the test if it succeeds. */
async function refusal(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to be refused");
}

const fieldsOf = (err: ConnectError) => err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
const breaksOf = (err: ConnectError) => err.findDetails(PreconditionFailureSchema).flatMap((d) => d.violations.map((v) => ({ rule: v.type, subject: v.subject, description: v.description })));

/** An event's JSON payload (the `data` case). */
const payloadOf = (e: Event) => (e.payload.case === "data" ? (e.payload.value as Record<string, unknown>) : {});

const order = (extra: Record<string, unknown> = {}) => ({ type: "shop.order_placed", source: "shop/test", data: { order_id: "o-1", total_cents: "1250", ...extra } });

describe("RegisterEventTypes", () => {
  let t: TestServer;
  let v1: Uint8Array;

  beforeAll(async () => {
    t = await startTestServer();
    v1 = await buildSet(shopProto());
  });
  afterAll(() => t?.close());

  it("checks a set with validate_only and registers nothing", async () => {
    const res = await t.client().registerEventTypes({ descriptorSet: v1, validateOnly: true });
    expect(res.added.sort()).toEqual(["shop.order_placed", "shop.order_shipped"]);
    expect(res.catalogRevision).toBe(0n);
    const list = await t.client().listEventTypes({ patterns: ["shop.**"] });
    expect(list.eventTypes).toEqual([]);
  });

  it("registers the event types of a buf-built set, and they work like built-in ones", async () => {
    const res = await t.client().registerEventTypes({ descriptorSet: v1 });
    expect(res.added.sort()).toEqual(["shop.order_placed", "shop.order_shipped"]);
    expect(res.changed).toEqual([]);
    expect(res.catalogRevision).toBe(1n);
    expect(res.eventTypes.map((e) => [e.name, e.messageType, e.registered]).sort()).toEqual([
      ["shop.order_placed", "shop.v1.OrderPlaced", true],
      ["shop.order_shipped", "shop.v1.OrderShipped", true],
    ]);

    const list = await t.client().listEventTypes({ patterns: ["shop.**"] });
    expect(list.eventTypes.map((e) => e.name)).toEqual(["shop.order_placed", "shop.order_shipped"]);
    expect((await t.client().listEventTypes({ patterns: ["memory.created"] })).eventTypes[0]!.registered).toBe(false);

    // GetEventType: the message descriptor (with what it imports) and a JSON Schema.
    const type = await t.client().getEventType({ name: "shop.order_placed" });
    expect(type.eventType!.requiredFields).toEqual(["order_id"]);
    expect(type.descriptorSet!.file.map((f) => f.name)).toContain("shop/v1/shop.proto");
    expect(type.descriptorSet!.file.map((f) => f.name)).toContain("tidings/v1/options.proto");
    const schema = type.jsonSchema as any;
    expect(schema.required).toEqual(["order_id"]);
    expect(schema.properties.tier).toEqual({ type: "string", enum: ["gold", "silver"] });
    expect(schema.properties.channel.enum).toEqual(["CHANNEL_UNSPECIFIED", "CHANNEL_WEB", "CHANNEL_STORE"]);
    expect(schema.properties.lines.items).toEqual({ $ref: "#/$defs/shop.v1.Line" });

    // Publish (curl's JSON), validation by the registered rules, and a subscriber decoding it.
    const sub = await collect(t.client(), { patterns: ["shop.*"] });
    const ok = await callJson(t.url, "Publish", { event: order({ channel: "CHANNEL_WEB", lines: [{ sku: "A-1", quantity: 2 }], tags: { gift: "yes" }, tier: "gold" }) });
    expect(ok.status).toBe(200);
    const bad = await callJson(t.url, "Publish", { event: order({ order_id: undefined, tier: "platinum", colour: "red" }) });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toContain("event.data.order_id");
    expect(bad.body.message).toContain("event.data.tier");
    expect(bad.body.message).toContain("event.data.colour");
    await sub.waitFor(1);
    expect(sub.events[0]!.type).toBe("shop.order_placed");
    expect(payloadOf(sub.events[0]!)).toEqual({ order_id: "o-1", total_cents: "1250", channel: "CHANNEL_WEB", lines: [{ sku: "A-1", quantity: 2 }], tags: { gift: "yes" }, tier: "gold" });
    await sub.close();
    // Packed as Any for PAYLOAD_FORMAT_PROTO, with the registered message's type URL.
    const got = await t.client().getEvent({ id: ok.body.id, payloadFormat: 2 });
    expect(got.event!.payload.case === "protoData" && got.event!.payload.value.typeUrl).toBe("type.googleapis.com/shop.v1.OrderPlaced");
  });

  it("changes nothing when the same files come again", async () => {
    const res = await t.client().registerEventTypes({ descriptorSet: v1 });
    expect(res.added).toEqual([]);
    expect(res.changed).toEqual([]);
    expect(res.catalogRevision).toBe(1n);
  });

  const breaking: Array<[string, (proto: string) => string, string, string]> = [
    ["a field changes type (int64 → string)", (p) => p.replace("int64 total_cents = 2;", "string total_cents = 2;"), "FIELD_WIRE_JSON_COMPATIBLE_TYPE", "shop.v1.OrderPlaced.total_cents"],
    ["a 32-bit field widens to 64 bits (a string in JSON)", (p) => p.replace("int32 quantity = 2;", "int64 quantity = 2;"), "FIELD_WIRE_JSON_COMPATIBLE_TYPE", "shop.v1.Line.quantity"],
    ["a field is renamed", (p) => p.replace("Channel channel = 3;", "Channel sales_channel = 3;"), "FIELD_SAME_NAME", "shop.v1.OrderPlaced.channel"],
    ["a field is deleted without reserving it", (p) => p.replace("map<string, string> tags = 5;", ""), "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", "shop.v1.OrderPlaced.tags"],
    ["a deleted field's name is not reserved", (p) => p.replace("map<string, string> tags = 5;", "reserved 5;"), "FIELD_NO_DELETE_UNLESS_NAME_RESERVED", "shop.v1.OrderPlaced.tags"],
    ["a repeated field becomes singular", (p) => p.replace("repeated Line lines = 4;", "Line lines = 4;"), "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY", "shop.v1.OrderPlaced.lines"],
    ["a map's value type changes", (p) => p.replace("map<string, string> tags = 5;", "map<string, int64> tags = 5;"), "FIELD_WIRE_JSON_COMPATIBLE_TYPE", "shop.v1.OrderPlaced.tags"],
    ["a json_name changes", (p) => p.replace("int64 total_cents = 2;", 'int64 total_cents = 2 [json_name = "total"];'), "FIELD_SAME_JSON_NAME", "shop.v1.OrderPlaced.total_cents"],
    ["a field moves into a oneof", (p) => p.replace("int64 total_cents = 2;", "oneof amount { int64 total_cents = 2; }"), "FIELD_SAME_ONEOF", "shop.v1.OrderPlaced.total_cents"],
    ["an enum value is renamed", (p) => p.replace("CHANNEL_STORE = 2;", "CHANNEL_SHOP = 2;"), "ENUM_VALUE_SAME_NAME", "shop.v1.Channel.CHANNEL_STORE"],
    ["an enum value is deleted", (p) => p.replace("CHANNEL_STORE = 2;", ""), "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED", "shop.v1.Channel.CHANNEL_STORE"],
    ["a field becomes required", (p) => p.replace("int64 total_cents = 2;", "int64 total_cents = 2 [(tidings.v1.field).required = true];"), "TIDINGS_FIELD_NO_NEW_REQUIRED", "shop.v1.OrderPlaced.total_cents"],
    ["a new field is required", (p) => p.replace(shopV1Fields, `${shopV1Fields}\n  string currency = 7 [(tidings.v1.field).required = true];`), "TIDINGS_FIELD_NO_NEW_REQUIRED", "shop.v1.OrderPlaced.currency"],
    ["allowed values narrow", (p) => p.replace(', (tidings.v1.field).allowed_values = "silver"', ""), "TIDINGS_FIELD_ALLOWED_VALUES_NO_NARROWING", "shop.v1.OrderPlaced.tier"],
    ["an event type disappears", (p) => p.replace('option (tidings.v1.event_type) = { name: "shop.order_shipped", description: "An order left the warehouse." };', ""), "TIDINGS_EVENT_TYPE_NO_DELETE", "shop.order_shipped"],
    ["the package changes", (p) => p.replace("package shop.v1;", "package shop.v1beta;").replaceAll("shop.v1.", "shop.v1beta."), "FILE_SAME_PACKAGE", "shop/v1/shop.proto"],
  ];
  for (const [what, change, rule, subject] of breaking) {
    it(`refuses a breaking change with FAILED_PRECONDITION naming the rule: ${what}`, async () => {
      const before = await t.client().getEventType({ name: "shop.order_placed" });
      const proto = shopProto()["shop/v1/shop.proto"]!;
      const changed = change(proto);
      expect(changed).not.toBe(proto);
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: await buildSet({ "shop/v1/shop.proto": changed }) }));
      expect(err.code).toBe(Code.FailedPrecondition);
      expect(breaksOf(err)).toContainEqual(expect.objectContaining({ rule, subject }));
      expect(err.rawMessage).toContain(rule);
      // Nothing changed: same revision, same schema.
      const after = await t.client().getEventType({ name: "shop.order_placed" });
      expect(after.jsonSchema).toEqual(before.jsonSchema);
      expect((await t.client().registerEventTypes({ descriptorSet: v1, validateOnly: true })).catalogRevision).toBe(1n);
    });
  }

  it("accepts compatible changes and reports which types changed", async () => {
    const proto = shopProto()["shop/v1/shop.proto"]!
      .replace("int32 quantity = 2;", "uint32 quantity = 2;")
      .replace("CHANNEL_STORE = 2;", "CHANNEL_STORE = 2;\n  CHANNEL_APP = 3;")
      .replace("map<string, string> tags = 5;", 'reserved 5;\n  reserved "tags";')
      .replace('(tidings.v1.field).allowed_values = "silver"]', '(tidings.v1.field).allowed_values = "silver", (tidings.v1.field).allowed_values = "bronze"]')
      .replace(shopV1Fields.split("\n")[0]!, `${shopV1Fields.split("\n")[0]!}\n  string coupon = 7;`)
      .concat(`
message OrderCancelled {
  option (tidings.v1.event_type) = { name: "shop.order_cancelled", description: "An order was cancelled." };
  string order_id = 1 [(tidings.v1.field).required = true];
}
`);
    const res = await t.client().registerEventTypes({ descriptorSet: await buildSet({ "shop/v1/shop.proto": proto }) });
    expect(res.added).toEqual(["shop.order_cancelled"]);
    expect(res.changed.sort()).toEqual(["shop.order_placed", "shop.order_shipped"]);
    expect(res.catalogRevision).toBe(2n);
    const ok = await callJson(t.url, "Publish", { event: order({ coupon: "WINTER", channel: "CHANNEL_APP", tier: "bronze" }) });
    expect(ok.status).toBe(200);
    const gone = await callJson(t.url, "Publish", { event: order({ tags: { a: "b" } }) });
    expect(gone.status).toBe(400);
    expect(gone.body.message).toContain("event.data.tags");
    // Events stored under v1 still read back under v2.
    const listed = await t.client().listEvents({ patterns: ["shop.order_placed"] });
    expect(listed.events.length).toBeGreaterThanOrEqual(2);
  });

  it("serves registered types to gRPC reflection", async () => {
    const files = await fileContainingSymbol(t.url, "shop.v1.OrderCancelled");
    expect(files).toContain("shop/v1/shop.proto");
  });

  describe("bad descriptor sets get INVALID_ARGUMENT naming descriptor_set", () => {
    it("garbage bytes", async () => {
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]) }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(fieldsOf(err)).toEqual([{ field: "descriptor_set", description: expect.stringContaining("is not a serialized google.protobuf.FileDescriptorSet") }]);
    });

    it("no bytes at all, over curl's JSON", async () => {
      const res = await callJson(t.url, "RegisterEventTypes", {});
      expect(res.status).toBe(400);
      expect(res.body.code).toBe("invalid_argument");
      expect(res.body.message).toContain("descriptor_set");
    });

    it("a base64 set over curl's JSON is checked like the binary one", async () => {
      const notes = await buildSet({
        "notes/v1/notes.proto": `syntax = "proto3";
package notes.v1;
import "tidings/v1/options.proto";
message NoteAdded {
  option (tidings.v1.event_type) = { name: "notes.added", description: "A note was added." };
  string text = 1;
}
`,
      });
      const res = await callJson(t.url, "RegisterEventTypes", { descriptorSet: Buffer.from(notes).toString("base64"), validateOnly: true });
      expect(res.status).toBe(200);
      expect(res.body.eventTypes.map((e: { name: string }) => e.name)).toEqual(["notes.added"]);
      expect(res.body.added).toEqual(["notes.added"]);
    });

    it("a set that declares no event type", async () => {
      const set = await buildSet({ "plain/v1/plain.proto": 'syntax = "proto3";\npackage plain.v1;\nmessage Note { string text = 1; }\n' });
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: set }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(fieldsOf(err)).toEqual([{ field: "descriptor_set", description: expect.stringContaining("declares no event type") }]);
    });

    it("an import the set does not carry", async () => {
      // What `protoc` writes without --include_imports: the imported file is missing.
      const full = await buildSet({
        "billing/v1/money.proto": 'syntax = "proto3";\npackage billing.v1;\nmessage Money { int64 cents = 1; }\n',
        "billing/v1/invoice.proto": `syntax = "proto3";
package billing.v1;
import "billing/v1/money.proto";
import "tidings/v1/options.proto";
message InvoicePaid {
  option (tidings.v1.event_type) = { name: "billing.invoice_paid", description: "An invoice was paid." };
  Money amount = 1;
}
`,
      });
      const set = fromBinary(FileDescriptorSetSchema, full);
      set.file = set.file.filter((f) => f.name !== "billing/v1/money.proto");
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: toBinary(FileDescriptorSetSchema, set) }));
      expect(err.code).toBe(Code.InvalidArgument);
      const index = set.file.findIndex((f) => f.name === "billing/v1/invoice.proto");
      expect(fieldsOf(err)).toEqual([{ field: `descriptor_set.file[${index}]`, description: expect.stringMatching(/billing\/v1\/invoice\.proto: imports billing\/v1\/money\.proto, which is not in the set/) }]);
    });

    it("a hand-made set with every structural mistake reported at once", async () => {
      const set = create(FileDescriptorSetSchema, {
        file: [
          {
            name: "broken/v1/broken.proto",
            package: "broken.v1",
            syntax: "proto3",
            dependency: ["tidings/v1/options.proto"],
            messageType: [
              {
                name: "Thing",
                field: [
                  { name: "a", number: 1, type: FieldDescriptorProto_Type.STRING, label: FieldDescriptorProto_Label.OPTIONAL },
                  { name: "b", number: 1, type: FieldDescriptorProto_Type.STRING, label: FieldDescriptorProto_Label.OPTIONAL },
                  { name: "c", number: 0, type: FieldDescriptorProto_Type.STRING, label: FieldDescriptorProto_Label.OPTIONAL },
                  { name: "d", number: 4, type: FieldDescriptorProto_Type.MESSAGE, typeName: ".broken.v1.Nowhere", label: FieldDescriptorProto_Label.OPTIONAL },
                  { name: "bad name", number: 5, type: FieldDescriptorProto_Type.STRING, label: FieldDescriptorProto_Label.OPTIONAL },
                ],
              },
            ],
          },
          { name: "../escape.proto", syntax: "proto3" },
        ],
      });
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: toBinary(FileDescriptorSetSchema, set) }));
      expect(err.code).toBe(Code.InvalidArgument);
      const text = fieldsOf(err).map((v) => `${v.field}: ${v.description}`).join("\n");
      expect(text).toContain("descriptor_set.file[0]: broken/v1/broken.proto: field broken.v1.Thing.b: number 1 is also used by a");
      expect(text).toContain("field broken.v1.Thing.c: number 0 is outside 1 to 536870911");
      expect(text).toContain('field broken.v1.Thing.bad name: the name is not an identifier');
      expect(text).toContain('descriptor_set.file[1]: ../escape.proto: file name "../escape.proto" must be a relative path ending in .proto');
    });

    it("a field naming a type that nothing declares", async () => {
      const set = create(FileDescriptorSetSchema, {
        file: [{
          name: "ghost/v1/ghost.proto",
          package: "ghost.v1",
          syntax: "proto3",
          messageType: [{ name: "Haunted", field: [{ name: "spirit", number: 1, type: FieldDescriptorProto_Type.MESSAGE, typeName: ".ghost.v1.Spirit", label: FieldDescriptorProto_Label.OPTIONAL }] }],
        }],
      });
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: toBinary(FileDescriptorSetSchema, set) }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(fieldsOf(err)).toEqual([{ field: "descriptor_set.file[0]", description: "ghost/v1/ghost.proto: field ghost.v1.Haunted.spirit has type ghost.v1.Spirit, which is not declared in ghost/v1/ghost.proto or in the files it imports" }]);
    });

    it("a changed copy of a built-in file", async () => {
      const set = await buildSet({
        "tidings/v1/options.proto": `syntax = "proto3";
package tidings.v1;
import "google/protobuf/descriptor.proto";
message EventTypeOptions { string name = 1; string label = 7; }
extend google.protobuf.MessageOptions { EventTypeOptions event_type = 51000; }
`,
      });
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: set }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(fieldsOf(err).map((v) => v.description).join("\n")).toMatch(/tidings\/v1\/options\.proto: is built into the server, and its field tidings\.v1\.EventTypeOptions\.label \(7\) differs/);
    });
  });

  describe("duplicate names", () => {
    it("the same event type twice in one set: INVALID_ARGUMENT", async () => {
      const set = await buildSet(shopProto(shopV1Fields, `
message OrderPlacedAgain {
  option (tidings.v1.event_type) = { name: "shop.order_placed", description: "Twice." };
  string order_id = 1;
}
`));
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: set }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(fieldsOf(err).map((v) => v.description)).toContainEqual(expect.stringContaining('event type "shop.order_placed" is declared by both'));
    });

    it("a built-in event type name: ALREADY_EXISTS", async () => {
      const set = await buildSet({
        "mine/v1/mine.proto": `syntax = "proto3";
package mine.v1;
import "tidings/v1/options.proto";
message MyMemory {
  option (tidings.v1.event_type) = { name: "memory.created", description: "Not yours." };
  string id = 1;
}
`,
      });
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: set }));
      expect(err.code).toBe(Code.AlreadyExists);
      const index = 2; // after google/protobuf/descriptor.proto and tidings/v1/options.proto
      expect(fieldsOf(err)).toEqual([{ field: `descriptor_set.file[${index}]`, description: 'mine/v1/mine.proto: event type "memory.created" (mine.v1.MyMemory) is built into the server, declared by tidings.events.memory.v1.MemoryCreated' }]);
    });

    it("a name another registered message owns: ALREADY_EXISTS", async () => {
      const set = await buildSet({
        "rival/v1/rival.proto": `syntax = "proto3";
package rival.v1;
import "tidings/v1/options.proto";
message Placed {
  option (tidings.v1.event_type) = { name: "shop.order_placed", description: "Mine now." };
  string id = 1;
}
`,
      });
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: set }));
      expect(err.code).toBe(Code.AlreadyExists);
      expect(fieldsOf(err)[0]!.description).toBe('rival/v1/rival.proto: event type "shop.order_placed" (rival.v1.Placed) is already registered by shop.v1.OrderPlaced in shop/v1/shop.proto');
    });

    it("a message name a built-in file declares: ALREADY_EXISTS", async () => {
      const set = await buildSet({
        "sneaky/memory.proto": `syntax = "proto3";
package tidings.events.memory.v1;
import "tidings/v1/options.proto";
message MemoryCreated {
  option (tidings.v1.event_type) = { name: "sneaky.memory", description: "Shadowing a built-in message." };
  string memory_id = 1;
}
`,
      });
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: set }));
      expect(err.code).toBe(Code.AlreadyExists);
      expect(fieldsOf(err)[0]!.description).toContain("tidings.events.memory.v1.MemoryCreated is already declared by a file built into the server");
    });

    it("a message name another registered file declares: ALREADY_EXISTS", async () => {
      const set = await buildSet({
        "other/shop.proto": `syntax = "proto3";
package shop.v1;
import "tidings/v1/options.proto";
message Line { string sku = 1; }
message Refunded {
  option (tidings.v1.event_type) = { name: "shop.refunded", description: "Money went back." };
  Line line = 1;
}
`,
      });
      const err = await refusal(t.client().registerEventTypes({ descriptorSet: set }));
      expect(err.code).toBe(Code.AlreadyExists);
      expect(fieldsOf(err)[0]!.description).toBe("other/shop.proto: shop.v1.Line is already declared by the registered file shop/v1/shop.proto");
    });
  });

  it("keeps registered types across a restart", async () => {
    await t.restart();
    const type = await t.client().getEventType({ name: "shop.order_cancelled" });
    expect(type.eventType!.registered).toBe(true);
    expect((await callJson(t.url, "Publish", { event: { type: "shop.order_cancelled", source: "shop/test", data: { order_id: "o-9" } } })).status).toBe(200);
  });
});

describe.runIf(needsPostgres("registered types shared by two nodes"))("registered types across nodes", () => {
  let storage: TestStorage;
  let a: TestServer;
  let b: TestServer;

  beforeAll(async () => {
    storage = await createTestStorage();
    a = await startTestServer({ storage });
    b = await startTestServer({ storage });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await storage?.drop();
  });

  it("a type registered on one node is published, listed and streamed on the other at once", async () => {
    // B's subscriber exists before the type does; its pattern must pick the type up.
    const sub = await collect(b.client(), { patterns: ["shop.**"] });
    await a.client().registerEventTypes({ descriptorSet: await buildSet(shopProto()) });
    // No waiting for B's NOTIFY: B catches up when it meets the unknown type.
    const res = await callJson(b.url, "Publish", { event: order() });
    expect(res.status).toBe(200);
    expect((await b.client().getEventType({ name: "shop.order_shipped" })).eventType!.registered).toBe(true);
    const onA = await callJson(a.url, "Publish", { event: order({ order_id: "o-2" }) });
    expect(onA.status).toBe(200);
    await sub.waitFor(2);
    expect(sub.events.map((e) => payloadOf(e).order_id)).toEqual(["o-1", "o-2"]);
    await sub.close();
  });

  it("a compatible change made on one node is accepted by the other's publishers at once", async () => {
    const v2 = shopProto(`${shopV1Fields}\n  string coupon = 7;`);
    await a.client().registerEventTypes({ descriptorSet: await buildSet(v2) });
    const res = await callJson(b.url, "Publish", { event: order({ coupon: "SPRING" }) });
    expect(res.status).toBe(200);
    // A history read with a pattern pushed into SQL sees every shop event on either node.
    const listed = await b.client().listEvents({ patterns: ["shop.order_placed"] });
    expect(listed.events.length).toBe(3);
  });

  it("two nodes registering conflicting changes at once: one wins, the other is checked against it", async () => {
    const asInt = await buildSet(shopProto(`${shopV1Fields}\n  string coupon = 7;\n  int64 points = 8;`));
    const asText = await buildSet(shopProto(`${shopV1Fields}\n  string coupon = 7;\n  string points = 8;`));
    const results = await Promise.allSettled([
      a.client().registerEventTypes({ descriptorSet: asInt }),
      b.client().registerEventTypes({ descriptorSet: asText }),
    ]);
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => ConnectError.from(r.reason));
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect(lost[0]!.code).toBe(Code.FailedPrecondition);
    expect(breaksOf(lost[0]!)).toContainEqual(expect.objectContaining({ rule: "FIELD_WIRE_JSON_COMPATIBLE_TYPE", subject: "shop.v1.OrderPlaced.points" }));
    // Both nodes end up on the winner's schema.
    const winnerIsInt = results[0]!.status === "fulfilled";
    const expected = winnerIsInt ? { type: ["integer", "string"], pattern: "^-?[0-9]+$" } : { type: "string" };
    for (const node of [a, b]) {
      // The loser's node hears of the winner's registration by NOTIFY.
      await eventually(async () => {
        const schema = (await node.client().getEventType({ name: "shop.order_placed" })).jsonSchema as any;
        return JSON.stringify(schema.properties.points) === JSON.stringify(expected) ? true : undefined;
      }, 10_000, "the winning schema on both nodes");
    }
  });
});
