import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { apiKeyPattern } from "../auth/api-key.js";

export type LogLevel = "debug" | "info" | "warn" | "error";

/** Everything the server can be told. Defaults live in one place: {@link defaultConfig}. */
export interface ServerConfig {
  host: string;
  port: number;
  /** postgres://… selects PostgreSQL; unset selects embedded PGlite in `dataDir`. */
  databaseUrl: string | undefined;
  /** PGlite's data directory (ignored with a database URL). "memory://" keeps nothing. */
  dataDir: string;
  /** Connections in the pg pool. */
  poolSize: number;
  logLevel: LogLevel;
  /** Largest request body the transport reads (Connect/gRPC `readMaxBytes`). */
  maxRequestBytes: number;
  /** Largest encoded payload of one event. */
  maxPayloadBytes: number;
  /** Most entries in one PublishBatch. */
  maxBatchEntries: number;
  /** Most events written in one group-commit transaction. */
  groupCommitMaxEvents: number;
  /** How often each node looks for new events when no NOTIFY arrives. */
  pollIntervalMs: number;
  /** Events a live subscriber may have queued before it is moved back to reading the log. */
  subscriberBufferEvents: number;
  /** Default heartbeat interval for Subscribe streams. */
  heartbeatIntervalMs: number;
  /** How long shutdown waits for in-flight requests before closing connections. */
  shutdownGraceMs: number;
  /** Names this node in delivery leases and attempt records; default host-pid. */
  nodeId: string;
  /** Addresses webhooks may reach although they are loopback/private/link-local (CIDRs, IPs, "loopback", "private"). */
  webhookAllowList: string[];
  /** Webhook requests in flight on this node, all endpoints together. */
  dispatcherMaxInFlight: number;
  /** Webhook requests in flight on this node to one endpoint. */
  dispatcherMaxInFlightPerEndpoint: number;
  /** Added to an endpoint's timeout to make a delivery's lease. */
  deliveryLeaseMarginMs: number;
  /**
   * How long a delivery in flight may go without a row of its own (only its routing window
   * records it; migration 0014) before the row is written, leased, for ListDeliveries to show.
   */
  deliveryUnwrittenMs: number;
  /** How often the dispatcher looks for due deliveries when nothing wakes it. */
  dispatcherPollIntervalMs: number;
  /** Shared secrets of POST /ingest/{source}, by source name. */
  ingestSecrets: Record<string, string>;
  /** Most characters of a CEL filter (Subscribe, ListEvents, webhooks). */
  maxFilterLength: number;
  /** Most terms (parsed nodes) of a CEL filter: it runs on every event, so its size bounds the work. */
  maxFilterTerms: number;
  /** Most comprehensions (all, exists, map, filter) nested in one another in a CEL filter. */
  maxFilterNesting: number;
  /** Most comprehension steps one evaluation of a filter may take; an event that needs more does not match. */
  maxFilterSteps: number;
  /** Events recorded longer ago are removed; 0 keeps every event. */
  eventRetentionHours: number;
  /** Succeeded deliveries and their attempts are removed this long after they finished; 0 keeps them. */
  deliveryRetentionHours: number;
  /** Dead letters and their attempts are removed this long after they died; 0 keeps them. */
  deadLetterRetentionHours: number;
  /** How often each node sweeps for rows past their retention. */
  retentionIntervalMs: number;
  /**
   * "keys": every call needs an API key. "open": no checks, allowed only on a loopback host.
   * "auto": open for the embedded database on loopback, keys otherwise. See {@link authModeOf}.
   */
  auth: "auto" | "keys" | "open";
  /** An admin API key to store at start, e.g. from a secret manager; otherwise one is made at the first start. */
  adminKey: string | undefined;
  /** Events a second each key may publish on each node, unless the key says otherwise; 0: no limit. */
  keyPublishRate: number;
  /** Events a key may publish at once; 0: one second's worth of its rate. */
  keyPublishBurst: number;
  /** Subscribe streams each key may hold open on each node, unless the key says otherwise; 0: no limit. */
  keyMaxSubscriptions: number;
}

