/**
 * API keys: every RPC and /metrics checks the key (missing or bad → unauthenticated, wrong
 * scope → permission_denied), grants limited to event types, per-key publish rates and stream
 * counts, security events for refusals, key management, and the first admin key.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { authModeOf, ConfigError, defaultConfig, loadConfig } from "../server/config/config.js";
import { newApiKey } from "../server/auth/api-key.js";
import { type Logger } from "../server/logging/logger.js";
import { AdminService, createAdminClient, createTidingsClient, EventService, Scope, WebhookService } from "../sdk/index.js";
import { createTestStorage, needsPostgres } from "./helpers/database.js";
import { reflectionClient } from "./helpers/reflection-client.js";
import { eventually, memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

const adminKey = newApiKey();
let t: TestServer;
let logs: Array<Record<string, unknown>>;

/** A logger that keeps every record, to show what reaches the log (and what never does). */
function recordingLogger(into: Array<Record<string, unknown>>, bindings: Record<string, unknown> = {}): Logger {
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void into.push({ level, msg, ...bindings, ...fields });
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error"), child: (more) => recordingLogger(into, { ...bindings, ...more }) };
}

beforeAll(async () => {
  logs = [];
  t = await startTestServer({ config: { auth: "keys", adminKey, ingestSecrets: { pm: "ingest-secret" } }, token: adminKey, start: { logger: recordingLogger(logs) } });
});
afterAll(async () => {
  await t?.close();
});

const admin = () => createAdminClient({ baseUrl: t.url, token: adminKey });
const events = (token?: string, transport?: "connect" | "grpc" | "grpc-web") => createTidingsClient({ baseUrl: t.url, token, transport });

/** An event as the raw client sends it: the JSON payload in `payload.data`. */
function wire(e: { type: string; source: string; data: Record<string, unknown>; attributes?: Record<string, string> }) {
  return { type: e.type, source: e.source, attributes: e.attributes ?? {}, payload: { case: "data" as const, value: e.data as JsonObject } };
}

/** JSON of a response, bigints and all. */
const jsonOf = (value: unknown) => JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));

async function keyWith(grants: Array<{ scope: Scope; eventTypes?: string[] }>, limits: { publishRate?: number; publishBurst?: number; maxSubscriptions?: number } = {}) {
  const created = await admin().createApiKey({ name: `test key ${grants.map((g) => Scope[g.scope]).join("+")}`, grants, ...limits });
  return { key: created.key, record: created.apiKey! };
}

