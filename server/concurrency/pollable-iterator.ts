/**
 * An async iterator that can also hand out what it has at hand without a promise. A consumer
 * that writes each result as it comes (a server stream) drains it with poll() and waits with
 * fill() only when nothing is at hand: with next(), every message costs a promise and a
 * resumption even when it was ready, and a message to many streams costs that once per stream.
 *
 * next() stays the plain protocol, for consumers that know nothing of this one.
 */
export interface PollableIterator<T> extends AsyncIterator<T> {
  /**
   * The next result if it is at hand (a value, or the end); undefined if the consumer must
   * fill(). Never waits. Throws once if the stream failed; answers the end after that.
   */
  poll(): IteratorResult<T> | undefined;
  /**
   * Resolves when poll() may have a result. It may resolve early (poll() then answers
   * undefined again, and the consumer calls fill() again). It does not reject: a failure is
   * thrown by the poll() after it. So a layer between the stream and its consumer (one that
   * maps errors, say) wraps only poll(), and passes fill()'s promise on as it is: a wrapper's
   * .catch() would cost every stream a promise and a resumption per wait.
   */
  fill(): Promise<void>;
}

export function isPollable<T>(it: AsyncIterator<T>): it is PollableIterator<T> {
  const p = it as Partial<PollableIterator<T>>;
  return typeof p.poll === "function" && typeof p.fill === "function";
}

interface Waiter<T> {
  resolve: (result: IteratorResult<T>) => void;
  reject: (err: unknown) => void;
}

/**
 * next() in terms of poll() and fill(): what is at hand at once, or else in turn after the
 * calls that wait already, as an async generator queues them. A later call never takes what
 * came for one that asked before it.
 */
export function nextInTurn<T>(it: Pick<PollableIterator<T>, "poll" | "fill">): () => Promise<IteratorResult<T>> {
  const waiting: Waiter<T>[] = [];
  const serve = async () => {
    while (waiting.length > 0) {
      try {
        const result = it.poll();
        if (result === undefined) await it.fill();
        else waiting.shift()!.resolve(result);
      } catch (err) {
        // The stream failed: this caller learns why; the ones after it find it ended.
        waiting.shift()!.reject(err);
      }
    }
  };
  return () => {
    if (waiting.length === 0) {
      try {
        const now = it.poll();
        if (now !== undefined) return Promise.resolve(now);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise<IteratorResult<T>>((resolve, reject) => {
      waiting.push({ resolve, reject });
      if (waiting.length === 1) void serve();
    });
  };
}
