/** nextInTurn: next() over poll() and fill(), with calls at once answered in the order they came. */
import { describe, expect, it } from "vitest";
import { nextInTurn } from "../server/concurrency/pollable-iterator.js";

/** A source whose values arrive when the test pushes them; fill() waits for the next push. */
function source() {
  const atHand: number[] = [];
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  let fills = 0;
  const it = {
    poll: (): IteratorResult<number> | undefined => {
      if (failure) {
        // Thrown once; the stream is over after it, as Subscription's is.
        const err = failure;
        failure = undefined;
        ended = true;
        throw err;
      }
      if (atHand.length > 0) return { done: false, value: atHand.shift()! };
      return ended ? { done: true, value: undefined } : undefined;
    },
    fill: (): Promise<void> => {
      fills++;
      return new Promise<void>((resolve) => (wake = resolve));
    },
  };
  const ring = () => wake?.();
  return {
    it,
    fills: () => fills,
    push: (...values: number[]) => {
      atHand.push(...values);
      ring();
    },
    end: () => {
      ended = true;
      ring();
    },
    fail: (err: Error) => {
      failure = err;
      ring();
    },
  };
}

const settle = () => new Promise((r) => setTimeout(r, 5));

describe("nextInTurn", () => {
  it("answers what is at hand at once, and waits (fill) only when nothing is", async () => {
    const s = source();
    const next = nextInTurn(s.it);
    s.push(1, 2);
    expect(await next()).toEqual({ done: false, value: 1 });
    expect(await next()).toEqual({ done: false, value: 2 });
    expect(s.fills()).toBe(0);
    const third = next();
    await settle();
    s.push(3);
    expect(await third).toEqual({ done: false, value: 3 });
    expect(s.fills()).toBe(1);
    s.end();
    expect(await next()).toEqual({ done: true, value: undefined });
  });

  it("calls at once get the values in the order they asked, even a later call made when a value is at hand", async () => {
    const s = source();
    const next = nextInTurn(s.it);
    const first = next();
    const second = next();
    await settle();
    s.push(1);
    // Asked after a value came but before the first two were answered: it waits its turn.
    const third = next();
    s.push(2, 3);
    expect(await Promise.all([first, second, third])).toEqual([1, 2, 3].map((value) => ({ done: false, value })));
  });

  it("a failure (thrown by the poll() after a wait) rejects the call that waited; the calls after it find the stream ended", async () => {
    const s = source();
    const next = nextInTurn(s.it);
    const first = next();
    const second = next();
    await settle();
    s.fail(new Error("gone")); // wakes the pending fill(); the poll() after it throws
    await expect(first).rejects.toThrow("gone");
    await expect(second).resolves.toEqual({ done: true, value: undefined });
  });
});
