import { type Kysely, type Migration, sql } from "kysely";

/**
 * API keys. Only the SHA-256 of a key is stored: keys are 238 random bits, so a fast hash is
 * enough (nothing to brute-force), and a lookup by hash is one index probe.
 */
export const apiKeysMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`CREATE TABLE tidings_api_keys (
      id text PRIMARY KEY,
      name text NOT NULL,
      prefix text NOT NULL,
      key_hash bytea NOT NULL UNIQUE,
      grants jsonb NOT NULL,
      publish_rate integer,
      publish_burst integer,
      max_subscriptions integer,
      created_at timestamptz NOT NULL DEFAULT now(),
      revoked_at timestamptz
    )`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`DROP TABLE tidings_api_keys`.execute(db);
  },
};
