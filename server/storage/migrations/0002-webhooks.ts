import { type Kysely, type Migration, sql } from "kysely";

/** Webhook endpoints, the router's cursor into the log, deliveries and their attempts. */
export const webhooksMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`CREATE TABLE tidings_webhooks (
      id text PRIMARY KEY,
      url text NOT NULL,
      description text NOT NULL DEFAULT '',
      patterns jsonb NOT NULL DEFAULT '[]',
      attributes jsonb NOT NULL DEFAULT '{}',
      filter text NOT NULL DEFAULT '',
      headers jsonb NOT NULL DEFAULT '{}',
      secrets jsonb NOT NULL,
      retry_policy jsonb NOT NULL,
      timeout_ms integer NOT NULL,
      batch_max_events integer NOT NULL DEFAULT 0,
      batch_max_wait_ms integer NOT NULL DEFAULT 0,
      rate_limit double precision NOT NULL DEFAULT 0,
      rate_next_at timestamptz,
      ordered boolean NOT NULL DEFAULT false,
      enabled boolean NOT NULL DEFAULT true,
      content_mode smallint NOT NULL DEFAULT 1,
      max_consecutive_failures integer NOT NULL,
      max_failing_ms bigint NOT NULL,
      disabled_reason text NOT NULL DEFAULT '',
      consecutive_failures integer NOT NULL DEFAULT 0,
      failing_since timestamptz,
      last_success_at timestamptz,
      last_failure_at timestamptz,
      from_sequence bigint NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
    // Where the router stands in the log: deliveries up to here are materialised. Moved in the
    // same transaction that inserts them, so an event is routed once, crash or not.
    await sql`CREATE TABLE tidings_webhook_router (
      id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
      last_sequence bigint NOT NULL
    )`.execute(db);
    await sql`INSERT INTO tidings_webhook_router (id, last_sequence)
      SELECT 1, last_sequence FROM tidings_log_head WHERE id = 1`.execute(db);
    await sql`CREATE TABLE tidings_deliveries (
      id text PRIMARY KEY,
      webhook_id text NOT NULL REFERENCES tidings_webhooks (id) ON DELETE CASCADE,
      event_sequence bigint NOT NULL,
      event_id text NOT NULL,
      event_type text NOT NULL,
      status smallint NOT NULL DEFAULT 1,
      attempts integer NOT NULL DEFAULT 0,
      next_attempt_at timestamptz NOT NULL DEFAULT now(),
      lease_owner text,
      lease_token text,
      lease_expires_at timestamptz,
      last_status_code integer NOT NULL DEFAULT 0,
      last_error text NOT NULL DEFAULT '',
      replay boolean NOT NULL DEFAULT false,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db);
    await sql`CREATE INDEX tidings_deliveries_due ON tidings_deliveries (next_attempt_at) WHERE status = 1`.execute(db);
    await sql`CREATE INDEX tidings_deliveries_webhook ON tidings_deliveries (webhook_id, status, event_sequence)`.execute(db);
    await sql`CREATE INDEX tidings_deliveries_event ON tidings_deliveries (event_id)`.execute(db);
    await sql`CREATE TABLE tidings_delivery_attempts (
      id bigserial PRIMARY KEY,
      delivery_id text NOT NULL REFERENCES tidings_deliveries (id) ON DELETE CASCADE,
      webhook_id text NOT NULL,
      number integer NOT NULL,
      started_at timestamptz NOT NULL,
      duration_ms integer NOT NULL,
      status_code integer NOT NULL,
      response_excerpt text NOT NULL DEFAULT '',
      error text NOT NULL DEFAULT '',
      node text NOT NULL DEFAULT ''
    )`.execute(db);
    await sql`CREATE INDEX tidings_delivery_attempts_delivery ON tidings_delivery_attempts (delivery_id, id)`.execute(db);
    await sql`CREATE INDEX tidings_delivery_attempts_webhook ON tidings_delivery_attempts (webhook_id, started_at)`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`DROP TABLE tidings_delivery_attempts`.execute(db);
    await sql`DROP TABLE tidings_deliveries`.execute(db);
    await sql`DROP TABLE tidings_webhook_router`.execute(db);
    await sql`DROP TABLE tidings_webhooks`.execute(db);
  },
};
