import type { StoredSecret } from "../storage/schema.js";

/** The secrets that sign now, and until when that holds. */
export interface SigningSecrets {
  secrets: string[];
  /** When the first of them expires (ms since the epoch); Infinity when none does. */
  until: number;
}

/**
 * The secrets that sign at `nowMs`: every one not yet expired, two during a rotation's grace
 * period. Worked out again only once one of them expires, not for every delivery (a filter,
 * a map and a date parse per request); the result is kept on `endpoint.signing`, so the
 * endpoint object must be one that many deliveries share.
 */
export function signingSecrets(endpoint: { secrets: readonly StoredSecret[]; signing?: SigningSecrets }, nowMs: number): string[] {
  if (endpoint.signing !== undefined && nowMs < endpoint.signing.until) return endpoint.signing.secrets;
  const secrets: string[] = [];
  let until = Number.POSITIVE_INFINITY;
  for (const s of endpoint.secrets) {
    const expiresAt = s.expires_at === null ? Number.POSITIVE_INFINITY : Date.parse(s.expires_at);
    if (expiresAt > nowMs) {
      secrets.push(s.secret);
      until = Math.min(until, expiresAt);
    }
  }
  endpoint.signing = { secrets, until };
  return secrets;
}
