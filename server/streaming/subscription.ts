import type { EventReader } from "../event-log/event-reader.js";
import type { StoredEvent } from "../event-log/stored-event.js";
import type { EventMatcher } from "../filtering/event-matcher.js";
import type { LogTail, TailBatch, TailListener } from "./log-tail.js";

export type SubscriptionItem =
  | { kind: "event"; event: StoredEvent; cursor: bigint }
  | { kind: "heartbeat"; cursor: bigint };

export interface SubscriptionOptions {
  reader: EventReader;
  tail: LogTail;
  matcher: EventMatcher;
  /** Deliver events after this sequence. */
  cursor: bigint;
  /** Live events a subscriber may have queued before it goes back to reading the log. */
  bufferEvents: number;
  heartbeatMs: number;
  /** Rows per catch-up read. */
  pageSize: number;
  signal: AbortSignal;
  /** Called when the subscriber overflowed its buffer and went back to reading the log. */
  onFallback?: () => void;
}

/**
 * One subscriber's stream: it reads the log from its cursor (catch-up) until it reaches the
 * node's tail, then attaches and takes the tail's batches (live). Both phases yield only
 * events with sequence > cursor, in order, so the hand-over has no gap and no duplicate. A
 * subscriber that stops pulling fills its bounded queue, is detached, and goes back to reading
 * the log: memory stays bounded and the publishers and other subscribers never wait for it.
 *
 * It yields a heartbeat first (so the client knows it is subscribed and has a cursor) and then
 * whenever nothing was sent for `heartbeatMs`. It ends when the signal aborts or the tail stops.
 */
export async function* runSubscription(o: SubscriptionOptions): AsyncGenerator<SubscriptionItem> {
  let cursor = o.cursor;
  const queue = new LiveQueue(o.bufferEvents);
  let attached = false;
  let lastSent = Date.now();
  const beat = (): SubscriptionItem => {
    lastSent = Date.now();
    return { kind: "heartbeat", cursor };
  };
  const sqlFilter = { patterns: o.matcher.patterns, attributes: o.matcher.attributes };

  // While not attached the subscriber reads toward the tail, which keeps recent rows for it.
  let catchingUp = true;
  o.tail.catchUpStarted();
  const caughtUp = () => {
    if (catchingUp) o.tail.catchUpEnded();
    catchingUp = false;
  };
  yield beat();
  try {
    while (!o.signal.aborted) {
      if (!attached) {
        const target = o.tail.position;
        if (cursor < target) {
          const page = o.tail.recent(cursor, target, o.pageSize) ?? (await o.reader.readRange(cursor, target, o.pageSize, sqlFilter));
          for (const event of page) {
            if (o.signal.aborted) return;
            cursor = event.sequence;
            if (o.matcher.matches(event)) {
              lastSent = Date.now();
              yield { kind: "event", event, cursor };
            }
          }
          if (page.length < o.pageSize) cursor = target;
          if (Date.now() - lastSent >= o.heartbeatMs) yield beat();
          continue;
        }
        // No await between the check above and here: the tail cannot move in between.
        queue.reset();
        o.tail.attach(queue);
        attached = true;
        caughtUp();
      }
      const next = await queue.next(Math.max(0, o.heartbeatMs - (Date.now() - lastSent)), o.signal);
      if (next === "timeout") {
        yield beat();
      } else if (next === "closed" || next === "aborted") {
        return;
      } else if (next === "overflow" || next.after > cursor) {
        // Too slow (or, defensively, a batch that does not start where we stand): re-read the log.
        o.tail.detach(queue);
        o.onFallback?.();
        attached = false;
        catchingUp = true;
        o.tail.catchUpStarted();
      } else {
        for (const event of next.events) {
          if (event.sequence <= cursor) continue;
          cursor = event.sequence;
          if (o.matcher.matches(event)) {
            lastSent = Date.now();
            yield { kind: "event", event, cursor };
          }
        }
        if (next.upTo > cursor) cursor = next.upTo;
      }
    }
  } finally {
    o.tail.detach(queue);
    caughtUp();
  }
}

/** The bounded queue between the tail and one subscriber. */
class LiveQueue implements TailListener {
  #batches: TailBatch[] = [];
  #queued = 0;
  #overflowed = false;
  #closed = false;
  #wake: (() => void) | undefined;

  constructor(private readonly limit: number) {}

  reset(): void {
    this.#batches = [];
    this.#queued = 0;
    this.#overflowed = false;
  }

  offer(batch: TailBatch): void {
    if (this.#overflowed) return;
    this.#batches.push(batch);
    this.#queued += batch.events.length;
    if (this.#queued > this.limit) {
      this.#overflowed = true;
      this.#batches = [];
      this.#queued = 0;
    }
    this.#wake?.();
  }

  close(): void {
    this.#closed = true;
    this.#wake?.();
  }

  async next(timeoutMs: number, signal: AbortSignal): Promise<TailBatch | "timeout" | "overflow" | "closed" | "aborted"> {
    for (;;) {
      if (this.#closed) return "closed";
      if (signal.aborted) return "aborted";
      if (this.#overflowed) return "overflow";
      const batch = this.#batches.shift();
      if (batch) {
        this.#queued -= batch.events.length;
        return batch;
      }
      const woke = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => done(false), timeoutMs);
        const onAbort = () => done(true);
        const done = (value: boolean) => {
          clearTimeout(timer);
          signal.removeEventListener("abort", onAbort);
          this.#wake = undefined;
          resolve(value);
        };
        this.#wake = () => done(true);
        signal.addEventListener("abort", onAbort, { once: true });
      });
      if (!woke) return "timeout";
    }
  }
}
