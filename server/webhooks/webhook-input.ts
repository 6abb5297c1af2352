import { isIP } from "node:net";
import type { Registry } from "@bufbuild/protobuf";
import { type Duration, durationMs } from "@bufbuild/protobuf/wkt";
import { ContentMode, type Webhook } from "../../gen/tidings/v1/webhook_pb.js";
import type { FieldViolation } from "../catalog/payload-validation.js";
import { compileFilter, FilterError, type FilterLimits } from "../filtering/cel-filter.js";
import { parseTypePattern, TypePatternError } from "../filtering/type-pattern.js";
import type { StoredRetryPolicy } from "../storage/schema.js";
import type { AddressPolicy } from "./http/address-policy.js";
import { defaultRetryPolicy } from "./retry-policy.js";
import { isWebhookSecret } from "./signing.js";

/** An endpoint's settings as stored, defaults applied. */
export interface WebhookSettings {
  url: string;
  description: string;
  patterns: string[];
  attributes: Record<string, string>;
  filter: string;
  headers: Record<string, string>;
  retryPolicy: StoredRetryPolicy;
  timeoutMs: number;
  batchMaxEvents: number;
  batchMaxWaitMs: number;
  rateLimit: number;
  ordered: boolean;
  enabled: boolean;
  contentMode: ContentMode;
  maxConsecutiveFailures: number;
  maxFailingMs: number;
}

export const webhookDefaults = {
  timeoutMs: 15_000,
  batchMaxWaitMs: 1_000,
  maxConsecutiveFailures: 1_000,
  maxFailingMs: 5 * 24 * 3_600_000,
} as const;

/** Fields UpdateWebhook may change, by .proto name. */
export const updatableFields = [
  "url", "description", "patterns", "attributes", "filter", "headers", "retry_policy", "timeout",
  "batching", "rate_limit", "ordered", "enabled", "content_mode", "failure_policy",
] as const;
export type UpdatableField = (typeof updatableFields)[number];

const headerName = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$/;
/** Headers Tidings sets itself; an endpoint may not override them. */
const reservedHeaders = /^(host|content-length|content-type|transfer-encoding|connection|user-agent|webhook-.*|ce-.*)$/i;
const attributeKey = /^[a-z0-9_][a-z0-9_.-]{0,63}$/;
const day = 24 * 3_600_000;

export interface InputContext {
  registry: Registry;
  addressPolicy: AddressPolicy;
  filterLimits: FilterLimits;
}

/**
 * Checks the given fields of a webhook (all of them on create, the masked ones on update) and
 * returns their stored form. Every violation is collected, with paths under "webhook.".
 */
export function readWebhookInput(
  w: Webhook,
  fields: readonly UpdatableField[],
  ctx: InputContext,
  violations: FieldViolation[],
): Partial<WebhookSettings> {
  const out: Partial<WebhookSettings> = {};
  const v = (field: string, description: string) => violations.push({ field: `webhook.${field}`, description });
  const has = (f: UpdatableField) => fields.includes(f);

  if (has("url")) {
    const problem = urlProblem(w.url, ctx.addressPolicy);
    if (problem) v("url", problem);
    else out.url = w.url;
  }
  if (has("description")) {
    if (w.description.length > 1024) v("description", "is longer than 1024 characters");
    out.description = w.description;
  }
  if (has("patterns")) {
    if (w.patterns.length > 64) v("patterns", "has more than 64 patterns");
    w.patterns.forEach((p, i) => {
      try {
        parseTypePattern(p);
      } catch (err) {
        if (!(err instanceof TypePatternError)) throw err;
        v(`patterns[${i}]`, err.message);
      }
    });
    out.patterns = [...w.patterns];
  }
  if (has("attributes")) {
    for (const [k, value] of Object.entries(w.attributes)) {
      if (!attributeKey.test(k)) v(`attributes["${k}"]`, "key must be 1-64 characters of [a-z0-9_.-]");
      else if (value.length > 1024) v(`attributes["${k}"]`, "value is longer than 1024 characters");
    }
    out.attributes = { ...w.attributes };
  }
  if (has("filter")) {
    if (w.filter !== "") {
      try {
        compileFilter(w.filter, ctx.registry, ctx.filterLimits);
      } catch (err) {
        if (!(err instanceof FilterError)) throw err;
        v("filter", err.message);
      }
    }
    out.filter = w.filter;
  }
  if (has("headers")) {
    const entries = Object.entries(w.headers);
    if (entries.length > 32) v("headers", "has more than 32 headers");
    for (const [name, value] of entries) {
      if (!headerName.test(name)) v(`headers["${name}"]`, "is not a valid HTTP header name");
      else if (reservedHeaders.test(name)) v(`headers["${name}"]`, "is set by Tidings and cannot be overridden");
      else if (/[\r\n\0]/.test(value) || value.length > 4096) v(`headers["${name}"]`, "value must be at most 4096 characters without CR, LF or NUL");
    }
    out.headers = { ...w.headers };
  }
  if (has("retry_policy")) out.retryPolicy = readRetryPolicy(w, v);
  if (has("timeout")) {
    const ms = w.timeout ? durationMs(w.timeout) : webhookDefaults.timeoutMs;
    if (ms < 100 || ms > 60_000) v("timeout", "must be between 100ms and 60s");
    out.timeoutMs = ms;
  }
  if (has("batching")) {
    const max = w.batching?.maxEvents ?? 0;
    const waitMs = w.batching?.maxWait ? durationMs(w.batching.maxWait) : webhookDefaults.batchMaxWaitMs;
    if (max === 1 || max > 1000) v("batching.max_events", "must be 0 (off) or between 2 and 1000");
    if (waitMs < 0 || waitMs > 300_000) v("batching.max_wait", "must be between 0s and 300s");
    out.batchMaxEvents = max;
    out.batchMaxWaitMs = max > 0 ? waitMs : 0;
  }
  if (has("rate_limit")) {
    if (!Number.isFinite(w.rateLimit) || w.rateLimit < 0 || w.rateLimit > 10_000) v("rate_limit", "must be between 0 (no limit) and 10000 per second");
    out.rateLimit = w.rateLimit;
  }
  if (has("ordered")) out.ordered = w.ordered;
  if (has("enabled")) out.enabled = w.enabled;
  if (has("content_mode")) {
    if (!(w.contentMode in ContentMode)) v("content_mode", `unknown content mode ${w.contentMode}`);
    out.contentMode = w.contentMode === ContentMode.UNSPECIFIED ? ContentMode.STANDARD : w.contentMode;
  }
  if (has("failure_policy")) {
    const max = w.failurePolicy?.maxConsecutiveFailures || webhookDefaults.maxConsecutiveFailures;
    const ms = w.failurePolicy?.maxFailingDuration ? durationMs(w.failurePolicy.maxFailingDuration) : webhookDefaults.maxFailingMs;
    if (max > 1_000_000) v("failure_policy.max_consecutive_failures", "must be at most 1000000");
    if (ms < 1000 || ms > 90 * day) v("failure_policy.max_failing_duration", "must be between 1s and 90 days");
    out.maxConsecutiveFailures = max;
    out.maxFailingMs = ms;
  }
  return out;
}

