import { createHmac } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { Webhook as StandardWebhook } from "standardwebhooks";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import { ContentMode } from "../sdk/index.js";
import { generateWebhookSecret, signWebhook } from "../server/webhooks/signing.js";
import { startReceiver, type Receiver } from "./helpers/receiver.js";
import { callJson, eventually, memoryCreated, postJson, startTestServer, type TestServer } from "./helpers/test-server.js";

/**
 * Every bad input to every WebhookService RPC gets its exact Connect code and a message naming
 * the field, is never `internal`, and changes nothing; webhooks cannot be pointed at addresses
 * the server's allow-list forbids; and POST /ingest/{source} refuses what it must, storing nothing.
 */

const service = "/tidings.v1.WebhookService/";
type JsonResult = { status: number; body: any };
const call = (t: TestServer, method: string, body: unknown): Promise<JsonResult> => postJson(t.url, `${service}${method}`, body);

/** HTTP status Connect gives each code, for the codes these tests expect. */
const httpStatusOf: Record<string, number> = {
  invalid_argument: 400,
  not_found: 404,
  failed_precondition: 400,
  out_of_range: 400,
  resource_exhausted: 429,
};

/** Checks code, HTTP status, that every `mentions` is in the message, and that it is not `internal`. */
function expectError(res: JsonResult, code: string, ...mentions: string[]): void {
  const shown = JSON.stringify(res.body);
  expect(res.body?.code, shown).not.toBe("internal");
  expect(res.body?.code, shown).toBe(code);
  expect(res.status, shown).toBe(httpStatusOf[code]);
  for (const m of mentions) {
    expect(res.body.message, shown).toContain(m);
    // "field: ..." must be a whole violation: "id: " is not satisfied by "webhook.id: ".
    if (m.includes(": ")) expect(res.body.message, shown).toMatch(new RegExp(`(?:^|; )${escapeRegExp(m)}`));
  }
}

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Unknown ids that are well formed. */
const unknownWebhookId = "wh_00000000-0000-7000-8000-000000000000";
const unknownDeliveryId = "dlv_00000000-0000-7000-8000-000000000000";

const unaryMethods: readonly [method: string, required: string | undefined][] = [
  ["CreateWebhook", '"webhook"'],
  ["GetWebhook", '"id"'],
  ["UpdateWebhook", '"webhook", "update_mask"'],
  ["DeleteWebhook", '"id"'],
  ["ListWebhooks", undefined],
  ["RotateWebhookSecret", '"id"'],
  ["TestWebhook", '"id"'],
  ["ListDeliveries", undefined],
  ["GetDelivery", '"id"'],
  ["RetryDelivery", '"id"'],
  ["ListDeadLetters", undefined],
  ["RedriveDeadLetters", '"webhook_id"'],
  ["ReplayEvents", '"webhook_id"'],
  ["GetWebhookStats", '"id"'],
];

