import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import express from "express";
import { Webhook } from "standardwebhooks";
import { generateWebhookSecret, isWebhookSecret, signWebhook } from "../server/webhooks/signing.js";
import {
  readRawBody,
  RequestBodyTooLargeError,
  verifyWebhook,
  verifyWebhookRequest,
  WebhookVerificationError,
  type WebhookVerificationFailure,
} from "../sdk/webhooks/verify.js";

const secret = generateWebhookSecret();
const body = JSON.stringify({
  id: "evt-1",
  type: "memory.created",
  timestamp: "2026-01-28T12:00:00Z",
  source: "alma/test",
  data: { memory_id: "m-1", tier: "hot" },
  sequence: "42",
});
const nowSeconds = (): number => Math.floor(Date.now() / 1000);
const signNow = (secrets: readonly string[] = [secret], payload: string | Uint8Array = body) =>
  signWebhook({ id: "msg_2Lh9", timestamp: nowSeconds(), body: payload, secrets });

/** The reason a verification failed, or undefined if it passed. */
function failureOf(verify: () => unknown): WebhookVerificationFailure | undefined {
  try {
    verify();
    return undefined;
  } catch (err) {
    if (err instanceof WebhookVerificationError) return err.reason;
    throw err;
  }
}

describe("webhook secrets", () => {
  it("generates whsec_ secrets with a 24-byte base64 key, each one different", () => {
    const a = generateWebhookSecret();
    expect(a).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
    expect(Buffer.from(a.slice(6), "base64")).toHaveLength(24);
    expect(generateWebhookSecret()).not.toBe(a);
    expect(isWebhookSecret(a)).toBe(true);
  });

  it("recognises malformed secrets", () => {
    for (const bad of ["", "whsec_", "whsec_!!!!", "sk_" + secret.slice(6), "whsec_" + Buffer.alloc(8).toString("base64"), "whsec_" + Buffer.alloc(65).toString("base64")]) {
      expect(isWebhookSecret(bad), bad).toBe(false);
    }
    expect(isWebhookSecret("whsec_" + Buffer.alloc(16).toString("base64"))).toBe(true);
    expect(isWebhookSecret("whsec_" + Buffer.alloc(64).toString("base64"))).toBe(true);
  });

  it("refuses to sign without a secret or with a malformed one", () => {
    expect(() => signWebhook({ id: "m", timestamp: nowSeconds(), body, secrets: [] })).toThrow(/at least one secret/);
    expect(() => signWebhook({ id: "m", timestamp: nowSeconds(), body, secrets: [secret, "whsec_"] })).toThrow(/secrets\[1\]/);
  });
});

