/**
 * Webhook routing and delivery end to end: a real server (PGlite, or PostgreSQL with
 * DATABASE_URL) delivering to real HTTP receivers on loopback. Every test routes by its own
 * `run` attribute, so tests never see each other's events, and removes its webhooks after.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Webhook as StandardWebhook } from "standardwebhooks";
import { Code, ConnectError } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  ContentMode,
  type Delivery,
  DeliveryStatus,
  type Webhook,
  type WebhookSchema,
} from "../sdk/index.js";
import { verifyWebhook, WebhookVerificationError, type WebhookVerificationFailure } from "../sdk/webhooks/verify.js";
import { type Answer, type Received, type Receiver, type Responder, startReceiver } from "./helpers/receiver.js";
import { callJson, eventually, startTestServer, type TestServer } from "./helpers/test-server.js";

type WebhookInit = MessageInitShape<typeof WebhookSchema>;
type Api = ReturnType<TestServer["webhooks"]>;

let t: TestServer;
let api: Api;
/** Undone after each test, last first: webhooks deleted, receivers closed. */
let cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  t = await startTestServer();
  api = t.webhooks();
});
afterEach(async () => {
  const todo = cleanups.reverse();
  cleanups = [];
  for (const undo of todo) await undo().catch(() => undefined);
});
afterAll(async () => {
  await t?.close();
});

// ---------------------------------------------------------------------------------------------
// Helpers

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const tag = (name: string) => `${name}-${randomUUID().slice(0, 8)}`;
const userSecret = () => `whsec_${randomBytes(32).toString("base64")}`;

async function receiver(responder?: Responder): Promise<Receiver> {
  const rx = await startReceiver(responder);
  cleanups.push(() => rx.close());
  return rx;
}

async function createHook(webhook: WebhookInit): Promise<Webhook> {
  const res = await api.createWebhook({ webhook });
  const created = res.webhook!;
  cleanups.push(() => api.deleteWebhook({ id: created.id }));
  return created;
}

interface Published {
  id: string;
  sequence: string;
  time: string;
}

async function publish(event: object): Promise<Published> {
  const res = await callJson(t.url, "Publish", { event });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as Published;
}

async function publishBatch(events: object[]): Promise<Published[]> {
  const res = await callJson(t.url, "PublishBatch", { entries: events.map((event) => ({ event })) });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.results as Published[];
}

const alert = (run: string, alertId: string, severity: string, attributes: Record<string, string> = {}) => ({
  type: "risk.alert",
  source: "pm/scanner",
  attributes: { run, ...attributes },
  data: { alert_id: alertId, risk_type: "security", severity, title: `alert ${alertId}` },
});

const memory = (run: string, memoryId: string, attributes: Record<string, string> = {}, type = "memory.created") => ({
  type,
  source: "alma/test",
  attributes: { run, ...attributes },
  data: { memory_id: memoryId },
});

/** An RFC 3339 time to epoch ms (fractions beyond ms dropped). */
const parseTime = (rfc3339: string) => Date.parse(rfc3339.replace(/(\.\d{3})\d+/, "$1"));

const headersOf = (r: Received) => r.headers as Record<string, string>;

/** The SDK verifier's failure reason, or undefined when it accepts. */
function sdkFailure(r: Received, secret: string | string[], now?: Date): WebhookVerificationFailure | undefined {
  try {
    verifyWebhook(r.body, r.headers, secret, now ? { now } : {});
    return undefined;
  } catch (err) {
    if (err instanceof WebhookVerificationError) return err.reason;
    throw err;
  }
}

/** True when the `standardwebhooks` package accepts the request with this secret. */
function standardAccepts(r: Received, secret: string): boolean {
  try {
    new StandardWebhook(secret).verify(r.body, headersOf(r));
    return true;
  } catch {
    return false;
  }
}

function expectSignedWith(r: Received, secret: string): void {
  expect(standardAccepts(r, secret), "standardwebhooks verify").toBe(true);
  expect(sdkFailure(r, secret), "SDK verifyWebhook").toBeUndefined();
}

function expectNotSignedWith(r: Received, secret: string): void {
  expect(standardAccepts(r, secret), "standardwebhooks verify").toBe(false);
  expect(sdkFailure(r, secret), "SDK verifyWebhook").toBe("bad_signature");
}

const v1Signatures = (r: Received) => String(r.headers["webhook-signature"] ?? "").split(" ").filter((s) => s.startsWith("v1,"));