export const defaultConfig: ServerConfig = {
  host: "127.0.0.1",
  port: 7233,
  databaseUrl: undefined,
  dataDir: ".tidings/data",
  poolSize: 10,
  logLevel: "info",
  maxRequestBytes: 4 * 1024 * 1024,
  maxPayloadBytes: 256 * 1024,
  maxBatchEntries: 1000,
  // A few hundred events a commit: the next group is sent while one is written, and the first
  // publishers are answered (and publish again) sooner. Eight PublishBatch clients of 100 ran at
  // 47-52k events/s with 300 against 43-50k with 2,000 in alternated runs; a larger PublishBatch
  // is one group whatever this is.
  groupCommitMaxEvents: 300,
  pollIntervalMs: 1000,
  subscriberBufferEvents: 1000,
  heartbeatIntervalMs: 15_000,
  shutdownGraceMs: 5_000,
  nodeId: "",
  webhookAllowList: [],
  dispatcherMaxInFlight: 64,
  dispatcherMaxInFlightPerEndpoint: 8,
  deliveryLeaseMarginMs: 30_000,
  deliveryUnwrittenMs: 1000,
  dispatcherPollIntervalMs: 1000,
  ingestSecrets: {},
  maxFilterLength: 4096,
  maxFilterTerms: 256,
  maxFilterNesting: 2,
  maxFilterSteps: 1_000,
  eventRetentionHours: 0,
  deliveryRetentionHours: 720,
  deadLetterRetentionHours: 2160,
  retentionIntervalMs: 60_000,
  auth: "auto",
  adminKey: undefined,
  keyPublishRate: 0,
  keyPublishBurst: 0,
  keyMaxSubscriptions: 100,
};

/** One row of the configuration table: flag, environment variable, how to parse. */
interface Setting {
  key: keyof ServerConfig;
  flag: string;
  env: string;
  kind: "string" | "int" | "list" | "map";
  help: string;
}

