import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { fromBinary } from "@bufbuild/protobuf";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import { callJson, startTestServer, type TestServer } from "./helpers/test-server.js";
import { createGrpcJsClient, StreamReader, unary, type EventServiceGrpcClient, type GrpcObject } from "./helpers/grpc-js-client.js";

/** A google.protobuf.Struct in proto-loader's object form, from a flat map of strings. */
const struct = (fields: Record<string, string>) => ({
  fields: Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, { stringValue: v }])),
});

describe("a plain @grpc/grpc-js client built from the .proto files", () => {
  let t: TestServer;
  let client: EventServiceGrpcClient;
  const publish = (request: GrpcObject) => unary(client.Publish, client, request);
  const getEvent = (request: GrpcObject) => unary(client.GetEvent, client, request);

  beforeAll(async () => {
    t = await startTestServer();
    client = createGrpcJsClient(`127.0.0.1:${new URL(t.url).port}`);
  });
  afterAll(async () => {
    client?.close();
    await t?.close();
  });

  it("publishes over gRPC and reads the event back with GetEvent", async () => {
    const published = await publish({
      event: {
        type: "memory.created",
        source: "alma/grpc",
        attributes: { agent: "helena" },
        data: struct({ memory_id: "m-1", tier: "hot" }),
      },
    });
    expect(published.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(typeof published.sequence).toBe("string");
    expect(BigInt(published.sequence)).toBeGreaterThan(0n);
    expect(published.duplicate).toBe(false);
    expect(published.time?.seconds).toMatch(/^\d+$/);

    const got = await getEvent({ id: published.id });
    expect(got.event).toMatchObject({
      id: published.id,
      type: "memory.created",
      source: "alma/grpc",
      datacontenttype: "application/json",
      attributes: { agent: "helena" },
      sequence: published.sequence,
      payload: "data",
      data: struct({ memory_id: "m-1", tier: "hot" }),
    });
    expect(got.event.time).toEqual(published.time);
  });

  it("streams events from Subscribe in sequence order, with cursors, until cancelled", async () => {
    const stream = new StreamReader<GrpcObject>(client.Subscribe({ patterns: ["memory.*"], position: "START_POSITION_LATEST" }));
    try {
      // The server answers at once with a heartbeat carrying the cursor: the subscription is live.
      const first = await stream.next(10_000, "the first heartbeat");
      expect(first.message).toBe("heartbeat");
      expect(first.heartbeat?.time?.seconds).toMatch(/^\d+$/);
      expect(first.cursor).toMatch(/^\d+$/);

      const a = await publish({ event: { type: "memory.created", source: "alma/grpc", data: struct({ memory_id: "s-1" }) } });
      const b = await callJson(t.url, "Publish", { event: { type: "memory.created", source: "alma/json", data: { memory_id: "s-2" } } });
      expect(b.status).toBe(200);
      expect(BigInt(b.body.sequence)).toBeGreaterThan(BigInt(a.sequence));
      expect(BigInt(a.sequence)).toBeGreaterThan(BigInt(first.cursor));

      const events: GrpcObject[] = [];
      while (events.length < 2) {
        const m = await stream.next(10_000, `event ${events.length + 1} of 2`);
        if (m.message === "heartbeat") continue;
        expect(m.message).toBe("event");
        events.push(m);
      }
      expect(events.map((m) => m.event.id)).toEqual([a.id, b.body.id]);
      expect(events.map((m) => m.event.sequence)).toEqual([a.sequence, b.body.sequence]);
      expect(events.map((m) => m.cursor)).toEqual([a.sequence, b.body.sequence]);
      // proto-loader adds the virtual oneof field `kind` to each Struct value, hence toMatchObject.
      expect(events.map((m) => m.event.data)).toMatchObject([struct({ memory_id: "s-1" }), struct({ memory_id: "s-2" })]);
    } finally {
      stream.call.cancel();
    }
    await stream.ended;
    expect(stream.status?.code).toBe(grpc.status.CANCELLED);
    expect(stream.error?.code).toBe(grpc.status.CANCELLED);
  });

  it("fails an invalid publish with INVALID_ARGUMENT naming the field, and a BadRequest detail", async () => {
    const err = (await publish({ event: { type: "no.such_type", source: "alma/grpc", data: struct({ memory_id: "x" }) } }).catch((e) => e)) as grpc.ServiceError;
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toContain("event.type");
    expect(err.details).toContain("no.such_type");

    const [details] = err.metadata.get("grpc-status-details-bin");
    expect(Buffer.isBuffer(details)).toBe(true);
    const status = decodeStatus(details as Buffer);
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details.map((d) => d.typeUrl)).toEqual(["type.googleapis.com/google.rpc.BadRequest"]);
    const badRequest = fromBinary(BadRequestSchema, status.details[0]!.value);
    expect(badRequest.fieldViolations.map((v) => v.field)).toEqual(["event.type"]);
  });
});

/** Decodes a google.rpc.Status (code = 1, message = 2, repeated Any details = 3) by hand. */
function decodeStatus(bytes: Uint8Array): { code: number; message: string; details: { typeUrl: string; value: Uint8Array }[] } {
  const out = { code: 0, message: "", details: [] as { typeUrl: string; value: Uint8Array }[] };
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) out.code = reader.int32();
    else if (field === 2) out.message = reader.string();
    else if (field === 3) {
      const any = new BinaryReader(reader.bytes());
      const detail: { typeUrl: string; value: Uint8Array } = { typeUrl: "", value: new Uint8Array() };
      while (any.pos < any.len) {
        const [f, w] = any.tag();
        if (f === 1) detail.typeUrl = any.string();
        else if (f === 2) detail.value = any.bytes();
        else any.skip(w);
      }
      out.details.push(detail);
    } else reader.skip(wireType);
  }
  return out;
}
