/**
 * Writes items in batches: items added while a write is in flight wait and go together in the
 * next one, so N concurrent writers cost about one commit per batch instead of N (the same
 * group commit the append queue does for events). `add` resolves when its batch is written and
 * rejects with the batch's error.
 */
export class BatchWriter<T> {
  #queue: Array<{ item: T; resolve: () => void; reject: (err: unknown) => void }> = [];
  #writing = false;

  constructor(
    private readonly write: (items: T[]) => Promise<void>,
    private readonly maxBatch = 500,
  ) {}

  add(item: T): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      if (!this.#writing) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0) {
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
}