async function allDeliveries(webhookId: string): Promise<Delivery[]> {
  const out: Delivery[] = [];
  let pageToken = "";
  do {
    const page = await api.listDeliveries({ webhookId, pageSize: 500, pageToken });
    out.push(...page.deliveries);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

/** Waits until the webhook has `count` deliveries, none pending, and returns them. */
function settledDeliveries(webhookId: string, count: number, timeoutMs = 15_000): Promise<Delivery[]> {
  return eventually(async () => {
    const ds = await allDeliveries(webhookId);
    return ds.length === count && ds.every((d) => d.status !== DeliveryStatus.PENDING) ? ds : undefined;
  }, timeoutMs, `${count} settled deliveries of ${webhookId}`);
}

async function findListed(id: string): Promise<Webhook | undefined> {
  let pageToken = "";
  do {
    const page = await api.listWebhooks({ pageSize: 500, pageToken });
    const found = page.webhooks.find((w) => w.id === id);
    if (found) return found;
    pageToken = page.nextPageToken;
  } while (pageToken);
  return undefined;
}

const fastRetries = (maxAttempts: number, delayMs: number) => ({ maxAttempts, schedule: [durationFromMs(delayMs)] });
const idsOf = (rs: readonly Received[]) => rs.map((r) => r.json?.id as string);

// ---------------------------------------------------------------------------------------------

describe("webhook routing and delivery", () => {
  it("1. signs deliveries per Standard Webhooks with the user's secret and sends custom headers", async () => {
    const run = tag("sig");
    const rx = await receiver();
    const secret = userSecret();
    const headers = { Authorization: "Bearer tok-7f3a", "X-Tenant": "acme" };
    const created = await createHook({ url: rx.url, patterns: ["memory.created"], attributes: { run }, headers, secret });

    // The secret is shown once, by CreateWebhook; never by GetWebhook or ListWebhooks.
    expect(created.secret).toBe(secret);
    const got = (await api.getWebhook({ id: created.id })).webhook!;
    expect(got.secret).toBe("");
    expect(got.headers).toEqual(headers);
    const listed = await findListed(created.id);
    expect(listed, "webhook in ListWebhooks").toBeDefined();
    expect(listed!.secret).toBe("");
    expect(Object.keys(listed!.headers).sort()).toEqual(Object.keys(headers).sort());
    for (const [name, value] of Object.entries(headers)) {
      expect(listed!.headers[name], `listed header ${name}`).not.toBe(value);
      expect(listed!.headers[name]).not.toContain(value);
    }

    // ltpStrength (lowerCamelCase on input) must come out under its .proto name.
    const pub = await publish({
      type: "memory.created",
      source: "alma/helena",
      attributes: { run, agent: "helena" },
      data: { memory_id: "mem-sig-1", tier: "hot", ltpStrength: 0.75, agent_id: "helena", tags: ["a", "b"] },
    });
    const [req] = await rx.waitFor(1);
    const r = req!;

    expect(r.headers["webhook-id"]).toBe(pub.id);
    expect(r.headers["authorization"]).toBe("Bearer tok-7f3a");
    expect(r.headers["x-tenant"]).toBe("acme");
    expect(r.headers["content-type"]).toMatch(/^application\/json/);

    const verified = new StandardWebhook(secret).verify(r.body, headersOf(r)) as Record<string, unknown>;
    expect(verified).toEqual(r.json);
    const sdk = verifyWebhook(r.body, r.headers, secret);
    expect(sdk.id).toBe(pub.id);

    expect(Object.keys(r.json).sort()).toEqual(["attributes", "data", "id", "sequence", "source", "timestamp", "type"]);
    expect(r.json).toMatchObject({
      id: pub.id,
      type: "memory.created",
      source: "alma/helena",
      attributes: { run, agent: "helena" },
      sequence: String(pub.sequence),
      data: { memory_id: "mem-sig-1", tier: "hot", ltp_strength: 0.75, agent_id: "helena", tags: ["a", "b"] },
    });
    expect(r.json.data).not.toHaveProperty("ltpStrength");
    expect(r.json.data).not.toHaveProperty("memoryId");
    expect(Math.abs(Date.parse(r.json.timestamp) - parseTime(pub.time))).toBeLessThanOrEqual(1);

    // A wrong secret and a stale timestamp are refused.
    const wrong = userSecret();
    expect(standardAccepts(r, wrong)).toBe(false);
    expect(sdkFailure(r, wrong)).toBe("bad_signature");
    expect(sdkFailure(r, secret, new Date(Date.now() + 10 * 60_000))).toBe("stale_timestamp");
    expect(sdkFailure(r, [wrong, secret])).toBeUndefined();
  });

  it("2. routes risk alerts per severity and attribute without code", async () => {
    const run = tag("route");
    const [rxA, rxB, rxC] = await Promise.all([receiver(), receiver(), receiver()]);
    const a = await createHook({ url: rxA.url, attributes: { run }, filter: 'data.severity == "critical"' });
    const b = await createHook({ url: rxB.url, patterns: ["risk.alert"], attributes: { run, team: "ops" } });
    const c = await createHook({ url: rxC.url, patterns: ["memory.*"], attributes: { run } });

    const events = [
      alert(run, "a1", "critical", { team: "ops" }), // A, B
      alert(run, "a2", "critical"), // A
      alert(run, "a3", "high", { team: "ops" }), // B
      alert(run, "a4", "low"), // none
      alert(run, "a5", "medium", { team: "dev" }), // none
      memory(run, "m1", { team: "ops" }), // C
      memory(run, "m2", {}, "memory.deleted"), // C
      alert(run, "a6", "critical", { team: "dev" }), // A
      { type: "dream.started", source: "mnemo", attributes: { run, team: "ops" }, data: { session_id: "s1", trigger: "idle" } }, // none
      alert(tag("other-run"), "a7", "critical", { team: "ops" }), // none: another run
    ];
    const ids = (await publishBatch(events)).map((p) => p.id);
    const pick = (...indexes: number[]) => indexes.map((i) => ids[i]!).sort();
    const expected = new Map([
      [a.id, { rx: rxA, ids: pick(0, 1, 7) }],
      [b.id, { rx: rxB, ids: pick(0, 2) }],
      [c.id, { rx: rxC, ids: pick(5, 6) }],
    ]);

    for (const [webhookId, want] of expected) {
      const ds = await settledDeliveries(webhookId, want.ids.length);
      expect(ds.map((d) => d.eventId).sort(), `deliveries of ${webhookId}`).toEqual(want.ids);
      expect(ds.every((d) => d.status === DeliveryStatus.SUCCEEDED)).toBe(true);
    }
    await sleep(300); // anything extra would have arrived by now
    for (const [webhookId, want] of expected) {
      expect(idsOf(want.rx.requests).sort(), `requests to ${webhookId}`).toEqual(want.ids);
      expect((await allDeliveries(webhookId)).length).toBe(want.ids.length);
    }
    expect(rxA.requests.every((r) => r.json.data.severity === "critical")).toBe(true);
    expect(rxB.requests.every((r) => r.json.attributes.team === "ops" && r.json.type === "risk.alert")).toBe(true);
  });

  it("3. batches up to max_events per request, waiting at most max_wait", async () => {
    const run = tag("batch");
    const rx = await receiver();
    const hook = await createHook({
      url: rx.url,
      patterns: ["memory.created"],
      attributes: { run },
      batching: { maxEvents: 3, maxWait: durationFromMs(300) },
    });
    const secret = hook.secret;

    const started = Date.now();
    const published = await publishBatch(Array.from({ length: 7 }, (_, i) => memory(run, `b${i}`)));
    const requests = await rx.waitFor(3);
    await sleep(400);
    expect(rx.requests, "3 requests for 7 events").toHaveLength(3);

    // Whatever shape a request has, the events it carries, for the checks after the shape's.
    const eventsOf = (r: Received) => (r.json?.type === "tidings.batch" ? r.json.data?.events ?? [] : [r.json]) as Array<{ id: string; sequence: string }>;
    for (const r of requests) {
      expectSignedWith(r, secret);
      expect.soft(r.json.type, `every request is a batch; got ${r.body.slice(0, 120)}...`).toBe("tidings.batch");
      expect.soft(Array.isArray(r.json.data?.events), "data.events is an array").toBe(true);
      const seqs = eventsOf(r).map((e) => BigInt(e.sequence));
      expect(seqs, "events of a batch in sequence order").toEqual([...seqs].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));
    }
    const byFirst = requests.map(eventsOf).sort((x, y) => Number(BigInt(x[0]?.sequence ?? 0) - BigInt(y[0]?.sequence ?? 0)));
    expect(byFirst.map((b) => b.length), "events per request").toEqual([3, 3, 1]);
    expect(byFirst.flat().map((e) => e.id)).toEqual(published.map((p) => p.id));

    const ds = await settledDeliveries(hook.id, 7);
    expect(ds.every((d) => d.status === DeliveryStatus.SUCCEEDED), "every delivery SUCCEEDED").toBe(true);
    expect(ds.map((d) => d.eventId).sort()).toEqual(published.map((p) => p.id).sort());

    // The 1-event request waits max_wait after its event was routed (the delivery's create_time);
    // the full batches need not wait.
    const partial = requests.find((r) => eventsOf(r).length === 1)!;
    const routedAt = timestampDate(ds.find((d) => d.eventId === eventsOf(partial)[0]!.id)!.createTime!).getTime();
    const timeline = `arrivals ${requests.map((r) => `${r.at - routedAt} ms (${eventsOf(r).length} events)`).join(", ")} after routing`;
    expect.soft(partial, `the 1-event request arrives last; ${timeline}`).toBe(requests[2]);
    expect.soft(partial.at - routedAt, `the 1-event request waits for max_wait (300 ms); ${timeline}`).toBeGreaterThanOrEqual(295);
  });

  it("4. ordered mode delivers in sequence order while the first event is retried", async () => {
    const run = tag("ordered");
    const eventIds = Array.from({ length: 5 }, (_, i) => `${run}-evt-${i}`);
    /** A receiver failing the first two requests of the first event, recording what it answered. */
    const failingFirst = () => {
      const answers: Array<{ id: string; status: number }> = [];
      let failures = 0;
      const responder: Responder = (req): Answer => {
        const status = req.json?.id === eventIds[0] && failures < 2 ? (failures++, 500) : 200;
        answers.push({ id: req.json?.id, status });
        return { status };
      };
      return { answers, responder };
    };
    const ordered = failingFirst();
    const unordered = failingFirst();
    const rxOrdered = await receiver(ordered.responder);
    const rxUnordered = await receiver(unordered.responder);
    await createHook({ url: rxOrdered.url, patterns: ["memory.created"], attributes: { run }, ordered: true, retryPolicy: fastRetries(10, 100) });
    await createHook({ url: rxUnordered.url, patterns: ["memory.created"], attributes: { run }, retryPolicy: fastRetries(10, 400) });

    await publishBatch(eventIds.map((id, i) => ({ ...memory(run, `o${i}`), id })));
    await rxOrdered.waitFor(7);
    await rxUnordered.waitFor(7);
    await sleep(300);

    // Ordered: event k+1 is first seen only after event k got its 200.
    expect(ordered.answers.map((a) => `${a.id}:${a.status}`)).toEqual([
      `${eventIds[0]}:500`, `${eventIds[0]}:500`, ...eventIds.map((id) => `${id}:200`),
    ]);
    for (let k = 0; k + 1 < eventIds.length; k++) {
      const ok = ordered.answers.findIndex((a) => a.id === eventIds[k] && a.status === 200);
      const next = ordered.answers.findIndex((a) => a.id === eventIds[k + 1]);
      expect(ok, `event ${k} succeeded`).toBeGreaterThanOrEqual(0);
      expect(next, `event ${k + 1} waited for event ${k}`).toBeGreaterThan(ok);
    }
    expect(ordered.answers.filter((a) => a.status === 200).map((a) => a.id)).toEqual(eventIds);

    // Not ordered: the later events do not wait for the first one's retries.
    const firstOk = unordered.answers.findIndex((a) => a.id === eventIds[0] && a.status === 200);
    const laterBefore = unordered.answers.slice(0, firstOk).filter((a) => a.id !== eventIds[0]);
    expect(firstOk).toBeGreaterThan(0);
    expect(laterBefore.length, "later events delivered while the first was retrying").toBe(4);
    expect(unordered.answers.filter((a) => a.status === 200).map((a) => a.id).sort()).toEqual([...eventIds].sort());
  });

  it("5. rate-limits one endpoint without slowing another", async () => {
    const run = tag("rate");
    const rxLimited = await receiver();
    const rxFree = await receiver();
    await createHook({ url: rxLimited.url, patterns: ["memory.created"], attributes: { run }, rateLimit: 5 });
    await createHook({ url: rxFree.url, patterns: ["memory.created"], attributes: { run } });

    const started = Date.now();
    const published = await publishBatch(Array.from({ length: 15 }, (_, i) => memory(run, `r${i}`)));
    const free = await rxFree.waitFor(15);
    const limited = await rxLimited.waitFor(15, 20_000);
    await sleep(200);
    expect(rxLimited.requests).toHaveLength(15);
    expect(rxFree.requests).toHaveLength(15);
    expect(idsOf(limited).sort()).toEqual(published.map((p) => p.id).sort());
    expect(idsOf(free).sort()).toEqual(published.map((p) => p.id).sort());

    const span = limited[14]!.at - limited[0]!.at;
    expect(span, "a burst of at most 5, then 5 per second").toBeGreaterThanOrEqual(1_600);
    expect(span, "but not much slower than 5 per second").toBeLessThan(4_500);
    // The unlimited endpoint got everything long before the limited one was done.
    const freeDone = free[14]!.at;
    expect(freeDone).toBeLessThan(limited[14]!.at);
    expect(freeDone - started, "the unlimited endpoint is not held back").toBeLessThan(1_600);
  });

  it("6. rotates the secret with a grace period, then without", async () => {
    const run = tag("rotate");
    const rx = await receiver();
    const hook = await createHook({ url: rx.url, patterns: ["memory.created"], attributes: { run } });
    const first = hook.secret;

    const before = Date.now();
    const rotated = await api.rotateWebhookSecret({ id: hook.id, gracePeriod: durationFromMs(60_000) });
    const second = rotated.webhook!.secret;
    expect(second).toMatch(/^whsec_/);
    expect(second).not.toBe(first);
    expect(rotated.webhook!.id).toBe(hook.id);
    const expires = timestampDate(rotated.previousSecretExpireTime!).getTime();
    expect(expires).toBeGreaterThanOrEqual(before + 60_000 - 1_000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 60_000 + 1_000);
    expect((await api.getWebhook({ id: hook.id })).webhook!.secret).toBe("");

    await publish(memory(run, "rot-1"));
    const [during] = await rx.waitFor(1);
    expect(v1Signatures(during!)).toHaveLength(2);
    expectSignedWith(during!, first);
    expectSignedWith(during!, second);

    const rotatedAgain = await api.rotateWebhookSecret({ id: hook.id, gracePeriod: durationFromMs(0) });
    const third = rotatedAgain.webhook!.secret;
    expect(third).toMatch(/^whsec_/);
    expect([first, second]).not.toContain(third);
    expect(timestampDate(rotatedAgain.previousSecretExpireTime!).getTime()).toBeLessThanOrEqual(Date.now() + 1_000);

    await publish(memory(run, "rot-2"));
    const after = (await rx.waitFor(2))[1]!;
    expect(after.json.data.memory_id).toBe("rot-2");
    expect(v1Signatures(after)).toHaveLength(1);
    expectSignedWith(after, third);
    expectNotSignedWith(after, second);
    expectNotSignedWith(after, first);
  });

  it("6b. stops signing with the previous secret once its grace period ends, with no change to the endpoint in between", async () => {
    const run = tag("grace-ends");
    const rx = await receiver();
    const hook = await createHook({ url: rx.url, patterns: ["memory.created"], attributes: { run } });
    const rotated = await api.rotateWebhookSecret({ id: hook.id, gracePeriod: durationFromMs(1_500) });
    const expires = timestampDate(rotated.previousSecretExpireTime!).getTime();

    await publish(memory(run, "grace-1"));
    const [during] = await rx.waitFor(1);
    expect(v1Signatures(during!)).toHaveLength(2);
    expectSignedWith(during!, hook.secret);

    // Nothing about the endpoint changes in between: only the time.
    await new Promise((r) => setTimeout(r, Math.max(0, expires - Date.now()) + 100));
    await publish(memory(run, "grace-2"));
    const after = (await rx.waitFor(2))[1]!;
    expect(after.json.data.memory_id).toBe("grace-2");
    expect(v1Signatures(after)).toHaveLength(1);
    expectSignedWith(after, rotated.webhook!.secret);
    expectNotSignedWith(after, hook.secret);
  });

  it("7. sends CloudEvents in structured and binary mode, signed", async () => {
    const run = tag("ce");
    const rxStructured = await receiver();
    const rxBinary = await receiver();
    const structured = await createHook({ url: rxStructured.url, patterns: ["risk.alert"], attributes: { run }, contentMode: ContentMode.CLOUDEVENTS_STRUCTURED });
    const binary = await createHook({ url: rxBinary.url, patterns: ["risk.alert"], attributes: { run }, contentMode: ContentMode.CLOUDEVENTS_BINARY });

    const payload = { alert_id: "ce-1", risk_type: "security", severity: "high", title: "alert ce-1", risk_score: 0.85, affected_resources: ["db-1"] };
    const pub = await publish({ type: "risk.alert", source: "/pm/scanner", attributes: { run }, data: payload });

    const [s] = await rxStructured.waitFor(1);
    expect(s!.headers["content-type"]).toMatch(/^application\/cloudevents\+json/);
    expect(s!.json).toMatchObject({ specversion: "1.0", id: pub.id, source: "/pm/scanner", type: "risk.alert", data: payload });
    expect(Math.abs(Date.parse(s!.json.time) - parseTime(pub.time))).toBeLessThanOrEqual(1);
    expectSignedWith(s!, structured.secret);
    expect(s!.headers["webhook-id"]).toBe(pub.id);

    const [bin] = await rxBinary.waitFor(1);
    expect(bin!.headers["ce-id"]).toBe(pub.id);
    expect(bin!.headers["ce-type"]).toBe("risk.alert");
    expect(bin!.headers["ce-source"]).toBe("/pm/scanner");
    expect(bin!.headers["ce-specversion"]).toBe("1.0");
    expect(bin!.headers["ce-time"]).toBeDefined();
    expect(bin!.headers["content-type"]).toMatch(/^application\/json/);
    expect(bin!.json).toEqual(payload);
    expectSignedWith(bin!, binary.secret);
    expectNotSignedWith(bin!, structured.secret);
  });

  it("8. TestWebhook sends a signed ping and reports the answer", async () => {
    const rxOk = await receiver(() => ({ status: 200, body: "pong from receiver", delayMs: 50 }));
    const rxBad = await receiver(() => ({ status: 500, body: "receiver exploded" }));
    const ok = await createHook({ url: rxOk.url, patterns: ["memory.created"], attributes: { run: tag("ping") } });
    const bad = await createHook({ url: rxBad.url, patterns: ["memory.created"], attributes: { run: tag("ping") } });

    const res = await api.testWebhook({ id: ok.id });
    expect(res.success).toBe(true);
    expect(res.attempt?.statusCode).toBe(200);
    expect(res.attempt?.duration).toBeDefined();
    expect(durationMs(res.attempt!.duration!)).toBeGreaterThanOrEqual(40);
    expect(res.attempt?.responseExcerpt).toBe("pong from receiver");
    expect(res.attempt?.error).toBe("");
    expect(rxOk.requests).toHaveLength(1);
    const ping = rxOk.requests[0]!;
    expect(ping.json.type).toBe("tidings.ping");
    expect(ping.headers["webhook-id"]).toBe(ping.json.id);
    expectSignedWith(ping, ok.secret);

    const failed = await api.testWebhook({ id: bad.id });
    expect(failed.success).toBe(false);
    expect(failed.attempt?.statusCode).toBe(500);
    expect(failed.attempt?.responseExcerpt).toBe("receiver exploded");
    expect(rxBad.requests).toHaveLength(1);
    expectSignedWith(rxBad.requests[0]!, bad.secret);

    // A ping is not a delivery.
    expect(await allDeliveries(ok.id)).toHaveLength(0);
  });

  it("9. publishes tidings.webhook.* operational events, which can themselves be webhooked", async () => {
    const rxOps = await receiver();
    const watcher = await createHook({ url: rxOps.url, patterns: ["tidings.**"] });
    const rxOther = await receiver();
    const other = (await api.createWebhook({ webhook: { url: rxOther.url, description: "ops test", patterns: ["memory.*"], attributes: { run: tag("ops") } } })).webhook!;
    let deleted = false;
    cleanups.push(async () => { if (!deleted) await api.deleteWebhook({ id: other.id }); });

    await api.updateWebhook({ webhook: { id: other.id, description: "ops test, renamed" }, updateMask: { paths: ["description"] } });
    await api.deleteWebhook({ id: other.id });
    deleted = true;

    const ops = await eventually(async () => {
      const res = await callJson(t.url, "ListEvents", { patterns: ["tidings.webhook.*"], filter: `data.webhook_id == "${other.id}"` });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const events = (res.body.events ?? []) as Array<{ type: string; source: string; data: Record<string, any> }>;
      return events.length >= 3 ? events : undefined;
    }, 10_000, "three operational events");
    expect(ops.map((e) => e.type)).toEqual(["tidings.webhook.created", "tidings.webhook.updated", "tidings.webhook.deleted"]);
    expect(ops.every((e) => e.data.webhook_id === other.id)).toBe(true);
    expect(ops[0]!.data).toMatchObject({ url: rxOther.url, description: "ops test", event_types: ["memory.*"] });
    expect(ops[1]!.data).toMatchObject({ description: "ops test, renamed", changed_fields: ["description"] });

    const created = await eventually(
      () => rxOps.requests.find((r) => r.json?.type === "tidings.webhook.created" && r.json?.data?.webhook_id === other.id),
      10_000,
      "the created event at the tidings.** webhook",
    );
    expectSignedWith(created, watcher.secret);
    expect(created.json.source).toBe(ops[0]!.source);
  });

  it("10. GetWebhookStats after 3 successes and 1 dead letter", async () => {
    const run = tag("stats");
    const rx = await receiver((req) => ({ status: req.json?.data?.memory_id === "bad" ? 500 : 200 }));
    const started = Date.now();
    const hook = await createHook({ url: rx.url, patterns: ["memory.created"], attributes: { run }, retryPolicy: fastRetries(2, 50) });
    await publishBatch(["ok-1", "bad", "ok-2", "ok-3"].map((id) => memory(run, id)));
    await settledDeliveries(hook.id, 4);

    const stats = await api.getWebhookStats({ id: hook.id });
    expect(stats.succeeded).toBe(3n);
    expect(stats.dead).toBe(1n);
    expect(stats.pending).toBe(0n);
    expect(stats.attempts).toBe(5n); // 3 successes, 2 failed attempts of the dead one
    expect(stats.successRate).toBeCloseTo(3 / 5, 5);
    for (const p of [stats.latencyP50, stats.latencyP90, stats.latencyP99]) {
      expect(p).toBeDefined();
      expect(durationMs(p!)).toBeGreaterThanOrEqual(0);
    }
    expect(durationMs(stats.latencyP50!)).toBeLessThanOrEqual(durationMs(stats.latencyP90!));
    expect(durationMs(stats.latencyP90!)).toBeLessThanOrEqual(durationMs(stats.latencyP99!));
    for (const time of [stats.lastSuccessTime, stats.lastFailureTime]) {
      expect(time).toBeDefined();
      const ms = timestampDate(time!).getTime();
      expect(ms).toBeGreaterThanOrEqual(started - 1_000);
      expect(ms).toBeLessThanOrEqual(Date.now() + 1_000);
    }
    // The window bounds the attempts, the successes (recorded on their deliveries' rows) and the
    // failures (attempt rows) alike; the counts of deliveries are not windowed.
    const lastAttempt = Math.max(...(await Promise.all((await api.listDeliveries({ webhookId: hook.id })).deliveries.map(async (d) =>
      Math.max(...(await api.getDelivery({ id: d.id })).attempts.map((a) => timestampDate(a.time!).getTime()))))));
    await new Promise((r) => setTimeout(r, 100));
    const windowMs = Date.now() - lastAttempt - 50;
    const recent = await api.getWebhookStats({ id: hook.id, window: durationFromMs(windowMs) });
    expect(recent).toMatchObject({ succeeded: 3n, dead: 1n, attempts: 0n, successRate: 0 });
  });

  it("11. ListDeliveries filters by webhook, status, event and time, and pages", async () => {
    const run = tag("list");
    const rx = await receiver((req) => ({ status: String(req.json?.data?.memory_id).startsWith("fail") ? 500 : 200 }));
    const hook = await createHook({ url: rx.url, patterns: ["memory.created"], attributes: { run }, retryPolicy: { maxAttempts: 1 } });

    const early = await publishBatch(["ok-1", "fail-2", "ok-3"].map((id) => memory(run, id)));
    await settledDeliveries(hook.id, 3);
    await sleep(100);
    const boundary = new Date();
    await sleep(100);
    const late = await publishBatch(["fail-4", "ok-5"].map((id) => memory(run, id)));
    const all = await settledDeliveries(hook.id, 5);
    const ids = (ps: Published[]) => ps.map((p) => p.id).sort();
    const eventIds = (ds: readonly Delivery[]) => ds.map((d) => d.eventId).sort();

    expect(eventIds(all)).toEqual(ids([...early, ...late]));
    expect(all.every((d) => d.webhookId === hook.id)).toBe(true);

    const succeeded = await api.listDeliveries({ webhookId: hook.id, status: DeliveryStatus.SUCCEEDED });
    expect(eventIds(succeeded.deliveries)).toEqual(ids([early[0]!, early[2]!, late[1]!]));
    const dead = await api.listDeliveries({ webhookId: hook.id, status: DeliveryStatus.DEAD });
    expect(eventIds(dead.deliveries)).toEqual(ids([early[1]!, late[0]!]));
    expect(dead.deliveries.every((d) => d.status === DeliveryStatus.DEAD && d.lastStatusCode === 500 && d.attempts === 1)).toBe(true);
    expect((await api.listDeliveries({ webhookId: hook.id, status: DeliveryStatus.PENDING })).deliveries).toHaveLength(0);

    const byEvent = await api.listDeliveries({ eventId: late[1]!.id });
    expect(byEvent.deliveries).toHaveLength(1);
    expect(byEvent.deliveries[0]).toMatchObject({ webhookId: hook.id, eventId: late[1]!.id, status: DeliveryStatus.SUCCEEDED });

    const since = await api.listDeliveries({ webhookId: hook.id, startTime: timestampFromDate(boundary) });
    expect(eventIds(since.deliveries)).toEqual(ids(late));
    const until = await api.listDeliveries({ webhookId: hook.id, endTime: timestampFromDate(boundary) });
    expect(eventIds(until.deliveries)).toEqual(ids(early));
    const deadSince = await api.listDeliveries({ webhookId: hook.id, status: DeliveryStatus.DEAD, startTime: timestampFromDate(boundary) });
    expect(eventIds(deadSince.deliveries)).toEqual([late[0]!.id]);
    const window = await api.listDeliveries({ webhookId: hook.id, startTime: timestampFromDate(new Date(boundary.getTime() - 60_000)), endTime: timestampFromDate(boundary) });
    expect(eventIds(window.deliveries)).toEqual(ids(early));

    // Pages of 2 walk through all 5, newest first, with no duplicates.
    const pages: Delivery[][] = [];
    let pageToken = "";
    do {
      const page = await api.listDeliveries({ webhookId: hook.id, pageSize: 2, pageToken });
      pages.push(page.deliveries);
      pageToken = page.nextPageToken;
      expect(pages.length).toBeLessThan(10);
    } while (pageToken);
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    const walked = pages.flat();
    expect(new Set(walked.map((d) => d.id)).size).toBe(5);
    expect(eventIds(walked)).toEqual(eventIds(all));
    const created = walked.map((d) => timestampDate(d.createTime!).getTime());
    expect(created).toEqual([...created].sort((x, y) => y - x));
  });

  it("12. DeleteWebhook drops pending deliveries and stops requests", async () => {
    const run = tag("delete");
    const rxFailing = await receiver(() => ({ status: 500 }));
    const rxHanging = await receiver(() => ({ hang: true }));
    const failing = (await api.createWebhook({ webhook: { url: rxFailing.url, patterns: ["memory.created"], attributes: { run }, retryPolicy: fastRetries(50, 100) } })).webhook!;
    const hanging = (await api.createWebhook({ webhook: { url: rxHanging.url, patterns: ["memory.created"], attributes: { run }, retryPolicy: fastRetries(50, 100), timeout: durationFromMs(300) } })).webhook!;
    cleanups.push(() => api.deleteWebhook({ id: failing.id }), () => api.deleteWebhook({ id: hanging.id }));

    await publishBatch(["d1", "d2", "d3"].map((id) => memory(run, id)));
    await rxFailing.waitFor(6); // some retries under way
    await rxHanging.waitFor(3);
    const pending = await allDeliveries(failing.id);
    expect(pending).toHaveLength(3);
    expect(pending.every((d) => d.status === DeliveryStatus.PENDING)).toBe(true);
    // The hanging ones show once their rows are written: at their timeout, or after --delivery-unwritten-ms.
    await eventually(async () => ((await allDeliveries(hanging.id)).length === 3 ? true : undefined), 5_000, "the hanging deliveries to show");

    await api.deleteWebhook({ id: failing.id });
    await api.deleteWebhook({ id: hanging.id });
    expect(await allDeliveries(failing.id)).toHaveLength(0);
    expect(await allDeliveries(hanging.id)).toHaveLength(0);
    const gone = await api.getDelivery({ id: pending[0]!.id }).then(() => undefined, (err: unknown) => ConnectError.from(err).code);
    expect(gone).toBe(Code.NotFound);

    await sleep(400); // requests already on the wire may still land (the hanging ones time out)
    const failingSeen = rxFailing.requests.length;
    const hangingSeen = rxHanging.requests.length;
    await sleep(1_500);
    expect(rxFailing.requests.length, "no requests after DeleteWebhook").toBe(failingSeen);
    expect(rxHanging.requests.length, "no requests after DeleteWebhook").toBe(hangingSeen);
  });

  it("13. delivers one event to 100 endpoints, each signed with its own secret", async () => {
    const run = tag("fanout");
    const rx = await receiver();
    const secrets = new Map<string, string>();
    for (let chunk = 0; chunk < 100; chunk += 20) {
      const hooks = await Promise.all(Array.from({ length: 20 }, (_, j) =>
        createHook({ url: `${rx.url}?n=${chunk + j}`, patterns: ["risk.alert"], attributes: { run } })));
      hooks.forEach((h, j) => secrets.set(String(chunk + j), h.secret));
    }
    expect(new Set(secrets.values()).size).toBe(100);

    const pub = await publish(alert(run, "fan-1", "critical"));
    const requests = await rx.waitFor(100, 30_000);
    await sleep(300);
    expect(rx.requests).toHaveLength(100);
    const seen = new Set<string>();
    for (const r of requests) {
      const n = new URL(r.path, "http://x").searchParams.get("n")!;
      expect(secrets.has(n), `path ${r.path}`).toBe(true);
      seen.add(n);
      expect(r.headers["webhook-id"]).toBe(pub.id);
      expect(r.json.id).toBe(pub.id);
      expectSignedWith(r, secrets.get(n)!);
      expect(standardAccepts(r, secrets.get(String((Number(n) + 1) % 100))!)).toBe(false);
    }
    expect(seen.size).toBe(100);
  });
});

describe("deliveries leased as they are routed", () => {
  it("14. a node that stops gives back the deliveries it leased but had not started; a restart sends them at once", async () => {
    // One request slot: the router leases a few deliveries to the node (one sent, the rest
    // waiting for the slot) and leaves the rest for the claim. The first request hangs, so the
    // node stops with leased deliveries it never started; they must not wait for their leases
    // (15 s timeout + 30 s margin) to run out.
    const node = await startTestServer({ config: { dispatcherMaxInFlight: 1, dispatcherMaxInFlightPerEndpoint: 1 } });
    const stopped = { done: false };
    try {
      const rx = await receiver((_req, index) => (index === 0 ? { hang: true } : { status: 200 }));
      const hooks = node.webhooks();
      const { webhook } = await hooks.createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"] } });
      const run = tag("release");
      const res = await callJson(node.url, "PublishBatch", { entries: Array.from({ length: 6 }, (_, i) => ({ event: memory(run, `r-${i}`) })) });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const ids = (res.body.results as Published[]).map((p) => p.id);
      await rx.waitFor(1);
      await sleep(300);
      expect(rx.requests, "one slot: nothing else starts while the first request hangs").toHaveLength(1);

      await node.stop(); // waits its 500 ms grace for the hanging request, then abandons it
      stopped.done = true;
      await node.restart();
      stopped.done = false;
      const started = Date.now();
      await rx.waitFor(6, 5_000);
      expect(Date.now() - started, "released deliveries are sent without waiting for a lease").toBeLessThan(5_000);
      const sent = rx.requests.map((r) => String(r.headers["webhook-id"]));
      expect(new Set(sent)).toEqual(new Set(ids));
      // Every delivery but the abandoned one succeeded at its first attempt: a released lease
      // takes its attempt back.
      const deliveries = await eventually(async () => {
        const page = await node.webhooks().listDeliveries({ webhookId: webhook!.id, pageSize: 10 });
        return page.deliveries.filter((d) => d.status === DeliveryStatus.SUCCEEDED).length === 5 ? page.deliveries : undefined;
      }, 5_000, "five succeeded deliveries");
      const succeeded = deliveries.filter((d) => d.status === DeliveryStatus.SUCCEEDED);
      expect(succeeded.map((d) => d.attempts)).toEqual([1, 1, 1, 1, 1]);
      const abandoned = deliveries.filter((d) => d.status === DeliveryStatus.PENDING);
      expect(abandoned).toHaveLength(1);
      expect(abandoned[0]!.eventId).toBe(rx.requests[0]!.headers["webhook-id"]);
    } finally {
      if (!stopped.done) await node.stop();
      await node.storage.drop();
    }
  });
  it("15. a leased delivery that waits past half its lease margin for a slot is given back and sent with a fresh lease, its attempt not counted twice", async () => {
    // One request slot, a receiver that takes 250 ms, and a lease margin of 400 ms: a delivery
    // may wait at most 200 ms in the node's queue before its lease is too short to start.
    const node = await startTestServer({ config: { dispatcherMaxInFlight: 1, dispatcherMaxInFlightPerEndpoint: 1, deliveryLeaseMarginMs: 400 } });
    try {
      const rx = await receiver(() => ({ status: 200, delayMs: 250 }));
      const { webhook } = await node.webhooks().createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"] } });
      const run = tag("late");
      const res = await callJson(node.url, "PublishBatch", { entries: Array.from({ length: 4 }, (_, i) => ({ event: memory(run, `l-${i}`) })) });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const ids = (res.body.results as Published[]).map((p) => p.id);
      await rx.waitFor(4, 15_000);
      const deliveries = await eventually(async () => {
        const page = await node.webhooks().listDeliveries({ webhookId: webhook!.id, pageSize: 10 });
        return page.deliveries.length === 4 && page.deliveries.every((d) => d.status === DeliveryStatus.SUCCEEDED) ? page.deliveries : undefined;
      }, 15_000, "four succeeded deliveries");
      expect(new Set(rx.requests.map((r) => String(r.headers["webhook-id"])))).toEqual(new Set(ids));
      expect(rx.requests).toHaveLength(4); // each sent once
      expect(deliveries.map((d) => d.attempts)).toEqual([1, 1, 1, 1]);
      for (const d of deliveries) {
        const { attempts } = await node.webhooks().getDelivery({ id: d.id });
        expect(attempts.map((a) => a.statusCode)).toEqual([200]);
      }
    } finally {
      await node.close();
    }
  });
  it("16. with ten endpoints, routing makes about as many deliveries as the node has room for, so most are sent without a claim", async () => {
    // Room for 64 deliveries (16 slots × 4). A routing pass that read as many events as there is
    // room for made ten deliveries an event, and left nine in ten to a claim, which writes each
    // delivery again and reads its event back.
    const node = await startTestServer({ config: { dispatcherMaxInFlight: 16, dispatcherMaxInFlightPerEndpoint: 16 } });
    try {
      const rx = await receiver();
      const run = tag("fan10");
      const hooks = node.webhooks();
      const ids: string[] = [];
      for (let n = 0; n < 10; n++) {
        const { webhook } = await hooks.createWebhook({ webhook: { url: `${rx.url}?n=${n}`, patterns: ["memory.created"], attributes: { run } } });
        ids.push(webhook!.id);
      }
      const events = 200;
      const res = await callJson(node.url, "PublishBatch", { entries: Array.from({ length: events }, (_, i) => ({ event: memory(run, `f-${i}`) })) });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      await rx.waitFor(events * 10, 30_000);
      await sleep(300);
      const pairs = new Set(rx.requests.map((r) => `${r.path} ${String(r.headers["webhook-id"])}`));
      expect(pairs.size, "every event to every endpoint").toBe(events * 10);
      expect(rx.requests).toHaveLength(events * 10);
      const stats = node.server.deliveryStats();
      expect(stats.routed).toBe(events * 10);
      // Each delivery leased once, as it was routed or by a claim (every answer was a 200).
      expect(stats.leasedAsRouted + stats.claimed).toBe(events * 10);
      expect(stats.claimed, JSON.stringify(stats)).toBeLessThan(stats.routed / 10);
      for (const id of ids) await hooks.deleteWebhook({ id });
    } finally {
      await node.close();
    }
  });
  it("17. a backlog of 5,000 events is routed from the node's memory, not read back from the database", async () => {
    // 16 slots: the router leases 64 deliveries and waits. The receiver holds every request
    // that arrives before the 5,000 events are published, so the router is thousands of events
    // behind the head. (With 2,000 kept, 1,950 were read back; relying on the log tail's window
    // instead, 960 were in one run, when a poll made the tail forget it.)
    const node = await startTestServer({ config: { dispatcherMaxInFlight: 16, dispatcherMaxInFlightPerEndpoint: 16 } });
    try {
      let published = false;
      const rx = await receiver(() => ({ status: 200, delayMs: published ? 0 : 2_000 }));
      const run = tag("backlog");
      const { webhook } = await node.webhooks().createWebhook({ webhook: { url: rx.url, patterns: ["memory.created"], attributes: { run } } });
      const ids: string[] = [];
      for (let b = 0; b < 5; b++) {
        const res = await callJson(node.url, "PublishBatch", { entries: Array.from({ length: 1000 }, (_, i) => ({ event: memory(run, `b-${b}-${i}`) })) });
        expect(res.status, JSON.stringify(res.body)).toBe(200);
        ids.push(...(res.body.results as Published[]).map((p) => p.id));
      }
      published = true;
      const routedBefore = node.server.deliveryStats().routed;
      expect(routedBefore, "the router waits for room while the first requests are held").toBeLessThan(1000);
      await rx.waitFor(5000, 60_000);
      await sleep(300);
      expect(rx.requests).toHaveLength(5000);
      expect(new Set(rx.requests.map((r) => String(r.headers["webhook-id"])))).toEqual(new Set(ids));
      const stats = node.server.deliveryStats();
      expect(stats.routed).toBe(5000);
      expect(stats.eventsReadBack, JSON.stringify(stats)).toBe(0);
      await node.webhooks().deleteWebhook({ id: webhook!.id });
    } finally {
      await node.close();
    }
  });
});
