import { createContextKey } from "@connectrpc/connect";
import { Scope } from "../../gen/tidings/v1/access_pb.js";
import { parseTypePattern, patternCovers, type TypePattern } from "../filtering/type-pattern.js";

/** Scope names as the CLI, the database and error messages write them. */
export const scopeNames: ReadonlyMap<Scope, string> = new Map([
  [Scope.PUBLISH, "publish"],
  [Scope.SUBSCRIBE, "subscribe"],
  [Scope.WEBHOOKS_READ, "webhooks:read"],
  [Scope.WEBHOOKS_WRITE, "webhooks:write"],
  [Scope.ADMIN, "admin"],
]);

export const scopeByName: ReadonlyMap<string, Scope> = new Map([...scopeNames].map(([scope, name]) => [name, scope]));

/** Scopes whose grants may be limited to event types. */
export const typedScopes: ReadonlySet<Scope> = new Set([Scope.PUBLISH, Scope.SUBSCRIBE]);

/** Per-key limits, the server's defaults already applied; 0 means no limit. */
export interface KeyLimits {
  publishRate: number;
  publishBurst: number;
  maxSubscriptions: number;
}

/** Who is calling: an API key's grants and limits, or the open mode's everything-allowed. */
export interface Principal {
  /** The key's id; "" in open mode. */
  readonly keyId: string;
  readonly keyPrefix: string;
  /** Granted scopes, each with its type patterns; undefined patterns = every type. */
  readonly grants: ReadonlyMap<Scope, readonly TypePattern[] | undefined>;
  readonly limits: KeyLimits;
}

const noLimits: KeyLimits = { publishRate: 0, publishBurst: 0, maxSubscriptions: 0 };

/** Open mode (loopback only): every method, every type, no limits. */
export const openAccess: Principal = { keyId: "", keyPrefix: "", grants: new Map([[Scope.ADMIN, undefined]]), limits: noLimits };

/** A call that reached a handler without passing the auth interceptor may do nothing. */
const nobody: Principal = { keyId: "", keyPrefix: "", grants: new Map(), limits: noLimits };

/** The caller of the current RPC, set by the auth interceptor. */
export const principalKey = createContextKey<Principal>(nobody, { description: "the caller's API key" });

export function hasScope(p: Principal, scope: Scope): boolean {
  return p.grants.has(Scope.ADMIN) || p.grants.has(scope);
}

/** The types a scope is limited to for this caller: undefined for every type, empty for none (not granted). */
export function typeLimitOf(p: Principal, scope: Scope): readonly TypePattern[] | undefined {
  if (p.grants.has(Scope.ADMIN)) return undefined;
  return p.grants.has(scope) ? p.grants.get(scope) : [];
}

/** Parses stored or requested grant patterns (already validated when the key was created). */
export function grantPatterns(sources: readonly string[]): TypePattern[] | undefined {
  return sources.length === 0 ? undefined : sources.map(parseTypePattern);
}

/** Whether one of the granted patterns covers every type `requested` matches. */
export function coveredBy(granted: readonly TypePattern[], requested: TypePattern): boolean {
  return granted.some((g) => patternCovers(g, requested));
}
