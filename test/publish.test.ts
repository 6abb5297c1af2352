import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConnectError, Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { MemoryCreatedSchema } from "../gen/tidings/events/memory/v1/memory_pb.js";
import { RiskAlertSchema } from "../gen/tidings/events/risk/v1/risk_pb.js";
import { EventService, eventTypeOf, packPayload, PayloadFormat } from "../sdk/index.js";
import { callJson, memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

describe("publishing and reading back", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(() => t.close());

  it("publishes JSON over plain HTTP/1.1 and answers with id and sequence", async () => {
    const res = await callJson(t.url, "Publish", { event: { ...memoryCreated("m-1", { tier: "hot" }), attributes: { agent: "helena" } } });
    expect(res.status).toBe(200);
    expect(res.body.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(BigInt(res.body.sequence)).toBeGreaterThan(0n);

    const got = await callJson(t.url, "GetEvent", { id: res.body.id });
    expect(got.body.event).toMatchObject({
      id: res.body.id,
      type: "memory.created",
      source: "alma/test",
      datacontenttype: "application/json",
      data: { memory_id: "m-1", tier: "hot" },
      attributes: { agent: "helena" },
      sequence: res.body.sequence,
    });
  });

  it("answers GET for read-only methods", async () => {
    const message = encodeURIComponent(JSON.stringify({ name: "memory.created" }));
    const res = await fetch(`${t.url}/tidings.v1.EventService/GetEventType?encoding=json&message=${message}`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as any;
    expect(body.eventType.requiredFields).toEqual(["memory_id"]);
    expect(body.jsonSchema.required).toEqual(["memory_id"]);
  });

  it("keeps a publisher-chosen id and time", async () => {
    const res = await callJson(t.url, "Publish", { event: { ...memoryCreated("m-2"), id: "alma-evt-42", time: "2026-01-28T12:00:00Z" } });
    expect(res.body).toMatchObject({ id: "alma-evt-42", time: "2026-01-28T12:00:00Z" });
  });

  it("stores each event's own time in a batch, the same millisecond repeated or not, and reads them back", async () => {
    // One statement writes the batch: its times travel as one array, each distinct one formatted once.
    const times = ["2026-01-28T12:00:00.001Z", "2026-01-28T12:00:00.001Z", "1999-12-31T23:59:59.999Z", "2026-01-28T12:00:00.001Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"];
    const entries = times.map((time, i) => ({ event: { ...memoryCreated(`m-times-${i}`), time } }));
    const res = await callJson(t.url, "PublishBatch", { entries });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const read = await Promise.all(res.body.results.map((r: { id: string }) => callJson(t.url, "GetEvent", { id: r.id })));
    expect(read.map((r) => r.body.event.time)).toEqual(times);
  });

  it("refuses a lone surrogate in JSON text (not UTF-8) with invalid_argument", async () => {
    for (const event of [{ ...memoryCreated("m-3"), subject: "s\ud800" }, { ...memoryCreated("m-3"), attributes: { agent: "a\udc00b" } }]) {
      const res = await callJson(t.url, "Publish", { event });
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.code).toBe("invalid_argument");
    }
  });

  it("publishes a typed payload packed in Any and serves it back in either form", async () => {
    const client = t.client();
    const payload = packPayload(RiskAlertSchema, { alertId: "a-1", riskType: "security", severity: "critical", title: "Leaked key", riskScore: 0.9 });
    const published = await client.publish({ event: { type: eventTypeOf(RiskAlertSchema), source: "pm/scanner", payload: { case: "protoData", value: payload } } });

    const asProto = await client.getEvent({ id: published.id, payloadFormat: PayloadFormat.PROTO });
    expect(asProto.event?.datacontenttype).toBe("application/protobuf");
    expect(asProto.event?.payload.case).toBe("protoData");
    const unpacked = anyUnpack(asProto.event!.payload.value as never, RiskAlertSchema);
    expect(unpacked).toMatchObject({ alertId: "a-1", severity: "critical", riskScore: 0.9 });

    const asJson = await callJson(t.url, "GetEvent", { id: published.id });
    expect(asJson.body.event.data).toEqual({ alert_id: "a-1", risk_type: "security", severity: "critical", title: "Leaked key", risk_score: 0.9 });
  });

  it("serves a JSON-published payload as protobuf to a typed client", async () => {
    const res = await callJson(t.url, "Publish", { event: memoryCreated("m-3", { content: "Use incremental validation", ltp_strength: 0.5, tags: ["forms"] }) });
    const got = await t.client().getEvent({ id: res.body.id, payloadFormat: PayloadFormat.PROTO });
    const memory = anyUnpack(got.event!.payload.value as never, MemoryCreatedSchema);
    expect(memory).toMatchObject({ memoryId: "m-3", content: "Use incremental validation", ltpStrength: 0.5, tags: ["forms"] });
  });

  it("returns the original event for a retried idempotency key, and refuses the key for a different event", async () => {
    const body = { event: memoryCreated("m-idem"), idempotencyKey: "retry-me" };
    const first = await callJson(t.url, "Publish", body);
    const again = await callJson(t.url, "Publish", body);
    expect(again.body).toMatchObject({ id: first.body.id, sequence: first.body.sequence, duplicate: true });

    const different = await callJson(t.url, "Publish", { event: memoryCreated("m-other"), idempotencyKey: "retry-me" });
    expect(different.body.code).toBe("already_exists");
    expect(different.body.message).toContain("idempotency_key");
  });

  it("de-duplicates concurrent retries of the same key into one event", async () => {
    const body = { event: memoryCreated("m-race"), idempotencyKey: "race-key" };
    const results = await Promise.all(Array.from({ length: 20 }, () => callJson(t.url, "Publish", body)));
    const sequences = new Set(results.map((r) => r.body.sequence));
    expect(sequences.size).toBe(1);
    expect(results.filter((r) => !r.body.duplicate)).toHaveLength(1);
  });

  it("publishes a batch in order, in one transaction", async () => {
    const res = await callJson(t.url, "PublishBatch", {
      entries: [
        { event: memoryCreated("b-1") },
        { event: { type: "synapse.formed", source: "mnemo", data: { synapse_id: "s1", neuron_a_id: "a", neuron_b_id: "b" } } },
        { event: memoryCreated("b-3") },
      ],
    });
    expect(res.status).toBe(200);
    const seqs = res.body.results.map((r: { sequence: string }) => BigInt(r.sequence));
    expect(seqs[1]).toBe(seqs[0] + 1n);
    expect(seqs[2]).toBe(seqs[1] + 1n);
  });

  it("writes nothing of a batch when one entry is invalid", async () => {
    const before = await head(t);
    const res = await callJson(t.url, "PublishBatch", {
      entries: [{ event: memoryCreated("ok-1") }, { event: { type: "memory.created", source: "x", data: {} } }, { event: memoryCreated("ok-3") }],
    });
    expect(res.body.code).toBe("invalid_argument");
    expect(res.body.message).toContain("entries[1].event.data.memory_id: is required");
    expect(await head(t)).toBe(before);
  });

  it("writes nothing of a batch when one entry collides with a stored id", async () => {
    await callJson(t.url, "Publish", { event: { ...memoryCreated("dup"), id: "taken-id" } });
    const before = await head(t);
    const res = await callJson(t.url, "PublishBatch", { entries: [{ event: memoryCreated("x-1") }, { event: { ...memoryCreated("x-2"), id: "taken-id" } }] });
    expect(res.body.code).toBe("already_exists");
    expect(res.body.message).toContain("entries[1].event.id");
    expect(await head(t)).toBe(before);
  });

  it("pages through history by type pattern, attributes, time and CEL filter", async () => {
    const run = `run-${Date.now()}`;
    for (let i = 0; i < 7; i++) {
      await callJson(t.url, "Publish", {
        event: { ...memoryCreated(`h-${i}`, { tier: i % 2 ? "hot" : "cold" }), attributes: { run, agent: i < 4 ? "helena" : "victor" } },
      });
    }
    await callJson(t.url, "Publish", { event: { type: "dream.started", source: "mnemo", data: { session_id: "d", trigger: "idle" }, attributes: { run } } });

    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const res = await callJson(t.url, "ListEvents", { patterns: ["memory.*"], attributes: { run }, pageSize: 3, pageToken });
      expect(res.status).toBe(200);
      seen.push(...res.body.events.map((e: any) => e.data.memory_id));
      pageToken = res.body.nextPageToken ?? "";
      pages++;
    } while (pageToken);
    expect(seen).toEqual(["h-0", "h-1", "h-2", "h-3", "h-4", "h-5", "h-6"]);
    expect(pages).toBe(3);

    const newestFirst = await callJson(t.url, "ListEvents", { attributes: { run }, descending: true, pageSize: 2 });
    expect(newestFirst.body.events.map((e: any) => e.type)).toEqual(["dream.started", "memory.created"]);

    const helenaHot = await callJson(t.url, "ListEvents", { attributes: { run }, filter: 'attributes.agent == "helena" && data.tier == "hot"' });
    expect(helenaHot.body.events.map((e: any) => e.data.memory_id)).toEqual(["h-1", "h-3"]);

    const all = await callJson(t.url, "ListEvents", { patterns: ["**"], attributes: { run } });
    const times = all.body.events.map((e: any) => e.time);
    const inRange = await callJson(t.url, "ListEvents", { attributes: { run }, startTime: times[2], endTime: times[5] });
    // Exactly the events in [times[2], times[5]), compared as times: JSON Timestamps leave out a
    // zero fraction ("…:07Z" sorts after "…:07.5Z" as text), and events published within one
    // millisecond share their time, so the window may hold fewer than three, or none.
    const at = (time: string) => Date.parse(time);
    const expected = all.body.events.filter((e: any) => at(e.time) >= at(times[2]) && at(e.time) < at(times[5])).map((e: any) => e.id);
    expect(inRange.body.events.map((e: any) => e.id)).toEqual(expected);
  });

  it("lists the catalog, with every seed family", async () => {
    const res = await callJson(t.url, "ListEventTypes", {});
    const names = res.body.eventTypes.map((e: any) => e.name);
    for (const name of ["memory.created", "memory.updated", "memory.deleted", "memory.accessed", "memory.consolidated", "consolidation.completed", "contradiction.detected", "dream.completed", "synapse.fired", "gap.filled", "file.changed", "report.ready", "risk.alert", "activity.logged", "debate.consensus", "security.auth_failed", "tidings.delivery.dead_lettered"]) {
      expect(names).toContain(name);
    }
    const memoryOnly = await callJson(t.url, "ListEventTypes", { patterns: ["memory.*"] });
    expect(memoryOnly.body.eventTypes.map((e: any) => e.name)).toEqual(["memory.accessed", "memory.consolidated", "memory.created", "memory.deleted", "memory.updated"]);
  });

  it("keeps published events across a restart", async () => {
    const res = await callJson(t.url, "Publish", { event: memoryCreated("survivor") });
    await t.stop();
    await t.restart();
    const got = await callJson(t.url, "GetEvent", { id: res.body.id });
    expect(got.body.event.data.memory_id).toBe("survivor");
    const after = await callJson(t.url, "Publish", { event: memoryCreated("after-restart") });
    expect(BigInt(after.body.sequence)).toBe(BigInt(res.body.sequence) + 1n);
  });

  it("serves the TypeScript client over Connect, gRPC and gRPC-Web on the one port", async () => {
    for (const transport of ["connect", "grpc", "grpc-web"] as const) {
      const client = t.client(transport);
      const payload = packPayload(MemoryCreatedSchema, { memoryId: `via-${transport}` });
      const published = await client.publish({ event: { type: "memory.created", source: transport, payload: { case: "protoData", value: payload } } });
      const got = await client.getEvent({ id: published.id });
      expect(got.event?.source, transport).toBe(transport);
      expect(got.event?.payload.case === "data" && got.event.payload.value.memory_id).toBe(`via-${transport}`);
    }
  });

  it("speaks the Connect protocol over HTTP/2 too", async () => {
    const client = createClient(EventService, createConnectTransport({ baseUrl: t.url, httpVersion: "2" }));
    const res = await client.publish({ event: { type: "memory.created", source: "h2", payload: { case: "protoData", value: packPayload(MemoryCreatedSchema, { memoryId: "h2" }) } } });
    expect((await client.getEvent({ id: res.id })).event?.source).toBe("h2");
  });

  it("lets concurrent publishes share transactions (group commit)", async () => {
    const before = t.server.commitStats();
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => callJson(t.url, "Publish", { event: memoryCreated(`gc-${i}`) })));
    expect(results.every((r) => r.status === 200)).toBe(true);
    const after = t.server.commitStats();
    expect(after.events - before.events).toBe(200);
    expect(after.commits - before.commits).toBeLessThan(200);
  });

  it("surfaces errors to the TypeScript client as ConnectError with the code", async () => {
    const err = await t.client().getEvent({ id: "no-such-event" }).catch((e) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.NotFound);
  });
});

async function head(t: TestServer): Promise<bigint> {
  const res = await callJson(t.url, "ListEvents", { descending: true, pageSize: 1 });
  return res.body.events.length ? BigInt(res.body.events[0].sequence) : 0n;
}