/** A unary call the way curl makes it: Connect JSON over HTTP/1.1. */
async function curl(path: string, body: unknown, token?: string) {
  const res = await fetch(`${t.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as { code?: string; message?: string; details?: Array<{ type: string; debug?: any }> } };
}

async function codeOf(call: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await call;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

/**
 * The scope each method needs, as the README documents it. Written out here rather than read
 * from the descriptors, so a changed rule in a .proto fails this test until the docs agree.
 */
const documentedScopes: Record<string, Scope | "any"> = {
  "tidings.v1.EventService/Publish": Scope.PUBLISH,
  "tidings.v1.EventService/PublishBatch": Scope.PUBLISH,
  "tidings.v1.EventService/Subscribe": Scope.SUBSCRIBE,
  "tidings.v1.EventService/GetEvent": Scope.SUBSCRIBE,
  "tidings.v1.EventService/ListEvents": Scope.SUBSCRIBE,
  "tidings.v1.EventService/ListEventTypes": "any",
  "tidings.v1.EventService/GetEventType": "any",
  "tidings.v1.EventService/RegisterEventTypes": Scope.ADMIN,
  "tidings.v1.WebhookService/CreateWebhook": Scope.WEBHOOKS_WRITE,
  "tidings.v1.WebhookService/GetWebhook": Scope.WEBHOOKS_READ,
  "tidings.v1.WebhookService/UpdateWebhook": Scope.WEBHOOKS_WRITE,
  "tidings.v1.WebhookService/DeleteWebhook": Scope.WEBHOOKS_WRITE,
  "tidings.v1.WebhookService/ListWebhooks": Scope.WEBHOOKS_READ,
  "tidings.v1.WebhookService/RotateWebhookSecret": Scope.WEBHOOKS_WRITE,
  "tidings.v1.WebhookService/TestWebhook": Scope.WEBHOOKS_WRITE,
  "tidings.v1.WebhookService/ListDeliveries": Scope.WEBHOOKS_READ,
  "tidings.v1.WebhookService/GetDelivery": Scope.WEBHOOKS_READ,
  "tidings.v1.WebhookService/RetryDelivery": Scope.WEBHOOKS_WRITE,
  "tidings.v1.WebhookService/ListDeadLetters": Scope.WEBHOOKS_READ,
  "tidings.v1.WebhookService/RedriveDeadLetters": Scope.WEBHOOKS_WRITE,
  "tidings.v1.WebhookService/ReplayEvents": Scope.WEBHOOKS_WRITE,
  "tidings.v1.WebhookService/GetWebhookStats": Scope.WEBHOOKS_READ,
  "tidings.v1.AdminService/GetStats": Scope.ADMIN,
  "tidings.v1.AdminService/CreateApiKey": Scope.ADMIN,
  "tidings.v1.AdminService/ListApiKeys": Scope.ADMIN,
  "tidings.v1.AdminService/RevokeApiKey": Scope.ADMIN,
};
const services = [EventService, WebhookService, AdminService];
const unaryMethods = services.flatMap((s) => s.methods.filter((m) => m.methodKind === "unary").map((m) => `${s.typeName}/${m.name}`));

describe("API keys on every method", () => {
  it("the table above names every method of the three services", () => {
    const all = services.flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`)).sort();
    expect(Object.keys(documentedScopes).sort()).toEqual(all);
  });

  it("a call without a key, with a malformed header or with an unknown key is unauthenticated, on every unary method", async () => {
    const unknown = newApiKey();
    for (const method of unaryMethods) {
      for (const token of [undefined, unknown]) {
        const res = await curl(`/${method}`, {}, token);
        expect({ method, status: res.status, code: res.body.code }).toEqual({ method, status: 401, code: "unauthenticated" });
      }
      const basic = await fetch(`${t.url}/${method}`, { method: "POST", headers: { "content-type": "application/json", authorization: "Basic dXNlcjpwYXNz" }, body: "{}" });
      expect(basic.status).toBe(401);
    }
    // An empty body too: the key is checked before the body is.
    const empty = await fetch(`${t.url}/tidings.v1.EventService/Publish`, { method: "POST", headers: { "content-type": "application/json" } });
    expect(empty.status).toBe(401);
  });

  it("gRPC, gRPC-Web and Connect binary (the fast path) refuse a missing key too, for unary calls and streams", async () => {
    for (const transport of ["grpc", "grpc-web", "connect"] as const) {
      const client = events(undefined, transport);
      expect(await codeOf(client.publish({ event: wire(memoryCreated("m-nokey")) }))).toBe(Code.Unauthenticated);
      expect(await codeOf(client.listEventTypes({}))).toBe(Code.Unauthenticated);
      expect(await codeOf((async () => {
        for await (const _ of client.subscribe({})) break;
      })())).toBe(Code.Unauthenticated);
      expect(await codeOf(events(adminKey, transport).publish({ event: wire(memoryCreated(`m-${transport}`)) }))).toBe("ok");
    }
  });

  it("a key reaches exactly the methods its scopes grant; admin reaches all", async () => {
    const keys = new Map<Scope, string>();
    for (const scope of [Scope.PUBLISH, Scope.SUBSCRIBE, Scope.WEBHOOKS_READ, Scope.WEBHOOKS_WRITE, Scope.ADMIN]) keys.set(scope, (await keyWith([{ scope }])).key);
    for (const [scope, key] of keys) {
      for (const method of unaryMethods) {
        const needs = documentedScopes[method]!;
        const allowed = needs === "any" || needs === scope || scope === Scope.ADMIN;
        // `{}` is valid for the reads and refused as invalid_argument by the writes: either way
        // the call got past the key check, and nothing changes.
        const res = await curl(`/${method}`, {}, key);
        const refusedForKey = res.body.code === "permission_denied" || res.body.code === "unauthenticated";
        expect({ scope: Scope[scope], method, refusedForKey }).toEqual({ scope: Scope[scope], method, refusedForKey: !allowed });
        if (!allowed) {
          expect(res.status).toBe(403);
          expect(res.body.message).toContain(key.slice(0, 12));
          expect(res.body.message).not.toContain(key);
        }
      }
    }
    // The stream method, over gRPC.
    for (const [scope, key] of keys) {
      const stream = events(key, "grpc").subscribe({ heartbeatInterval: { seconds: 1n } });
      const code = await codeOf((async () => {
        for await (const _ of stream) break;
      })());
      expect({ scope: Scope[scope], code }).toEqual({ scope: Scope[scope], code: scope === Scope.SUBSCRIBE || scope === Scope.ADMIN ? "ok" : Code.PermissionDenied });
    }
  });

  it("a revoked key is refused at once, with the same answer as an unknown key", async () => {
    const { key, record } = await keyWith([{ scope: Scope.PUBLISH }]);
    expect(await codeOf(events(key).publish({ event: wire(memoryCreated("m-before-revoke")) }))).toBe("ok");
    const revoked = await admin().revokeApiKey({ id: record.id });
    expect(revoked.apiKey?.revokeTime).toBeDefined();
    const after = await curl("/tidings.v1.EventService/Publish", { event: memoryCreated("m-after-revoke") }, key);
    const unknown = await curl("/tidings.v1.EventService/Publish", { event: memoryCreated("m-unknown") }, newApiKey());
    expect(after).toEqual(unknown);
    expect(after.status).toBe(401);
    // Revoking again changes nothing; an id that does not exist is not_found, naming the field.
    expect((await admin().revokeApiKey({ id: record.id })).apiKey?.revokeTime).toEqual(revoked.apiKey?.revokeTime);
    const missing = await curl("/tidings.v1.AdminService/RevokeApiKey", { id: "key_00000000-0000-7000-8000-000000000000" }, adminKey);
    expect(missing.body.code).toBe("not_found");
    expect(missing.body.message).toContain("id");
  });
});

