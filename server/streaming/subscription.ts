import type { EventReader } from "../event-log/event-reader.js";
import type { StoredEvent } from "../event-log/stored-event.js";
import type { EventMatcher } from "../filtering/event-matcher.js";
import { nextInTurn, type PollableIterator } from "../concurrency/pollable-iterator.js";
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
 * Like a generator, it starts at the first next() (or fill(): it can be polled, see
 * PollableIterator) and cleans up when it ends, when return() is called, or when reading fails.
 */
export function runSubscription(o: SubscriptionOptions): Subscription {
  return new Subscription(o);
}

const finished: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });
const atHand: Promise<void> = Promise.resolve();

/**
 * runSubscription's stream. Not an async generator: every message to every subscriber passes
 * through here, and a generator's yield costs a promise, a result object and a resumption per
 * message. A batch from the tail or a catch-up page becomes its items at once, which poll()
 * then hands out without waiting; only an empty stream waits (fill()). Live, poll() takes the
 * batches the tail queued itself, and fill() is the queue's own wait: a batch reaches a
 * consumer that polls (the gRPC fast path) through one promise, not a chain of async frames.
 */
export class Subscription implements AsyncIterableIterator<SubscriptionItem>, PollableIterator<SubscriptionItem> {
  #cursor: bigint;
  /** Made at the start (the first fill()), as a generator's body would: it listens to the signal. */
  #queue: LiveQueue | undefined;
  #attached = false;
  #lastSent = Date.now();
  readonly #sqlFilter: { patterns: SubscriptionOptions["matcher"]["patterns"]; attributes: SubscriptionOptions["matcher"]["attributes"] };
  /** The catch-up page after `after`, being read from the database while the one before it is sent. */
  #readAhead: { after: bigint; target: bigint; page: Promise<StoredEvent[]> } | undefined;
  /** While not attached the subscriber reads toward the tail, which keeps recent rows for it. */
  #catchingUp = false;
  #started = false;
  #ended = false;
  /** Items made and not yet handed out: #pending[#taken] is the next. */
  #pending: SubscriptionItem[] = [];
  #taken = 0;
  /** The fill() under way: a second caller waits for the same one rather than read beside it. */
  #filling: Promise<void> | undefined;
  /** The latest #fill() has ended (see fill()). */
  #fillEnded = false;
  /** Why reading failed, for the next poll() to throw (fill() never rejects: see PollableIterator). */
  #failure: { error: unknown } | undefined;

