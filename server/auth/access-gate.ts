import type http from "node:http";
import type http2 from "node:http2";
import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import type { AccessRule } from "../../gen/tidings/v1/access_pb.js";
import { writeConnectError } from "../transport/connect-error-response.js";
import { apiKeyPattern, keyPrefixOf } from "./api-key.js";
import { accessRuleOf } from "./access-rules.js";
import type { KeyRing } from "./key-ring.js";
import { hasScope, openAccess, type Principal, principalKey, scopeNames } from "./principal.js";
import type { AuthFailureReason, CallerInfo, SecurityReporter } from "./security-reporter.js";
import { requestPath } from "../transport/request-path.js";
import { requestHeaderValue } from "../transport/fast-call.js";
import { clientAddressOf } from "../transport/request-head.js";

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/** The client's address, put into every call's context by the transport (see `callerContext`). */
export const clientAddressKey = createContextKey<string>("", { description: "the client's IP address" });

/**
 * Checks the API key of every call against the method's access rule. `keys` undefined is the
 * open mode: every call is allowed, as `openAccess`.
 */
export class AccessGate {
  constructor(
    private readonly keys: KeyRing | undefined,
    private readonly reporter: SecurityReporter,
  ) {}

  get open(): boolean {
    return this.keys === undefined;
  }

  /** The caller's principal, or a ConnectError (unauthenticated / permission_denied), reported. */
  async check(authorization: string | null | undefined, rule: AccessRule | undefined, caller: CallerInfo): Promise<Principal> {
    if (!this.keys) return openAccess;
    const refuse = (reason: AuthFailureReason, code: Code, message: string, key: { prefix: string; id?: string }): never => {
      this.reporter.authFailed(reason, caller, key);
      throw new ConnectError(message, code);
    };
    if (!authorization) {
      return refuse("missing_key", Code.Unauthenticated, "an API key is required: send the header \"authorization: Bearer tid_…\"", { prefix: "" });
    }
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    const key = match?.[1];
    if (!key || !apiKeyPattern.test(key)) {
      return refuse("malformed_key", Code.Unauthenticated, "the authorization header must be \"Bearer\" and an API key (tid_ and 40 letters and digits)", { prefix: key?.startsWith("tid_") ? keyPrefixOf(key) : "" });
    }
    const entry = await this.keys.find(key);
    // One answer for unknown and revoked keys: the caller learns nothing about which keys exist.
    if (!entry) return refuse("unknown_key", Code.Unauthenticated, "the API key is not valid (unknown or revoked)", { prefix: keyPrefixOf(key) });
    const { principal } = entry;
    if (entry.revoked) return refuse("revoked_key", Code.Unauthenticated, "the API key is not valid (unknown or revoked)", { prefix: principal.keyPrefix, id: principal.keyId });
    if (!rule) return refuse("no_access_rule", Code.PermissionDenied, `${caller.method} declares no access rule, so no key may call it`, { prefix: principal.keyPrefix, id: principal.keyId });
    if (!rule.anyScope && !hasScope(principal, rule.scope)) {
      const needs = scopeNames.get(rule.scope) ?? "admin";
      return refuse("missing_scope", Code.PermissionDenied, `this API key (${principal.keyPrefix}…) lacks the "${needs}" scope, which ${caller.method} needs`, { prefix: principal.keyPrefix, id: principal.keyId });
    }
    return principal;
  }

  /** Runs the check for every RPC, on every protocol (the binary fast path uses the same interceptors). */
  interceptor(): Interceptor {
    // Open: nothing to check, so nothing of the request (its headers) is read.
    if (!this.keys) {
      return (next) => (req) => {
        req.contextValues.set(principalKey, openAccess);
        return next(req);
      };
    }
    return (next) => async (req) => {
      const principal = await this.check(requestHeaderValue(req, "authorization"), accessRuleOf(req.method), {
        method: `${req.service.typeName}/${req.method.name}`,
        address: req.contextValues.get(clientAddressKey),
        userAgent: requestHeaderValue(req, "user-agent") ?? "",
      });
      req.contextValues.set(principalKey, principal);
      return next(req);
    };
  }

  /**
   * The check for a plain HTTP route: true when the call may go on; otherwise the error is
   * written as Connect writes it (401 with `WWW-Authenticate: Bearer`, 403, or 503 when the key
   * could not be looked up).
   */
  async allowHttp(req: NodeRequest, res: NodeResponse, rule: AccessRule): Promise<boolean> {
    try {
      await this.check(req.headers.authorization, rule, callerOf(req, `${req.method} ${requestPath(req)}`));
      return true;
    } catch (err) {
      const e = ConnectError.from(err);
      writeConnectError(res, e, e.code === Code.Unauthenticated ? { "www-authenticate": "Bearer" } : {});
      return false;
    }
  }
}

export function callerOf(req: NodeRequest, method: string): CallerInfo {
  return { method, address: clientAddressOf(req), userAgent: String(req.headers["user-agent"] ?? "") };
}
