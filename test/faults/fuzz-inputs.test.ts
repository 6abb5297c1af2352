/**
 * Property-based fuzzing of what clients send (fast-check): Publish payloads and envelopes,
 * type patterns, CEL filters and webhook URLs, and every text field of every unary method, each
 * sent to a real server over the Connect protocol with JSON, as curl would. Whatever the input,
 * the answer is a success or a client error with its Connect code; never `internal` (a bug),
 * never a crash: the server still answers at the end. And the `authorization` header, against a server that requires API keys, over
 * Connect JSON and gRPC: whatever it holds, unless it is the admin key, the answer is
 * unauthenticated. A failure prints fast-check's seed and the smallest input that fails.
 */
import { type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newApiKey } from "../../server/auth/api-key.js";
import { AdminService, createTidingsClient, EventService, WebhookService } from "../../sdk/index.js";
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
  reportFault({ scenario: "fuzzing inputs", load: "Publish, ListEvents, CreateWebhook; every text field of every unary RPC; ListEventTypes on a server requiring API keys (Connect JSON and gRPC)", faults: "random and one-field-at-a-time requests; NUL, lone surrogates, SQL, 100,000 characters and random text in each text field, extremes in each number, enum, duration, time and mask field; arbitrary authorization headers", inputs: Object.values(tried).reduce((a, b) => a + b, 0), lost: 0, notes: `none answered internal; the server ${health === 200 ? "still answers" : "DOES NOT ANSWER"}` });
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

describe("every unary RPC: each text field set to hostile text", () => {
  // Every string field of every unary method's request (and of the messages it holds, one level
  // down), alone in an otherwise empty request, sent as JSON with the admin key: whatever the
  // field, NUL, a lone surrogate, SQL, very long text and random text are a client error at
  // worst, never internal. Likewise extreme numbers, enum values, durations, times and field
  // masks. The methods' own tests cover what a valid request does.
  const adminKey = newApiKey();
  let keyed: TestServer;
  beforeAll(async () => {
    keyed = await startTestServer({ config: { auth: "keys", adminKey, maxRequestBytes: 256 * 1024 } });
  });
  afterAll(async () => {
    await keyed?.close();
  });

  /** Request bodies that set one text field (by its JSON name) somewhere in `desc` to `value`. */
  function oneFieldRequests(desc: DescMessage, value: string, depth = 0): Array<Record<string, unknown>> {
    const out: Array<Record<string, unknown>> = [];
    for (const field of desc.fields) {
      const name = field.jsonName;
      if (field.fieldKind === "scalar" && field.scalar === ScalarType.STRING) out.push({ [name]: value });
      else if (field.fieldKind === "list" && field.listKind === "scalar" && field.scalar === ScalarType.STRING) out.push({ [name]: [value] });
      else if (field.fieldKind === "map" && field.mapKind === "scalar" && field.scalar === ScalarType.STRING) out.push({ [name]: { [value]: "v" } }, { [name]: { k: value } });
      else if (field.fieldKind === "message" && depth === 0 && !field.message.typeName.startsWith("google.protobuf.")) {
        for (const inner of oneFieldRequests(field.message, value, depth + 1)) out.push({ [name]: inner });
      }
    }
    return out;
  }

  const services = [EventService, WebhookService, AdminService];
  const unary = services.flatMap((service) => service.methods.filter((m) => m.methodKind === "unary").map((method) => ({ service, method })));
  const hostile = ["\u0000", "a\u0000b", "\ud800", "\udc00x", "' OR 1=1; DROP TABLE tidings_events; --", "../../etc/passwd", "%00", "x".repeat(100_000)];

  async function neverInternalAsAdmin(path: string, body: unknown, what: string): Promise<void> {
    tried[what] = (tried[what] ?? 0) + 1;
    const res = await fetch(`${keyed.url}${path}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${adminKey}` }, body: JSON.stringify(body) });
    const text = await res.text();
    if (res.status === 200) {
      accepted[what] = (accepted[what] ?? 0) + 1;
      return;
    }
    expect(res.status, `${path} ${JSON.stringify(body).slice(0, 200)}: ${text.slice(0, 300)}`).toBeLessThan(500);
    expect(connectCodes.has(JSON.parse(text).code), `${path}: ${text.slice(0, 300)}`).toBe(true);
  }

  it("fixed hostile values in every text field of every unary method", async () => {
    expect(unary.length).toBeGreaterThan(20);
    for (const { service, method } of unary) {
      for (const value of hostile) {
        for (const body of oneFieldRequests(method.input, value)) {
          await neverInternalAsAdmin(`/${service.typeName}/${method.name}`, body, "every text field (fixed values)");
        }
      }
    }
  });

  it("extreme numbers, enum values, durations, times and field masks in every such field of every unary method", async () => {
    let sent = 0;
    for (const { service, method } of unary) {
      for (const body of extremeValueRequests(method.input)) {
        sent++;
        await neverInternalAsAdmin(`/${service.typeName}/${method.name}`, body, "every number, enum, duration, time and mask field");
      }
    }
    expect(sent).toBeGreaterThan(100);
  });

  it("random text in every text field of every unary method", async () => {
    const fields = unary.flatMap(({ service, method }) => oneFieldRequests(method.input, "").map((template) => ({ path: `/${service.typeName}/${method.name}`, template })));
    const anyText = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: "binary", maxLength: 40 }));
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...fields), anyText, async ({ path, template }, value) => {
        await neverInternalAsAdmin(path, fillText(template, value), "every text field (random)");
      }),
      { numRuns: runs },
    );
  });
});

