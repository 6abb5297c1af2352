/**
 * PostgreSQL text and jsonb cannot hold U+0000. Fuzzing (npm run test:faults) found requests
 * carrying it answered `internal`; each is now refused as bad input naming the field, and changes
 * nothing: every text field of every request is checked once, before the method runs
 * (server/rpc/nul-refusal.ts). Payload fields may carry it: they are stored as protobuf bytes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callJson, postJson, startTestServer, type TestServer } from "./helpers/test-server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

const nul = "\u0000";
const event = (extra: object = {}) => ({ type: "memory.created", source: "nul/test", data: { memory_id: "m" }, ...extra });
const webhook = (extra: object = {}) => ({ url: "https://example.com/hook", patterns: ["memory.created"], ...extra });

describe("the NUL character", () => {
  it.each([
    ["Publish source", "Publish", { event: event({ source: `a${nul}` }) }, "event.source"],
    ["Publish subject", "Publish", { event: event({ subject: `a${nul}` }) }, "event.subject"],
    ["Publish attribute value", "Publish", { event: event({ attributes: { k: `a${nul}` } }) }, 'event.attributes["k"]'],
    ["Publish idempotency key", "Publish", { event: event(), idempotencyKey: `k${nul}` }, "idempotency_key"],
    ["ListEvents attribute value", "ListEvents", { attributes: { k: `a${nul}` } }, 'attributes["k"]'],
    ["ListEvents filter", "ListEvents", { filter: `source == "${nul}"` }, "filter"],
  ])("%s is refused with invalid_argument naming the field", async (_what, method, body, field) => {
    const before = (await callJson(t.url, "ListEvents", {})).body.events?.length ?? 0;
    const res = await callJson(t.url, method, body);
    expect(res.status).toBe(400);
    expect(res.body.code).toBe("invalid_argument");
    expect(res.body.message).toContain(`${field}: must not contain`);
    expect((await callJson(t.url, "ListEvents", {})).body.events?.length ?? 0).toBe(before);
  });

  it.each([
    ["attributes", { attributes: { k: `a${nul}` } }, 'webhook.attributes["k"]'],
    ["description", { description: `a${nul}` }, "webhook.description"],
    ["filter", { filter: `source == "${nul}"` }, "webhook.filter"],
  ])("CreateWebhook with it in %s is refused naming the field", async (_what, extra, field) => {
    const res = await postJson(t.url, "/tidings.v1.WebhookService/CreateWebhook", { webhook: webhook(extra) });
    expect(res.status).toBe(400);
    expect(res.body.code).toBe("invalid_argument");
    expect(res.body.message).toContain(field);
  });

  it.each([
    ["GetEvent id", "/tidings.v1.EventService/GetEvent", { id: `e${nul}` }, "id"],
    ["GetWebhook id", "/tidings.v1.WebhookService/GetWebhook", { id: `wh${nul}` }, "id"],
    ["ListDeadLetters webhook id", "/tidings.v1.WebhookService/ListDeadLetters", { webhookId: `wh${nul}` }, "webhook_id"],
    ["ListDeliveries event id", "/tidings.v1.WebhookService/ListDeliveries", { eventId: `e${nul}` }, "event_id"],
    ["RevokeApiKey id", "/tidings.v1.AdminService/RevokeApiKey", { id: `key${nul}` }, "id"],
    ["a map key (Publish attributes)", "/tidings.v1.EventService/Publish", { event: event({ attributes: { [`k${nul}`]: "v" } }) }, 'event.attributes["k\\u0000"]'],
    ["a list entry (ListEvents patterns)", "/tidings.v1.EventService/ListEvents", { patterns: ["memory.*", `a${nul}`] }, "patterns[1]"],
  ])("%s, in any method, is refused with invalid_argument naming the field", async (_what, path, body, field) => {
    const res = await postJson(t.url, path, body);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.code).toBe("invalid_argument");
    expect(res.body.message).toBe(`${field}: must not contain the NUL character (U+0000)`);
  });

  // Binary publishes take a hand-written decoder that tells the check when a request holds no
  // NUL (publish-request-decoding.ts): one that does must still be refused, field named.
  it.each([
    ["source", { source: `a${nul}` }, "event.source"],
    ["id", { id: `e${nul}` }, "event.id"],
    ["an attribute key", { attributes: { [`k${nul}`]: "v" } }, 'event.attributes["k\\u0000"]'],
    ["proto_data.type_url", { payload: { case: "protoData", value: { typeUrl: `x${nul}`, value: new Uint8Array() } } }, "event.proto_data.type_url"],
  ] as const)("in a binary Publish and PublishBatch (%s) it is refused naming the field", async (_what, extra, field) => {
    for (const transport of ["grpc", "connect"] as const) {
      const client = t.client(transport);
      const event = { type: "memory.created", source: "nul/test", payload: { case: "data" as const, value: { memory_id: "m" } }, ...extra };
      await expect(client.publish({ event }), transport).rejects.toMatchObject({ code: 3, rawMessage: expect.stringContaining(`${field}: must not contain`) });
      await expect(client.publishBatch({ entries: [{ event: { ...event, source: "nul/ok", id: "", attributes: {} } }, { event }] }), transport).rejects.toMatchObject({
        code: 3,
        rawMessage: expect.stringContaining(`entries[1].${field}: must not contain`),
      });
    }
  });

  it("in a Subscribe request (a stream) it ends the stream with invalid_argument naming the field", async () => {
    const stream = t.client("grpc").subscribe({ patterns: [`memory.${nul}`] });
    const err = await (async () => {
      for await (const _ of stream) return undefined;
      return undefined;
    })().catch((e: unknown) => e as { code?: number; rawMessage?: string });
    expect(err?.code).toBe(3); // Code.InvalidArgument
    expect(err?.rawMessage).toBe("patterns[0]: must not contain the NUL character (U+0000)");
  });

  it("inside a payload it is kept, as the payload is stored as protobuf bytes", async () => {
    const res = await callJson(t.url, "Publish", { event: event({ data: { memory_id: `m${nul}x` } }) });
    expect(res.status).toBe(200);
    const got = await callJson(t.url, "GetEvent", { id: res.body.id });
    expect(got.body.event.data.memory_id).toBe(`m${nul}x`);
  });
});