describe("grants limited to event types", () => {
  it("a publish key limited to memory.* may publish memory events only; a refused batch stores nothing", async () => {
    const { key } = await keyWith([{ scope: Scope.PUBLISH, eventTypes: ["memory.*"] }]);
    expect(await codeOf(events(key).publish({ event: wire(memoryCreated("m-typed")) }))).toBe("ok");
    const risk = { type: "risk.alert", source: "pm", data: { alert_id: "r-typed", risk_type: "security", severity: "high", title: "t" } };
    const one = await curl("/tidings.v1.EventService/Publish", { event: risk }, key);
    expect(one.status).toBe(403);
    expect(one.body.code).toBe("permission_denied");
    expect(one.body.details?.[0]?.debug?.fieldViolations?.[0]?.field).toBe("event.type");
    const batch = await curl("/tidings.v1.EventService/PublishBatch", { entries: [{ event: memoryCreated("m-batch-typed") }, { event: risk }] }, key);
    expect(batch.body.code).toBe("permission_denied");
    expect(batch.body.details?.[0]?.debug?.fieldViolations?.map((v: { field: string }) => v.field)).toEqual(["entries[1].event.type"]);
    const stored = await events(adminKey).listEvents({ filter: `data.memory_id == "m-batch-typed" || data.alert_id == "r-typed"` });
    expect(stored.events).toEqual([]);
  });

  it("a subscribe key limited to memory.* reads memory events only: streams, history and GetEvent", async () => {
    const { key } = await keyWith([{ scope: Scope.SUBSCRIBE, eventTypes: ["memory.*"] }]);
    const reader = events(key, "grpc");
    // Asking for more than the grant is refused, naming the pattern.
    const wide = await curl("/tidings.v1.EventService/ListEvents", { patterns: ["memory.created", "**"] }, key);
    expect(wide.body.code).toBe("permission_denied");
    expect(wide.body.details?.[0]?.debug?.fieldViolations?.[0]?.field).toBe("patterns[1]");
    expect(await codeOf((async () => {
      for await (const _ of reader.subscribe({ patterns: ["risk.*"] })) break;
    })())).toBe(Code.PermissionDenied);

    // Asking for nothing in particular reads what the grant allows.
    const ac = new AbortController();
    const stream = reader.subscribe({ filter: `attributes.run == "typed-read"` }, { signal: ac.signal })[Symbol.asyncIterator]();
    const first = stream.next();
    const publisher = events(adminKey);
    const risk = await publisher.publish({ event: wire({ type: "risk.alert", source: "pm", attributes: { run: "typed-read" }, data: { alert_id: "r-read", risk_type: "security", severity: "high", title: "t" } }) });
    await publisher.publish({ event: wire({ ...memoryCreated("m-read"), attributes: { run: "typed-read" } }) });
    let got = await first;
    while (got.value?.message.case === "heartbeat") got = await stream.next();
    ac.abort();
    expect(got.value?.message.case === "event" && got.value.message.value.type).toBe("memory.created");

    const listed = await reader.listEvents({ filter: `attributes.run == "typed-read"` });
    expect(listed.events.map((e) => e.type)).toEqual(["memory.created"]);
    expect(await codeOf(reader.getEvent({ id: risk.id }))).toBe(Code.PermissionDenied);
  });
});

