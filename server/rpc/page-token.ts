import { createHash } from "node:crypto";
import { invalidArgument } from "./errors.js";

interface PageTokenBody {
  v: 1;
  /** Where the next page starts: the last sequence or id the previous page returned. */
  p: string;
  /** Fingerprint of the query the token belongs to. */
  q: string;
}

/** Page tokens are opaque to clients: base64url JSON naming where the next page starts. */
export function encodePageToken(position: string, queryFingerprint: string): string {
  const body: PageTokenBody = { v: 1, p: position, q: queryFingerprint };
  return Buffer.from(JSON.stringify(body)).toString("base64url");
}

/** The position a token names; `invalid_argument` on `page_token` for anything else. */
export function decodePageToken(token: string, queryFingerprint: string, positionPattern = /^\d+$/): string {
  let body: Partial<PageTokenBody>;
  try {
    body = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Partial<PageTokenBody>;
  } catch {
    throw invalidArgument("page_token", "is not a page token returned by this method");
  }
  if (body?.v !== 1 || typeof body.p !== "string" || !positionPattern.test(body.p) || typeof body.q !== "string") {
    throw invalidArgument("page_token", "is not a page token returned by this method");
  }
  if (body.q !== queryFingerprint) {
    throw invalidArgument("page_token", "belongs to a different query: keep every other field as on the first page");
  }
  return body.p;
}

/** A short hash of the query fields that must stay the same from page to page. */
export function fingerprint(query: unknown): string {
  return createHash("sha256").update(JSON.stringify(query)).digest("base64url").slice(0, 16);
}

/** Reads page_size: 0 means the default, larger than the maximum is capped (AIP-158). */
export function pageSizeOf(requested: number, defaultSize: number, maxSize: number): number {
  if (requested < 0) throw invalidArgument("page_size", "must not be negative");
  return Math.min(requested || defaultSize, maxSize);
}

/**
 * Turns a query's rows, fetched with limit pageSize + 1, into one page and the token of the
 * next: the extra row only tells that there is more.
 */
export function toPage<Row, Item>(rows: readonly Row[], pageSize: number, queryFingerprint: string, positionOf: (row: Row) => string, toItem: (row: Row) => Item): { items: Item[]; nextPageToken: string } {
  const page = rows.slice(0, pageSize);
  return {
    items: page.map(toItem),
    nextPageToken: rows.length > pageSize ? encodePageToken(positionOf(page[page.length - 1]!), queryFingerprint) : "",
  };
}
