import { type Kysely, type Selectable, sql } from "kysely";
import { uuidV7 } from "../event-log/uuid-v7.js";
import type { ApiKeysTable, Database, StoredGrant } from "../storage/schema.js";
import { keysChannel } from "../storage/doorbell.js";
import { hashApiKey, keyPrefixOf, newApiKey } from "./api-key.js";

export type ApiKeyRow = Selectable<ApiKeysTable>;

export interface NewApiKey {
  name: string;
  grants: StoredGrant[];
  publishRate: number | null;
  publishBurst: number | null;
  maxSubscriptions: number | null;
}

/**
 * API keys in the database. Every change rings `tidings_api_keys`, so the other nodes reload
 * their key rings at once (they also reload on a timer, in case a notification is lost).
 */
export class ApiKeyStore {
  constructor(private readonly db: Kysely<Database>) {}

  /** Stores a new key (or the given one, e.g. from configuration) and returns it with its row. */
  async create(input: NewApiKey, key = newApiKey()): Promise<{ row: ApiKeyRow; key: string }> {
    const row = await this.db.transaction().execute(async (tx) => {
      const inserted = await tx.insertInto("tidings_api_keys").values(this.#values(input, key)).returningAll().executeTakeFirstOrThrow();
      await sql`NOTIFY ${sql.raw(keysChannel)}`.execute(tx);
      return inserted;
    });
    return { row, key };
  }

  /** Keys in id order (ids are UUIDv7: creation order), after `afterId`. */
  list(options: { afterId?: string; limit: number; showRevoked: boolean }): Promise<ApiKeyRow[]> {
    let q = this.db.selectFrom("tidings_api_keys").selectAll().orderBy("id").limit(options.limit);
    if (options.afterId !== undefined) q = q.where("id", ">", options.afterId);
    if (!options.showRevoked) q = q.where("revoked_at", "is", null);
    return q.execute();
  }

  /** Every key, revoked ones too: the key ring tells a revoked key from an unknown one. */
  all(): Promise<ApiKeyRow[]> {
    return this.db.selectFrom("tidings_api_keys").selectAll().execute();
  }

  findByHash(hash: Uint8Array): Promise<ApiKeyRow | undefined> {
    return this.db.selectFrom("tidings_api_keys").selectAll().where("key_hash", "=", hash).executeTakeFirst();
  }

  /** Revokes a key (a revoked one keeps its first revocation time); undefined when there is no such key. */
  async revoke(id: string): Promise<ApiKeyRow | undefined> {
    return this.db.transaction().execute(async (tx) => {
      const row = await tx
        .updateTable("tidings_api_keys")
        .set({ revoked_at: sql<Date>`coalesce(revoked_at, now())` })
        .where("id", "=", id)
        .returningAll()
        .executeTakeFirst();
      if (row) await sql`NOTIFY ${sql.raw(keysChannel)}`.execute(tx);
      return row;
    });
  }

  /**
   * At the first start on a database without keys, makes an admin key: the configured one, or
   * a new one (returned, to be shown once). A configured key that is not stored yet is added
   * whenever the server starts, so an operator can get back in with a fresh key from config.
   * The table lock makes nodes that start together agree on one first key.
   */
  async ensureAdminKey(configured: string | undefined): Promise<{ created?: string; configuredRevoked?: boolean }> {
    return this.db.transaction().execute(async (tx) => {
      await sql`LOCK TABLE tidings_api_keys IN SHARE ROW EXCLUSIVE MODE`.execute(tx);
      const admin: NewApiKey = { name: "admin", grants: [{ scope: "admin", event_types: [] }], publishRate: null, publishBurst: null, maxSubscriptions: null };
      if (configured !== undefined) {
        const existing = await tx.selectFrom("tidings_api_keys").select(["revoked_at"]).where("key_hash", "=", hashApiKey(configured)).executeTakeFirst();
        if (existing) return { configuredRevoked: existing.revoked_at !== null };
        await tx.insertInto("tidings_api_keys").values(this.#values({ ...admin, name: "admin (from configuration)" }, configured)).execute();
        return {};
      }
      const any = await tx.selectFrom("tidings_api_keys").select("id").limit(1).executeTakeFirst();
      if (any) return {};
      const key = newApiKey();
      await tx.insertInto("tidings_api_keys").values(this.#values(admin, key)).execute();
      return { created: key };
    });
  }

  #values(input: NewApiKey, key: string) {
    return {
      id: `key_${uuidV7()}`,
      name: input.name,
      prefix: keyPrefixOf(key),
      key_hash: hashApiKey(key),
      grants: JSON.stringify(input.grants),
      publish_rate: input.publishRate,
      publish_burst: input.publishBurst,
      max_subscriptions: input.maxSubscriptions,
    };
  }
}
