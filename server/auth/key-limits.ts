import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { fieldError } from "../rpc/errors.js";
import type { Principal } from "./principal.js";
import type { CallerInfo, SecurityReporter } from "./security-reporter.js";
import { TokenBucket } from "./token-bucket.js";

/**
 * Per-key limits on this node: a token bucket of published events, and a count of open
 * Subscribe streams. Several nodes each allow a key its full limit.
 */
export class KeyLimiter {
  #buckets = new Map<string, TokenBucket>();
  #subscriptions = new Map<string, number>();

  constructor(private readonly reporter: SecurityReporter) {}

  /**
   * Takes `events` tokens from the key's bucket, or throws resource_exhausted with a
   * google.rpc.RetryInfo saying when to try again. `field` names the events of the request;
   * `caller` is asked only for a refusal's report.
   */
  takePublish(p: Principal, events: number, caller: () => CallerInfo, field: string): void {
    const { publishRate: rate, publishBurst: burst } = p.limits;
    if (!p.keyId || rate === 0) return;
    if (events > burst) {
      throw fieldError(Code.ResourceExhausted, [{ field, description: `holds ${events} events, more than this API key may publish at once (its burst is ${burst})` }]);
    }
    // A key's limits never change (keys are not edited, and defaults are fixed per process).
    let bucket = this.#buckets.get(p.keyId);
    if (!bucket) {
      bucket = new TokenBucket(rate, burst);
      this.#buckets.set(p.keyId, bucket);
    }
    const waitMs = bucket.take(events);
    if (waitMs === 0) return;
    this.reporter.rateLimited(p.keyId, p.keyPrefix, caller(), `publish_rate ${rate}/s`);
    throw new ConnectError(`this API key may publish ${rate} events a second (burst ${burst}); retry in ${waitMs} ms`, Code.ResourceExhausted, undefined, [
      { desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: durationFromMs(waitMs) }) },
    ]);
  }

  /** Counts a new Subscribe stream of the key, or throws resource_exhausted; returns the release. */
  openSubscription(p: Principal, caller: () => CallerInfo): () => void {
    const max = p.limits.maxSubscriptions;
    if (!p.keyId || max === 0) return () => {};
    const open = this.#subscriptions.get(p.keyId) ?? 0;
    if (open >= max) {
      this.reporter.rateLimited(p.keyId, p.keyPrefix, caller(), `max_subscriptions ${max}`);
      throw new ConnectError(`this API key already holds ${open} Subscribe streams on this node, its limit; close one first`, Code.ResourceExhausted);
    }
    this.#subscriptions.set(p.keyId, open + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#subscriptions.get(p.keyId) ?? 1) - 1;
      if (left === 0) this.#subscriptions.delete(p.keyId);
      else this.#subscriptions.set(p.keyId, left);
    };
  }
}
