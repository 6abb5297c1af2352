/**
 * PostgreSQL text and jsonb cannot hold U+0000. Fuzzing (npm run test:faults) found requests
 * carrying it answered `internal`; each is now refused as bad input naming the field, and changes
 * nothing. Payload fields may carry it: they are stored as protobuf bytes.
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

  it("inside a payload it is kept, as the payload is stored as protobuf bytes", async () => {
    const res = await callJson(t.url, "Publish", { event: event({ data: { memory_id: `m${nul}x` } }) });
    expect(res.status).toBe(200);
    const got = await callJson(t.url, "GetEvent", { id: res.body.id });
    expect(got.body.event.data.memory_id).toBe(`m${nul}x`);
  });
});
