import { Code, type HandlerContext } from "@connectrpc/connect";
import { Scope } from "../../gen/tidings/v1/access_pb.js";
import type { FieldViolation } from "../catalog/payload-validation.js";
import { parseTypePattern, TypePatternError } from "../filtering/type-pattern.js";
import { fieldError } from "../rpc/errors.js";
import { clientAddressKey } from "./access-gate.js";
import type { KeyLimiter } from "./key-limits.js";
import { coveredBy, type Principal, principalKey, typeLimitOf } from "./principal.js";
import type { CallerInfo, SecurityReporter } from "./security-reporter.js";

/**
 * What EventService asks of the caller's key beyond the method's scope: the event types its
 * grants are limited to, its publish rate and its Subscribe streams.
 */
export class EventAccess {
  constructor(
    private readonly limiter: KeyLimiter,
    private readonly reporter: SecurityReporter,
  ) {}

  /** Refuses (permission_denied, naming each field) events of types the key may not publish. */
  checkPublishTypes(ctx: HandlerContext, events: ReadonlyArray<{ type: string; field: string }>): void {
    const p = ctx.values.get(principalKey);
    const limit = typeLimitOf(p, Scope.PUBLISH);
    if (!limit) return;
    const violations: FieldViolation[] = [];
    for (const e of events) {
      if (e.type !== "" && !limit.some((pattern) => pattern.matches(e.type))) {
        violations.push({ field: e.field, description: `this API key may publish only ${list(limit)}, not "${e.type}"` });
      }
    }
    if (violations.length > 0) this.#deny(ctx, p, violations);
  }

  /** Takes the events from the key's publish rate (resource_exhausted with RetryInfo when over). */
  takePublish(ctx: HandlerContext, events: number, field: string): void {
    this.limiter.takePublish(ctx.values.get(principalKey), events, () => callerOf(ctx), field);
  }

  /**
   * The type patterns a read (Subscribe, ListEvents) may use: the requested ones when the key's
   * grant covers each of them (permission_denied naming the first that it does not), or the
   * grant's own when none were requested, so a limited key reads what it may.
   */
  readPatterns(ctx: HandlerContext, requested: readonly string[]): readonly string[] {
    const p = ctx.values.get(principalKey);
    const limit = typeLimitOf(p, Scope.SUBSCRIBE);
    if (!limit) return requested;
    if (requested.length === 0) {
      if (limit.length === 0) this.#deny(ctx, p, [{ field: "patterns", description: "this API key may read no event types" }]);
      return limit.map((g) => g.source);
    }
    const violations: FieldViolation[] = [];
    requested.forEach((source, i) => {
      let pattern;
      try {
        pattern = parseTypePattern(source);
      } catch (err) {
        if (err instanceof TypePatternError) return; // the matcher reports it as invalid_argument
        throw err;
      }
      if (!coveredBy(limit, pattern)) violations.push({ field: `patterns[${i}]`, description: `this API key may read only ${list(limit)}, which does not cover "${source}"` });
    });
    if (violations.length > 0) this.#deny(ctx, p, violations);
    return requested;
  }

  /** Refuses to show one event (GetEvent) of a type the key may not read. */
  checkReadType(ctx: HandlerContext, type: string, field: string): void {
    const p = ctx.values.get(principalKey);
    const limit = typeLimitOf(p, Scope.SUBSCRIBE);
    if (limit && !limit.some((pattern) => pattern.matches(type))) {
      this.#deny(ctx, p, [{ field, description: `this API key may read only ${list(limit)}` }]);
    }
  }

  /** Counts a Subscribe stream against the key's limit; call the result when the stream ends. */
  openSubscription(ctx: HandlerContext): () => void {
    return this.limiter.openSubscription(ctx.values.get(principalKey), () => callerOf(ctx));
  }

  #deny(ctx: HandlerContext, p: Principal, violations: FieldViolation[]): never {
    this.reporter.authFailed("type_not_granted", callerOf(ctx), { prefix: p.keyPrefix, id: p.keyId });
    throw fieldError(Code.PermissionDenied, violations);
  }
}

function list(patterns: ReadonlyArray<{ source: string }>): string {
  return patterns.map((p) => `"${p.source}"`).join(", ");
}

function callerOf(ctx: HandlerContext): CallerInfo {
  return { method: `${ctx.service.typeName}/${ctx.method.name}`, address: ctx.values.get(clientAddressKey), userAgent: ctx.requestHeader.get("user-agent") ?? "" };
}
