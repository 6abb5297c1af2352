/** BatchWriter's pacing under load (see BatchWriter's `pace`). */
export interface BatchPace {
  intervalMs: number;
  enoughItems: number;
  busyItems: number;
}

/**
 * Writes items in batches: items added while a write is in flight wait and go together in the
 * next one, so N concurrent writers cost about one commit per batch instead of N (the same
 * group commit the append queue does for events). `add` resolves when its batch is written and
 * rejects with the batch's error.
 *
 * With `lingerMs`, a write that starts while none is in flight first waits that long for more
 * items: at a low, steady rate every item would otherwise arrive to an idle writer and be a
 * write of its own. Items that arrive while writes follow one another never wait for it.
 *
 * With `pace`, under load (the last write carried at least `busyItems`) writes start at most
 * every `intervalMs`, unless `enoughItems` are waiting: each write would otherwise take whatever
 * arrived during the one before, however few (see the dispatcher's successPaceMs). Below that
 * load writes are not held back.
 */
export class BatchWriter<T> {
  #queue: Array<{ item: T; resolve: () => void; reject: (err: unknown) => void }> = [];
  #writing = false;
  /** When the last write started (performance.now()), for `pace`. */
  #lastStartedAt = Number.NEGATIVE_INFINITY;
  /** How many items the last write carried, for `pace`. */
  #lastBatchSize = 0;
  /** Ends a paced wait early: enough items arrived (see #paced). */
  #enough: (() => void) | undefined;

  constructor(
    private readonly write: (items: T[]) => Promise<void>,
    private readonly maxBatch = 500,
    private readonly lingerMs = 0,
    private readonly pace?: BatchPace,
  ) {}

  add(item: T): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      if (!this.#writing) void this.#drain();
      else if (this.#enough && this.#queue.length >= this.pace!.enoughItems) this.#enough();
    });
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      if (this.lingerMs > 0) await new Promise((r) => setTimeout(r, this.lingerMs));
      while (this.#queue.length > 0) {
        await this.#paced();
        this.#lastStartedAt = performance.now();
        const batch = this.#queue.splice(0, this.maxBatch);
        this.#lastBatchSize = batch.length;
        try {
          await this.write(batch.map((b) => b.item));
          batch.forEach((b) => b.resolve());
        } catch (err) {
          batch.forEach((b) => b.reject(err));
        }
      }
    } finally {
      this.#writing = false;
    }
  }

  /** With `pace`, under load: waits until intervalMs after the last write started, or until enoughItems are queued. */
  #paced(): Promise<void> | undefined {
    if (!this.pace || this.#lastBatchSize < this.pace.busyItems) return undefined;
    const wait = this.#lastStartedAt + this.pace.intervalMs - performance.now();
    if (wait <= 0 || this.#queue.length >= this.pace.enoughItems) return undefined;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#enough = undefined;
        resolve();
      };
      const timer = setTimeout(done, wait);
      this.#enough = done;
    });
  }
}