describe("per-key limits", () => {
  it("a key over its publish rate gets resource_exhausted with RetryInfo, and may publish again after the delay", async () => {
    const { key } = await keyWith([{ scope: Scope.PUBLISH }], { publishRate: 5, publishBurst: 5 });
    const client = events(key);
    for (let i = 0; i < 5; i++) await client.publish({ event: wire(memoryCreated(`m-rate-${i}`)) });
    let refused: ConnectError | undefined;
    try {
      await client.publish({ event: wire(memoryCreated("m-rate-over")) });
    } catch (err) {
      refused = ConnectError.from(err);
    }
    expect(refused?.code).toBe(Code.ResourceExhausted);
    const retry = refused!.findDetails(RetryInfoSchema)[0];
    const delay = durationMs(retry!.retryDelay!);
    expect(delay).toBeGreaterThan(0);
    expect(delay).toBeLessThanOrEqual(200);
    // Connect JSON: HTTP 429, as curl sees it.
    const overHttp = await curl("/tidings.v1.EventService/Publish", { event: memoryCreated("m-rate-over-http") }, key);
    expect(overHttp.status).toBe(429);
    await new Promise((r) => setTimeout(r, delay + 50));
    expect(await codeOf(client.publish({ event: wire(memoryCreated("m-rate-after")) }))).toBe("ok");
    // A batch larger than the burst can never pass: refused naming the entries, without a retry delay.
    const batch = await curl("/tidings.v1.EventService/PublishBatch", { entries: Array.from({ length: 6 }, (_, i) => ({ event: memoryCreated(`m-burst-${i}`) })) }, key);
    expect(batch.body.code).toBe("resource_exhausted");
    expect(batch.body.message).toContain("entries");
    // The limit is the key's: another key publishes on.
    expect(await codeOf(events(adminKey).publish({ event: wire(memoryCreated("m-rate-other-key")) }))).toBe("ok");
  });

  it("a key holds at most its max_subscriptions streams on a node; closing one frees its place", async () => {
    const { key } = await keyWith([{ scope: Scope.SUBSCRIBE }], { maxSubscriptions: 2 });
    const client = events(key, "grpc");
    const open = async () => {
      const ac = new AbortController();
      const it = client.subscribe({ heartbeatInterval: { seconds: 1n } }, { signal: ac.signal })[Symbol.asyncIterator]();
      await it.next(); // a heartbeat: the stream is open on the server
      return ac;
    };
    const a = await open();
    const b = await open();
    expect(await codeOf(open())).toBe(Code.ResourceExhausted);
    a.abort();
    const c = await eventually(async () => {
      try {
        return await open();
      } catch {
        return undefined;
      }
    }, 5000, "a place to free up");
    b.abort();
    c.abort();
  });
});