export const settings: readonly Setting[] = [
  { key: "host", flag: "host", env: "TIDINGS_HOST", kind: "string", help: "Interface to listen on" },
  { key: "port", flag: "port", env: "TIDINGS_PORT", kind: "int", help: "Port for gRPC, gRPC-Web and Connect" },
  { key: "databaseUrl", flag: "database-url", env: "DATABASE_URL", kind: "string", help: "PostgreSQL URL; unset = embedded PGlite. Sessions plan with random_page_cost 1.1 and jit off; the URL's options parameter replaces both (options=-c random_page_cost=4)" },
  { key: "dataDir", flag: "data-dir", env: "TIDINGS_DATA_DIR", kind: "string", help: "PGlite data directory" },
  { key: "poolSize", flag: "pool-size", env: "TIDINGS_POOL_SIZE", kind: "int", help: "PostgreSQL pool connections (a node opens two more of its own: the NOTIFY listener and the webhook-success recorder)" },
  { key: "logLevel", flag: "log-level", env: "TIDINGS_LOG_LEVEL", kind: "string", help: "debug, info, warn or error" },
  { key: "maxRequestBytes", flag: "max-request-bytes", env: "TIDINGS_MAX_REQUEST_BYTES", kind: "int", help: "Largest request body" },
  { key: "maxPayloadBytes", flag: "max-payload-bytes", env: "TIDINGS_MAX_PAYLOAD_BYTES", kind: "int", help: "Largest encoded event payload" },
  { key: "maxBatchEntries", flag: "max-batch-entries", env: "TIDINGS_MAX_BATCH_ENTRIES", kind: "int", help: "Most entries in one PublishBatch" },
  { key: "groupCommitMaxEvents", flag: "group-commit-max-events", env: "TIDINGS_GROUP_COMMIT_MAX_EVENTS", kind: "int", help: "Most events per group-commit transaction" },
  { key: "pollIntervalMs", flag: "poll-interval-ms", env: "TIDINGS_POLL_INTERVAL_MS", kind: "int", help: "Log poll interval when no NOTIFY arrives" },
  { key: "subscriberBufferEvents", flag: "subscriber-buffer-events", env: "TIDINGS_SUBSCRIBER_BUFFER_EVENTS", kind: "int", help: "Live buffer per subscriber before it falls back to the log" },
  { key: "heartbeatIntervalMs", flag: "heartbeat-interval-ms", env: "TIDINGS_HEARTBEAT_INTERVAL_MS", kind: "int", help: "Default Subscribe heartbeat interval" },
  { key: "shutdownGraceMs", flag: "shutdown-grace-ms", env: "TIDINGS_SHUTDOWN_GRACE_MS", kind: "int", help: "Grace period for in-flight requests on SIGTERM" },
  { key: "nodeId", flag: "node-id", env: "TIDINGS_NODE_ID", kind: "string", help: "Node name in delivery leases; empty = host-pid" },
  { key: "webhookAllowList", flag: "webhook-allow-list", env: "TIDINGS_WEBHOOK_ALLOW_LIST", kind: "list", help: "Comma-separated CIDRs, IPs, loopback or private that webhooks may reach" },
  { key: "dispatcherMaxInFlight", flag: "dispatcher-max-in-flight", env: "TIDINGS_DISPATCHER_MAX_IN_FLIGHT", kind: "int", help: "Webhook requests in flight per node" },
  { key: "dispatcherMaxInFlightPerEndpoint", flag: "dispatcher-max-in-flight-per-endpoint", env: "TIDINGS_DISPATCHER_MAX_IN_FLIGHT_PER_ENDPOINT", kind: "int", help: "Webhook requests in flight per node and endpoint" },
  { key: "deliveryLeaseMarginMs", flag: "delivery-lease-margin-ms", env: "TIDINGS_DELIVERY_LEASE_MARGIN_MS", kind: "int", help: "Lease = endpoint timeout + this margin" },
  { key: "deliveryUnwrittenMs", flag: "delivery-unwritten-ms", env: "TIDINGS_DELIVERY_UNWRITTEN_MS", kind: "int", help: "A delivery in flight this long gets its row written (ListDeliveries shows it); before, only its routing window records it" },
  { key: "dispatcherPollIntervalMs", flag: "dispatcher-poll-interval-ms", env: "TIDINGS_DISPATCHER_POLL_INTERVAL_MS", kind: "int", help: "Dispatcher poll interval for due deliveries" },
  { key: "ingestSecrets", flag: "ingest-secrets", env: "TIDINGS_INGEST_SECRETS", kind: "map", help: "source=secret pairs, comma-separated, for POST /ingest/{source}" },
  { key: "maxFilterLength", flag: "max-filter-length", env: "TIDINGS_MAX_FILTER_LENGTH", kind: "int", help: "Most characters of a CEL filter" },
  { key: "maxFilterTerms", flag: "max-filter-terms", env: "TIDINGS_MAX_FILTER_TERMS", kind: "int", help: "Most terms of a CEL filter (it runs on every event)" },
  { key: "maxFilterNesting", flag: "max-filter-nesting", env: "TIDINGS_MAX_FILTER_NESTING", kind: "int", help: "Most nested comprehensions (all, exists, map, filter) in a CEL filter" },
  { key: "maxFilterSteps", flag: "max-filter-steps", env: "TIDINGS_MAX_FILTER_STEPS", kind: "int", help: "Most comprehension steps one evaluation of a CEL filter may take (and about 250 ms); an event that needs more does not match" },
  { key: "eventRetentionHours", flag: "event-retention-hours", env: "TIDINGS_EVENT_RETENTION_HOURS", kind: "int", help: "Remove events recorded longer ago; 0 keeps every event" },
  { key: "deliveryRetentionHours", flag: "delivery-retention-hours", env: "TIDINGS_DELIVERY_RETENTION_HOURS", kind: "int", help: "Remove succeeded deliveries and their attempts this long after; 0 keeps them" },
  { key: "deadLetterRetentionHours", flag: "dead-letter-retention-hours", env: "TIDINGS_DEAD_LETTER_RETENTION_HOURS", kind: "int", help: "Remove dead letters and their attempts this long after; 0 keeps them" },
  { key: "retentionIntervalMs", flag: "retention-interval-ms", env: "TIDINGS_RETENTION_INTERVAL_MS", kind: "int", help: "How often each node sweeps for rows past their retention" },
  { key: "auth", flag: "auth", env: "TIDINGS_AUTH", kind: "string", help: "keys (every call needs an API key), open (no checks; loopback only) or auto (open for embedded PGlite on loopback, else keys)" },
  { key: "adminKey", flag: "admin-key", env: "TIDINGS_ADMIN_KEY", kind: "string", help: "An admin API key (tid_…) to store at start; else one is made and printed at the first start" },
  { key: "keyPublishRate", flag: "key-publish-rate", env: "TIDINGS_KEY_PUBLISH_RATE", kind: "int", help: "Events/s each API key may publish per node, unless the key sets its own; 0: no limit" },
  { key: "keyPublishBurst", flag: "key-publish-burst", env: "TIDINGS_KEY_PUBLISH_BURST", kind: "int", help: "Events a key may publish at once; 0: one second of its rate" },
  { key: "keyMaxSubscriptions", flag: "key-max-subscriptions", env: "TIDINGS_KEY_MAX_SUBSCRIPTIONS", kind: "int", help: "Subscribe streams each API key may hold open per node, unless the key sets its own; 0: no limit" },
];