describe("interoperability with the standardwebhooks package", () => {
  it("signs what the public verifier accepts", () => {
    const headers = signNow();
    expect(Object.keys(headers).sort()).toEqual(["webhook-id", "webhook-signature", "webhook-timestamp"]);
    expect(headers["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
    expect(new Webhook(secret).verify(body, headers)).toEqual(JSON.parse(body));
  });

  it("signs binary bodies the same as their text", () => {
    const headers = signNow([secret], new TextEncoder().encode(body));
    expect(new Webhook(secret).verify(Buffer.from(body), headers)).toEqual(JSON.parse(body));
  });

  it("verifies what the public signer produces", () => {
    const date = new Date();
    const signature = new Webhook(secret).sign("msg_ref", date, body);
    const headers = { "webhook-id": "msg_ref", "webhook-timestamp": String(Math.floor(date.getTime() / 1000)), "webhook-signature": signature };
    expect(verifyWebhook(body, headers, secret)).toMatchObject({ type: "memory.created", data: { memory_id: "m-1" }, sequence: "42" });
  });
});

describe("secret rotation", () => {
  const next = generateWebhookSecret();
  const stranger = generateWebhookSecret();

  it("accepts a delivery signed with old and new secrets using either secret alone", () => {
    const headers = signNow([secret, next]);
    expect(headers["webhook-signature"].split(" ")).toHaveLength(2);
    expect(verifyWebhook(body, headers, secret).type).toBe("memory.created");
    expect(verifyWebhook(body, headers, next).type).toBe("memory.created");
    expect(new Webhook(next).verify(body, headers)).toEqual(JSON.parse(body));
    expect(failureOf(() => verifyWebhook(body, headers, stranger))).toBe("bad_signature");
  });

  it("lets a receiver hold several secrets while it rotates", () => {
    expect(verifyWebhook(body, signNow([next]), [stranger, secret, next]).type).toBe("memory.created");
  });
});

describe("the timestamp window", () => {
  // A pinned clock: the window's edges must not depend on a second ticking mid-test.
  const now = new Date();
  const at = (offsetSeconds: number) =>
    signWebhook({ id: "msg_t", timestamp: Math.floor(now.getTime() / 1000) + offsetSeconds, body, secrets: [secret] });

  it("refuses deliveries older than five minutes", () => {
    expect(verifyWebhook(body, at(-300), secret, { now }).type).toBe("memory.created");
    expect(failureOf(() => verifyWebhook(body, at(-301), secret, { now }))).toBe("stale_timestamp");
  });

  it("refuses deliveries from more than five minutes ahead", () => {
    expect(verifyWebhook(body, at(300), secret, { now }).type).toBe("memory.created");
    expect(failureOf(() => verifyWebhook(body, at(301), secret, { now }))).toBe("future_timestamp");
  });

  it("honours a custom tolerance and clock", () => {
    expect(failureOf(() => verifyWebhook(body, at(-31), secret, { now, toleranceSeconds: 30 }))).toBe("stale_timestamp");
    expect(failureOf(() => verifyWebhook(body, at(31), secret, { now, toleranceSeconds: 30 }))).toBe("future_timestamp");
    expect(verifyWebhook(body, at(-3000), secret, { now, toleranceSeconds: 3600 }).type).toBe("memory.created");
    const old = signWebhook({ id: "msg_old", timestamp: 1_700_000_000, body, secrets: [secret] });
    expect(verifyWebhook(body, old, secret, { now: new Date(1_700_000_100_000) }).type).toBe("memory.created");
    expect(failureOf(() => verifyWebhook(body, old, secret))).toBe("stale_timestamp");
  });
});

describe("refusing what is not a genuine delivery", () => {
  it("refuses a tampered body and a wrong secret", () => {
    const headers = signNow();
    expect(failureOf(() => verifyWebhook(body.replace("hot", "cold"), headers, secret))).toBe("bad_signature");
    expect(failureOf(() => verifyWebhook(body, headers, generateWebhookSecret()))).toBe("bad_signature");
    expect(failureOf(() => verifyWebhook(body, { ...headers, "webhook-id": "msg_other" }, secret))).toBe("bad_signature");
  });

  it("names each missing header", () => {
    const headers = signNow();
    for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"] as const) {
      const without: Record<string, string> = { ...headers };
      delete without[name];
      expect(failureOf(() => verifyWebhook(body, without, secret)), name).toBe("missing_header");
      expect(failureOf(() => verifyWebhook(body, { ...headers, [name]: "" }, secret)), name).toBe("missing_header");
    }
  });

  it("refuses a garbage timestamp and a signature list without v1", () => {
    const headers = signNow();
    for (const timestamp of ["soon", "12.5", "-1", "1e9"]) {
      expect(failureOf(() => verifyWebhook(body, { ...headers, "webhook-timestamp": timestamp }, secret)), timestamp).toBe("malformed_header");
    }
    const v2Only = headers["webhook-signature"].replace("v1,", "v2,");
    expect(failureOf(() => verifyWebhook(body, { ...headers, "webhook-signature": v2Only }, secret))).toBe("malformed_header");
    expect(failureOf(() => verifyWebhook(body, { ...headers, "webhook-signature": "garbage" }, secret))).toBe("malformed_header");
  });

  it("skips signatures of other versions and checks the v1 ones", () => {
    const headers = signNow();
    const mixed = `v1a,${"A".repeat(86)}== ${headers["webhook-signature"]}`;
    expect(verifyWebhook(body, { ...headers, "webhook-signature": mixed }, secret).type).toBe("memory.created");
    const wrongV1 = `v1a,whatever v1,${"A".repeat(43)}=`;
    expect(failureOf(() => verifyWebhook(body, { ...headers, "webhook-signature": wrongV1 }, secret))).toBe("bad_signature");
  });

  it("fails fast on an empty or malformed secret, before looking at the delivery", () => {
    expect(failureOf(() => verifyWebhook(body, {}, []))).toBe("bad_secret");
    expect(failureOf(() => verifyWebhook(body, {}, "whsec_"))).toBe("bad_secret");
    expect(failureOf(() => verifyWebhook(body, signNow(), [secret, "not-a-secret"]))).toBe("bad_secret");
  });

  it("matches header names case-insensitively, in records and in fetch Headers", () => {
    const headers = signNow();
    const shouted = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toUpperCase(), v]));
    expect(verifyWebhook(body, shouted, secret).type).toBe("memory.created");
    const capitalised = { "Webhook-Id": headers["webhook-id"], "Webhook-Timestamp": headers["webhook-timestamp"], "Webhook-Signature": headers["webhook-signature"] };
    expect(verifyWebhook(body, new Headers(capitalised), secret).type).toBe("memory.created");
  });

  it("treats repeated signature headers as one list", () => {
    const [first, second] = signNow([generateWebhookSecret(), secret])["webhook-signature"].split(" ");
    const headers = { ...signNow(), "webhook-signature": [first!, second!] };
    expect(verifyWebhook(body, headers, secret).type).toBe("memory.created");
    const fetchHeaders = new Headers({ "webhook-id": headers["webhook-id"], "webhook-timestamp": headers["webhook-timestamp"] });
    fetchHeaders.append("webhook-signature", first!);
    fetchHeaders.append("webhook-signature", second!);
    expect(verifyWebhook(body, fetchHeaders, secret).type).toBe("memory.created");
  });

  it("parses the body only once its signature is valid", () => {
    const notJson = "this is not json";
    expect(failureOf(() => verifyWebhook(notJson, signNow([secret], notJson), secret))).toBe("malformed_body");
    expect(failureOf(() => verifyWebhook(notJson, signNow(), secret))).toBe("bad_signature");
    expect(failureOf(() => verifyWebhook("42", signNow([secret], "42"), secret))).toBe("malformed_body");
    // A CloudEvents batch is a JSON array.
    expect(verifyWebhook<unknown[]>("[1,2]", signNow([secret], "[1,2]"), secret)).toEqual([1, 2]);
  });
});

