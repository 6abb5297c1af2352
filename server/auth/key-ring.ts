import { Code, ConnectError } from "@connectrpc/connect";
import { Scope } from "../../gen/tidings/v1/access_pb.js";
import type { Logger } from "../logging/logger.js";
import type { TypePattern } from "../filtering/type-pattern.js";
import { hashApiKeyHex } from "./api-key.js";
import { TokenBucket } from "./token-bucket.js";
import type { ApiKeyRow, ApiKeyStore } from "./api-key-store.js";
import { grantPatterns, type KeyLimits, type Principal, scopeByName } from "./principal.js";

export interface RingEntry {
  principal: Principal;
  revoked: boolean;
}

/** What a key gets when its own row leaves a limit unset. */
export type DefaultLimits = KeyLimits;

/** Lookups of unknown keys a second (and at once): random keys must not turn into a flood of queries. */
const missLookupsPerSecond = 50;
const missLookupBurst = 100;

/**
 * Every API key in memory, by hash, so a request costs one SHA-256 and a map lookup. The ring
 * reloads when keys change (this node's own changes at once; other nodes' on their NOTIFY or
 * the next timed reload). A key it does not know is looked up by its hash, since it may have
 * been created a moment ago on another node; those lookups are rate-limited.
 */
export class KeyRing {
  #byHash = new Map<string, RingEntry>();
  #pending: Promise<void> | undefined;
  #inFlight: Promise<void> | undefined;
  #missLookups = new TokenBucket(missLookupsPerSecond, missLookupBurst);

  constructor(
    private readonly store: ApiKeyStore,
    private readonly defaults: DefaultLimits,
    private readonly logger: Logger,
  ) {}

  /** The entry for a presented key, or undefined for a key that does not exist. */
  async find(key: string): Promise<RingEntry | undefined> {
    const hex = hashApiKeyHex(key);
    const known = this.#byHash.get(hex);
    if (known) return known;
    if (this.#missLookups.take() > 0) return undefined;
    let row: ApiKeyRow | undefined;
    try {
      row = await this.store.findByHash(Buffer.from(hex, "hex"));
    } catch (err) {
      this.logger.warn("could not look up an API key", { err });
      throw new ConnectError("the database is unavailable to check the API key; retry", Code.Unavailable);
    }
    if (!row) return undefined;
    const entry = { principal: this.principalOf(row), revoked: row.revoked_at !== null };
    this.#byHash.set(hex, entry);
    return entry;
  }

  /**
   * Reads every key again. A call while a read is running waits for a new read that starts
   * after it, so a change committed before the call is always seen.
   */
  reload(): Promise<void> {
    this.#pending ??= (async () => {
      await this.#inFlight?.catch(() => {});
      this.#pending = undefined;
      this.#inFlight = this.#load();
      return this.#inFlight;
    })();
    return this.#pending;
  }

  /** Reloads in the background (doorbell, timer); a failure keeps the keys it had. */
  refresh = (): void => {
    this.reload().catch((err) => this.logger.warn("could not reload the API keys; keeping the ones loaded", { err }));
  };

  async #load(): Promise<void> {
    const rows = await this.store.all();
    const next = new Map<string, RingEntry>();
    for (const row of rows) next.set(Buffer.from(row.key_hash).toString("hex"), { principal: this.principalOf(row), revoked: row.revoked_at !== null });
    this.#byHash = next;
  }

  principalOf(row: ApiKeyRow): Principal {
    const grants = new Map<Scope, readonly TypePattern[] | undefined>();
    for (const g of row.grants) {
      const scope = scopeByName.get(g.scope);
      if (scope === undefined) {
        this.logger.warn("an API key holds a scope this server does not know; ignoring it", { keyId: row.id, scope: g.scope });
        continue;
      }
      grants.set(scope, grantPatterns(g.event_types));
    }
    const publishRate = row.publish_rate ?? this.defaults.publishRate;
    const publishBurst = row.publish_burst ?? this.defaults.publishBurst;
    return {
      keyId: row.id,
      keyPrefix: row.prefix,
      grants,
      limits: {
        publishRate,
        // A rate without a burst may publish one second's worth at once.
        publishBurst: publishBurst || publishRate,
        maxSubscriptions: row.max_subscriptions ?? this.defaults.maxSubscriptions,
      },
    };
  }
}
