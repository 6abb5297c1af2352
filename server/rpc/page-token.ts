import { createHash } from "node:crypto";
import { invalidArgument } from "./errors.js";

interface PageTokenBody {
  v: 1;
  /** The last sequence the previous page looked at. */
  s: string;
  /** Fingerprint of the query the token belongs to. */
  q: string;
}

/** Page tokens are opaque to clients: base64url JSON naming where the next page starts. */
export function encodePageToken(lastSequence: bigint, queryFingerprint: string): string {
  const body: PageTokenBody = { v: 1, s: lastSequence.toString(), q: queryFingerprint };
  return Buffer.from(JSON.stringify(body)).toString("base64url");
}

export function decodePageToken(token: string, queryFingerprint: string): bigint {
  let body: Partial<PageTokenBody>;
  try {
    body = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Partial<PageTokenBody>;
  } catch {
    throw invalidArgument("page_token", "is not a page token returned by this method");
  }
  if (body?.v !== 1 || typeof body.s !== "string" || !/^\d+$/.test(body.s) || typeof body.q !== "string") {
    throw invalidArgument("page_token", "is not a page token returned by this method");
  }
  if (body.q !== queryFingerprint) {
    throw invalidArgument("page_token", "belongs to a different query: keep every other field as on the first page");
  }
  return BigInt(body.s);
}

/** A short hash of the query fields that must stay the same from page to page. */
export function fingerprint(query: unknown): string {
  return createHash("sha256").update(JSON.stringify(query)).digest("base64url").slice(0, 16);
}
