import type { JsonObject } from "@bufbuild/protobuf";
import type { Logger } from "../logging/logger.js";
import { TokenBucket } from "./token-bucket.js";

/** Why a call was refused, as security events and metrics name it. */
export type AuthFailureReason = "missing_key" | "malformed_key" | "unknown_key" | "revoked_key" | "missing_scope" | "type_not_granted" | "no_access_rule" | "bad_ingest_signature";

export interface CallerInfo {
  /** "tidings.v1.EventService/Publish", or an HTTP route such as "GET /metrics". */
  method: string;
  address: string;
  userAgent: string;
}

export interface SecurityReporterDeps {
  /** Publishes an event into the log (Tidings' own events, source "tidings"). */
  publish(type: string, subject: string, data: JsonObject): void;
  logger: Logger;
  /** Counts every failure, reported or not (the /metrics counter). */
  counted(reason: AuthFailureReason): void;
  /** Events (and log lines) a second, and how many may come at once; the rest are only counted. */
  perSecond: number;
  burst: number;
}

/**
 * Reports refused authentications and exceeded rate limits the way Aragora's security event
 * dispatcher does: as `security.auth_failed` and `security.suspicious_activity` events in the
 * log, plus a warning in the server log. A flood of bad requests must not become a flood of
 * events and log lines, so both share a token bucket; what it holds back is counted in the next
 * report's `unreported_before`, and every failure is counted in /metrics.
 */
export class SecurityReporter {
  #bucket: TokenBucket;
  /** Reports held back since the last one published, per kind. */
  #unreported = { auth: 0, limits: 0 };

  constructor(private readonly deps: SecurityReporterDeps) {
    this.#bucket = new TokenBucket(deps.perSecond, deps.burst);
  }

  /** `key` is what is known of the key presented: its prefix, and its id once it was recognised. */
  authFailed(reason: AuthFailureReason, caller: CallerInfo, key: { prefix: string; id?: string }): void {
    this.deps.counted(reason);
    const unreportedBefore = this.#admit("auth");
    if (unreportedBefore === undefined) return;
    this.deps.logger.warn("authentication failed", { reason, method: caller.method, address: caller.address, keyPrefix: key.prefix, keyId: key.id, unreportedBefore });
    this.deps.publish("security.auth_failed", caller.address, {
      reason,
      user_id: key.id ?? "",
      ip_address: caller.address,
      user_agent: caller.userAgent,
      method: caller.method,
      key_prefix: key.prefix,
      unreported_before: unreportedBefore,
    });
  }

  rateLimited(keyId: string, keyPrefix: string, caller: CallerInfo, limit: string): void {
    const unreportedBefore = this.#admit("limits");
    if (unreportedBefore === undefined) return;
    this.deps.logger.warn("an API key went over its limit", { keyId, keyPrefix, limit, method: caller.method, address: caller.address, unreportedBefore });
    this.deps.publish("security.suspicious_activity", keyId, {
      activity_type: "rate_limit_exceeded",
      ip_address: caller.address,
      metadata: { key_id: keyId, key_prefix: keyPrefix, method: caller.method, limit },
      severity: "low",
      unreported_before: unreportedBefore,
    });
  }

  /** How many reports of this kind were held back before this one, or undefined when this one is held back too. */
  #admit(kind: "auth" | "limits"): number | undefined {
    if (this.#bucket.take() > 0) {
      this.#unreported[kind]++;
      return undefined;
    }
    const before = this.#unreported[kind];
    this.#unreported[kind] = 0;
    return before;
  }
}