describe("WebhookService: bad input", () => {
  let t: TestServer;
  let rx: Receiver;
  /** An enabled endpoint for memory.* with two delivered events, and a disabled one. */
  let hook: { id: string; secret: string };
  let disabledId: string;
  let deliveryIds: string[];

  beforeAll(async () => {
    t = await startTestServer();
    rx = await startReceiver();
    const created = await call(t, "CreateWebhook", {
      webhook: {
        url: rx.url,
        description: "baseline",
        patterns: ["memory.*"],
        attributes: { agent: "helena" },
        headers: { authorization: "Bearer baseline" },
        retryPolicy: { maxAttempts: 3 },
      },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    hook = { id: created.body.webhook.id, secret: created.body.webhook.secret };
    const disabled = await call(t, "CreateWebhook", { webhook: { url: rx.url, patterns: ["dream.*"] }, startDisabled: true });
    expect(disabled.status, JSON.stringify(disabled.body)).toBe(200);
    disabledId = disabled.body.webhook.id;
    for (const m of ["m-1", "m-2"]) {
      const pub = await callJson(t.url, "Publish", { event: { ...memoryCreated(m), attributes: { agent: "helena" } } });
      expect(pub.status, JSON.stringify(pub.body)).toBe(200);
    }
    // Wait until everything has settled: both deliveries succeeded, both lifecycle events logged.
    deliveryIds = await eventually(async () => {
      const r = await call(t, "ListDeliveries", { webhookId: hook.id });
      const ds: any[] = r.body.deliveries ?? [];
      return ds.length === 2 && ds.every((d) => d.status === "DELIVERY_STATUS_SUCCEEDED") ? ds.map((d) => d.id as string) : undefined;
    }, 15_000, "two successful deliveries");
    await eventually(async () => {
      const r = await callJson(t.url, "ListEvents", { patterns: ["tidings.webhook.*"] });
      return (r.body.events ?? []).length === 2 ? true : undefined;
    }, 10_000, "two tidings.webhook.created events");
    await rx.waitFor(2);
  });
  afterAll(async () => {
    await t?.close();
    await rx?.close();
  });

  /** Everything a refused request must leave alone. */
  async function snapshot() {
    const [list, baseline, disabled, deliveries, dead, head, stats] = await Promise.all([
      call(t, "ListWebhooks", { pageSize: 500 }),
      call(t, "GetWebhook", { id: hook.id }),
      call(t, "GetWebhook", { id: disabledId }),
      call(t, "ListDeliveries", { pageSize: 500 }),
      call(t, "ListDeadLetters", { pageSize: 500 }),
      callJson(t.url, "ListEvents", { descending: true, pageSize: 1 }),
      call(t, "GetWebhookStats", { id: hook.id }),
    ]);
    for (const r of [list, baseline, disabled, deliveries, dead, head, stats]) expect(r.status, JSON.stringify(r.body)).toBe(200);
    return {
      webhooks: list.body,
      baseline: baseline.body,
      disabled: disabled.body,
      deliveries: deliveries.body,
      dead: dead.body,
      head: head.body.events[0].sequence as string,
      counts: { pending: stats.body.pending, succeeded: stats.body.succeeded, dead: stats.body.dead },
      received: rx.requests.length,
    };
  }

  /** Sends the request, expects the refusal, and checks nothing changed. */
  async function expectRefused(method: string, body: unknown, code: string, ...mentions: string[]): Promise<JsonResult> {
    const before = await snapshot();
    const res = await call(t, method, body);
    expectError(res, code, ...mentions);
    // Lifecycle events are appended after the response: give a wrongly accepted request the time to show.
    await new Promise((r) => setTimeout(r, 20));
    expect(await snapshot()).toEqual(before);
    return res;
  }

  describe("empty bodies", () => {
    it.each(unaryMethods)("%s: an empty body names what the method needs", async (method, required) => {
      const res = await expectRefused(method, "", "invalid_argument", "the request body is empty", `tidings.v1.${method}Request`);
      if (required) expect(res.body.message).toContain(`${method} requires ${required}`);
      else expect(res.body.message).toContain("send {}");
    });

    it.each([
      ["CreateWebhook", "webhook: is required"],
      ["GetWebhook", "id: is required"],
      ["UpdateWebhook", "webhook: is required"],
      ["DeleteWebhook", "id: is required"],
      ["RotateWebhookSecret", "id: is required"],
      ["TestWebhook", "id: is required"],
      ["GetDelivery", "id: is required"],
      ["RetryDelivery", "id: is required"],
      ["RedriveDeadLetters", "webhook_id: is required"],
      ["ReplayEvents", "webhook_id: is required"],
      ["GetWebhookStats", "id: is required"],
    ])("%s: {} names the required field", async (method, message) => {
      await expectRefused(method, {}, "invalid_argument", message);
    });

    it("malformed JSON is invalid_argument, not internal", async () => {
      await expectRefused("CreateWebhook", '{"webhook": {"url": ', "invalid_argument", "JSON");
    });
  });

  describe("CreateWebhook", () => {
    const create = (webhook: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ webhook: { url: rx.url, ...webhook }, ...extra });

    it("without webhook", async () => {
      await expectRefused("CreateWebhook", {}, "invalid_argument", "webhook: is required");
      await expectRefused("CreateWebhook", { webhook: null }, "invalid_argument", "webhook: is required");
      await expectRefused("CreateWebhook", { startDisabled: true }, "invalid_argument", "webhook: is required");
    });

    it("missing url", async () => {
      await expectRefused("CreateWebhook", { webhook: {} }, "invalid_argument", "webhook.url: is required");
      await expectRefused("CreateWebhook", { webhook: { url: "", patterns: ["memory.*"] } }, "invalid_argument", "webhook.url: is required");
    });

    it.each([
      ["ftp://example.com/hook", "must be an http or https URL"],
      ["file:///etc/passwd", "must be an http or https URL"],
      ["javascript:alert(1)", "must be an http or https URL"],
      ["https://example.com/hook#section", "must not have a #fragment"],
      ["not a url", "is not a valid URL"],
      ["http://[::1/hook", "is not a valid URL"],
      ["//example.com/hook", "is not a valid URL"],
      [`https://example.com/${"a".repeat(2048)}`, "is longer than 2048 characters"],
      ["https://example.com/\u0000", "must not contain the NUL character (U+0000)"],
      ["\u0000https://example.com/hook", "must not contain the NUL character (U+0000)"],
      ["https://exa\tmple.com/hook", "must not contain control characters"],
      ["https://example.com/ho\nok", "must not contain control characters"],
      [" https://example.com/hook", "must not begin or end with whitespace"],
      ["https://example.com/hook ", "must not begin or end with whitespace"],
    ])("url %j", async (url, reason) => {
      await expectRefused("CreateWebhook", { webhook: { url } }, "invalid_argument", `webhook.url: ${reason}`);
    });

    it("id given", async () => {
      await expectRefused("CreateWebhook", create({ id: "wh_mine" }), "invalid_argument", "webhook.id: ", "assigned by the server");
    });

    it("disabled_reason, documented as server-assigned, is refused or ignored, never internal", async () => {
      const lifecycle = countOf(await lifecycleEvents(t));
      const res = await call(t, "CreateWebhook", create({ disabledReason: "I say so", patterns: ["never.*"] }));
      expect(res.body?.code, JSON.stringify(res.body)).not.toBe("internal");
      if (res.status === 200) {
        expect(res.body.webhook.disabledReason ?? "").toBe("");
        expect((await call(t, "DeleteWebhook", { id: res.body.webhook.id })).status).toBe(200);
        await waitForLifecycleEvents(t, lifecycle + 2);
      }
    });

    it.each(["", "memory.", "**.created", "Memory.*", "memory.cre*", "a..b"])("invalid pattern %j", async (pattern) => {
      await expectRefused("CreateWebhook", create({ patterns: ["memory.*", pattern] }), "invalid_argument", "webhook.patterns[1]: ");
    });

    it("more than 64 patterns", async () => {
      await expectRefused("CreateWebhook", create({ patterns: Array.from({ length: 65 }, () => "memory.*") }), "invalid_argument", "webhook.patterns: ");
    });

    it.each([
      ["data.tier ==", "webhook.filter: "],
      ["(((", "webhook.filter: "],
      ['tier == "hot"', "webhook.filter: "],
    ])("invalid CEL filter %j", async (filter, field) => {
      await expectRefused("CreateWebhook", create({ filter }), "invalid_argument", field);
    });

    it.each(["Agent", "bad key", "", "x".repeat(65), "-lead"])("bad attribute key %j", async (key) => {
      await expectRefused("CreateWebhook", create({ attributes: { [key]: "v" } }), "invalid_argument", `webhook.attributes["${key}"]: `);
    });

    it("attribute value too long", async () => {
      await expectRefused("CreateWebhook", create({ attributes: { agent: "x".repeat(1025) } }), "invalid_argument", 'webhook.attributes["agent"]: ');
    });

    it.each(["content-type", "Content-Type", "webhook-signature", "webhook-id", "Host", "content-length", "ce-type", "transfer-encoding"])(
      "reserved header %j",
      async (name) => {
        await expectRefused("CreateWebhook", create({ headers: { [name]: "x" } }), "invalid_argument", `webhook.headers["${name}"]: `, "set by Tidings");
      },
    );

    // NUL, like every NUL in a request's text, is refused before the method looks at the value.
    it.each([["a\r\nX-Injected: 1", "value"], ["a\nb", "value"], ["a\rb", "value"], ["a\u0000b", "must not contain the NUL character"], ["x".repeat(4097), "value"]])("header value %j", async (value, reason) => {
      await expectRefused("CreateWebhook", create({ headers: { "x-note": value } }), "invalid_argument", 'webhook.headers["x-note"]: ', reason);
    });

    it("invalid header name", async () => {
      await expectRefused("CreateWebhook", create({ headers: { "bad header": "x" } }), "invalid_argument", 'webhook.headers["bad header"]: ');
    });

    it.each([
      "whsec_",
      "whsec_short",
      "whsec_!!!!",
      `sk_${Buffer.alloc(24).toString("base64")}`,
      `whsec_${Buffer.alloc(8).toString("base64")}`,
      `whsec_${Buffer.alloc(65).toString("base64")}`,
      "plain-shared-secret",
    ])("malformed secret %j", async (secret) => {
      await expectRefused("CreateWebhook", create({ secret }), "invalid_argument", "webhook.secret: ");
    });

    it("retry policy: max_attempts 51", async () => {
      await expectRefused("CreateWebhook", create({ retryPolicy: { maxAttempts: 51 } }), "invalid_argument", "webhook.retry_policy.max_attempts: ");
    });

    it("retry policy: schedule combined with base_delay, multiplier or max_delay", async () => {
      for (const exp of [{ baseDelay: "2s" }, { multiplier: 3 }, { maxDelay: "60s" }]) {
        await expectRefused("CreateWebhook", create({ retryPolicy: { schedule: ["1s", "5s"], ...exp } }), "invalid_argument", "webhook.retry_policy.schedule: ", "cannot be combined");
      }
    });

    it("retry policy: negative and too long delays", async () => {
      await expectRefused("CreateWebhook", create({ retryPolicy: { schedule: ["1s", "-1s"] } }), "invalid_argument", "webhook.retry_policy.schedule[1]: ");
      await expectRefused("CreateWebhook", create({ retryPolicy: { schedule: ["604801s"] } }), "invalid_argument", "webhook.retry_policy.schedule[0]: ");
      await expectRefused("CreateWebhook", create({ retryPolicy: { baseDelay: "-1s" } }), "invalid_argument", "webhook.retry_policy.base_delay: ");
      await expectRefused("CreateWebhook", create({ retryPolicy: { baseDelay: "604801s" } }), "invalid_argument", "webhook.retry_policy.base_delay: ");
      await expectRefused("CreateWebhook", create({ retryPolicy: { maxDelay: "-0.5s" } }), "invalid_argument", "webhook.retry_policy.max_delay: ");
      await expectRefused("CreateWebhook", create({ retryPolicy: { maxDelay: "700000s" } }), "invalid_argument", "webhook.retry_policy.max_delay: ");
    });

    it("retry policy: more than 50 delays, multiplier out of range", async () => {
      await expectRefused("CreateWebhook", create({ retryPolicy: { schedule: Array.from({ length: 51 }, () => "1s") } }), "invalid_argument", "webhook.retry_policy.schedule: ");
      await expectRefused("CreateWebhook", create({ retryPolicy: { multiplier: 11 } }), "invalid_argument", "webhook.retry_policy.multiplier: ");
      await expectRefused("CreateWebhook", create({ retryPolicy: { multiplier: 0.5 } }), "invalid_argument", "webhook.retry_policy.multiplier: ");
    });

    it.each(["0.050s", "0.099s", "61s", "60.001s", "-1s"])("timeout %s", async (timeout) => {
      await expectRefused("CreateWebhook", create({ timeout }), "invalid_argument", "webhook.timeout: ", "between 100ms and 60s");
    });

    it.each([1, 1001])("batching max_events %i", async (maxEvents) => {
      await expectRefused("CreateWebhook", create({ batching: { maxEvents } }), "invalid_argument", "webhook.batching.max_events: ");
    });

    it("batching max_wait over 5 minutes, or negative", async () => {
      await expectRefused("CreateWebhook", create({ batching: { maxEvents: 10, maxWait: "301s" } }), "invalid_argument", "webhook.batching.max_wait: ");
      await expectRefused("CreateWebhook", create({ batching: { maxEvents: 10, maxWait: "-1s" } }), "invalid_argument", "webhook.batching.max_wait: ");
    });

    it.each([-1, -0.001, 10_001, "NaN", "Infinity"])("rate_limit %s", async (rateLimit) => {
      await expectRefused("CreateWebhook", create({ rateLimit }), "invalid_argument", "webhook.rate_limit: ");
    });

    it("unknown content_mode number", async () => {
      await expectRefused("CreateWebhook", create({ contentMode: 9 }), "invalid_argument", "webhook.content_mode: ");
    });

    it("failure policy: max_failing_duration too long or too short, too many failures", async () => {
      await expectRefused("CreateWebhook", create({ failurePolicy: { maxFailingDuration: "7776001s" } }), "invalid_argument", "webhook.failure_policy.max_failing_duration: ");
      await expectRefused("CreateWebhook", create({ failurePolicy: { maxFailingDuration: "0.5s" } }), "invalid_argument", "webhook.failure_policy.max_failing_duration: ");
      await expectRefused("CreateWebhook", create({ failurePolicy: { maxConsecutiveFailures: 1_000_001 } }), "invalid_argument", "webhook.failure_policy.max_consecutive_failures: ");
    });

    it("description too long", async () => {
      await expectRefused("CreateWebhook", create({ description: "d".repeat(1025) }), "invalid_argument", "webhook.description: ");
    });

    it("every violation is reported at once", async () => {
      const res = await expectRefused(
        "CreateWebhook",
        { webhook: { url: "ftp://x/", patterns: ["Bad"], timeout: "61s", rateLimit: -1 } },
        "invalid_argument",
        "webhook.url",
        "webhook.patterns[0]",
        "webhook.timeout",
        "webhook.rate_limit",
      );
      expect(res.body.details?.[0]?.type).toBe("google.rpc.BadRequest");
      expect(res.body.details[0].debug.fieldViolations.map((v: { field: string }) => v.field)).toEqual(
        expect.arrayContaining(["webhook.url", "webhook.patterns[0]", "webhook.timeout", "webhook.rate_limit"]),
      );
    });

    it("unknown keys are refused, naming them", async () => {
      await expectRefused("CreateWebhook", create({ colour: "red" }), "invalid_argument", "colour");
      await expectRefused("CreateWebhook", create({ retryPolicy: { maxAttemps: 3 } }), "invalid_argument", "maxAttemps");
      await expectRefused("CreateWebhook", create({ batching: { max_event: 5 } }), "invalid_argument", "max_event");
      await expectRefused("CreateWebhook", { webhook: { url: rx.url }, startDisabld: true }, "invalid_argument", "startDisabld");
    });

    it("wrong JSON types of scalar, list and map fields", async () => {
      await expectRefused("CreateWebhook", create({ patterns: "memory.*" }), "invalid_argument", "patterns");
      await expectRefused("CreateWebhook", create({ headers: ["authorization"] }), "invalid_argument", "headers");
      await expectRefused("CreateWebhook", { webhook: { url: 42 } }, "invalid_argument", "url");
      await expectRefused("CreateWebhook", create({ rateLimit: "lots" }), "invalid_argument", "rate_limit");
      await expectRefused("CreateWebhook", create({ batching: { maxEvents: -1 } }), "invalid_argument", "max_events");
      await expectRefused("CreateWebhook", create({ batching: { maxEvents: 1.5 } }), "invalid_argument", "max_events");
      await expectRefused("ReplayEvents", { webhookId: hook.id, sequenceRange: { first: "-1", last: "2" } }, "invalid_argument", "first");
      await expectRefused("GetWebhook", { id: 5 }, "invalid_argument", "id");
    });

    it("typed client: the code and a BadRequest detail naming the field", async () => {
      const before = await snapshot();
      const err = await t.webhooks().createWebhook({ webhook: { url: "ftp://example.com/", contentMode: 9 as ContentMode } }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectError);
      const e = err as ConnectError;
      expect(e.code).toBe(Code.InvalidArgument);
      const fields = e.findDetails(BadRequestSchema)[0]!.fieldViolations.map((v) => v.field);
      expect(fields).toEqual(expect.arrayContaining(["webhook.url", "webhook.content_mode"]));
      expect(await snapshot()).toEqual(before);
    });
  });

  /**
   * Values the JSON decoder itself refuses (durations, timestamps, field masks, enum names) are
   * invalid_argument, but the message must still say which field, as it does for scalar fields
   * ("cannot decode field tidings.v1.Webhook.rate_limit ...").
   */
  describe("JSON the decoder refuses still names the field", () => {
    const cases = [
      ["CreateWebhook", { webhook: { url: "https://example.com/", timeout: 15 } }, /timeout/],
      ["CreateWebhook", { webhook: { url: "https://example.com/", timeout: "fast" } }, /timeout/],
      ["CreateWebhook", { webhook: { url: "https://example.com/", retryPolicy: { schedule: [5] } } }, /schedule/],
      ["CreateWebhook", { webhook: { url: "https://example.com/", contentMode: "CONTENT_MODE_XML" } }, /content_mode|contentMode/],
      ["ListDeliveries", { status: "DELIVERY_STATUS_XYZ" }, /\bstatus\b/],
      ["ListDeliveries", { startTime: "yesterday" }, /start_time|startTime/],
      ["ListWebhooks", { enabled: "ENABLED_FILTER_MAYBE" }, /\benabled\b/],
      ["ReplayEvents", { webhookId: unknownWebhookId, timeRange: { startTime: "yesterday" } }, /start_time|startTime/],
      ["GetWebhookStats", { id: unknownWebhookId, window: "1d" }, /\bwindow\b/],
      ["RotateWebhookSecret", { id: unknownWebhookId, gracePeriod: "forever" }, /grace_period|gracePeriod/],
      // The proto comment lists the mask's paths by their .proto names, so curl users send those.
      ["UpdateWebhook", { webhook: { id: unknownWebhookId }, updateMask: "retry_policy" }, /update_mask|updateMask/],
      ["UpdateWebhook", { webhook: { id: unknownWebhookId }, updateMask: { paths: ["description"] } }, /update_mask|updateMask/],
    ] as const;

    it("every such refusal is invalid_argument, changes nothing, and names the field", async () => {
      const unnamed: string[] = [];
      for (const [method, body, field] of cases) {
        const res = await expectRefused(method, body, "invalid_argument");
        if (!field.test(res.body.message)) unnamed.push(`${method} ${JSON.stringify(body)} -> ${JSON.stringify(res.body.message)}`);
      }
      expect(unnamed, "messages that do not name the field").toEqual([]);
    });
  });

  describe("GetWebhook, DeleteWebhook", () => {
    it("GetWebhook: unknown id is not_found, an empty one invalid_argument", async () => {
      await expectRefused("GetWebhook", { id: unknownWebhookId }, "not_found", "id: ", unknownWebhookId);
      await expectRefused("GetWebhook", { id: "x".repeat(200) }, "not_found", "id: ");
      await expectRefused("GetWebhook", { id: "" }, "invalid_argument", "id: is required");
    });

    it("DeleteWebhook: unknown id is not_found, an empty one invalid_argument", async () => {
      await expectRefused("DeleteWebhook", { id: unknownWebhookId }, "not_found", "id: ", unknownWebhookId);
      await expectRefused("DeleteWebhook", { id: "" }, "invalid_argument", "id: is required");
    });

    it("unknown request keys", async () => {
      await expectRefused("GetWebhook", { id: hook.id, colour: "red" }, "invalid_argument", '"colour"');
      await expectRefused("DeleteWebhook", { webhookId: hook.id }, "invalid_argument", "webhookId");
    });
  });

  describe("UpdateWebhook", () => {
    it("without update_mask", async () => {
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, description: "x" } }, "invalid_argument", "update_mask: ");
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, description: "x" }, updateMask: "" }, "invalid_argument", "update_mask: ");
    });

    it("without webhook", async () => {
      await expectRefused("UpdateWebhook", { updateMask: "description" }, "invalid_argument", "webhook: is required");
    });

    it("unknown or non-updatable paths", async () => {
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, description: "x" }, updateMask: "description,colour" }, "invalid_argument", "update_mask.paths[1]: ", '"colour"');
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id }, updateMask: "id" }, "invalid_argument", "update_mask.paths[0]: ");
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id }, updateMask: "secret" }, "invalid_argument", "update_mask.paths[0]: ");
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id }, updateMask: "disabledReason" }, "invalid_argument", "update_mask.paths[0]: ");
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id }, updateMask: "createTime" }, "invalid_argument", "update_mask.paths[0]: ");
    });

    it("an invalid value for a masked field", async () => {
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, timeout: "61s" }, updateMask: "timeout" }, "invalid_argument", "webhook.timeout: ");
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, url: "ftp://x/" }, updateMask: "url" }, "invalid_argument", "webhook.url: ");
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id }, updateMask: "url" }, "invalid_argument", "webhook.url: is required");
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, patterns: ["memory.*", "x..y"] }, updateMask: "patterns" }, "invalid_argument", "webhook.patterns[1]: ");
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, headers: { "Webhook-Signature": "v1,forged" } }, updateMask: "headers" }, "invalid_argument", 'webhook.headers["Webhook-Signature"]: ');
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, retryPolicy: { maxAttempts: 51 } }, updateMask: "retryPolicy" }, "invalid_argument", "webhook.retry_policy.max_attempts: ");
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, filter: "((" }, updateMask: "filter" }, "invalid_argument", "webhook.filter: ");
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, contentMode: 7 }, updateMask: "contentMode" }, "invalid_argument", "webhook.content_mode: ");
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, batching: { maxEvents: 1 } }, updateMask: "batching" }, "invalid_argument", "webhook.batching.max_events: ");
      // One bad masked field refuses the whole update, the valid masked ones included.
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, description: "changed", rateLimit: -1 }, updateMask: "description,rateLimit" }, "invalid_argument", "webhook.rate_limit: ");
    });

    it("unknown or missing webhook id", async () => {
      await expectRefused("UpdateWebhook", { webhook: { id: unknownWebhookId, description: "x" }, updateMask: "description" }, "not_found", "webhook.id: ");
      await expectRefused("UpdateWebhook", { webhook: { description: "x" }, updateMask: "description" }, "invalid_argument", "webhook.id: is required");
    });

    it("unknown keys in webhook", async () => {
      await expectRefused("UpdateWebhook", { webhook: { id: hook.id, descripton: "x" }, updateMask: "description" }, "invalid_argument", '"descripton"');
    });

    it("an invalid value for an unmasked field is ignored", async () => {
      const lifecycle = countOf(await lifecycleEvents(t));
      const before = (await call(t, "GetWebhook", { id: hook.id })).body.webhook;
      const res = await call(t, "UpdateWebhook", {
        webhook: { id: hook.id, description: "renamed", timeout: "61s", url: "ftp://nope/", patterns: ["Bad"], rateLimit: -1, headers: { "content-type": "x" } },
        updateMask: "description",
      });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.webhook.description).toBe("renamed");
      const after = (await call(t, "GetWebhook", { id: hook.id })).body.webhook;
      expect(after).toEqual({ ...before, description: "renamed", updateTime: after.updateTime });
      expect(after.timeout).toBe(before.timeout);
      expect(after.url).toBe(rx.url);
      // Restore, and wait for both tidings.webhook.updated events so later snapshots are stable.
      const restore = await call(t, "UpdateWebhook", { webhook: { id: hook.id, description: "baseline" }, updateMask: "description" });
      expect(restore.status, JSON.stringify(restore.body)).toBe(200);
      await waitForLifecycleEvents(t, lifecycle + 2);
    });
  });

  describe("ListWebhooks", () => {
    it("negative page_size", async () => {
      await expectRefused("ListWebhooks", { pageSize: -1 }, "invalid_argument", "page_size: ");
    });

    it("garbage page_token", async () => {
      for (const pageToken of ["%%%not-a-token", "eyJ2IjoxfQ", Buffer.from(JSON.stringify({ v: 1, p: "1; DROP TABLE x", q: "x" })).toString("base64url")]) {
        await expectRefused("ListWebhooks", { pageToken }, "invalid_argument", "page_token: ");
      }
    });

    it("a token from another filter", async () => {
      const first = await call(t, "ListWebhooks", { pageSize: 1 });
      expect(first.body.nextPageToken).toBeTruthy();
      await expectRefused("ListWebhooks", { pageSize: 1, pageToken: first.body.nextPageToken, enabled: "ENABLED_FILTER_DISABLED" }, "invalid_argument", "page_token: ", "different query");
      // A ListDeliveries token is not a ListWebhooks token either.
      const deliveries = await call(t, "ListDeliveries", { pageSize: 1 });
      expect(deliveries.body.nextPageToken).toBeTruthy();
      await expectRefused("ListWebhooks", { pageToken: deliveries.body.nextPageToken }, "invalid_argument", "page_token: ");
    });

    it("unknown enabled filter number", async () => {
      await expectRefused("ListWebhooks", { enabled: 7 }, "invalid_argument", "enabled: ");
    });
  });

  describe("RotateWebhookSecret", () => {
    it("malformed secret, grace period out of range, unknown id: refused, and the secret still signs", async () => {
      await expectRefused("RotateWebhookSecret", { id: hook.id, secret: "whsec_short" }, "invalid_argument", "secret: ");
      await expectRefused("RotateWebhookSecret", { id: hook.id, secret: "not-a-secret" }, "invalid_argument", "secret: ");
      await expectRefused("RotateWebhookSecret", { id: hook.id, gracePeriod: "2592001s" }, "invalid_argument", "grace_period: ");
      await expectRefused("RotateWebhookSecret", { id: hook.id, gracePeriod: "-1s" }, "invalid_argument", "grace_period: ");
      await expectRefused("RotateWebhookSecret", { id: unknownWebhookId }, "not_found", "id: ");
      await expectRefused("RotateWebhookSecret", { id: unknownWebhookId, secret: generateWebhookSecret() }, "not_found", "id: ");
      await expectRefused("RotateWebhookSecret", { secret: generateWebhookSecret() }, "invalid_argument", "id: is required");

      // The endpoint still signs with its one original secret.
      const before = rx.requests.length;
      const ping = await call(t, "TestWebhook", { id: hook.id });
      expect(ping.status, JSON.stringify(ping.body)).toBe(200);
      expect(ping.body.success).toBe(true);
      const [req] = (await rx.waitFor(before + 1)).slice(before);
      expect(String(req!.headers["webhook-signature"]).split(" ")).toHaveLength(1);
      expect(() => new StandardWebhook(hook.secret).verify(req!.body, req!.headers as Record<string, string>)).not.toThrow();
    });
  });

  describe("TestWebhook, GetDelivery, RetryDelivery", () => {
    it("TestWebhook: unknown id", async () => {
      await expectRefused("TestWebhook", { id: unknownWebhookId }, "not_found", "id: ");
    });

    it("GetDelivery: unknown and empty id", async () => {
      await expectRefused("GetDelivery", { id: unknownDeliveryId }, "not_found", "id: ", unknownDeliveryId);
      await expectRefused("GetDelivery", { id: "x".repeat(100) }, "not_found", "id: ");
      await expectRefused("GetDelivery", { id: "" }, "invalid_argument", "id: is required");
    });

    it("RetryDelivery: unknown id", async () => {
      await expectRefused("RetryDelivery", { id: unknownDeliveryId }, "not_found", "id: ");
      // A webhook id is not a delivery id.
      await expectRefused("RetryDelivery", { id: hook.id }, "not_found", "id: ");
    });
  });

  describe("ListDeliveries", () => {
    it("garbage page_token, and one from another query", async () => {
      await expectRefused("ListDeliveries", { pageToken: "%%%" }, "invalid_argument", "page_token: ");
      const first = await call(t, "ListDeliveries", { pageSize: 1 });
      expect(first.body.nextPageToken).toBeTruthy();
      await expectRefused("ListDeliveries", { pageSize: 1, pageToken: first.body.nextPageToken, webhookId: disabledId }, "invalid_argument", "page_token: ");
      await expectRefused("ListDeliveries", { pageSize: 1, pageToken: first.body.nextPageToken, status: "DELIVERY_STATUS_DEAD" }, "invalid_argument", "page_token: ");
    });

    it("end_time before (or at) start_time", async () => {
      await expectRefused("ListDeliveries", { startTime: "2026-01-02T00:00:00Z", endTime: "2026-01-01T00:00:00Z" }, "invalid_argument", "end_time: ", "start_time");
      await expectRefused("ListDeliveries", { startTime: "2026-01-02T00:00:00Z", endTime: "2026-01-02T00:00:00Z" }, "invalid_argument", "end_time: ");
    });

    it("unknown status number", async () => {
      await expectRefused("ListDeliveries", { status: 9 }, "invalid_argument", "status: ");
    });

    it("negative page_size", async () => {
      await expectRefused("ListDeliveries", { pageSize: -5 }, "invalid_argument", "page_size: ");
    });
  });

  describe("ListDeadLetters, RedriveDeadLetters", () => {
    it("ListDeadLetters: a bad pattern, a garbage token, end before start", async () => {
      await expectRefused("ListDeadLetters", { patterns: ["memory.*", "memory."] }, "invalid_argument", "patterns[1]: ");
      await expectRefused("ListDeadLetters", { pageToken: "garbage" }, "invalid_argument", "page_token: ");
      await expectRefused("ListDeadLetters", { startTime: "2026-01-02T00:00:00Z", endTime: "2026-01-01T00:00:00Z" }, "invalid_argument", "end_time: ");
      await expectRefused("ListDeadLetters", { pageSize: -1 }, "invalid_argument", "page_size: ");
    });

    it("RedriveDeadLetters: without webhook_id, unknown webhook, malformed delivery id", async () => {
      await expectRefused("RedriveDeadLetters", { deliveryIds: [deliveryIds[0]] }, "invalid_argument", "webhook_id: is required");
      await expectRefused("RedriveDeadLetters", { webhookId: unknownWebhookId }, "not_found", "webhook_id: ");
      await expectRefused("RedriveDeadLetters", { webhookId: hook.id, deliveryIds: [deliveryIds[0], "not-a-delivery"] }, "invalid_argument", "delivery_ids[1]: ");
      await expectRefused("RedriveDeadLetters", { webhookId: hook.id, startTime: "2026-01-02T00:00:00Z", endTime: "2026-01-01T00:00:00Z" }, "invalid_argument", "end_time: ");
    });
  });

  describe("ReplayEvents", () => {
    it("without range", async () => {
      await expectRefused("ReplayEvents", { webhookId: hook.id }, "invalid_argument", "range: ");
      await expectRefused("ReplayEvents", { webhookId: hook.id, ignoreFilters: true }, "invalid_argument", "range: ");
    });

    it("sequence range: first 0, last before first", async () => {
      await expectRefused("ReplayEvents", { webhookId: hook.id, sequenceRange: { first: "0", last: "5" } }, "invalid_argument", "sequence_range.first: ");
      await expectRefused("ReplayEvents", { webhookId: hook.id, sequenceRange: {} }, "invalid_argument", "sequence_range.first: ");
      await expectRefused("ReplayEvents", { webhookId: hook.id, sequenceRange: { first: "5", last: "2" } }, "invalid_argument", "sequence_range.last: ");
    });

    it("time range: a missing end or start, end before start", async () => {
      await expectRefused("ReplayEvents", { webhookId: hook.id, timeRange: { startTime: "2020-01-01T00:00:00Z" } }, "invalid_argument", "time_range.end_time: ");
      await expectRefused("ReplayEvents", { webhookId: hook.id, timeRange: { endTime: "2099-01-01T00:00:00Z" } }, "invalid_argument", "time_range.start_time: ");
      await expectRefused("ReplayEvents", { webhookId: hook.id, timeRange: {} }, "invalid_argument", "time_range.start_time: is required");
      await expectRefused("ReplayEvents", { webhookId: hook.id, timeRange: { startTime: "2099-01-01T00:00:00Z", endTime: "2020-01-01T00:00:00Z" } }, "invalid_argument", "time_range.end_time: ");
    });

    it("times outside a protobuf Timestamp's range, which only the binary form can carry, in every RPC that takes one", async () => {
      const before = await snapshot();
      const wh = t.webhooks();
      const tooLate = { $typeName: "google.protobuf.Timestamp" as const, seconds: 253_402_300_800n, nanos: 0 };
      const beyondDates = { $typeName: "google.protobuf.Timestamp" as const, seconds: 100_000_000_000_000n, nanos: 0 };
      const fine = { $typeName: "google.protobuf.Timestamp" as const, seconds: 1_700_000_000n, nanos: 0 };
      const fieldsOf = async (call: Promise<unknown>) => {
        const err = await call.then(() => undefined, (e: unknown) => e);
        expect(err).toBeInstanceOf(ConnectError);
        expect((err as ConnectError).code).toBe(Code.InvalidArgument);
        return (err as ConnectError).findDetails(BadRequestSchema)[0]!.fieldViolations.map((v) => v.field);
      };
      for (const bad of [tooLate, beyondDates]) {
        expect(await fieldsOf(wh.listDeliveries({ startTime: bad }))).toEqual(["start_time"]);
        expect(await fieldsOf(wh.listDeliveries({ endTime: bad }))).toEqual(["end_time"]);
        expect(await fieldsOf(wh.listDeadLetters({ startTime: bad }))).toEqual(["start_time"]);
        expect(await fieldsOf(wh.redriveDeadLetters({ webhookId: hook.id, endTime: bad }))).toEqual(["end_time"]);
        expect(await fieldsOf(wh.replayEvents({ webhookId: hook.id, range: { case: "timeRange", value: { startTime: fine, endTime: bad } } }))).toEqual(["time_range.end_time"]);
      }
      expect(await snapshot()).toEqual(before);
    });

    it("both ranges at once", async () => {
      await expectRefused(
        "ReplayEvents",
        { webhookId: hook.id, sequenceRange: { first: "1", last: "2" }, timeRange: { startTime: "2020-01-01T00:00:00Z", endTime: "2099-01-01T00:00:00Z" } },
        "invalid_argument",
        "range",
        "sequence_range",
        "time_range",
      );
    });

    it("unknown webhook", async () => {
      await expectRefused("ReplayEvents", { webhookId: unknownWebhookId, sequenceRange: { first: "1", last: "2" } }, "not_found", "webhook_id: ");
    });
  });

  describe("GetWebhookStats", () => {
    it("window 0, negative, over 90 days; unknown id", async () => {
      await expectRefused("GetWebhookStats", { id: hook.id, window: "0s" }, "invalid_argument", "window: ");
      await expectRefused("GetWebhookStats", { id: hook.id, window: "-60s" }, "invalid_argument", "window: ");
      await expectRefused("GetWebhookStats", { id: hook.id, window: "7776001s" }, "invalid_argument", "window: ");
      await expectRefused("GetWebhookStats", { id: unknownWebhookId }, "not_found", "id: ");
    });
  });
});