describe("security events", () => {
  it("refusals are published as security.auth_failed (with the key's prefix, never the key) and rate limits as security.suspicious_activity", async () => {
    const bogus = newApiKey();
    const marker = `probe-${Date.now()}`;
    const { key: slow } = await keyWith([{ scope: Scope.PUBLISH }], { publishRate: 1, publishBurst: 1 });
    // Reports are rate-limited (earlier tests made plenty of refusals), so probe until one is
    // published. Each kind is probed alone: both share one token bucket, and a probe making an
    // auth failure just before each over-limit publish took nearly every token for the failure.
    const refuseKey = async () => {
      const res = await fetch(`${t.url}/tidings.v1.AdminService/GetStats`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${bogus}`, "user-agent": marker }, body: "{}" });
      expect(res.status).toBe(401);
    };
    const exceedLimit = async () => {
      await codeOf(events(slow).publishBatch({ entries: [{ event: wire(memoryCreated("m-slow")) }] }));
    };
    const find = async (probe: () => Promise<void>, type: string, filter: string) => {
      await probe();
      return (await events(adminKey).listEvents({ patterns: [type], filter })).events[0];
    };
    const found = await eventually(() => find(refuseKey, "security.auth_failed", `data.user_agent == "${marker}"`), 10_000, "security.auth_failed");
    const data = found.payload.case === "data" ? (found.payload.value as Record<string, unknown>) : {};
    expect(data).toMatchObject({ reason: "unknown_key", method: "tidings.v1.AdminService/GetStats", key_prefix: bogus.slice(0, 12) });
    expect(String(data.ip_address)).toMatch(/127\.0\.0\.1|::1/);
    expect(jsonOf(found)).not.toContain(bogus);
    // Over gRPC (HTTP/2, answered from the raw stream): the address comes from the connection.
    const bogusOverGrpc = newApiKey();
    const refuseOverGrpc = async () => {
      expect(await codeOf(events(bogusOverGrpc, "grpc").listEvents({ patterns: ["memory.*"] }))).toBe(Code.Unauthenticated);
    };
    const foundOverGrpc = await eventually(() => find(refuseOverGrpc, "security.auth_failed", `data.key_prefix == "${bogusOverGrpc.slice(0, 12)}"`), 10_000, "security.auth_failed over gRPC");
    const overGrpc = foundOverGrpc.payload.case === "data" ? (foundOverGrpc.payload.value as Record<string, unknown>) : {};
    expect(overGrpc).toMatchObject({ reason: "unknown_key", method: "tidings.v1.EventService/ListEvents" });
    expect(String(overGrpc.ip_address)).toMatch(/127\.0\.0\.1|::1/);
    const limited = await eventually(() => find(exceedLimit, "security.suspicious_activity", `data.activity_type == "rate_limit_exceeded" && data.metadata.key_prefix == "${slow.slice(0, 12)}"`), 10_000, "security.suspicious_activity");
    expect(limited.payload.case === "data" && limited.payload.value).toMatchObject({ severity: "low", metadata: { method: "tidings.v1.EventService/PublishBatch", limit: "publish_rate 1/s" } });
    // No log line anywhere holds a key that was presented.
    expect(JSON.stringify(logs)).not.toContain(bogus);
  });

  it("an incoming webhook with a bad signature is reported the same way", async () => {
    const marker = `ingest-probe-${Date.now()}`;
    const found = await eventually(async () => {
      const res = await fetch(`${t.url}/ingest/pm`, { method: "POST", headers: { "content-type": "application/json", "x-webhook-signature": "sha256=00", "user-agent": marker }, body: "{}" });
      expect(res.status).toBe(401);
      return (await events(adminKey).listEvents({ patterns: ["security.auth_failed"], filter: `data.user_agent == "${marker}"` })).events[0];
    }, 10_000, "the security event");
    expect(found.payload.case === "data" && found.payload.value).toMatchObject({ reason: "bad_ingest_signature", method: "POST /ingest/pm" });
  });

  it("a flood of bad keys is counted in /metrics but published and logged only a few times a second", async () => {
    // The tests before may have emptied the reporter's bucket (5 reports a second, 20 at once),
    // and on a fast machine the flood is over within 200 ms: wait for a token first, so that
    // the flood has at least one report to make (it had none in one CI run).
    await new Promise((r) => setTimeout(r, 250));
    const metricsBefore = await scrapeFailures();
    const logsBefore = logs.filter((l) => l.msg === "authentication failed").length;
    const started = Date.now();
    await Promise.all(Array.from({ length: 200 }, () => curl("/tidings.v1.EventService/ListEventTypes", {}, newApiKey())));
    const seconds = (Date.now() - started) / 1000;
    expect((await scrapeFailures()) - metricsBefore).toBe(200);
    const logged = logs.filter((l) => l.msg === "authentication failed").length - logsBefore;
    expect(logged).toBeGreaterThan(0);
    expect(logged).toBeLessThanOrEqual(20 + Math.ceil(5 * (seconds + 1)));
    // The next report says how many went unreported before it.
    await new Promise((r) => setTimeout(r, 400));
    await curl("/tidings.v1.EventService/ListEventTypes", {}, newApiKey());
    const last = logs.filter((l) => l.msg === "authentication failed").at(-1)!;
    expect(Number(last.unreportedBefore)).toBeGreaterThan(0);
  });
});

async function scrapeFailures(): Promise<number> {
  const text = await (await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${adminKey}` } })).text();
  return [...text.matchAll(/^tidings_auth_failures_total\{reason="unknown_key"\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
}

describe("HTTP routes", () => {
  it("/metrics needs an admin key; /healthz and /readyz stay open for probes", async () => {
    const none = await fetch(`${t.url}/metrics`);
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toBe("Bearer");
    const { key } = await keyWith([{ scope: Scope.PUBLISH }]);
    expect((await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(403);
    const ok = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${adminKey}` } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain("tidings_auth_failures_total");
    expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${t.url}/readyz`)).status).toBe(200);
  });
});

describe("key management", () => {
  it("CreateApiKey shows the key once; ListApiKeys pages through records without keys or hashes", async () => {
    const a = await keyWith([{ scope: Scope.PUBLISH, eventTypes: ["memory.*", "risk.**"] }, { scope: Scope.WEBHOOKS_READ }], { publishRate: 50 });
    expect(a.key).toMatch(/^tid_[A-Za-z0-9]{40}$/);
    expect(a.record.prefix).toBe(a.key.slice(0, 12));
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await admin().listApiKeys({ pageSize: 2, pageToken });
      expect(jsonOf(page)).not.toContain(a.key);
      seen.push(...page.apiKeys.map((k) => k.id));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken);
    expect(pages).toBeGreaterThan(1);
    expect(seen).toContain(a.record.id);
    const listed = (await curl("/tidings.v1.AdminService/ListApiKeys", { pageSize: 1000 }, adminKey)).body as unknown as { apiKeys: Array<Record<string, unknown>> };
    const mine = listed.apiKeys.find((k) => k.id === a.record.id)!;
    expect(mine).toEqual({
      id: a.record.id, name: a.record.name, prefix: a.key.slice(0, 12), publishRate: 50, createTime: expect.any(String),
      grants: [{ scope: "SCOPE_PUBLISH", eventTypes: ["memory.*", "risk.**"] }, { scope: "SCOPE_WEBHOOKS_READ" }],
    });
    // Revoked keys are listed only on request.
    const b = await keyWith([{ scope: Scope.SUBSCRIBE }]);
    await admin().revokeApiKey({ id: b.record.id });
    const active = await admin().listApiKeys({ pageSize: 1000 });
    expect(active.apiKeys.map((k) => k.id)).not.toContain(b.record.id);
    const everything = await admin().listApiKeys({ pageSize: 1000, showRevoked: true });
    expect(everything.apiKeys.find((k) => k.id === b.record.id)?.revokeTime).toBeDefined();
  });

  it("bad CreateApiKey requests are invalid_argument naming each field, and create nothing", async () => {
    const before = (await admin().listApiKeys({ pageSize: 1000, showRevoked: true })).apiKeys.length;
    const res = await curl("/tidings.v1.AdminService/CreateApiKey", {
      name: "",
      grants: [
        { scope: "SCOPE_UNSPECIFIED" },
        { scope: "SCOPE_WEBHOOKS_READ", eventTypes: ["memory.*"] },
        { scope: "SCOPE_PUBLISH", eventTypes: ["Memory.*"] },
        { scope: "SCOPE_PUBLISH" },
      ],
    }, adminKey);
    expect(res.body.code).toBe("invalid_argument");
    expect(res.body.details?.[0]?.debug?.fieldViolations?.map((v: { field: string }) => v.field)).toEqual([
      "name", "grants[0].scope", "grants[1].event_types", "grants[2].event_types[0]", "grants[3].scope",
    ]);
    const noGrants = await curl("/tidings.v1.AdminService/CreateApiKey", { name: "x" }, adminKey);
    expect(noGrants.body.details?.[0]?.debug?.fieldViolations?.[0]?.field).toBe("grants");
    expect((await admin().listApiKeys({ pageSize: 1000, showRevoked: true })).apiKeys.length).toBe(before);
  });
});

describe("the first admin key and the open mode", () => {
  it("the first start on an empty database makes an admin key and logs it once; later starts make none", async () => {
    const storage = await createTestStorage();
    const first: Array<Record<string, unknown>> = [];
    const s = await startTestServer({ storage, config: { auth: "keys" }, start: { logger: recordingLogger(first) } });
    try {
      const made = first.filter((l) => typeof l.adminKey === "string");
      expect(made).toHaveLength(1);
      const key = made[0]!.adminKey as string;
      expect(key).toMatch(/^tid_[A-Za-z0-9]{40}$/);
      expect(await codeOf(createAdminClient({ baseUrl: s.url, token: key }).getStats({}))).toBe("ok");
      expect(await codeOf(createAdminClient({ baseUrl: s.url }).getStats({}))).toBe(Code.Unauthenticated);
      await s.stop();
      const second: Array<Record<string, unknown>> = [];
      const s2 = await startTestServer({ storage, config: { auth: "keys" }, start: { logger: recordingLogger(second) } });
      try {
        expect(second.filter((l) => "adminKey" in l)).toEqual([]);
        expect((await createAdminClient({ baseUrl: s2.url, token: key }).listApiKeys({})).apiKeys).toHaveLength(1);
      } finally {
        await s2.stop();
      }
    } finally {
      await s.stop();
      await storage.drop();
    }
  });

  it("open mode is refused on a host other machines can reach; auto is open only for the embedded database on loopback", () => {
    expect(() => loadConfig(["--auth", "open", "--host", "0.0.0.0"], {})).toThrow(ConfigError);
    expect(() => loadConfig(["--auth", "open", "--host", "10.1.2.3"], {})).toThrow(/loopback/);
    expect(loadConfig(["--auth", "open", "--host", "127.0.0.1"], {}).auth).toBe("open");
    expect(() => loadConfig(["--admin-key", "secret"], {})).toThrow(/tid_/);
    expect(authModeOf({ ...defaultConfig })).toBe("open");
    expect(authModeOf({ ...defaultConfig, host: "0.0.0.0" })).toBe("keys");
    expect(authModeOf({ ...defaultConfig, databaseUrl: "postgres://db/tidings" })).toBe("keys");
    expect(authModeOf({ ...defaultConfig, host: "::1" })).toBe("open");
  });
});

describe.runIf(needsPostgres("API keys across two nodes"))("API keys across two nodes on one PostgreSQL", () => {
  it("a key made on one node works on the other at once, and a revocation reaches it through NOTIFY", async () => {
    // A second node on the same database; its timed reload (10 s) is far longer than the wait below.
    const other = await startTestServer({ storage: t.storage, config: { auth: "keys", adminKey } });
    try {
      const { key, record } = await keyWith([{ scope: Scope.PUBLISH }]);
      const there = createTidingsClient({ baseUrl: other.url, token: key });
      expect(await codeOf(there.publish({ event: wire(memoryCreated("m-other-node")) }))).toBe("ok");
      await admin().revokeApiKey({ id: record.id });
      const started = Date.now();
      await eventually(async () => ((await codeOf(there.publish({ event: wire(memoryCreated("m-other-node-after")) }))) === Code.Unauthenticated ? true : undefined), 3000, "the other node to refuse the revoked key");
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      await other.stop();
    }
  });
});

describe("gRPC server reflection", () => {
  it("needs a key too (any scope)", async () => {
    const { key } = await keyWith([{ scope: Scope.WEBHOOKS_READ }]);
    const address = new URL(t.url).host;
    const without = reflectionClient(address, "v1");
    const withKey = reflectionClient(address, "v1", { authorization: `Bearer ${key}` });
    try {
      await expect(without.ask({ list_services: "" })).rejects.toMatchObject({ code: 16 }); // UNAUTHENTICATED
      const listed = await withKey.ask({ list_services: "" });
      expect(listed.list_services_response.service.map((s: { name: string }) => s.name)).toContain("tidings.v1.EventService");
    } finally {
      without.close();
      withKey.close();
    }
  });
});
