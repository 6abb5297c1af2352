import type { ColumnType } from "kysely";

/** The tables as Kysely sees them. The SQL that creates them is in ./migrations. */
export interface Database {
  tidings_events: EventsTable;
  tidings_log_head: LogHeadTable;
  tidings_webhooks: WebhooksTable;
  tidings_webhook_router: WebhookRouterTable;
  tidings_deliveries: DeliveriesTable;
  tidings_delivery_attempts: DeliveryAttemptsTable;
  tidings_delivery_windows: DeliveryWindowsTable;
  tidings_registered_files: RegisteredFilesTable;
  tidings_catalog_head: CatalogHeadTable;
  tidings_api_keys: ApiKeysTable;
  tidings_event_listeners: EventListenersTable;
  tidings_time_blocks: TimeBlocksTable;
}

/** The latest and earliest event time per block of sequences (see migrations 0011 and 0013, and event-log/time-summary.ts). */
export interface TimeBlocksTable {
  block: ColumnType<string, bigint | string, never>;
  /** -infinity for a block whose events are all gone. */
  max_time: ColumnType<Date, Date | string, never>;
  /** infinity for a block whose events are all gone (migration 0013). */
  min_time: ColumnType<Date, Date | string | undefined, never>;
}

/** A node listening for commit notifications (NOTIFY tidings_events), until its registration runs out. */
export interface EventListenersTable {
  id: string;
  listening_until: ColumnType<Date, Date | string, Date | string>;
}

/** The event log: one row per event, in sequence order. */
export interface EventsTable {
  sequence: ColumnType<string | bigint, bigint | string, never>;
  id: string;
  type: string;
  source: string;
  subject: string;
  time: ColumnType<Date, Date | string, never>;
  attributes: ColumnType<Record<string, string>, string, never>;
  /** The payload as the type's message in protobuf binary. */
  payload: ColumnType<Uint8Array, Uint8Array, never>;
  idempotency_key: string | null;
  /** SHA-256 of the publish request, to tell a retry from a different event under the same key. */
  request_hash: Uint8Array | null;
  recorded_at: ColumnType<Date, never, never>;
}

/**
 * A single row holding the last sequence handed out. Every writer locks it for the length of its
 * transaction, so transactions commit in sequence order and a reader of `sequence > cursor`
 * never skips an event that commits later with a smaller sequence.
 */
export interface LogHeadTable {
  id: ColumnType<number, never, never>;
  last_sequence: ColumnType<string | bigint, never, bigint | string>;
}

/** A signing secret; `expires_at` is set on the previous secret during a rotation. */
export interface StoredSecret {
  secret: string;
  expires_at: string | null;
}

/** A retry policy in milliseconds, defaults applied. */
export interface StoredRetryPolicy {
  maxAttempts: number;
  /** Explicit delays before attempt 2, 3, ...; the last repeats. */
  scheduleMs?: number[];
  /** Exponential backoff, when there is no schedule. */
  baseMs?: number;
  multiplier?: number;
  maxMs?: number;
}

export interface WebhooksTable {
  id: string;
  url: string;
  description: string;
  patterns: ColumnType<string[], string, string>;
  attributes: ColumnType<Record<string, string>, string, string>;
  filter: string;
  headers: ColumnType<Record<string, string>, string, string>;
  secrets: ColumnType<StoredSecret[], string, string>;
  retry_policy: ColumnType<StoredRetryPolicy, string, string>;
  timeout_ms: number;
  batch_max_events: number;
  batch_max_wait_ms: number;
  rate_limit: number;
  rate_next_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  ordered: boolean;
  enabled: boolean;
  content_mode: number;
  max_consecutive_failures: number;
  max_failing_ms: ColumnType<string | number, number, number>;
  disabled_reason: string;
  consecutive_failures: ColumnType<number, number | undefined, number>;
  failing_since: ColumnType<Date | null, Date | null | undefined, Date | null>;
  last_success_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  last_failure_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  from_sequence: ColumnType<string | bigint, string, string>;
  created_at: ColumnType<Date, Date | undefined, never>;
  updated_at: ColumnType<Date, Date | undefined, Date>;
}