/** The tidings.webhook.* events in a server's log. */
async function lifecycleEvents(t: TestServer): Promise<JsonResult> {
  return callJson(t.url, "ListEvents", { patterns: ["tidings.webhook.*"], pageSize: 500 });
}
const countOf = (r: JsonResult): number => (r.body.events ?? []).length;
async function waitForLifecycleEvents(t: TestServer, count: number): Promise<void> {
  await eventually(async () => (countOf(await lifecycleEvents(t)) >= count ? true : undefined), 10_000, `${count} tidings.webhook.* events`);
}

describe("WebhookService: limits and deliveries in flight", () => {
  let t: TestServer;
  let rx: Receiver;
  const maxRequestBytes = 4096;
  beforeAll(async () => {
    t = await startTestServer({ config: { maxRequestBytes } });
    rx = await startReceiver(() => ({ hang: true }));
  });
  afterAll(async () => {
    // The receiver first: it lets go of the request the dispatcher would otherwise wait for.
    await rx?.close();
    await t?.close();
  });

  it("a request over maxRequestBytes is resource_exhausted and creates nothing", async () => {
    const res = await call(t, "CreateWebhook", { webhook: { url: rx.url, description: "d".repeat(maxRequestBytes) } });
    expectError(res, "resource_exhausted", String(maxRequestBytes));
    expect((await call(t, "ListWebhooks", {})).body.webhooks ?? []).toEqual([]);
  });

  it("RetryDelivery while the delivery is being attempted is failed_precondition and changes nothing", async () => {
    const created = await call(t, "CreateWebhook", { webhook: { url: rx.url, patterns: ["memory.*"], timeout: "20s", retryPolicy: { maxAttempts: 1 } } });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    await callJson(t.url, "Publish", { event: memoryCreated("in-flight") });
    await rx.waitFor(1);
    // A delivery in flight shows once its row is written (within --delivery-unwritten-ms, 1 s).
    const delivery = await eventually(async () => (await call(t, "ListDeliveries", { webhookId: created.body.webhook.id })).body.deliveries?.[0], 5_000, "the delivery in flight to show");
    const before = await call(t, "GetDelivery", { id: delivery.id });
    const res = await call(t, "RetryDelivery", { id: delivery.id });
    expectError(res, "failed_precondition", "id: ", "being attempted");
    expect(await call(t, "GetDelivery", { id: delivery.id })).toEqual(before);
    expect(rx.requests).toHaveLength(1);
  });
});

