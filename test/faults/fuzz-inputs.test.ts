/**
 * Property-based fuzzing of what clients send (fast-check): Publish payloads and envelopes,
 * type patterns, CEL filters and webhook URLs, each sent to a real server over the Connect
 * protocol with JSON, as curl would. Whatever the input, the answer is a success or a client
 * error with its Connect code; never `internal` (a bug), never a crash: the server still answers
 * at the end. A failure prints fast-check's seed and the smallest input that fails.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callJson, postJson, startTestServer, type TestServer } from "../helpers/test-server.js";
import { reportFault } from "./report.js";

let t: TestServer;
const tried: Record<string, number> = {};
const accepted: Record<string, number> = {};
beforeAll(async () => {
  t = await startTestServer({ config: { maxRequestBytes: 256 * 1024 } });
});
afterAll(async () => {
  const health = await fetch(`${t.url}/healthz`).then((r) => r.status, () => 0);
  reportFault({ scenario: "fuzzing inputs", load: "Publish, ListEvents, CreateWebhook", faults: "random and one-field-at-a-time requests", inputs: Object.values(tried).reduce((a, b) => a + b, 0), lost: 0, notes: `none answered internal; the server ${health === 200 ? "still answers" : "DOES NOT ANSWER"}` });
  process.stdout.write(`\nfuzzing: ${Object.entries(tried).map(([k, n]) => `${k} ${n} (${accepted[k] ?? 0} accepted)`).join(", ")} inputs tried, none answered internal; the server ${health === 200 ? "still answers" : "DOES NOT ANSWER"}\n`);
  await t?.close();
});

const runs = Number(process.env.FUZZ_RUNS ?? 150);
const connectCodes = new Set(["canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists", "permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range", "unimplemented", "unavailable", "data_loss", "unauthenticated"]);

/** Sends and checks: 200, or a Connect error whose code is a client's (never internal). */
async function neverInternal(method: string, body: unknown, what: string): Promise<void> {
  tried[what] = (tried[what] ?? 0) + 1;
  const res = await callJson(t.url, method, body);
  if (res.status === 200) {
    accepted[what] = (accepted[what] ?? 0) + 1;
    return;
  }
  expect(res.status, `${method} answered ${res.status}: ${JSON.stringify(res.body).slice(0, 300)}`).toBeLessThan(500);
  expect(connectCodes.has(res.body?.code), `${method}: code ${res.body?.code}: ${res.body?.message}`).toBe(true);
}

/** CreateWebhook, checked like neverInternal; an endpoint it creates is deleted at once, so nothing is sent to fuzzed addresses. */
async function createWebhookNeverInternal(webhook: object, what: string): Promise<void> {
  tried[what] = (tried[what] ?? 0) + 1;
  const res = await postJson(t.url, "/tidings.v1.WebhookService/CreateWebhook", { webhook });
  if (res.status === 200) {
    accepted[what] = (accepted[what] ?? 0) + 1;
    await postJson(t.url, "/tidings.v1.WebhookService/DeleteWebhook", { id: res.body.webhook.id });
    return;
  }
  expect(res.status, JSON.stringify(res.body).slice(0, 300)).toBeLessThan(500);
  expect(connectCodes.has(res.body?.code), `code ${res.body?.code}: ${res.body?.message}`).toBe(true);
}

const typeNames = fc.oneof(
  fc.constantFrom("memory.created", "risk.alert", "file.changed", "gap.detected", "", ".", "memory.", "MEMORY.CREATED", "memory.created.x"),
  fc.string({ maxLength: 40 }),
);
const patterns = fc.oneof(fc.constantFrom("*", "memory.*", "**", "*.*", "memory.**", "a..b", ".*", "risk.*.x", ""), fc.string({ maxLength: 30 }), fc.string({ unit: "binary", maxLength: 30 }));
const celFragments = fc.oneof(
  fc.string({ maxLength: 80 }),
  fc.string({ unit: "binary", maxLength: 80 }),
  fc.constantFrom(
    'data.memory_id == "x"', "attributes.severity in ['high']", "sequence > 10u", "time > timestamp('2026-01-01T00:00:00Z')",
    "size(attributes) > 0", "data.nope.deeper", "1/0 == 1", "attributes['x'].size() > 1", "type.matches('[')", "[1,2,3].all(x, x > 0)",
    "(", "''", "null", "true || ", "data", "int('abc') == 1", 'source.startsWith("a") && subject.endsWith("b")',
  ),
  fc.array(fc.constantFrom("source", "==", '"a"', "&&", "||", "!", "(", ")", "attributes", ".", "size", "[", "]", "1", "u", "data", "in"), { maxLength: 20 }).map((p) => p.join(" ")),
);