/** Checks a signing secret given by the user. */
export function secretProblem(secret: string): string | undefined {
  return isWebhookSecret(secret) ? undefined : 'must be "whsec_" followed by the base64 of 16 to 64 bytes';
}

function urlProblem(raw: string, policy: AddressPolicy): string | undefined {
  if (raw === "") return "is required";
  if (raw.length > 2048) return "is longer than 2048 characters";
  // The URL parser silently strips leading and trailing spaces and C0 controls and drops tabs
  // and newlines inside, so what it parses is not what would be stored and shown. (NUL never
  // gets here: every request's text is checked for it, server/rpc/nul-refusal.ts.)
  if (/[\u0001-\u001f\u007f]/.test(raw)) return "must not contain control characters";
  if (raw !== raw.trim()) return "must not begin or end with whitespace";
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return "is not a valid URL";
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return "must be an http or https URL";
  if (url.hash) return "must not have a #fragment";
  // Names are checked when connecting (so DNS rebinding cannot get around it); literal
  // addresses can be refused right away.
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (isIP(host) && !policy.isAllowed(host)) return `${policy.describe(host)}; the server's webhook allow-list does not admit it`;
  return undefined;
}

function readRetryPolicy(w: Webhook, v: (field: string, description: string) => void): StoredRetryPolicy {
  const p = w.retryPolicy;
  if (!p) return defaultRetryPolicy;
  const maxAttempts = p.maxAttempts || defaultRetryPolicy.maxAttempts;
  if (maxAttempts > 50) v("retry_policy.max_attempts", "must be between 1 and 50");
  const exponential = p.baseDelay !== undefined || p.multiplier !== 0 || p.maxDelay !== undefined;
  if (p.schedule.length > 0 && exponential) {
    v("retry_policy.schedule", "cannot be combined with base_delay, multiplier or max_delay");
  }
  const within = (d: Duration, field: string) => {
    const ms = durationMs(d);
    if (ms < 0 || ms > 7 * day) v(field, "must be between 0s and 7 days");
    return ms;
  };
  if (p.schedule.length > 50) v("retry_policy.schedule", "has more than 50 delays");
  if (p.schedule.length > 0) {
    return { maxAttempts, scheduleMs: p.schedule.map((d, i) => within(d, `retry_policy.schedule[${i}]`)) };
  }
  if (!exponential) return { ...defaultRetryPolicy, maxAttempts };
  const multiplier = p.multiplier || 2;
  if (multiplier < 1 || multiplier > 10) v("retry_policy.multiplier", "must be between 1 and 10");
  return {
    maxAttempts,
    baseMs: p.baseDelay ? within(p.baseDelay, "retry_policy.base_delay") : 1000,
    multiplier,
    maxMs: p.maxDelay ? within(p.maxDelay, "retry_policy.max_delay") : 3_600_000,
  };
}
