import pg from "pg";
import type { Logger } from "../logging/logger.js";

/** The NOTIFY channel writers ring after committing events. It carries no event data. */
export const eventsChannel = "tidings_events";
/** The NOTIFY channel a registration of event types rings after committing. */
export const catalogChannel = "tidings_catalog";
/** The NOTIFY channel a change of API keys (create, revoke) rings after committing. */
export const keysChannel = "tidings_api_keys";

/**
 * A wake-up signal from other nodes. Notifications can be merged or lost (e.g. while the
 * listening connection reconnects), so readers also poll; the doorbell only cuts latency.
 */
export interface Doorbell {
  /** The listener gets the head sequence the ring announced, or nothing when it may have missed rings. */
  onRing(listener: (head?: bigint) => void): void;
  /** Another node (or this one) registered event types. Rung on reconnect too: one may have been missed. */
  onCatalogChange(listener: () => void): void;
  /** API keys were created or revoked. Rung on reconnect too. */
  onKeysChange(listener: () => void): void;
  close(): Promise<void>;
}

export const silentDoorbell: Doorbell = {
  onRing() {},
  onCatalogChange() {},
  onKeysChange() {},
  async close() {},
};

/** LISTENs on a dedicated connection and reconnects with backoff when it drops. */
export async function pgDoorbell(url: string, logger: Logger): Promise<Doorbell> {
  const listeners: Array<(head?: bigint) => void> = [];
  const catalogListeners: Array<() => void> = [];
  const keysListeners: Array<() => void> = [];
  let client: pg.Client | undefined;
  let closed = false;
  let retryDelayMs = 100;
  let retryTimer: NodeJS.Timeout | undefined;

  const ring = (payload?: string) => {
    const head = payload !== undefined && /^\d+$/.test(payload) ? BigInt(payload) : undefined;
    listeners.forEach((l) => l(head));
  };
  const ringCatalog = () => catalogListeners.forEach((l) => l());
  const ringKeys = () => keysListeners.forEach((l) => l());
  const connect = async (): Promise<void> => {
    const c = new pg.Client({ connectionString: url });
    c.on("notification", (n) => {
      if (n.channel === catalogChannel) ringCatalog();
      else if (n.channel === keysChannel) ringKeys();
      else ring(n.payload);
    });
    c.on("error", (err) => {
      logger.warn("doorbell connection failed; readers fall back to polling", { err });
      scheduleReconnect(c);
    });
    c.on("end", () => scheduleReconnect(c));
    await c.connect();
    await c.query(`LISTEN ${eventsChannel}`);
    await c.query(`LISTEN ${catalogChannel}`);
    await c.query(`LISTEN ${keysChannel}`);
    client = c;
    retryDelayMs = 100;
    // Anything committed while we were not listening is picked up now.
    ring();
    ringCatalog();
    ringKeys();
  };
  const scheduleReconnect = (failed: pg.Client) => {
    if (closed || client !== failed || retryTimer) return;
    client = undefined;
    failed.end().catch(() => {});
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      connect().catch((err) => {
        logger.warn("doorbell reconnect failed", { err, retryInMs: retryDelayMs });
        retryDelayMs = Math.min(retryDelayMs * 2, 10_000);
        const placeholder = new pg.Client();
        client = placeholder;
        scheduleReconnect(placeholder);
      });
    }, retryDelayMs);
  };

  await connect();
  return {
    onRing(listener) {
      listeners.push(listener);
    },
    onCatalogChange(listener) {
      catalogListeners.push(listener);
    },
    onKeysChange(listener) {
      keysListeners.push(listener);
    },
    async close() {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      await client?.end().catch(() => {});
    },
  };
}
