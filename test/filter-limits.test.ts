/**
 * The cost caps of CEL filters (--max-filter-length, --max-filter-terms, --max-filter-nesting):
 * Subscribe, ListEvents and webhooks refuse a filter over a cap with invalid_argument naming the
 * field, and a filter within the caps works.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callJson, memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ config: { maxFilterLength: 120, maxFilterTerms: 12, maxFilterNesting: 1 } });
});
afterAll(async () => {
  await t?.close();
});

const long = `source == "${"x".repeat(120)}"`;
const manyTerms = ["a", "b", "c", "d", "e"].map((v) => `id == "${v}"`).join(" || "); // 19 terms, 54 characters
const nested = `attributes.all(k, attributes.exists(j, j == k))`;
const fine = `source == "alma/test" && attributes["run"] == "caps"`; // 9 terms

describe("filter caps", () => {
  it.each([
    ["too long", long, "longer than 120 characters"],
    ["too many terms", manyTerms, "more than the limit of 12"],
    ["comprehensions nested too deep", nested, "more than the limit of 1"],
  ])("ListEvents refuses a filter that is %s", async (_what, filter, message) => {
    const res = await callJson(t.url, "ListEvents", { filter });
    expect(res.status).toBe(400);
    expect(res.body.code).toBe("invalid_argument");
    expect(res.body.message).toContain("filter");
    expect(res.body.message).toContain(message);
  });

  it("Subscribe and CreateWebhook refuse one the same way; a filter within the caps works", async () => {
    const err = await (async () => {
      for await (const _ of t.client().subscribe({ filter: manyTerms })) break;
    })().then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toContain("more than the limit of 12");

    const hook = await t.webhooks().createWebhook({ webhook: { url: "https://example.com/hook", patterns: ["memory.created"], filter: nested } }).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(hook?.code).toBe(Code.InvalidArgument);
    expect(hook?.rawMessage).toContain("webhook.filter");

    expect((await callJson(t.url, "Publish", { event: { ...memoryCreated("capped"), attributes: { run: "caps" } } })).status).toBe(200);
    const listed = await callJson(t.url, "ListEvents", { filter: fine });
    expect(listed.status).toBe(200);
    expect(listed.body.events.map((e: { data: { memory_id: string } }) => e.data.memory_id)).toContain("capped");
  });
});
