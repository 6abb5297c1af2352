/**
 * Runs a piece of work one at a time, coalescing wake-ups: a `run()` while the work is in
 * progress makes it run once more afterwards (however many calls came in), so nothing that
 * arrived during a run is missed and no two runs overlap. The log tail and the webhook
 * dispatcher are woken this way by commits, doorbells and timers.
 */
export class CoalescingRunner {
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;

  constructor(
    private readonly work: () => Promise<void>,
    private readonly onError: (err: unknown) => void,
    /** Called after each run (successful or not), e.g. to arm a timer. Not after stop(). */
    private readonly afterRun: () => void = () => {},
  ) {}

  /** Runs the work now, or once more after the run in progress. */
  run = (): void => {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#loop()
      .catch(this.onError)
      .finally(() => {
        this.#running = undefined;
        if (!this.#stopped) this.afterRun();
      });
  };

  /** Asked to stop: the work may check this to end a long run early. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** No more runs; resolves once the run in progress has ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#running;
  }

  async #loop(): Promise<void> {
    do {
      this.#again = false;
      await this.work();
    } while (this.#again && !this.#stopped);
  }
}
