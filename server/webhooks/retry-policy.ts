import type { StoredRetryPolicy } from "../storage/schema.js";

/** Standard Webhooks' schedule: delays before attempts 2..8 (the first is immediate). */
export const standardScheduleMs = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000];

export const defaultRetryPolicy: StoredRetryPolicy = { maxAttempts: standardScheduleMs.length + 1, scheduleMs: standardScheduleMs };

/** Longest wait a Retry-After header can impose. */
const maxRetryAfterMs = 24 * 3_600_000;

/**
 * The delay before the attempt after `attemptsMade` failures, with up to ±20% jitter so that
 * endpoints recovering from an outage are not hit by every delivery at the same instant.
 * `retryAfterMs` (from a Retry-After header) is a floor.
 */
export function retryDelayMs(policy: StoredRetryPolicy, attemptsMade: number, retryAfterMs: number | undefined, random = Math.random): number {
  let base: number;
  if (policy.scheduleMs && policy.scheduleMs.length > 0) {
    base = policy.scheduleMs[Math.min(attemptsMade - 1, policy.scheduleMs.length - 1)]!;
  } else {
    const exp = (policy.baseMs ?? 1000) * (policy.multiplier ?? 2) ** (attemptsMade - 1);
    base = Math.min(exp, policy.maxMs ?? 3_600_000);
  }
  const jittered = base * (0.8 + 0.4 * random());
  return Math.max(jittered, Math.min(retryAfterMs ?? 0, maxRetryAfterMs));
}

/** Parses Retry-After: delay-seconds or an HTTP date. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}
