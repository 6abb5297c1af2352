import { createHmac, timingSafeEqual } from "node:crypto";
import type http from "node:http";
import type http2 from "node:http2";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { readRawBody, RequestBodyTooLargeError, verifyWebhook, WebhookVerificationError } from "../../sdk/webhooks/verify.js";
import { EventSchema } from "../../gen/tidings/v1/event_pb.js";
import type { EventCatalog } from "../catalog/catalog.js";
import type { FieldViolation } from "../catalog/payload-validation.js";
import { type AppendQueue, AppendConflictError } from "../event-log/append-queue.js";
import type { Logger } from "../logging/logger.js";
import { callerOf } from "../auth/access-gate.js";
import type { CallerInfo } from "../auth/security-reporter.js";
import { prepareEvent, withFreshCatalog } from "../rpc/event-envelope.js";
import { requestPath } from "../transport/request-path.js";

export interface IngestOptions {
  /** Shared secret per source name: a `whsec_` secret (Standard Webhooks) or any string (X-Webhook-Signature). */
  secrets: Record<string, string>;
  maxBodyBytes: number;
  maxPayloadBytes: number;
  catalog: EventCatalog;
  appendQueue: AppendQueue;
  logger: Logger;
  /** A request whose signature does not verify: reported like any failed authentication. */
  refused?(caller: CallerInfo): void;
}

const routePattern = /^\/ingest\/([A-Za-z0-9_.-]{1,64})\/?$/;

/**
 * Incoming webhooks (the Personal Manager seed): `POST /ingest/{source}` verifies the
 * request's signature with the source's shared secret and publishes the body as an event of
 * source "ingest/{source}". Accepted signatures: Standard Webhooks headers (webhook-id,
 * webhook-timestamp, webhook-signature) for a `whsec_` secret, or `X-Webhook-Signature:
 * sha256=<hex HMAC-SHA256 of the body>`. The body is {"type" (or "event_type"), "data", and
 * optionally "id" (or "event_id"), "subject", "time", "attributes"}.
 *
 * Returns undefined when the URL is not an ingest route.
 */
export function ingestHandler(options: IngestOptions) {
  return (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): boolean => {
    const match = routePattern.exec(requestPath(req));
    if (!match) return false;
    void handle(match[1]!, req as http.IncomingMessage, res as http.ServerResponse, options);
    return true;
  };
}

async function handle(source: string, req: http.IncomingMessage, res: http.ServerResponse, o: IngestOptions): Promise<void> {
  const reply = (status: number, body: object) => {
    if (res.headersSent) return;
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };
  try {
    if (req.method !== "POST") return reply(405, { code: "method_not_allowed", message: "use POST" });
    const secret = o.secrets[source];
    if (!secret) return reply(404, { code: "not_found", message: `no ingest source "${source}" is configured` });
    const body = await readRawBody(req, { limitBytes: o.maxBodyBytes });
    const problem = signatureProblem(body, req.headers, secret);
    if (problem) {
      o.refused?.(callerOf(req, `POST /ingest/${source}`));
      return reply(401, { code: "unauthenticated", message: problem });
    }
    let json: unknown;
    try {
      json = JSON.parse(body.toString("utf8"));
    } catch {
      return reply(400, { code: "invalid_argument", message: "the body is not JSON" });
    }
    const event = toEvent(json, source);
    if ("violations" in event) return reply(400, violationBody(event.violations));
    const prepared = await withFreshCatalog(o.catalog, () => prepareEvent(event.value, "", "body", o.catalog, o.maxPayloadBytes, "idempotency_key"));
    if (!prepared.ok) return reply(prepared.tooLarge ? 413 : 400, violationBody(prepared.violations));
    const [result] = await o.appendQueue.append([prepared.event]);
    reply(200, { id: result!.id, sequence: result!.sequence.toString(), time: result!.time.toISOString() });
  } catch (err) {
    if (err instanceof RequestBodyTooLargeError) return reply(413, { code: "resource_exhausted", message: `the body is larger than ${err.limitBytes} bytes` });
    if (err instanceof AppendConflictError) return reply(409, { code: "already_exists", message: err.message });
    o.logger.warn("ingest failed", { source, err });
    reply(503, { code: "unavailable", message: "could not store the event; retry" });
  }
}

function signatureProblem(body: Buffer, headers: http.IncomingHttpHeaders, secret: string): string | undefined {
  if (headers["webhook-signature"] !== undefined) {
    if (!secret.startsWith("whsec_")) return "this source takes X-Webhook-Signature, not Standard Webhooks headers";
    try {
      verifyWebhook(body, headers, secret);
      return undefined;
    } catch (err) {
      if (err instanceof WebhookVerificationError) return `signature refused: ${err.reason}: ${err.message}`;
      throw err;
    }
  }
  // A whsec_ source takes Standard Webhooks only: X-Webhook-Signature carries no timestamp, so
  // accepting it would let a replayed request through.
  const given = headers["x-webhook-signature"];
  if (secret.startsWith("whsec_")) {
    return given === undefined
      ? "missing signature: this source takes Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature)"
      : "this source takes Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature), not X-Webhook-Signature";
  }
  if (typeof given !== "string") return "missing signature: send X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the body>";
  const expected = `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
  const a = Buffer.from(given.trim());
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b) ? undefined : "signature refused: X-Webhook-Signature does not match the body";
}

/** Maps the body onto an Event; accepts both Tidings' names and the Personal Manager seed's. */
function toEvent(json: unknown, source: string): { value: ReturnType<typeof create<typeof EventSchema>> } | { violations: FieldViolation[] } {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return { violations: [{ field: "body", description: "must be a JSON object" }] };
  const b = json as Record<string, unknown>;
  const violations: FieldViolation[] = [];
  const str = (key: string, ...alts: string[]) => {
    for (const k of [key, ...alts]) {
      const v = b[k];
      if (v === undefined || v === null) continue;
      if (typeof v !== "string") violations.push({ field: `body.${k}`, description: "must be a string" });
      else return v;
    }
    return "";
  };
  const type = str("type", "event_type");
  const id = str("id", "event_id");
  const subject = str("subject");
  const timeRaw = b.time ?? b.timestamp;
  let time: Date | undefined;
  if (typeof timeRaw === "string") time = new Date(timeRaw);
  else if (typeof timeRaw === "number") time = new Date(timeRaw * 1000); // the seed sends unix seconds
  if (time && Number.isNaN(time.getTime())) violations.push({ field: "body.time", description: "must be an RFC 3339 time or unix seconds" });
  const attributes = b.attributes ?? {};
  if (typeof attributes !== "object" || attributes === null || Array.isArray(attributes) || Object.values(attributes).some((v) => typeof v !== "string")) {
    violations.push({ field: "body.attributes", description: "must be an object of strings" });
  }
  const data = b.data;
  if (data !== undefined && (typeof data !== "object" || data === null || Array.isArray(data))) violations.push({ field: "body.data", description: "must be a JSON object" });
  if (violations.length > 0) return { violations };
  return {
    value: create(EventSchema, {
      id,
      type,
      source: `ingest/${source}`,
      subject,
      time: time ? timestampFromDate(time) : undefined,
      attributes: attributes as Record<string, string>,
      payload: data === undefined ? { case: undefined } : { case: "data", value: data as JsonObject },
    }),
  };
}

function violationBody(violations: readonly FieldViolation[]) {
  return {
    code: "invalid_argument",
    message: violations.map((v) => `${v.field}: ${v.description}`).join("; "),
    details: violations,
  };
}
