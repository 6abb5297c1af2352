import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import { callJson, memoryCreated, postJson, startTestServer, type TestServer } from "./helpers/test-server.js";

/**
 * Every bad input gets its exact Connect code and a message naming the field, and changes
 * nothing: the log head is the same afterwards.
 */
describe("bad input", () => {
  let t: TestServer;
  const maxPayloadBytes = 2048;
  beforeAll(async () => {
    t = await startTestServer({ config: { maxPayloadBytes, maxRequestBytes: 64 * 1024 } });
    await callJson(t.url, "Publish", { event: memoryCreated("seed") });
  });
  afterAll(() => t.close());

  const head = async () => (await callJson(t.url, "ListEvents", { descending: true, pageSize: 1 })).body.events[0].sequence as string;

  /** Sends a raw body to Publish and checks code, named fields, and that nothing was written. */
  async function expectPublishRefused(body: string | object, code: string, ...mentions: string[]) {
    const before = await head();
    const res = await postJson(t.url, "/tidings.v1.EventService/Publish", body);
    expect(res.body.code, JSON.stringify(res.body)).toBe(code);
    for (const m of mentions) expect(res.body.message).toContain(m);
    expect(res.body.code).not.toBe("internal");
    expect(await head()).toBe(before);
    return res.body;
  }

  it("empty body", async () => {
    await expectPublishRefused("", "invalid_argument", "empty", '"event"');
  });

  it("an empty JSON object: the event is required", async () => {
    await expectPublishRefused({}, "invalid_argument", "event: is required");
  });

  it("malformed JSON", async () => {
    await expectPublishRefused('{"event": {"type": ', "invalid_argument", "JSON");
  });

  it("wrong field types in the envelope", async () => {
    await expectPublishRefused({ event: { type: 42, source: "x", data: {} } }, "invalid_argument", "event.type: must be a string");
    await expectPublishRefused({ event: { ...memoryCreated("m"), time: "yesterday" } }, "invalid_argument", "event.time: must be an RFC 3339 timestamp");
    await expectPublishRefused({ event: { ...memoryCreated("m"), attributes: "agent=x" } }, "invalid_argument", "attributes");
  });

  it("wrong field types in the payload, every one reported with its path", async () => {
    const body = await expectPublishRefused(
      { event: memoryCreated("m", { ltp_strength: "strong", tags: "not-a-list", rank: 1 }) },
      "invalid_argument",
      "event.data.ltp_strength: must be a number",
      "event.data.tags: must be a JSON array",
      'event.data.rank: unknown field',
    );
    expect(body.details[0].type).toBe("google.rpc.BadRequest");
    expect(body.details[0].debug.fieldViolations).toHaveLength(3);
  });

  it("unknown fields in the envelope", async () => {
    await expectPublishRefused({ event: { ...memoryCreated("m"), colour: "red" } }, "invalid_argument", "colour");
  });

  it("unknown event type", async () => {
    await expectPublishRefused({ event: { type: "memory.exploded", source: "x", data: {} } }, "invalid_argument", "event.type", "memory.exploded");
  });

  it("missing required fields: envelope and payload", async () => {
    await expectPublishRefused({ event: { type: "memory.created", data: { memory_id: "m" } } }, "invalid_argument", "event.source: is required");
    await expectPublishRefused({ event: { type: "memory.created", source: "x" } }, "invalid_argument", "event.data: is required");
    await expectPublishRefused(
      { event: { type: "risk.alert", source: "pm", data: { alert_id: "a", severity: "apocalyptic" } } },
      "invalid_argument",
      "event.data.risk_type: is required",
      "event.data.title: is required",
      'event.data.severity: must be one of "low", "medium", "high", "critical"',
    );
  });

  it("a required number counts as present when it is zero", async () => {
    const res = await callJson(t.url, "Publish", { event: { type: "dream.completed", source: "mnemo", data: { session_id: "d1", duration_seconds: 0 } } });
    expect(res.status).toBe(200);
    await expectPublishRefused({ event: { type: "dream.completed", source: "mnemo", data: { session_id: "d1" } } }, "invalid_argument", "event.data.duration_seconds: is required");
  });

  it("a server-assigned field set by the publisher", async () => {
    await expectPublishRefused({ event: { ...memoryCreated("m"), sequence: "7" } }, "invalid_argument", "event.sequence");
  });

  it("payload over the configured limit", async () => {
    await expectPublishRefused({ event: memoryCreated("m", { content: "x".repeat(maxPayloadBytes + 1) }) }, "resource_exhausted", "event.data", `limit of ${maxPayloadBytes}`);
  });

  it("request over the transport limit", async () => {
    const res = await postJson(t.url, "/tidings.v1.EventService/Publish", { event: memoryCreated("m", { content: "x".repeat(70 * 1024) }) });
    expect(res.body.code).toBe("resource_exhausted");
  });

  it("a batch that is empty or too big", async () => {
    const empty = await callJson(t.url, "PublishBatch", { entries: [] });
    expect(empty.body.code).toBe("invalid_argument");
    expect(empty.body.message).toContain("entries");
  });

  it("a typed payload of the wrong message type", async () => {
    const res = await t.client().publish({
      event: { type: "memory.created", source: "x", payload: { case: "protoData", value: { $typeName: "google.protobuf.Any", typeUrl: "type.googleapis.com/tidings.events.risk.v1.RiskAlert", value: new Uint8Array() } } },
    }).catch((e) => e);
    expect(res).toBeInstanceOf(ConnectError);
    expect(res.code).toBe(Code.InvalidArgument);
    expect(res.message).toContain("event.proto_data.type_url");
    const violations = (res as ConnectError).findDetails(BadRequestSchema)[0]!.fieldViolations;
    expect(violations[0]!.field).toBe("event.proto_data.type_url");
  });

  it("a typed payload with bytes that are not the message", async () => {
    const res = await t.client().publish({
      event: { type: "memory.created", source: "x", payload: { case: "protoData", value: { $typeName: "google.protobuf.Any", typeUrl: "type.googleapis.com/tidings.events.memory.v1.MemoryCreated", value: new Uint8Array([0x0a, 0x05, 0x61]) } } },
    }).catch((e) => e);
    expect(res.code).toBe(Code.InvalidArgument);
    expect(res.message).toContain("event.proto_data");
  });

  it("invalid CEL filter, in ListEvents and in Subscribe", async () => {
    const list = await callJson(t.url, "ListEvents", { filter: "data.tier ==" });
    expect(list.body.code).toBe("invalid_argument");
    expect(list.body.message).toContain("filter");
    const unknownVar = await callJson(t.url, "ListEvents", { filter: 'tier == "hot"' });
    expect(unknownVar.body.code).toBe("invalid_argument");
    expect(unknownVar.body.message).toContain('unknown variable "tier"');

    const err = await firstStreamError(t, { filter: "(((" });
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message).toContain("filter");
  });

  it("invalid type patterns", async () => {
    for (const pattern of ["", "memory.", "**.created", "Memory.*", "memory.cre*"]) {
      const res = await callJson(t.url, "ListEvents", { patterns: ["memory.*", pattern] });
      expect(res.body.code, pattern).toBe("invalid_argument");
      expect(res.body.message).toContain("patterns[1]");
    }
    const err = await firstStreamError(t, { patterns: ["a..b"] });
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message).toContain("patterns[0]");
  });

  it("unknown event id, and a missing one", async () => {
    const missing = await callJson(t.url, "GetEvent", { id: "does-not-exist" });
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe("not_found");
    expect(missing.body.message).toContain("id");
    const empty = await callJson(t.url, "GetEvent", {});
    expect(empty.body.code).toBe("invalid_argument");
    expect(empty.body.message).toContain("id: is required");
  });

  it("unknown event type name in GetEventType", async () => {
    const res = await callJson(t.url, "GetEventType", { name: "nope.nope" });
    expect(res.body.code).toBe("not_found");
    expect(res.body.message).toContain("name");
  });

  it("bad page tokens: garbage, and a token from another query", async () => {
    const garbage = await callJson(t.url, "ListEvents", { pageToken: "%%%not-a-token" });
    expect(garbage.body.code).toBe("invalid_argument");
    expect(garbage.body.message).toContain("page_token");

    for (let i = 0; i < 3; i++) await callJson(t.url, "Publish", { event: memoryCreated(`p-${i}`) });
    const first = await callJson(t.url, "ListEvents", { pageSize: 1 });
    expect(first.body.nextPageToken).toBeTruthy();
    const other = await callJson(t.url, "ListEvents", { pageSize: 1, pageToken: first.body.nextPageToken, patterns: ["dream.*"] });
    expect(other.body.code).toBe("invalid_argument");
    expect(other.body.message).toContain("page_token");
  });

  it("a resume cursor beyond the end of the log", async () => {
    const err = await firstStreamError(t, { start: { case: "afterSequence", value: 10_000_000n } });
    expect(err.code).toBe(Code.OutOfRange);
    expect(err.message).toContain("after_sequence");
  });

  it("a heartbeat interval out of range", async () => {
    const err = await firstStreamError(t, { heartbeatInterval: { $typeName: "google.protobuf.Duration", seconds: 0n, nanos: 1000 } });
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message).toContain("heartbeat_interval");
  });

  it("a negative page size", async () => {
    const res = await callJson(t.url, "ListEvents", { pageSize: -1 });
    expect(res.body.code).toBe("invalid_argument");
    expect(res.body.message).toContain("page_size");
  });

  it("a time outside a protobuf Timestamp's range, which only the binary form can carry", async () => {
    const event = (time: { seconds: bigint; nanos: number }) => ({ type: "memory.created", source: "x", time, payload: { case: "data" as const, value: { memoryId: "m" } } });
    const outOfRange = [
      { seconds: 253_402_300_800n, nanos: 0 }, // 10000-01-01T00:00:00Z
      { seconds: 100_000_000_000_000n, nanos: 0 }, // beyond any JavaScript date: it once reached PostgreSQL as "NaN" and failed as internal
      { seconds: -62_135_596_801n, nanos: 0 }, // a second before 0001-01-01
      { seconds: 0n, nanos: 1_000_000_000 },
      { seconds: 0n, nanos: -1 },
      { seconds: 253_402_300_799n, nanos: 999_999_999 }, // rounds to the millisecond, into the year 10000
    ];
    const grpc = t.client("grpc");
    const violationsOf = (err: unknown) => {
      expect(err, String(err)).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.InvalidArgument);
      return (err as ConnectError).findDetails(BadRequestSchema)[0]!.fieldViolations.map((v) => v.field);
    };
    const before = await head();
    for (const time of outOfRange) {
      expect(violationsOf(await grpc.publish({ event: event(time) }).catch((e) => e))).toEqual(["event.time"]);
      expect(violationsOf(await grpc.publishBatch({ entries: [{ event: event({ seconds: 1n, nanos: 0 }) }, { event: event(time) }] }).catch((e) => e))).toEqual(["entries[1].event.time"]);
      expect(violationsOf(await grpc.listEvents({ startTime: { ...time, $typeName: "google.protobuf.Timestamp" } }).catch((e) => e))).toEqual(["start_time"]);
      expect(violationsOf(await grpc.listEvents({ endTime: { ...time, $typeName: "google.protobuf.Timestamp" } }).catch((e) => e))).toEqual(["end_time"]);
      const stream = await firstStreamError(t, { start: { case: "startTime", value: { ...time, $typeName: "google.protobuf.Timestamp" } } });
      expect(violationsOf(stream)).toEqual(["start_time"]);
    }
    expect(await head()).toBe(before);
    // Refused before it reaches a group commit: a good publish sent beside a bad one is written.
    const [good, bad] = await Promise.allSettled([grpc.publish({ event: event({ seconds: 1_700_000_000n, nanos: 0 }) }), grpc.publish({ event: event(outOfRange[1]!) })]);
    expect(good.status).toBe("fulfilled");
    expect(bad.status).toBe("rejected");
    // The range's ends are accepted.
    for (const time of [{ seconds: 253_402_300_799n, nanos: 999_000_000 }, { seconds: -62_135_596_800n, nanos: 0 }]) {
      const res = await grpc.publish({ event: event(time) });
      const got = await callJson(t.url, "GetEvent", { id: res.id });
      expect(got.body.event?.time, JSON.stringify(got.body)).toBe(time.seconds > 0n ? "9999-12-31T23:59:59.999Z" : "0001-01-01T00:00:00Z");
    }
  });

  it("an after_sequence no log can reach (a uint64 above PostgreSQL's bigint)", async () => {
    const res = await callJson(t.url, "ListEvents", { afterSequence: "18446744073709551615" });
    expect(res.status).toBe(400);
    expect(res.body.message).toBe("after_sequence: must be at most 9223372036854775807");
    // The largest bigint itself is a valid, empty read.
    const top = await callJson(t.url, "ListEvents", { afterSequence: "9223372036854775807" });
    expect(top.status).toBe(200);
    expect(top.body.events ?? []).toEqual([]);
  });
});

async function firstStreamError(t: TestServer, req: Parameters<ReturnType<TestServer["client"]>["subscribe"]>[0]): Promise<ConnectError> {
  try {
    for await (const _ of t.client().subscribe(req)) {
      throw new Error("expected the subscription to be refused");
    }
  } catch (err) {
    if (err instanceof ConnectError) return err;
    throw err;
  }
  throw new Error("the stream ended without an error");
}