describe("SSRF: the server refuses webhooks to forbidden addresses", () => {
  let t: TestServer;
  let rx: Receiver;
  let port: string;
  beforeAll(async () => {
    t = await startTestServer({ config: { webhookAllowList: [] } });
    rx = await startReceiver();
    port = new URL(rx.url).port;
  });
  afterAll(async () => {
    await t?.close();
    await rx?.close();
  });

  const webhookCount = async () => ((await call(t, "ListWebhooks", { pageSize: 500 })).body.webhooks ?? []).length;

  it.each([
    ["http://127.0.0.1:PORT/", "127.0.0.1 is a loopback address"],
    ["http://[::1]:PORT/", "::1 is a loopback address"],
    ["http://169.254.169.254/latest/meta-data", "169.254.169.254 is a cloud metadata address"],
    ["http://169.254.10.1/", "169.254.10.1 is a link-local address"],
    ["http://10.0.0.1/", "10.0.0.1 is a private address"],
    ["http://192.168.1.1/", "192.168.1.1 is a private address"],
    ["http://0.0.0.0:PORT/", "0.0.0.0 is an unspecified address"],
    // The URL parser normalises these spellings to 127.0.0.1 before the check.
    ["http://2130706433:PORT/", "127.0.0.1 is a loopback address"],
    ["http://127.1:PORT/", "127.0.0.1 is a loopback address"],
    ["http://0x7f.0.0.1:PORT/", "127.0.0.1 is a loopback address"],
    ["http://[::ffff:127.0.0.1]:PORT/", "embeds 127.0.0.1, a loopback address"],
  ])("CreateWebhook %s is refused", async (template, reason) => {
    const url = template.replace("PORT", port);
    const before = await webhookCount();
    const res = await call(t, "CreateWebhook", { webhook: { url, patterns: ["memory.*"] } });
    expectError(res, "invalid_argument", "webhook.url: ", reason, "allow-list");
    expect(await webhookCount()).toBe(before);
    expect(rx.requests).toHaveLength(0);
  });

  it("a host name is checked when connecting: created, but nothing ever reaches the receiver", async () => {
    const url = `http://localhost:${port}/hook`;
    const created = await call(t, "CreateWebhook", { webhook: { url, patterns: ["memory.*"], retryPolicy: { maxAttempts: 2, schedule: ["0.05s"] } } });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    const id: string = created.body.webhook.id;

    // Re-pointing it at a literal loopback address is refused like on create, and changes nothing.
    const webhookBefore = (await call(t, "GetWebhook", { id })).body;
    const moved = await call(t, "UpdateWebhook", { webhook: { id, url: `http://127.0.0.1:${port}/hook` }, updateMask: "url" });
    expectError(moved, "invalid_argument", "webhook.url: ", "loopback");
    expect((await call(t, "GetWebhook", { id })).body).toEqual(webhookBefore);

    const pub = await callJson(t.url, "Publish", { event: memoryCreated("ssrf-1") });
    expect(pub.status, JSON.stringify(pub.body)).toBe(200);
    const delivery = await eventually(async () => {
      const r = await call(t, "ListDeliveries", { webhookId: id });
      const d = r.body.deliveries?.[0];
      return d?.status === "DELIVERY_STATUS_DEAD" ? d : undefined;
    }, 15_000, "the delivery to give up");
    expect(delivery.eventId).toBe(pub.body.id);
    expect(delivery.lastStatusCode ?? 0).toBe(0);
    expect(delivery.lastError).toMatch(/refused/i);
    expect(delivery.lastError).toMatch(/loopback/);
    const detail = await call(t, "GetDelivery", { id: delivery.id });
    expect(detail.body.attempts).toHaveLength(2);
    for (const a of detail.body.attempts) {
      expect(a.statusCode ?? 0).toBe(0);
      expect(a.error).toMatch(/refused to connect to localhost/);
      expect(a.error).toMatch(/(127\.0\.0\.1|::1) is a loopback address/);
    }

    const ping = await call(t, "TestWebhook", { id });
    expect(ping.status, JSON.stringify(ping.body)).toBe(200);
    expect(ping.body.success ?? false).toBe(false);
    expect(ping.body.attempt.statusCode ?? 0).toBe(0);
    expect(ping.body.attempt.error).toMatch(/refused to connect to localhost/);
    expect(ping.body.attempt.error).toMatch(/loopback/);

    // Nothing arrives, even later.
    await new Promise((r) => setTimeout(r, 300));
    expect(rx.requests).toHaveLength(0);
  });
});

