import type { Kysely } from "kysely";
import type { ServerConfig } from "../config/config.js";
import { authModeOf } from "../config/config.js";
import type { Logger } from "../logging/logger.js";
import type { Doorbell } from "../storage/doorbell.js";
import type { Database } from "../storage/schema.js";
import { AccessGate } from "./access-gate.js";
import { ApiKeyStore } from "./api-key-store.js";
import { EventAccess } from "./event-access.js";
import { KeyLimiter } from "./key-limits.js";
import { KeyRing } from "./key-ring.js";
import { SecurityReporter, type SecurityReporterDeps } from "./security-reporter.js";

/** How often each node reloads its API keys when no NOTIFY says they changed. */
const keyReloadIntervalMs = 10_000;

/**
 * Sets up authentication: in "keys" mode the first admin key, the key ring (followed through
 * the doorbell and a timer) and the gate; in "open" mode a gate that lets everything through,
 * said loudly in the log.
 */
export async function startAuth(config: ServerConfig, db: Kysely<Database>, doorbell: Doorbell, logger: Logger, report: Pick<SecurityReporterDeps, "publish" | "counted">) {
  const mode = authModeOf(config);
  const store = new ApiKeyStore(db);
  // At most 5 security events (and log lines) a second, 20 at once: a flood is counted, not echoed.
  const reporter = new SecurityReporter({ ...report, logger, perSecond: 5, burst: 20 });
  const eventAccess = new EventAccess(new KeyLimiter(reporter), reporter);
  if (mode === "open") {
    logger.warn("authentication is off (--auth open): every process on this machine may call every method; listening on loopback only", { host: config.host });
    return { mode, store, ring: undefined, gate: new AccessGate(undefined, reporter), eventAccess, reporter, stop: () => {} };
  }
  const ensured = await store.ensureAdminKey(config.adminKey);
  if (ensured.created) {
    logger.warn("created the first admin API key; it is shown only this once, so store it now (tidings keys create makes more)", { adminKey: ensured.created });
  }
  if (ensured.configuredRevoked) logger.warn("the admin key given by --admin-key / TIDINGS_ADMIN_KEY is revoked and will be refused");
  const ring = new KeyRing(store, { publishRate: config.keyPublishRate, publishBurst: config.keyPublishBurst, maxSubscriptions: config.keyMaxSubscriptions }, logger);
  await ring.reload();
  doorbell.onKeysChange(ring.refresh);
  const timer = setInterval(ring.refresh, keyReloadIntervalMs);
  timer.unref();
  return { mode, store, ring, gate: new AccessGate(ring, reporter), eventAccess, reporter, stop: () => clearInterval(timer) };
}
