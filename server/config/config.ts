import { parseArgs } from "node:util";

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
  groupCommitMaxEvents: 2000,
  pollIntervalMs: 1000,
  subscriberBufferEvents: 1000,
  heartbeatIntervalMs: 15_000,
  shutdownGraceMs: 5_000,
};

/** One row of the configuration table: flag, environment variable, how to parse. */
interface Setting {
  key: keyof ServerConfig;
  flag: string;
  env: string;
  kind: "string" | "int";
  help: string;
}

export const settings: readonly Setting[] = [
  { key: "host", flag: "host", env: "TIDINGS_HOST", kind: "string", help: "Interface to listen on" },
  { key: "port", flag: "port", env: "TIDINGS_PORT", kind: "int", help: "Port for gRPC, gRPC-Web and Connect" },
  { key: "databaseUrl", flag: "database-url", env: "DATABASE_URL", kind: "string", help: "PostgreSQL URL; unset = embedded PGlite" },
  { key: "dataDir", flag: "data-dir", env: "TIDINGS_DATA_DIR", kind: "string", help: "PGlite data directory" },
  { key: "poolSize", flag: "pool-size", env: "TIDINGS_POOL_SIZE", kind: "int", help: "PostgreSQL pool connections" },
  { key: "logLevel", flag: "log-level", env: "TIDINGS_LOG_LEVEL", kind: "string", help: "debug, info, warn or error" },
  { key: "maxRequestBytes", flag: "max-request-bytes", env: "TIDINGS_MAX_REQUEST_BYTES", kind: "int", help: "Largest request body" },
  { key: "maxPayloadBytes", flag: "max-payload-bytes", env: "TIDINGS_MAX_PAYLOAD_BYTES", kind: "int", help: "Largest encoded event payload" },
  { key: "maxBatchEntries", flag: "max-batch-entries", env: "TIDINGS_MAX_BATCH_ENTRIES", kind: "int", help: "Most entries in one PublishBatch" },
  { key: "groupCommitMaxEvents", flag: "group-commit-max-events", env: "TIDINGS_GROUP_COMMIT_MAX_EVENTS", kind: "int", help: "Most events per group-commit transaction" },
  { key: "pollIntervalMs", flag: "poll-interval-ms", env: "TIDINGS_POLL_INTERVAL_MS", kind: "int", help: "Log poll interval when no NOTIFY arrives" },
  { key: "subscriberBufferEvents", flag: "subscriber-buffer-events", env: "TIDINGS_SUBSCRIBER_BUFFER_EVENTS", kind: "int", help: "Live buffer per subscriber before it falls back to the log" },
  { key: "heartbeatIntervalMs", flag: "heartbeat-interval-ms", env: "TIDINGS_HEARTBEAT_INTERVAL_MS", kind: "int", help: "Default Subscribe heartbeat interval" },
  { key: "shutdownGraceMs", flag: "shutdown-grace-ms", env: "TIDINGS_SHUTDOWN_GRACE_MS", kind: "int", help: "Grace period for in-flight requests on SIGTERM" },
];

const logLevels: readonly LogLevel[] = ["debug", "info", "warn", "error"];

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
    } else {
      config[s.key] = raw;
    }
  }
  const result = config as unknown as ServerConfig;
  if (!logLevels.includes(result.logLevel)) {
    throw new ConfigError(`--log-level / TIDINGS_LOG_LEVEL: expected one of ${logLevels.join(", ")}, got "${result.logLevel}"`);
  }
  if (result.port > 65535) throw new ConfigError(`--port / TIDINGS_PORT: ${result.port} is not a port`);
  return result;
}
