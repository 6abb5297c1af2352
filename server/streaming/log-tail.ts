import { CoalescingRunner } from "../concurrency/coalescing-runner.js";
import type { EventReader } from "../event-log/event-reader.js";
import type { StoredEvent } from "../event-log/stored-event.js";
import type { Logger } from "../logging/logger.js";

/** Events the tail read in one go: every event with `after < sequence <= upTo`, unfiltered. */
export interface TailBatch {
  after: bigint;
  upTo: bigint;
  events: readonly StoredEvent[];
}

export interface TailListener {
  /** Called synchronously for each batch; must not block. */
  offer(batch: TailBatch): void;
  /** The tail stopped (shutdown). */
  close(): void;
}

export interface LogTailOptions {
  pollIntervalMs: number;
  /** Rows per read. */
  readLimit: number;
  /** Latest events kept for subscribers catching up (recent()), by count and by payload bytes. */
  recentEvents: number;
  recentBytes: number;
  logger: Logger;
}

/**
 * The one reader of new events on a node. It reads each new row once and hands the batch to
 * every live subscriber, which filter it themselves (so one costly filter never delays the
 * others). It reads when woken (a local commit or a NOTIFY) and on a poll timer, because
 * notifications can be merged or lost.
 *
 * Batches are contiguous: each starts where the previous ended, at `position`. A listener that
 * attaches when its cursor is at or past `position` (checked synchronously) misses nothing.
 */
export class LogTail {
  #position = 0n;
  readonly #listeners = new Set<TailListener>();
  readonly #reader = new CoalescingRunner(
    () => this.#readUntilCaughtUp(),
    (err) => this.options.logger.warn("reading new events failed; will retry on the next poll", { err }),
  );
  #timer: NodeJS.Timeout | undefined;
  /** A read is under way: rows committed meanwhile may or may not be in it. */
  #reading = false;
  /** The latest batches, contiguous, ending at `position` (see recent()). */
  #window: TailBatch[] = [];
  /** Subscribers reading toward the tail: rows are worth keeping for them, whether or not anyone listens. */
  #catchingUp = 0;
  #windowEvents = 0;
  #windowBytes = 0;

  constructor(
    private readonly reader: EventReader,
    private readonly options: LogTailOptions,
  ) {}

  async start(): Promise<void> {
    this.#position = await this.reader.headSequence();
    this.#timer = setInterval(() => this.wake(), this.options.pollIntervalMs);
    this.#timer.unref();
  }

  /** The last sequence handed to listeners. */
  get position(): bigint {
    return this.#position;
  }

  get listenerCount(): number {
    return this.#listeners.size;
  }

  attach(listener: TailListener): void {
    this.#listeners.add(listener);
  }

  detach(listener: TailListener): void {
    this.#listeners.delete(listener);
  }

  /**
   * Events after `after` up to `upTo` (at most `limit`) from the latest batches, or undefined
   * when those no longer reach back to `after`. A subscriber that fell behind catches up from
   * here rather than from the database: many subscribers falling behind at once each read the
   * log and each decoded and encoded the same events again, which made them fall further behind.
   */
  recent(after: bigint, upTo: bigint, limit: number): StoredEvent[] | undefined {
    if (!this.holds(after)) return undefined;
    const window = this.#window;
    // The first batch that ends past `after`.
    let lo = 0;
    let hi = window.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (window[mid]!.upTo <= after) lo = mid + 1;
      else hi = mid;
    }
    const out: StoredEvent[] = [];
    for (let b = lo; b < window.length; b++) {
      for (const event of window[b]!.events) {
        if (event.sequence <= after) continue;
        if (event.sequence > upTo || out.length >= limit) return out;
        out.push(event);
      }
    }
    return out;
  }

  /** Whether recent() can answer for events after `after` now. */
  holds(after: bigint): boolean {
    const window = this.#window;
    return window.length > 0 && after >= window[0]!.after && after < window[window.length - 1]!.upTo;
  }

  /** A subscriber starts reading toward the tail (see recent()); `catchUpEnded` when it attaches or ends. */
  catchUpStarted(): void {
    this.#catchingUp++;
  }

  catchUpEnded(): void {
    this.#catchingUp--;
  }

  #remember(batch: TailBatch): void {
    const last = this.#window[this.#window.length - 1];
    if (last !== undefined && last.upTo !== batch.after) this.#forget();
    this.#window.push(batch);
    this.#windowEvents += batch.events.length;
    for (const e of batch.events) this.#windowBytes += e.payload.byteLength;
    while (this.#window.length > 1 && (this.#windowEvents > this.options.recentEvents || this.#windowBytes > this.options.recentBytes)) {
      const dropped = this.#window.shift()!;
      this.#windowEvents -= dropped.events.length;
      for (const e of dropped.events) this.#windowBytes -= e.payload.byteLength;
    }
  }

  #forget(): void {
    this.#window = [];
    this.#windowEvents = 0;
    this.#windowBytes = 0;
  }

  /** Reads whatever was committed since the last read. Cheap to call often. */
  wake = (): void => this.#reader.run();

  /**
   * Events this node just committed. When they follow `position` directly and no read is
   * running, they go to the listeners as they are, with no read from the database: the
   * quickest way from a publish to its subscribers. Otherwise (another node committed in
   * between, or a read is under way that may or may not see them) the tail reads as usual.
   */
  offerCommitted(events: readonly StoredEvent[]): void {
    const first = events[0];
    if (this.#reading || first === undefined || first.sequence !== this.#position + 1n || this.#reader.stopped) {
      this.wake();
      return;
    }
    const batch: TailBatch = { after: this.#position, upTo: events[events.length - 1]!.sequence, events };
    this.#position = batch.upTo;
    this.#remember(batch);
    for (const l of this.#listeners) l.offer(batch);
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#reader.stop();
    for (const l of this.#listeners) l.close();
    this.#listeners.clear();
  }

  async #readUntilCaughtUp(): Promise<void> {
    this.#reading = true;
    try {
      await this.#readPages();
    } finally {
      this.#reading = false;
    }
  }

  async #readPages(): Promise<void> {
    let full = true;
    while (full && !this.#reader.stopped) {
      if (this.#listeners.size === 0 && this.#catchingUp === 0) {
        // Nobody to hand rows to: just follow the head. If someone attached while we waited,
        // fall through to reading rows so they get their batch.
        const head = await this.reader.headSequence();
        if (this.#listeners.size === 0 && this.#catchingUp === 0) {
          if (head > this.#position) {
            this.#position = head;
            this.#forget();
          }
          break;
        }
      }
      const events = await this.reader.readRange(this.#position, undefined, this.options.readLimit);
      full = events.length === this.options.readLimit;
      if (events.length === 0) break;
      const batch: TailBatch = { after: this.#position, upTo: events[events.length - 1]!.sequence, events };
      this.#position = batch.upTo;
      this.#remember(batch);
      for (const l of this.#listeners) l.offer(batch);
    }
  }
}