export interface WebhookRouterTable {
  id: ColumnType<number, never, never>;
  last_sequence: ColumnType<string | bigint, never, string>;
  /** Bumped by triggers at every change of what routing reads of the enabled endpoints (migration 0010). */
  endpoints_version: ColumnType<string | bigint, never, never>;
}

/**
 * PostgreSQL text and jsonb cannot hold U+0000, so every text a request stores or matches in SQL
 * is refused with this when it carries one (payloads, stored as protobuf bytes, may).
 */
export const nulRefused = "must not contain the NUL character (U+0000)";

/** The largest sequence the log can hold: sequences are PostgreSQL bigints. */
export const maxSequence = 2n ** 63n - 1n;

/** Delivery status codes as stored; the API's DeliveryStatus enum uses the same numbers. */
export const deliveryStatus = { pending: 1, succeeded: 2, dead: 3 } as const;

export interface DeliveriesTable {
  id: string;
  webhook_id: string;
  event_sequence: ColumnType<string | bigint, string, never>;
  event_id: string;
  event_type: string;
  status: ColumnType<number, number | undefined, number>;
  attempts: ColumnType<number, number | undefined, number>;
  next_attempt_at: ColumnType<Date, Date | undefined, Date>;
  lease_owner: ColumnType<string | null, string | null | undefined, string | null>;
  lease_token: ColumnType<string | null, string | null | undefined, string | null>;
  lease_expires_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  last_status_code: ColumnType<number, number | undefined, number>;
  last_error: ColumnType<string, string | undefined, string>;
  replay: ColumnType<boolean, boolean | undefined, boolean>;
  /**
   * The successful attempt, recorded on the row (see migration 0009): when it started, how long
   * it took, the start of the response and the node that made it; NULL until a success is
   * recorded here. Its status code is last_status_code and its number `attempts`.
   */
  success_started_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  success_duration_ms: ColumnType<number | null, number | null | undefined, number | null>;
  success_response_excerpt: ColumnType<string | null, string | null | undefined, string | null>;
  success_node: ColumnType<string | null, string | null | undefined, string | null>;
  created_at: ColumnType<Date, Date | undefined, never>;
  updated_at: ColumnType<Date, Date | undefined, Date>;
}

/**
 * Deliveries routed and leased to a node that may have no row of their own yet (migration 0014):
 * one row per routing statement, its deliveries as parallel arrays.
 */
export interface DeliveryWindowsTable {
  id: string;
  lease_owner: string;
  lease_token: string;
  lease_expires_at: Date;
  created_at: ColumnType<Date, Date | undefined, never>;
  delivery_ids: string[];
  webhook_ids: string[];
  event_sequences: string[];
}

/** Attempts that failed; a success is recorded on its delivery's row (DeliveriesTable.success_started_at). */
export interface DeliveryAttemptsTable {
  id: ColumnType<string, never, never>;
  delivery_id: string;
  webhook_id: string;
  number: number;
  started_at: Date;
  duration_ms: number;
  status_code: number;
  response_excerpt: string;
  error: string;
  node: string;
}

/** A .proto file registered at runtime: its FileDescriptorProto, without source info. */
export interface RegisteredFilesTable {
  name: string;
  descriptor: Uint8Array;
  /** The catalog revision that last wrote this file. */
  revision: ColumnType<string | bigint, bigint | string, bigint | string>;
  registered_at: ColumnType<Date, never, Date | string>;
}

/** A single row: the revision of the registered types, bumped by every registration that changes a file. */
export interface CatalogHeadTable {
  id: ColumnType<number, never, never>;
  revision: ColumnType<string | bigint, never, bigint | string>;
}

/** A grant as stored: the scope's name ("publish", "webhooks:read", …) and its type patterns. */
export interface StoredGrant {
  scope: string;
  event_types: string[];
}

/** An API key: its SHA-256 and what it may do, never the key itself. */
export interface ApiKeysTable {
  id: string;
  name: string;
  /** The key's first 12 characters, shown to tell keys apart. */
  prefix: string;
  key_hash: Uint8Array;
  grants: ColumnType<StoredGrant[], string, string>;
  /** Null: the server's default; 0: no limit. */
  publish_rate: number | null;
  publish_burst: number | null;
  max_subscriptions: number | null;
  created_at: ColumnType<Date, never, never>;
  revoked_at: ColumnType<Date | null, never, Date | string | null>;
}
