/**
 * Verifying the webhooks Tidings delivers. They are signed the Standard Webhooks way
 * (https://www.standardwebhooks.com): headers `webhook-id`, `webhook-timestamp` and
 * `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, with a
 * `whsec_<base64>` secret per endpoint and several signatures while a secret is rotated.
 *
 * Always verify the raw bytes of the body as received: a body that was parsed and re-serialised
 * no longer matches its signature.
 *
 * node:http
 * ```ts
 * import { createServer } from "node:http";
 * import { readRawBody, verifyWebhook, WebhookVerificationError } from "tidings/sdk/webhooks/verify";
 *
 * createServer(async (req, res) => {
 *   try {
 *     const event = verifyWebhook(await readRawBody(req), req.headers, process.env.TIDINGS_WEBHOOK_SECRET!);
 *     await handle(event);
 *     res.writeHead(204).end();
 *   } catch (err) {
 *     if (!(err instanceof WebhookVerificationError)) throw err;
 *     res.writeHead(401).end(err.reason);
 *   }
 * }).listen(3000);
 * ```
 *
 * Express: `express.raw()` keeps the body as a Buffer; `express.json()` would lose the raw bytes.
 * ```ts
 * app.post("/webhooks/tidings", express.raw({ type: "*\/*" }), (req, res) => {
 *   try {
 *     const event = verifyWebhook(req.body, req.headers, [currentSecret, previousSecret]);
 *     res.sendStatus(204);
 *   } catch (err) {
 *     if (err instanceof WebhookVerificationError) res.status(401).send(err.reason);
 *     else throw err;
 *   }
 * });
 * ```
 *
 * fetch-style handlers (Deno, Bun, Cloudflare Workers, Next.js route handlers, Hono):
 * ```ts
 * export async function POST(request: Request): Promise<Response> {
 *   const event = await verifyWebhookRequest(request, secret); // throws WebhookVerificationError
 *   return new Response(null, { status: 204 });
 * }
 * ```
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";

export type WebhookVerificationFailure =
  | "missing_header"
  | "malformed_header"
  | "stale_timestamp"
  | "future_timestamp"
  | "bad_signature"
  | "bad_secret"
  | "malformed_body";

/** Why a delivery was refused. Answer 4xx for it; `reason` is safe to log and to send back. */
export class WebhookVerificationError extends Error {
  override readonly name = "WebhookVerificationError";
  constructor(
    readonly reason: WebhookVerificationFailure,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The JSON body Tidings sends: the event envelope (CloudEvents names); the server may add keys. */
export interface WebhookPayload {
  id: string;
  type: string;
  timestamp: string;
  data: unknown;
  [key: string]: unknown;
}

/** One event of a CloudEvents-mode delivery (structured mode; a batch is an array of them). */
export interface CloudEventJson {
  specversion: "1.0";
  id: string;
  source: string;
  type: string;
  subject?: string;
  time: string;
  datacontenttype: string;
  data: unknown;
  [extension: string]: unknown;
}

/** A fetch `Headers`, or a plain record such as node:http's `IncomingHttpHeaders`. */
export type HeadersLike = Headers | Record<string, string | string[] | undefined>;

export interface VerifyWebhookOptions {
  /** How far the timestamp may be from `now`, either way. Default 300 s, as Standard Webhooks says. */
  toleranceSeconds?: number;
  /** The clock to check the timestamp against; defaults to the current time. */
  now?: Date;
}

const DEFAULT_TOLERANCE_SECONDS = 300;
const SECRET_PREFIX = "whsec_";
const MIN_KEY_BYTES = 16;
const MAX_KEY_BYTES = 64;
/** Canonical, padded base64: Buffer.from(..., "base64") silently skips bad characters, so check first. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const UNIX_SECONDS = /^\d{1,15}$/;

/**
 * Checks a delivery and returns its parsed body. Pass several secrets while rotating: a delivery
 * signed with any of them is accepted. Throws `WebhookVerificationError` otherwise.
 *
 * The body is a JSON object (`WebhookPayload`; a batch has `type: "tidings.batch"` and its
 * events in `data.events`), or, for endpoints in CloudEvents mode receiving a batch, a JSON
 * array: call `verifyWebhook<CloudEventJson[]>(...)` there.
 */
export function verifyWebhook<T extends object = WebhookPayload>(
  rawBody: string | Uint8Array,
  headers: HeadersLike,
  secret: string | readonly string[],
  options: VerifyWebhookOptions = {},
): T {
  const keys = decodeSecrets(secret);
  const { id, timestamp, signature } = readSignatureHeaders(headers);
  const seconds = checkTimestamp(timestamp, options);
  const candidates = v1Signatures(signature);
  const body = typeof rawBody === "string" ? Buffer.from(rawBody, "utf8") : rawBody;
  const expected = keys.map((key) => Buffer.from(sign(key, id, seconds, body), "utf8"));
  if (!candidates.some((candidate) => expected.some((mine) => constantTimeEqual(candidate, mine)))) {
    throw new WebhookVerificationError("bad_signature", "no webhook-signature matches the body with the given secret(s)");
  }
  // Parsing comes last so that unauthenticated input never reaches the JSON parser.
  return parseBody(body) as T;
}

/** `verifyWebhook` for a fetch `Request`; reads (and so consumes) its body. */
export async function verifyWebhookRequest<T extends object = WebhookPayload>(
  request: Request,
  secret: string | readonly string[],
  options?: VerifyWebhookOptions,
): Promise<T> {
  const body = new Uint8Array(await request.arrayBuffer());
  return verifyWebhook<T>(body, request.headers, secret, options);
}

/** Raised by `readRawBody` when a body exceeds its limit; answer 413. */
export class RequestBodyTooLargeError extends Error {
  override readonly name = "RequestBodyTooLargeError";
  constructor(readonly limitBytes: number) {
    super(`request body exceeds ${limitBytes} bytes`);
  }
}

/**
 * Collects the body of a node:http request as the exact bytes received. Rejects with
 * `RequestBodyTooLargeError` beyond `limitBytes` (default 1 MiB) so a hostile sender cannot fill
 * memory; the rest of that body is drained so the caller can still answer 413.
 */
export function readRawBody(req: IncomingMessage, options: { limitBytes?: number } = {}): Promise<Buffer> {
  const limitBytes = options.limitBytes ?? 1024 * 1024;
  return new Promise((resolve, reject) => {
    // A body that was already read (by a body parser, say) would otherwise never settle.
    if (req.readableEnded) return reject(new Error("readRawBody: the request body was already read"));

    const chunks: Buffer[] = [];
    let received = 0;
    const onData = (chunk: Buffer | string): void => {
      const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      received += bytes.length;
      if (received > limitBytes) return refuse(new RequestBodyTooLargeError(limitBytes));
      chunks.push(bytes);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(Buffer.concat(chunks, received));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onClose = (): void => onError(new Error("readRawBody: the request closed before its body ended"));
    function cleanup(): void {
      req.off("data", onData).off("end", onEnd).off("error", onError).off("close", onClose);
    }
    function refuse(err: RequestBodyTooLargeError): void {
      cleanup();
      req.resume();
      reject(err);
    }
    // A declared length over the limit is refused before a byte is buffered.
    if (Number(req.headers["content-length"]) > limitBytes) return refuse(new RequestBodyTooLargeError(limitBytes));
    req.on("data", onData).on("end", onEnd).on("error", onError).on("close", onClose);
  });
}

function decodeSecrets(secret: string | readonly string[]): Buffer[] {
  const secrets: readonly string[] = typeof secret === "string" ? [secret] : secret;
  // Fail fast: an empty list would otherwise surface as a baffling bad_signature on every delivery.
  if (secrets.length === 0) throw new WebhookVerificationError("bad_secret", "no webhook secret given");
  return secrets.map((s, i) => {
    const key = decodeSecret(s);
    // The message names the position, never the secret, since errors end up in logs.
    if (!key) {
      throw new WebhookVerificationError("bad_secret", `secret[${i}] is not a whsec_ secret with a 16..64-byte base64 key`);
    }
    return key;
  });
}

function decodeSecret(secret: string): Buffer | undefined {
  if (typeof secret !== "string" || !secret.startsWith(SECRET_PREFIX)) return undefined;
  const encoded = secret.slice(SECRET_PREFIX.length);
  if (!BASE64.test(encoded)) return undefined;
  const key = Buffer.from(encoded, "base64");
  return key.length >= MIN_KEY_BYTES && key.length <= MAX_KEY_BYTES ? key : undefined;
}

function readSignatureHeaders(headers: HeadersLike): { id: string; timestamp: string; signature: string } {
  const get = headerReader(headers);
  const id = get("webhook-id");
  const timestamp = get("webhook-timestamp");
  // Repeated signature headers are one list, as if joined by spaces.
  const signature = get("webhook-signature", " ");
  if (id === undefined || timestamp === undefined || signature === undefined) {
    const missing = Object.entries({ "webhook-id": id, "webhook-timestamp": timestamp, "webhook-signature": signature })
      .filter(([, value]) => value === undefined)
      .map(([name]) => name);
    throw new WebhookVerificationError("missing_header", `missing header(s): ${missing.join(", ")}`);
  }
  return { id, timestamp, signature };
}

/**
 * Looks a header up case-insensitively. An empty value counts as missing. A repeated header
 * is joined with `repeatSeparator` when given, and is malformed otherwise.
 */
function headerReader(headers: HeadersLike): (name: string, repeatSeparator?: string) => string | undefined {
  // Duck-typed rather than instanceof: undici's Headers and the global one are different classes.
  if (typeof (headers as Headers).get === "function") {
    const h = headers as Headers;
    return (name) => h.get(name) || undefined;
  }
  const record = headers as Record<string, string | string[] | undefined>;
  const lowerCased = new Map<string, string | string[] | undefined>();
  for (const [key, value] of Object.entries(record)) lowerCased.set(key.toLowerCase(), value);
  return (name, repeatSeparator) => {
    const value = lowerCased.get(name);
    if (!Array.isArray(value)) return value || undefined;
    if (value.length <= 1) return value[0] || undefined;
    if (repeatSeparator !== undefined) return value.join(repeatSeparator);
    throw new WebhookVerificationError("malformed_header", `${name} appears ${value.length} times`);
  };
}

function checkTimestamp(header: string, options: VerifyWebhookOptions): number {
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  if (!(tolerance >= 0)) throw new RangeError(`toleranceSeconds must be >= 0, got ${tolerance}`);
  const trimmed = header.trim();
  if (!UNIX_SECONDS.test(trimmed)) {
    throw new WebhookVerificationError("malformed_header", "webhook-timestamp is not whole unix seconds");
  }
  const seconds = Number(trimmed);
  const now = Math.floor((options.now ?? new Date()).getTime() / 1000);
  // The tolerance bounds replays of a captured delivery; the future bound catches skewed clocks too.
  if (now - seconds > tolerance) {
    throw new WebhookVerificationError("stale_timestamp", `webhook-timestamp is ${now - seconds} s old (tolerance ${tolerance} s)`);
  }
  if (seconds - now > tolerance) {
    throw new WebhookVerificationError("future_timestamp", `webhook-timestamp is ${seconds - now} s ahead (tolerance ${tolerance} s)`);
  }
  return seconds;
}

/** The `v1` signatures of a space-separated list; other versions are for other verifiers. */
function v1Signatures(header: string): Buffer[] {
  const v1 = header
    .split(/\s+/)
    .filter((entry) => entry.startsWith("v1,"))
    // Base64 has no commas, so a trailing one is from fetch Headers joining a repeated header with ", ".
    .map((entry) => Buffer.from(entry.slice(3).replace(/,$/, ""), "utf8"));
  if (v1.length === 0) throw new WebhookVerificationError("malformed_header", "webhook-signature has no v1 signature");
  return v1;
}

function sign(key: Buffer, id: string, seconds: number, body: Uint8Array): string {
  // The timestamp is re-rendered from its number, as the reference `standardwebhooks` verifier does.
  return createHmac("sha256", key).update(`${id}.${seconds}.`, "utf8").update(body).digest("base64");
}

function constantTimeEqual(a: Buffer, b: Buffer): boolean {
  // Lengths are public (every HMAC-SHA256 in base64 is 44 characters); only contents must not leak.
  return a.length === b.length && timingSafeEqual(a, b);
}

function parseBody(body: Uint8Array): object {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (err) {
    throw new WebhookVerificationError("malformed_body", "the signed body is not UTF-8 JSON", { cause: err });
  }
  if (typeof parsed !== "object" || parsed === null) {
    throw new WebhookVerificationError("malformed_body", "the signed body is not a JSON object or array");
  }
  return parsed;
}