  constructor(private readonly o: SubscriptionOptions) {
    this.#cursor = o.cursor;
    this.#sqlFilter = { patterns: o.matcher.patterns, attributes: o.matcher.attributes };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /**
   * The next result if it is at hand (an item made earlier, or the end), undefined if the
   * stream must first wait (fill()). Never waits.
   */
  poll(): IteratorResult<SubscriptionItem> | undefined {
    if (this.#ended) {
      const failure = this.#failure;
      if (failure === undefined) return finished;
      this.#failure = undefined;
      throw failure.error;
    }
    // The queue (made at the start) notes the abort: the signal's own getter is a native call per poll.
    if (this.#queue?.aborted) {
      this.#end();
      return finished;
    }
    if (this.#attached && this.#taken === this.#pending.length) {
      this.#takeLive();
      if (this.#ended) return finished;
    }
    if (this.#taken < this.#pending.length) {
      const value = this.#pending[this.#taken++]!;
      if (this.#taken === this.#pending.length) {
        this.#pending = [];
        this.#taken = 0;
      }
      return { done: false, value };
    }
    return undefined;
  }

  /**
   * Waits until poll() may have a result: items, the end, or (if reading failed) the failure.
   * Never rejects. Live, it is the queue's wait, which ends at once when the queue holds
   * something (poll() takes it) or a heartbeat is due; reading toward the tail, it reads
   * (#fill), and it ends early once the subscriber attaches.
   */
  fill(): Promise<void> {
    if (this.#filling !== undefined) return this.#filling;
    if (this.#attached) {
      return this.#taken < this.#pending.length || this.#ended ? atHand : this.#queue!.wait(this.#lastSent + this.o.heartbeatMs);
    }
    // Kept for callers beside this one only while it waits: one that had nothing to wait for
    // has ended already. (No .finally() to clear it: a promise more per wait made a live
    // delivery 40% costlier in the in-process fan-out bench.)
    this.#fillEnded = false;
    const filling = this.#fill();
    if (!this.#fillEnded) this.#filling = filling;
    return filling;
  }

  async #fill(): Promise<void> {
    try {
      if (!this.#started) this.#start();
      // Attached, there is nothing to read: the live wait is fill()'s.
      while (!this.#ended && this.#taken === this.#pending.length && !this.#attached) {
        if (this.o.signal.aborted) this.#end();
        else await this.#step();
      }
    } catch (err) {
      this.#failure = { error: err };
      this.#end();
    } finally {
      this.#filling = undefined;
      this.#fillEnded = true;
    }
  }

  readonly next: () => Promise<IteratorResult<SubscriptionItem>> = nextInTurn(this);

  /** Ends the stream early (a consumer that stops reading); items not handed out are dropped. */
  return(): Promise<IteratorResult<SubscriptionItem>> {
    this.#end();
    return Promise.resolve(finished);
  }

  #start(): void {
    this.#started = true;
    this.#queue = new LiveQueue(this.o.bufferEvents, this.o.signal);
    this.#catchingUp = true;
    this.o.tail.catchUpStarted();
    this.#beat();
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#pending = [];
    this.#taken = 0;
    if (this.#queue === undefined) return;
    // A fill() waiting on the queue (return() called while a next() is pending) wakes and ends.
    this.#queue.close();
    this.o.tail.detach(this.#queue);
    this.#queue.dispose();
    this.#caughtUp();
  }

  #caughtUp(): void {
    if (this.#catchingUp) this.o.tail.catchUpEnded();
    this.#catchingUp = false;
  }

  #beat(): void {
    this.#lastSent = Date.now();
    this.#pending.push({ kind: "heartbeat", cursor: this.#cursor });
  }

  /** Events (from a page or a batch) this subscriber takes, as items. */
  #take(events: readonly StoredEvent[]): void {
    const before = this.#pending.length;
    for (const event of events) {
      if (event.sequence <= this.#cursor) continue;
      this.#cursor = event.sequence;
      if (this.o.matcher.matches(event)) this.#pending.push({ kind: "event", event, cursor: event.sequence });
    }
    if (this.#pending.length > before) this.#lastSent = Date.now();
  }

  /** One round of reading toward the tail: a catch-up page, or, at the tail, attaching to it. */
  async #step(): Promise<void> {
    const o = this.o;
    const target = o.tail.position;
    if (this.#cursor < target) {
      await this.#readPage(target);
      return;
    }
    // No await between the check above and here: the tail cannot move in between.
    const queue = this.#queue!; // made by #start, before the first step
    queue.reset();
    o.tail.attach(queue);
    this.#attached = true;
    this.#caughtUp();
  }

  /**
   * Live: the batches the tail queued, taken as items now, and a heartbeat if one is due and
   * nothing else is to be sent. Ends the stream if the tail stopped or the signal aborted, and
   * detaches a subscriber that overflowed its queue: it goes back to reading the log.
   */
  #takeLive(): void {
    const queue = this.#queue!; // attached, so started
    for (;;) {
      const next = queue.take();
      if (next === undefined) break;
      if (next === "closed" || next === "aborted") {
        this.#end();
        return;
      }
      if (next === "overflow" || next.after > this.#cursor) {
        // Too slow (or, defensively, a batch that does not start where we stand): re-read the log.
        this.o.tail.detach(queue);
        this.o.onFallback?.();
        this.#attached = false;
        this.#catchingUp = true;
        this.o.tail.catchUpStarted();
        return;
      }
      this.#take(next.events);
      if (next.upTo > this.#cursor) this.#cursor = next.upTo;
    }
    if (this.#taken === this.#pending.length && Date.now() >= this.#lastSent + this.o.heartbeatMs) this.#beat();
  }

  /** The catch-up page after the cursor, toward `target`: from the tail's window, read ahead, or read now. */
  async #readPage(target: bigint): Promise<void> {
    const o = this.o;
    const cursor = this.#cursor;
    const ahead = this.#readAhead?.after === cursor ? this.#readAhead : undefined;
    this.#readAhead = undefined;
    const inMemory = ahead ? undefined : o.tail.recent(cursor, target, o.pageSize);
    // A page read ahead only goes up to the target of its time (see below).
    const pageTarget = ahead?.target ?? target;
    const page = inMemory ?? (await (ahead?.page ?? o.reader.readRange(cursor, target, o.pageSize, this.#sqlFilter)));
    if (this.#ended) return;
    const last = page[page.length - 1];
    // Read the next page from the database while this one is sent: reading and sending
    // one after the other left PostgreSQL idle while the stream was written and the
    // stream idle while PostgreSQL read, and a log too large for memory reads slower. A
    // full page that ends at the target leaves nothing to read ahead.
    if (inMemory === undefined && last !== undefined && page.length === o.pageSize && last.sequence < pageTarget && !o.tail.holds(last.sequence)) {
      const next = o.reader.readRange(last.sequence, pageTarget, o.pageSize, this.#sqlFilter);
      next.catch(() => {}); // an abandoned read's failure is nobody's; a used one rethrows when awaited
      this.#readAhead = { after: last.sequence, target: pageTarget, page: next };
    }
    this.#take(page);
    if (page.length < o.pageSize) this.#cursor = pageTarget;
    if (Date.now() - this.#lastSent >= o.heartbeatMs) this.#beat();
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
  /** The wait under way (wait()), shared by callers beside each other. */
  #waiting: Promise<void> | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When #timer fires (ms since the epoch). */
  #timerDue = 0;
  #aborted: boolean;
  readonly #onAbort = () => {
    this.#aborted = true;
    this.#wake?.();
  };

  constructor(
    private readonly limit: number,
    private readonly signal: AbortSignal,
  ) {
    this.#aborted = signal.aborted;
    signal.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** The signal aborted (noted by its listener). */
  get aborted(): boolean {
    return this.#aborted;
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

  /** The next batch, or why there is none; undefined if nothing is queued. Never waits. */
  take(): TailBatch | "overflow" | "closed" | "aborted" | undefined {
    if (this.#closed) return "closed";
    if (this.#aborted) return "aborted";
    if (this.#overflowed) return "overflow";
    const batch = this.#batches.shift();
    if (batch === undefined) return undefined;
    this.#queued -= batch.events.length;
    return batch;
  }

  /**
   * Resolves when take() may have something (a batch, or why there is none), or at `deadline`
   * (ms since the epoch) at the latest; early at worst, when a timer set for an earlier
   * deadline fires: the caller looks again.
   */
  wait(deadline: number): Promise<void> {
    if (this.#waiting !== undefined) return this.#waiting;
    const now = Date.now();
    if (this.#closed || this.#aborted || this.#overflowed || this.#batches.length > 0 || now >= deadline) return atHand;
    if (this.#timer === undefined || this.#timerDue > deadline) {
      clearTimeout(this.#timer);
      this.#timerDue = deadline;
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#wake?.();
      }, deadline - now);
    }
    this.#waiting = new Promise<void>((resolve) => {
      this.#wake = () => {
        this.#wake = undefined;
        this.#waiting = undefined;
        resolve();
      };
    });
    return this.#waiting;
  }
}