const extremeIntegers = [0, -1, 1, 2_147_483_647, -2_147_483_648, 4_294_967_295, "9223372036854775807", "-9223372036854775808", "18446744073709551615", 1e300, 1.5];
const extremeDurations = ["0s", "-1s", "0.000000001s", "315576000000s", "-315576000000s"];
const extremeTimes = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "2262-04-12T00:00:00Z"];
const oddMasks = ["", "no_such_field", "a,b,c", "url,url", "webhook.url"];

/** Request bodies that set one number, enum, duration, time or field mask somewhere in `desc` (two levels down) to an extreme. */
function extremeValueRequests(desc: DescMessage, depth = 0): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const field of desc.fields) {
    const name = field.jsonName;
    const scalar = field.fieldKind === "scalar" || (field.fieldKind === "list" && field.listKind === "scalar") ? field.scalar : undefined;
    if (scalar !== undefined && scalar !== ScalarType.STRING && scalar !== ScalarType.BOOL && scalar !== ScalarType.BYTES) {
      for (const v of extremeIntegers) out.push({ [name]: field.fieldKind === "list" ? [v] : v });
    } else if (field.fieldKind === "enum") {
      for (const v of [99, -1, 2_147_483_647]) out.push({ [name]: v });
    } else if (field.fieldKind === "message") {
      const type = field.message.typeName;
      if (type === "google.protobuf.Duration") for (const v of extremeDurations) out.push({ [name]: v });
      else if (type === "google.protobuf.Timestamp") for (const v of extremeTimes) out.push({ [name]: v });
      else if (type === "google.protobuf.FieldMask") for (const v of oddMasks) out.push({ [name]: v });
      else if (depth < 2 && !type.startsWith("google.protobuf.")) for (const inner of extremeValueRequests(field.message, depth + 1)) out.push({ [name]: inner });
    } else if (field.fieldKind === "list" && field.listKind === "message" && depth < 2 && !field.message.typeName.startsWith("google.protobuf.")) {
      for (const inner of extremeValueRequests(field.message, depth + 1)) out.push({ [name]: [inner] });
    }
  }
  return out;
}

/** The template with its one empty text (value or key) replaced by `value`. */
function fillText(template: unknown, value: string): unknown {
  if (typeof template === "string") return template === "" ? value : template;
  if (Array.isArray(template)) return template.map((t) => fillText(t, value));
  if (template && typeof template === "object") {
    return Object.fromEntries(Object.entries(template).map(([k, v]) => [k === "" ? value : k, fillText(v, value)]));
  }
  return template;
}

