/**
 * Standard Webhooks signing (https://www.standardwebhooks.com): every delivery carries
 * `webhook-id`, `webhook-timestamp` and `webhook-signature`, the last being
 * `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`. Receivers that use the public
 * `standardwebhooks` or svix libraries, or Tidings' own SDK, verify it unchanged.
 */
import { createHmac, randomBytes } from "node:crypto";

const SECRET_PREFIX = "whsec_";
/** 192 bits: what Standard Webhooks recommends and svix generates. */
const GENERATED_KEY_BYTES = 24;
const MIN_KEY_BYTES = 16;
const MAX_KEY_BYTES = 64;
/** Canonical, padded base64: Buffer.from(..., "base64") silently skips bad characters, so check first. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** Visible ASCII and inner spaces: HTTP strips outer whitespace and rejects control characters. */
const HEADER_SAFE_ID = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

export interface SignWebhookInput {
  /** Unique per message and stable across retries, so receivers can de-duplicate. */
  id: string;
  /** Unix seconds of this attempt; receivers reject it when it is more than 5 minutes off. */
  timestamp: number;
  /** The exact bytes sent as the request body. */
  body: string | Uint8Array;
  /** The endpoint's secrets; more than one while a rotated-out secret is still honoured. */
  secrets: readonly string[];
}

export type WebhookSignatureHeaders = Record<"webhook-id" | "webhook-timestamp" | "webhook-signature", string>;

/** A new `whsec_<base64>` secret from 24 random bytes. */
export function generateWebhookSecret(): string {
  return SECRET_PREFIX + randomBytes(GENERATED_KEY_BYTES).toString("base64");
}

/** True for `whsec_` followed by canonical base64 of a 16..64-byte key. */
export function isWebhookSecret(s: string): boolean {
  return decodeWebhookSecret(s) !== undefined;
}

/**
 * The three Standard Webhooks headers for one attempt, with one `v1` signature per secret.
 * Throws on an empty secret list, a malformed secret, an id unfit for a header or a bad timestamp:
 * those are configuration bugs, and sending a delivery no receiver can verify helps nobody.
 */
export function signWebhook(input: SignWebhookInput): WebhookSignatureHeaders {
  const { id, timestamp, body, secrets } = input;
  if (secrets.length === 0) throw new Error("signWebhook: at least one secret is required");
  if (!HEADER_SAFE_ID.test(id)) throw new Error("signWebhook: id must be non-empty printable ASCII without outer spaces");
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new Error(`signWebhook: timestamp must be whole unix seconds, got ${timestamp}`);
  }
  const keys = secrets.map((secret, i) => {
    const key = signingKey(secret);
    // Never echo the secret itself into an error that may end up in a log.
    if (!key) throw new Error(`signWebhook: secrets[${i}] is not a whsec_ secret with a 16..64-byte base64 key`);
    return key;
  });
  const signatures = keys.map((key) => `v1,${hmac(key, id, timestamp, body)}`);
  return {
    "webhook-id": id,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": signatures.join(" "),
  };
}

function hmac(key: Buffer, id: string, timestamp: number, body: string | Uint8Array): string {
  // Streaming the prefix and the body separately signs binary bodies without copying them.
  return createHmac("sha256", key).update(`${id}.${timestamp}.`, "utf8").update(body).digest("base64");
}

/**
 * Decoded keys by secret: a node signs with few secrets, for every delivery, and checking and
 * decoding the base64 each time was a sixth of signing's CPU in a webhook backlog. Bounded,
 * since secrets rotate in a long-running node; only valid secrets are kept.
 */
const signingKeys = new Map<string, Buffer>();
const maxSigningKeys = 10_000;

function signingKey(secret: string): Buffer | undefined {
  let key = signingKeys.get(secret);
  if (key === undefined) {
    key = decodeWebhookSecret(secret);
    if (key === undefined) return undefined;
    if (signingKeys.size >= maxSigningKeys) signingKeys.clear();
    signingKeys.set(secret, key);
  }
  return key;
}

function decodeWebhookSecret(secret: string): Buffer | undefined {
  if (!secret.startsWith(SECRET_PREFIX)) return undefined;
  const encoded = secret.slice(SECRET_PREFIX.length);
  if (!BASE64.test(encoded)) return undefined;
  const key = Buffer.from(encoded, "base64");
  return key.length >= MIN_KEY_BYTES && key.length <= MAX_KEY_BYTES ? key : undefined;
}