describe("real receivers on loopback", () => {
  let nodeServer: Server;
  let expressServer: Server;
  let nodeUrl: string;
  let expressUrl: string;

  beforeAll(async () => {
    nodeServer = createServer(async (req, res) => {
      try {
        const event = verifyWebhook(await readRawBody(req, { limitBytes: 64 * 1024 }), req.headers, secret);
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ received: event.type }));
      } catch (err) {
        if (err instanceof WebhookVerificationError) res.writeHead(401).end(JSON.stringify({ reason: err.reason }));
        else if (err instanceof RequestBodyTooLargeError) res.writeHead(413, { connection: "close" }).end();
        else res.writeHead(500).end();
      }
    });

    const app = express();
    app.post("/hooks", express.raw({ type: "*/*" }), (req, res) => {
      try {
        const event = verifyWebhook(req.body as Buffer, req.headers, secret);
        res.status(200).json({ received: event.type });
      } catch (err) {
        if (!(err instanceof WebhookVerificationError)) throw err;
        res.status(401).json({ reason: err.reason });
      }
    });
    expressServer = createServer(app);

    nodeUrl = await listen(nodeServer, "/hooks");
    expressUrl = await listen(expressServer, "/hooks");
  });

  afterAll(async () => {
    await Promise.all([close(nodeServer), close(expressServer)]);
  });

  const post = (url: string, payload: string, headers: Record<string, string>) =>
    fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: payload });

  for (const receiver of ["node:http", "express"] as const) {
    it(`${receiver} accepts a signed delivery and refuses a tampered one`, async () => {
      const url = receiver === "node:http" ? nodeUrl : expressUrl;
      const headers = signNow();

      const ok = await post(url, body, headers);
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ received: "memory.created" });

      const tampered = await post(url, body.replace("hot", "cold"), headers);
      expect(tampered.status).toBe(401);
      expect(await tampered.json()).toEqual({ reason: "bad_signature" });

      const unsigned = await post(url, body, {});
      expect(unsigned.status).toBe(401);
      expect(await unsigned.json()).toEqual({ reason: "missing_header" });
    });
  }

  it("node:http reads a chunked body whole, and refuses one over the limit with 413", async () => {
    const streamed = (payload: string, headers: Record<string, string>) =>
      fetch(nodeUrl, { method: "POST", headers, body: inChunks(payload, 1000), duplex: "half" } as RequestInit);
    const ok = await streamed(body, signNow());
    expect(ok.status).toBe(200);

    const big = JSON.stringify({ type: "x", data: "a".repeat(100 * 1024) });
    expect((await post(nodeUrl, big, signNow([secret], big))).status).toBe(413);
    expect((await streamed(big, signNow([secret], big))).status).toBe(413);
  });

  it("verifies a fetch Request", async () => {
    const headers = signNow();
    const request = (payload: string) => new Request("http://127.0.0.1/hooks", { method: "POST", headers, body: payload });
    expect(await verifyWebhookRequest(request(body), secret)).toMatchObject({ type: "memory.created", source: "alma/test" });
    const err = await verifyWebhookRequest(request(body.replace("hot", "cold")), [secret]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WebhookVerificationError);
    expect((err as WebhookVerificationError).reason).toBe("bad_signature");
  });
});

/** A request body without Content-Length, sent as several chunks. */
function inChunks(payload: string, size: number): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(payload);
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(offset, (offset += size)));
    },
  });
}

function listen(server: Server, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      resolve(`http://127.0.0.1:${port}${path}`);
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((err) => (err ? reject(err) : resolve()));
    server.closeAllConnections();
  });
}
