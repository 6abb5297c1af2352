import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { Scope } from "../../gen/tidings/v1/access_pb.js";
import {
  type ApiKey,
  ApiKeySchema,
  type CreateApiKeyRequest,
  type CreateApiKeyResponseSchema,
  type ListApiKeysRequest,
  type ListApiKeysResponseSchema,
  type RevokeApiKeyRequest,
  type RevokeApiKeyResponseSchema,
} from "../../gen/tidings/v1/admin_service_pb.js";
import type { ApiKeyRow, ApiKeyStore } from "../auth/api-key-store.js";
import type { KeyRing } from "../auth/key-ring.js";
import { scopeByName, scopeNames, typedScopes } from "../auth/principal.js";
import type { FieldViolation } from "../catalog/payload-validation.js";
import { parseTypePattern, TypePatternError } from "../filtering/type-pattern.js";
import { fieldError, invalidArgument } from "../rpc/errors.js";
import { decodePageToken, fingerprint, pageSizeOf, toPage } from "../rpc/page-token.js";
import type { StoredGrant } from "../storage/schema.js";

export interface ApiKeyDeps {
  store: ApiKeyStore;
  /** This node's key ring, reloaded after each change so the change holds here when the call returns; undefined in open mode. */
  ring: KeyRing | undefined;
}

const maxNameLength = 200;

/** CreateApiKey, ListApiKeys and RevokeApiKey of tidings.v1.AdminService. */
export function apiKeyMethods(deps: ApiKeyDeps) {
  return {
    async createApiKey(req: CreateApiKeyRequest): Promise<MessageInitShape<typeof CreateApiKeyResponseSchema>> {
      const grants = checkCreate(req);
      const { row, key } = await deps.store.create({
        name: req.name,
        grants,
        publishRate: req.publishRate ?? null,
        publishBurst: req.publishBurst ?? null,
        maxSubscriptions: req.maxSubscriptions ?? null,
      });
      await deps.ring?.reload();
      return { apiKey: toApiKey(row), key };
    },

    async listApiKeys(req: ListApiKeysRequest): Promise<MessageInitShape<typeof ListApiKeysResponseSchema>> {
      const pageSize = pageSizeOf(req.pageSize, 100, 1000);
      const query = fingerprint(["keys", req.showRevoked]);
      const afterId = req.pageToken ? decodePageToken(req.pageToken, query, /^key_[0-9a-f-]{36}$/) : undefined;
      const rows = await deps.store.list({ afterId, limit: pageSize + 1, showRevoked: req.showRevoked });
      const { items, nextPageToken } = toPage(rows, pageSize, query, (r) => r.id, toApiKey);
      return { apiKeys: items, nextPageToken };
    },

    async revokeApiKey(req: RevokeApiKeyRequest): Promise<MessageInitShape<typeof RevokeApiKeyResponseSchema>> {
      if (!req.id) throw invalidArgument("id", "is required");
      const row = await deps.store.revoke(req.id);
      if (!row) throw fieldError(Code.NotFound, [{ field: "id", description: `no API key with id "${req.id}"` }]);
      await deps.ring?.reload();
      return { apiKey: toApiKey(row) };
    },
  };
}

/** The grants as stored, or invalid_argument naming every field at fault. */
function checkCreate(req: CreateApiKeyRequest): StoredGrant[] {
  const violations: FieldViolation[] = [];
  const v = (field: string, description: string) => violations.push({ field, description });
  if (req.name.trim() === "") v("name", "is required: say what the key is for");
  else if (req.name.length > maxNameLength) v("name", `must be at most ${maxNameLength} characters`);
  if (req.grants.length === 0) v("grants", "must hold at least one grant");
  const seen = new Set<Scope>();
  const grants: StoredGrant[] = [];
  req.grants.forEach((g, i) => {
    const name = scopeNames.get(g.scope);
    if (!name) return v(`grants[${i}].scope`, `must be one of ${[...scopeByName.keys()].map((n) => `SCOPE_${n.replace(":", "_").toUpperCase()}`).join(", ")}`);
    if (seen.has(g.scope)) return v(`grants[${i}].scope`, `grants ${name} a second time: put every type pattern in one grant`);
    seen.add(g.scope);
    if (g.eventTypes.length > 0 && !typedScopes.has(g.scope)) return v(`grants[${i}].event_types`, `only publish and subscribe grants can be limited to event types, not ${name}`);
    g.eventTypes.forEach((source, j) => {
      try {
        parseTypePattern(source);
      } catch (err) {
        if (!(err instanceof TypePatternError)) throw err;
        v(`grants[${i}].event_types[${j}]`, err.message);
      }
    });
    grants.push({ scope: name, event_types: [...g.eventTypes] });
  });
  if (violations.length > 0) throw fieldError(Code.InvalidArgument, violations);
  return grants;
}

/** A key's record for the API: never its hash. */
function toApiKey(row: ApiKeyRow): ApiKey {
  return create(ApiKeySchema, {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    grants: row.grants.map((g) => ({ scope: scopeByName.get(g.scope) ?? Scope.UNSPECIFIED, eventTypes: g.event_types })),
    publishRate: row.publish_rate ?? undefined,
    publishBurst: row.publish_burst ?? undefined,
    maxSubscriptions: row.max_subscriptions ?? undefined,
    createTime: timestampFromDate(row.created_at),
    revokeTime: row.revoked_at ? timestampFromDate(row.revoked_at) : undefined,
  });
}