const logLevels: readonly LogLevel[] = ["debug", "info", "warn", "error"];
const authModes: ReadonlyArray<ServerConfig["auth"]> = ["auto", "keys", "open"];

/** 127.0.0.0/8, ::1 and localhost: addresses no other machine can reach. */
export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host);
}

/** Whether calls need API keys: open only where nothing but this machine can call, and never by accident. */
export function authModeOf(config: Pick<ServerConfig, "auth" | "databaseUrl" | "host">): "keys" | "open" {
  if (config.auth !== "auto") return config.auth;
  return config.databaseUrl === undefined && isLoopbackHost(config.host) ? "open" : "keys";
}

export class ConfigError extends Error {}

/** Reads flags (`--port 8080`), then environment variables, then defaults, and checks them. */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv): ServerConfig {
  const { values } = parseArgs({
    args: [...argv],
    options: Object.fromEntries(settings.map((s) => [s.flag, { type: "string" as const }])),
    strict: true,
    allowPositionals: false,
  });
  const config: Record<string, unknown> = { ...defaultConfig };
  for (const s of settings) {
    const raw = (values as Record<string, string | undefined>)[s.flag] ?? env[s.env];
    if (raw === undefined || raw === "") continue;
    if (s.kind === "int") {
      const n = Number(raw);
      if (!Number.isInteger(n) || n < 0) throw new ConfigError(`--${s.flag} / ${s.env}: expected a non-negative integer, got "${raw}"`);
      config[s.key] = n;
    } else if (s.kind === "list") {
      config[s.key] = raw.split(",").map((x) => x.trim()).filter(Boolean);
    } else if (s.kind === "map") {
      const pairs = raw.split(",").map((x) => x.trim()).filter(Boolean);
      const map: Record<string, string> = {};
      for (const pair of pairs) {
        const eq = pair.indexOf("=");
        if (eq <= 0 || eq === pair.length - 1) throw new ConfigError(`--${s.flag} / ${s.env}: expected name=value pairs, got "${pair.slice(0, 40)}"`);
        map[pair.slice(0, eq)] = pair.slice(eq + 1);
      }
      config[s.key] = map;
    } else {
      config[s.key] = raw;
    }
  }
  const result = config as unknown as ServerConfig;
  if (!logLevels.includes(result.logLevel)) {
    throw new ConfigError(`--log-level / TIDINGS_LOG_LEVEL: expected one of ${logLevels.join(", ")}, got "${result.logLevel}"`);
  }
  if (result.port > 65535) throw new ConfigError(`--port / TIDINGS_PORT: ${result.port} is not a port`);
  if (result.retentionIntervalMs < 1000) throw new ConfigError(`--retention-interval-ms / TIDINGS_RETENTION_INTERVAL_MS: at least 1000, got ${result.retentionIntervalMs}`);
  if (!authModes.includes(result.auth)) throw new ConfigError(`--auth / TIDINGS_AUTH: expected one of ${authModes.join(", ")}, got "${result.auth}"`);
  if (result.auth === "open" && !isLoopbackHost(result.host)) {
    throw new ConfigError(`--auth open runs without any authentication and is allowed only on a loopback host, not "${result.host}": use --auth keys`);
  }
  if (result.adminKey !== undefined && !apiKeyPattern.test(result.adminKey)) {
    throw new ConfigError("--admin-key / TIDINGS_ADMIN_KEY: expected tid_ and 40 letters and digits (make one with: tidings keys generate)");
  }
  if (!result.nodeId) result.nodeId = `${hostname()}-${process.pid}`;
  return result;
}
