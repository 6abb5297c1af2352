import { randomUUID } from "node:crypto";
import pg from "pg";
import type { Logger } from "../logging/logger.js";

/** The NOTIFY channel writers ring after committing events. It carries no event data. */
export const eventsChannel = "tidings_events";
/** The NOTIFY channel a registration of event types rings after committing. */
export const catalogChannel = "tidings_catalog";
/** The NOTIFY channel a change of API keys (create, revoke) rings after committing. */
export const keysChannel = "tidings_api_keys";

/** How long a listener's registration in tidings_event_listeners lasts, and how often it is renewed. */
const listenerRegistrationMs = 30_000;
const listenerRenewalMs = 10_000;

/**
 * A wake-up signal from other nodes. Notifications can be merged or lost (e.g. while the
 * listening connection reconnects), so readers also poll; the doorbell only cuts latency.
 *
 * Commits ring only when another node listens (see AppendQueueOptions.listenerId): each
 * listening node registers in tidings_event_listeners once its LISTEN is in place, renews the
 * registration while its connection lives, and removes it when it closes. A node that stops
 * renewing (crashed, or cut off) is no longer rung once its registration runs out, and polls.
 */
export interface Doorbell {
  /** Names this node's listener in tidings_event_listeners; commits need not ring for it. */
  readonly listenerId: string;
  /**
   * Registers the listener, so that other nodes' commits ring it, and keeps it registered.
   * Called once the schema is migrated (the table may not exist before), and before this
   * node's readers start: they read the log from the head when they do, so commits that did
   * not ring this node before it registered are not missed.
   */
  announce(): Promise<void>;
  /** The listener gets the head sequence the ring announced, or nothing when it may have missed rings. */
  onRing(listener: (head?: bigint) => void): void;
  /** Another node (or this one) registered event types. Rung on reconnect too: one may have been missed. */
  onCatalogChange(listener: () => void): void;
  /** API keys were created or revoked. Rung on reconnect too. */
  onKeysChange(listener: () => void): void;
  close(): Promise<void>;
}

export const silentDoorbell: Doorbell = {
  listenerId: "",
  async announce() {},
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
  const listenerId = `listener_${randomUUID()}`;
  let client: pg.Client | undefined;
  /** The connection while it is up (client may be a placeholder that never connects). */
  let live: pg.Client | undefined;
  let closed = false;
  let announced = false;
  let renewTimer: NodeJS.Timeout | undefined;
  let retryDelayMs = 100;
  let retryTimer: NodeJS.Timeout | undefined;

  /**
   * Registers (or renews) this listener on the listening connection itself, after its LISTEN:
   * once another node's commit sees the row, this node hears its NOTIFY. Registrations of
   * nodes gone for an hour are cleared on the way. A failure is only logged: other nodes then
   * stop ringing this one when the registration runs out, and its readers poll.
   */
  const register = async (c: pg.Client): Promise<void> => {
    try {
      await c.query(
        `INSERT INTO tidings_event_listeners (id, listening_until) VALUES ($1, now() + $2 * interval '1 millisecond')
         ON CONFLICT (id) DO UPDATE SET listening_until = excluded.listening_until`,
        [listenerId, listenerRegistrationMs],
      );
      await c.query(`DELETE FROM tidings_event_listeners WHERE listening_until < now() - interval '1 hour'`);
    } catch (err) {
      if (!closed) logger.warn("could not register as a listener; other nodes may not ring this one, and its readers poll", { err });
    }
  };

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
    if (announced) await register(c);
    client = c;
    live = c;
    retryDelayMs = 100;
    // Anything committed while we were not listening is picked up now.
    ring();
    ringCatalog();
    ringKeys();
  };
  const scheduleReconnect = (failed: pg.Client) => {
    if (closed || client !== failed || retryTimer) return;
    client = undefined;
    live = undefined;
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
    listenerId,
    async announce() {
      if (announced || closed) return;
      announced = true;
      if (live) await register(live);
      renewTimer = setInterval(() => {
        if (live) void register(live);
      }, listenerRenewalMs);
      renewTimer.unref();
    },
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
      clearInterval(renewTimer);
      // Other nodes stop ringing this one at once, not when the registration runs out.
      if (announced) await live?.query("DELETE FROM tidings_event_listeners WHERE id = $1", [listenerId]).catch(() => {});
      await client?.end().catch(() => {});
    },
  };
}