describe("POST /ingest/{source}", () => {
  let t: TestServer;
  const pmSecret = "plain-shared-secret";
  const swSecret = generateWebhookSecret();
  const maxRequestBytes = 4096;
  beforeAll(async () => {
    t = await startTestServer({ config: { ingestSecrets: { pm: pmSecret, sw: swSecret }, maxRequestBytes } });
  });
  afterAll(() => t?.close());

  const seedBody = (eventId: string, data: Record<string, unknown> = { file_path: "/tmp/a", change_type: "created" }, extra: Record<string, unknown> = {}) =>
    JSON.stringify({ event_type: "file.changed", timestamp: 1642248000, event_id: eventId, data, source: "personal-manager", ...extra });
  const hmacSignature = (secret: string, body: string) => ({ "X-Webhook-Signature": `sha256=${createHmac("sha256", secret).update(body).digest("hex")}` });
  const standardHeaders = (secret: string, body: string, timestamp = Math.floor(Date.now() / 1000)) =>
    signWebhook({ id: `msg_${Math.random().toString(36).slice(2)}`, timestamp, body, secrets: [secret] });

  async function send(path: string, body: string | undefined, headers: Record<string, string> = {}, method = "POST") {
    const res = await fetch(`${t.url}${path}`, { method, headers: { "content-type": "application/json", ...headers }, body });
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, body: json, text };
  }

  // A refused signature publishes a security.auth_failed event (test/auth.test.ts): that is the
  // refusal being reported, not the request storing anything.
  const allEvents = async (): Promise<any[]> => ((await callJson(t.url, "ListEvents", { pageSize: 500 })).body.events ?? []).filter((e: { type: string }) => !e.type.startsWith("security."));

  /** Sends, expects the status (and the message to mention things), and checks nothing was stored. */
  async function expectIngestRefused(req: Promise<{ status: number; body: any; text: string }> | (() => Promise<{ status: number; body: any; text: string }>), status: number, eventId: string | undefined, ...mentions: string[]) {
    const before = await allEvents();
    const res = await (typeof req === "function" ? req() : req);
    expect(res.status, res.text).toBe(status);
    expect(res.body?.code, res.text).not.toBe("internal");
    for (const m of mentions) expect(res.body?.message, res.text).toContain(m);
    await new Promise((r) => setTimeout(r, 20));
    expect(await allEvents()).toEqual(before);
    if (eventId) {
      const get = await callJson(t.url, "GetEvent", { id: eventId });
      expect(get.body.code, JSON.stringify(get.body)).toBe("not_found");
    }
    return res;
  }

  it("the Personal Manager seed: X-Webhook-Signature over the raw body", async () => {
    const body = seedBody("uuid-string");
    const res = await send("/ingest/pm", body, hmacSignature(pmSecret, body));
    expect(res.status, res.text).toBe(200);
    expect(res.body.id).toBe("uuid-string");
    expect(res.body.sequence).toMatch(/^[1-9]\d*$/);
    const got = await callJson(t.url, "GetEvent", { id: "uuid-string" });
    expect(got.status, JSON.stringify(got.body)).toBe(200);
    expect(got.body.event).toMatchObject({
      id: "uuid-string",
      source: "ingest/pm",
      type: "file.changed",
      time: "2022-01-15T12:00:00Z",
      sequence: res.body.sequence,
      data: { file_path: "/tmp/a", change_type: "created" },
    });
  });

  it("Standard Webhooks headers with a whsec_ secret", async () => {
    const body = JSON.stringify({ type: "file.changed", id: "sw-1", time: "2026-01-28T12:00:00Z", data: { file_path: "/tmp/b", change_type: "modified" } });
    const res = await send("/ingest/sw", body, standardHeaders(swSecret, body));
    expect(res.status, res.text).toBe(200);
    expect(res.body.id).toBe("sw-1");
    const got = await callJson(t.url, "GetEvent", { id: "sw-1" });
    expect(got.body.event).toMatchObject({ id: "sw-1", source: "ingest/sw", type: "file.changed", time: "2026-01-28T12:00:00Z" });
  });

  it("a wrong signature is 401", async () => {
    const body = seedBody("refused-wrong-sig");
    await expectIngestRefused(send("/ingest/pm", body, hmacSignature("another-secret", body)), 401, "refused-wrong-sig", "signature");
    // Signed for another body.
    await expectIngestRefused(send("/ingest/pm", body, hmacSignature(pmSecret, seedBody("something-else"))), 401, "refused-wrong-sig", "signature");
    await expectIngestRefused(send("/ingest/pm", body, { "X-Webhook-Signature": "sha256=" }), 401, "refused-wrong-sig", "signature");
    await expectIngestRefused(send("/ingest/pm", body, { "X-Webhook-Signature": createHmac("sha256", pmSecret).update(body).digest("hex") }), 401, "refused-wrong-sig");
    // Standard Webhooks: another secret, a stale timestamp, and such headers on a plain-secret source.
    await expectIngestRefused(send("/ingest/sw", body, standardHeaders(generateWebhookSecret(), body)), 401, "refused-wrong-sig", "signature");
    await expectIngestRefused(send("/ingest/sw", body, standardHeaders(swSecret, body, Math.floor(Date.now() / 1000) - 3600)), 401, "refused-wrong-sig");
    await expectIngestRefused(send("/ingest/pm", body, standardHeaders(swSecret, body)), 401, "refused-wrong-sig", "X-Webhook-Signature");
  });

  it("a whsec_ source takes Standard Webhooks only, not the timestamp-less X-Webhook-Signature", async () => {
    // The reverse (Standard Webhooks headers on a plain-secret source) is refused with "this
    // source takes X-Webhook-Signature"; a whsec_ source must likewise not be downgraded to a
    // scheme without the timestamp that protects it from replays.
    const body = seedBody("refused-downgrade");
    await expectIngestRefused(send("/ingest/sw", body, hmacSignature(swSecret, body)), 401, "refused-downgrade");
  });

  it("a missing signature is 401", async () => {
    const body = seedBody("refused-unsigned");
    await expectIngestRefused(send("/ingest/pm", body), 401, "refused-unsigned", "missing signature");
    await expectIngestRefused(send("/ingest/sw", body), 401, "refused-unsigned", "missing signature");
  });

  it("an unknown source is 404", async () => {
    const body = seedBody("refused-unknown-source");
    await expectIngestRefused(send("/ingest/nope", body, hmacSignature(pmSecret, body)), 404, "refused-unknown-source", '"nope"');
  });

  it("GET is 405", async () => {
    await expectIngestRefused(send("/ingest/pm", undefined, {}, "GET"), 405, undefined);
  });

  it("a body that is not JSON is 400", async () => {
    for (const body of ["not json", '{"event_type": "file.changed", ', ""]) {
      await expectIngestRefused(send("/ingest/pm", body, hmacSignature(pmSecret, body)), 400, undefined, "not JSON");
    }
    for (const body of ["[1, 2]", '"a string"', "null"]) {
      await expectIngestRefused(send("/ingest/pm", body, hmacSignature(pmSecret, body)), 400, undefined, "body");
    }
  });

  it("an invalid event is 400 naming the field", async () => {
    const unknownType = seedBody("refused-type", undefined, { event_type: "file.exploded" });
    await expectIngestRefused(send("/ingest/pm", unknownType, hmacSignature(pmSecret, unknownType)), 400, "refused-type", "type", "file.exploded");
    const missingField = seedBody("refused-missing", { file_path: "/tmp/a" });
    await expectIngestRefused(send("/ingest/pm", missingField, hmacSignature(pmSecret, missingField)), 400, "refused-missing", "change_type", "is required");
    const badValue = seedBody("refused-value", { file_path: "/tmp/a", change_type: "exploded" });
    await expectIngestRefused(send("/ingest/pm", badValue, hmacSignature(pmSecret, badValue)), 400, "refused-value", "change_type");
    const noType = JSON.stringify({ event_id: "refused-no-type", data: { file_path: "/tmp/a", change_type: "created" } });
    await expectIngestRefused(send("/ingest/pm", noType, hmacSignature(pmSecret, noType)), 400, "refused-no-type", "type", "is required");
    const noData = JSON.stringify({ event_type: "file.changed", event_id: "refused-no-data" });
    await expectIngestRefused(send("/ingest/pm", noData, hmacSignature(pmSecret, noData)), 400, "refused-no-data", "data");
    const badTime = seedBody("refused-time", undefined, { timestamp: "the day before yesterday" });
    await expectIngestRefused(send("/ingest/pm", badTime, hmacSignature(pmSecret, badTime)), 400, "refused-time", "time");
    const dataArray = seedBody("refused-data-array", undefined, { data: ["a"] });
    await expectIngestRefused(send("/ingest/pm", dataArray, hmacSignature(pmSecret, dataArray)), 400, "refused-data-array", "body.data");
    const unknownDataField = seedBody("refused-data-field", { file_path: "/tmp/a", change_type: "created", colour: "red" });
    await expectIngestRefused(send("/ingest/pm", unknownDataField, hmacSignature(pmSecret, unknownDataField)), 400, "refused-data-field", "colour");
  });

  it("a body over the limit is 413", async () => {
    const body = seedBody("refused-large", { file_path: `/tmp/${"x".repeat(maxRequestBytes)}`, change_type: "created" });
    expect(Buffer.byteLength(body)).toBeGreaterThan(maxRequestBytes);
    await expectIngestRefused(send("/ingest/pm", body, hmacSignature(pmSecret, body)), 413, "refused-large", String(maxRequestBytes));
  });
});