describe("fuzzing the authorization header: unauthenticated unless it is the key", () => {
  const adminKey = newApiKey();
  const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  let keyed: TestServer;
  beforeAll(async () => {
    keyed = await startTestServer({ config: { auth: "keys", adminKey } });
  });
  afterAll(async () => {
    await keyed?.close();
  });

  // Only what HTTP lets a client send as a header value: visible ASCII, spaces and tabs. Node's
  // fetch (undici) and http2 refuse values with NUL, CR or LF before they leave the client (or
  // drop them), so such values would test the client, not the server. Both clients also trim
  // leading and trailing spaces and tabs, as HTTP does.
  const headerChar = fc.oneof({ weight: 20, arbitrary: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) }, { weight: 1, arbitrary: fc.constant("\t") });
  const text = (minLength: number, maxLength: number) => fc.string({ unit: headerChar, minLength, maxLength });
  const blanks = (minLength: number) => fc.string({ unit: fc.constantFrom(" ", "\t"), minLength, maxLength: 4 });
  const bearerCased = fc.array(fc.boolean(), { minLength: 6, maxLength: 6 }).map((upper) => [..."bearer"].map((c, i) => (upper[i] ? c.toUpperCase() : c)).join(""));
  const schemes = fc.oneof(bearerCased, fc.constantFrom("Bearer", "Basic", "Token", "Bearer:", "Bearer=", "Bearertid_", "", "tid_"), text(0, 10));
  const randomKey = fc.string({ unit: fc.constantFrom(...keyAlphabet), minLength: 40, maxLength: 40 }).map((body) => `tid_${body}`);
  // Near misses of the admin key: one character changed, cut short, one longer.
  const nearAdminKey = fc.oneof(
    fc.tuple(fc.nat(adminKey.length - 1), headerChar).filter(([i, c]) => adminKey[i] !== c && c !== "\t" && c !== " ").map(([i, c]) => adminKey.slice(0, i) + c + adminKey.slice(i + 1)),
    fc.nat(adminKey.length - 1).map((n) => adminKey.slice(0, n)),
    fc.constantFrom(...keyAlphabet).map((c) => adminKey + c),
  );
  const keys = fc.oneof(randomKey, nearAdminKey, text(40, 40).map((body) => `tid_${body}`));
  /** The admin key as a client may present it ("bearer", any case, and the key, with any spaces or tabs around): the generator leaves it out. */
  const presentsAdminKey = (value: string) => {
    const words = value.split(/[ \t]+/).filter(Boolean);
    return words.length === 2 && words[0]!.toLowerCase() === "bearer" && words[1] === adminKey;
  };
  const headerValues = fc
    .oneof(
      text(0, 100), // anything
      text(0, 60).map((x) => `Bearer ${x}`),
      text(40, 40).map((x) => `Bearer tid_${x}`),
      randomKey.map((k) => `Bearer ${k}`), // well-formed, but no such key
      fc.tuple(blanks(0), schemes, blanks(0), keys, blanks(0), fc.constantFrom("", "x", "tid_", ",", adminKey)).map((parts) => parts.join("")), // odd schemes, case, spacing, a word after
      fc.tuple(schemes, blanks(1), fc.constantFrom(adminKey, `"${adminKey}"`, `${adminKey},`, `<${adminKey}>`, adminKey.toUpperCase(), adminKey.toLowerCase())).map((parts) => parts.join("")), // the key itself, under the wrong scheme or decorated
      fc.tuple(fc.constantFrom("", "Bearer ", "Bearer tid_"), text(1_000, 8_000)).map(([p, x]) => p + x), // very long
      fc.array(keys, { minLength: 2, maxLength: 200 }).map((ks) => `Bearer ${ks.join(" ")}`), // several keys, up to ~9 KB
    )
    .filter((v) => !presentsAdminKey(v));

  const listEventTypes = "/tidings.v1.EventService/ListEventTypes";
  const overJson = (authorization: string) =>
    fetch(`${keyed.url}${listEventTypes}`, { method: "POST", headers: { "content-type": "application/json", authorization }, body: "{}" });

  it("ListEventTypes over Connect JSON and over gRPC answers unauthenticated, and the server keeps answering", async () => {
    const grpc = createTidingsClient({ baseUrl: keyed.url, transport: "grpc" });
    await fc.assert(
      fc.asyncProperty(headerValues, async (authorization) => {
        tried["authorization (Connect JSON)"] = (tried["authorization (Connect JSON)"] ?? 0) + 1;
        const res = await overJson(authorization);
        const body = await res.text();
        expect(res.status, body.slice(0, 300)).toBe(401);
        expect(JSON.parse(body).code, body.slice(0, 300)).toBe("unauthenticated");

        tried["authorization (gRPC)"] = (tried["authorization (gRPC)"] ?? 0) + 1;
        const code = await grpc.listEventTypes({}, { headers: { authorization } }).then(
          () => "ok",
          (err: unknown) => {
            const e = ConnectError.from(err);
            return `${Code[e.code]}: ${e.rawMessage}`;
          },
        );
        expect(code).toMatch(/^Unauthenticated: /);
      }),
      { numRuns: runs },
    );
    // The key itself still works, on both.
    const ok = await overJson(`Bearer ${adminKey}`);
    const okBody = await ok.text();
    expect(ok.status, okBody.slice(0, 300)).toBe(200);
    expect(JSON.parse(okBody).eventTypes.length).toBeGreaterThan(0);
    expect((await grpc.listEventTypes({}, { headers: { authorization: `Bearer ${adminKey}` } })).eventTypes.length).toBeGreaterThan(0);
  });
});