describe("fuzzing inputs: never internal, never a crash", () => {
  it("Publish: any envelope and payload", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          type: typeNames,
          source: fc.oneof(fc.constant("fuzz"), fc.string({ maxLength: 300 })),
          subject: fc.string({ maxLength: 50 }),
          id: fc.oneof(fc.constant(undefined), fc.string({ maxLength: 80 })),
          attributes: fc.dictionary(fc.string({ maxLength: 70 }), fc.string({ maxLength: 50 }), { maxKeys: 5 }),
          data: fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.record({ memory_id: fc.string(), tier: fc.oneof(fc.string(), fc.integer(), fc.constant(null)) })),
          time: fc.oneof(fc.constant(undefined), fc.string({ maxLength: 30 }), fc.date({ noInvalidDate: true }).map((d) => d.toISOString())),
        }, { requiredKeys: [] }),
        fc.oneof(fc.constant(undefined), fc.string({ maxLength: 300 })),
        async (event, idempotencyKey) => neverInternal("Publish", { event, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) }, "Publish"),
      ),
      { numRuns: runs },
    );
  });

  it("Publish: valid events carrying any text (NUL, lone surrogates, every plane)", async () => {
    const text = (maxLength: number) => fc.string({ unit: "binary", maxLength });
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          type: fc.constant("memory.created"),
          source: fc.oneof(fc.constant("fuzz"), text(60)),
          subject: text(60),
          attributes: fc.dictionary(fc.stringMatching(/^[a-z0-9_][a-z0-9_.-]{0,20}$/), text(40), { maxKeys: 4 }),
          data: fc.record({ memory_id: text(80), content: text(200) }),
        }),
        async (event) => neverInternal("Publish", { event }, "Publish (valid shape)"),
      ),
      { numRuns: runs },
    );
  });

  it("ListEvents: any patterns, attributes, filter and page token", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(patterns, { maxLength: 4 }),
        celFragments,
        fc.dictionary(fc.oneof(fc.string({ maxLength: 20 }), fc.string({ unit: "binary", maxLength: 20 })), fc.oneof(fc.string({ maxLength: 20 }), fc.string({ unit: "binary", maxLength: 20 })), { maxKeys: 3 }),
        fc.oneof(fc.constant(""), fc.string({ maxLength: 60 }), fc.base64String({ maxLength: 60 })),
        fc.integer({ min: -5, max: 5000 }),
        async (pats, filter, attributes, pageToken, pageSize) =>
          neverInternal("ListEvents", { patterns: pats, filter, attributes, pageToken, pageSize }, "ListEvents"),
      ),
      { numRuns: runs },
    );
  });

  it("CreateWebhook: any URL, patterns and filter", async () => {
    const urls = fc.oneof(
      fc.webUrl({ withQueryParameters: true, withFragments: true }),
      fc.string({ maxLength: 100 }),
      fc.string({ unit: "binary", maxLength: 100 }),
      fc.constantFrom("http://127.0.0.1:1/x", "http://[::1]/", "https://169.254.169.254/latest", "ftp://example.com/", "http://user:pass@example.com/", "https://example.com:99999/", "http://%00/", "https://xn--/"),
    );
    await fc.assert(
      fc.asyncProperty(urls, fc.array(patterns, { maxLength: 3 }), celFragments, fc.dictionary(fc.string({ maxLength: 40 }), fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: "binary", maxLength: 40 })), { maxKeys: 3 }), async (url, pats, filter, headers) => {
        await createWebhookNeverInternal({ url, patterns: pats, filter, headers }, "CreateWebhook");
      }),
      { numRuns: runs },
    );
  });

  it("one field of a valid ListEvents or CreateWebhook request at a time, set to any text", async () => {
    // Mostly-valid requests reach further (the database, the filter compiler) than random ones.
    const anyText = fc.oneof(fc.string({ maxLength: 60 }), fc.string({ unit: "binary", maxLength: 60 }));
    const listField = fc.oneof(
      anyText.map((x) => ({ attributes: { k: x } })),
      anyText.map((x) => ({ attributes: { [x]: "v" } })),
      anyText.map((x) => ({ patterns: [x] })),
      anyText.map((x) => ({ filter: `source == ${JSON.stringify(x)}` })),
      anyText.map((x) => ({ filter: x })),
      anyText.map((x) => ({ pageToken: x })),
      fc.string({ maxLength: 40 }).map((x) => ({ startTime: x })),
    );
    await fc.assert(fc.asyncProperty(listField, (fields) => neverInternal("ListEvents", { patterns: ["memory.*"], ...fields }, "ListEvents (one field)")), { numRuns: runs });
    const hookField = fc.oneof(
      anyText.map((x) => ({ attributes: { k: x } })),
      anyText.map((x) => ({ description: x })),
      anyText.map((x) => ({ filter: `source == ${JSON.stringify(x)}` })),
      anyText.map((x) => ({ headers: { "x-tidings-fuzz": x } })),
      anyText.map((x) => ({ headers: { [x]: "v" } })),
      anyText.map((x) => ({ url: `https://example.com/${x}` })),
      anyText.map((x) => ({ patterns: [x] })),
      fc.string({ maxLength: 30 }).map((x) => ({ timeout: x })),
    );
    await fc.assert(
      fc.asyncProperty(hookField, async (fields) => {
        await createWebhookNeverInternal({ url: "https://example.com/hook", patterns: ["memory.created"], enabled: false, ...fields }, "CreateWebhook (one field)");
      }),
      { numRuns: runs },
    );
  });

  it("the server still answers", async () => {
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    expect((await callJson(t.url, "Publish", { event: { type: "memory.created", source: "fuzz", data: { memory_id: "after" } } })).status).toBe(200);
  });
});
