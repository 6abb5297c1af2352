/**
 * Writes items in batches: items added while a write is in flight wait and go together in the
 * next one, so N concurrent writers cost about one commit per batch instead of N (the same
 * group commit the append queue does for events). `add` resolves when its batch is written and
 * rejects with the batch's error.
 *
 * With `lingerMs`, each write first waits that long for more items, or until a full batch is
 * waiting: at a low, steady rate every item would otherwise arrive to an idle writer and be a
 * write of its own, and in a backlog each write would take only what came during the one
 * before.
 */
export class BatchWriter<T> {
  #queue: Array<{ item: T; resolve: () => void; reject: (err: unknown) => void }> = [];
  #writing = false;
  /** Ends the current linger early: set while the drain waits for company. */
  #endLinger: (() => void) | undefined;

  constructor(
    private readonly write: (items: T[]) => Promise<void>,
    private readonly maxBatch = 500,
    private readonly lingerMs = 0,
  ) {}

  add(item: T): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      if (this.#queue.length >= this.maxBatch) this.#endLinger?.();
      if (!this.#writing) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0) {
        if (this.lingerMs > 0 && this.#queue.length < this.maxBatch) await this.#linger();
        const batch = this.#queue.splice(0, this.maxBatch);
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

  /** Waits lingerMs, or until a full batch is waiting. */
  async #linger(): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.lingerMs);
      this.#endLinger = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#endLinger = undefined;
  }
}
