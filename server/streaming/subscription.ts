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
  const queue = new LiveQueue(o.bufferEvents, o.signal);
  let attached = false;
  let lastSent = Date.now();
  const beat = (): SubscriptionItem => {
    lastSent = Date.now();
    return { kind: "heartbeat", cursor };
  };
  const sqlFilter = { patterns: o.matcher.patterns, attributes: o.matcher.attributes };
  /** The catch-up page after `after`, being read from the database while the one before it is sent. */
  let readAhead: { after: bigint; target: bigint; page: Promise<StoredEvent[]> } | undefined;

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
          const ahead = readAhead?.after === cursor ? readAhead : undefined;
          readAhead = undefined;
          const inMemory = ahead ? undefined : o.tail.recent(cursor, target, o.pageSize);
          // A page read ahead only goes up to the target of its time (see below).
          const pageTarget = ahead?.target ?? target;
          const page = inMemory ?? (await (ahead?.page ?? o.reader.readRange(cursor, target, o.pageSize, sqlFilter)));
          const last = page[page.length - 1];
          // Read the next page from the database while this one is sent: reading and sending
          // one after the other left PostgreSQL idle while the stream was written and the
          // stream idle while PostgreSQL read, and a log too large for memory reads slower. A
          // full page that ends at the target leaves nothing to read ahead.
          if (inMemory === undefined && last !== undefined && page.length === o.pageSize && last.sequence < pageTarget && !o.tail.holds(last.sequence)) {
            const next = o.reader.readRange(last.sequence, pageTarget, o.pageSize, sqlFilter);
            next.catch(() => {}); // an abandoned read's failure is nobody's; a used one rethrows when awaited
            readAhead = { after: last.sequence, target: pageTarget, page: next };
          }
          for (const event of page) {
            if (o.signal.aborted) return;
            cursor = event.sequence;
            if (o.matcher.matches(event)) {
              lastSent = Date.now();
              yield { kind: "event", event, cursor };
            }
          }
          if (page.length < o.pageSize) cursor = pageTarget;
          if (Date.now() - lastSent >= o.heartbeatMs) yield beat();
          continue;
        }
        // No await between the check above and here: the tail cannot move in between.
        queue.reset();
        o.tail.attach(queue);
        attached = true;
        caughtUp();
      }
      const next = await queue.next(lastSent + o.heartbeatMs);
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
    queue.dispose();
    caughtUp();
  }
}

/**
 * The bounded queue between the tail and one subscriber. A live subscriber waits here for every
 * batch, so waiting is cheap: one abort listener for the queue's life, and one heartbeat timer
 * that is re-armed only when it fires early, not a timer and a listener per wait (with 100
 * subscribers at 1,000 events/s that was 100,000 of each a second).
 */
class LiveQueue implements TailListener {
  #batches: TailBatch[] = [];
  #queued = 0;
  #overflowed = false;
  #closed = false;
  #wake: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When #timer fires (ms since the epoch). */
  #timerDue = 0;
  readonly #onAbort = () => this.#wake?.();

  constructor(
    private readonly limit: number,
    private readonly signal: AbortSignal,
  ) {
    signal.addEventListener("abort", this.#onAbort, { once: true });
  }

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

  /** Stops the timer and the abort listener: the subscription is over. */
  dispose(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.signal.removeEventListener("abort", this.#onAbort);
  }

  /** The next batch, or why there is none; "timeout" once `deadline` (ms since the epoch) has passed. */
  async next(deadline: number): Promise<TailBatch | "timeout" | "overflow" | "closed" | "aborted"> {
    for (;;) {
      if (this.#closed) return "closed";
      if (this.signal.aborted) return "aborted";
      if (this.#overflowed) return "overflow";
      const batch = this.#batches.shift();
      if (batch) {
        this.#queued -= batch.events.length;
        return batch;
      }
      const now = Date.now();
      if (now >= deadline) return "timeout";
      // A timer due no later than the deadline wakes us in time (early, at worst: we look again).
      if (this.#timer === undefined || this.#timerDue > deadline) {
        clearTimeout(this.#timer);
        this.#timerDue = deadline;
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#wake?.();
        }, deadline - now);
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
  }
}
