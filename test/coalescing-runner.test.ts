import { describe, expect, it } from "vitest";
import { CoalescingRunner } from "../server/concurrency/coalescing-runner.js";

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

describe("CoalescingRunner", () => {
  it("never overlaps runs, and runs once more for any number of wake-ups during a run", async () => {
    let active = 0;
    let maxActive = 0;
    let runs = 0;
    const runner = new CoalescingRunner(async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      runs++;
      await tick(20);
      active--;
    }, (err) => { throw err; });
    runner.run();
    for (let i = 0; i < 10; i++) runner.run(); // all during the first run
    await tick(100);
    expect(maxActive).toBe(1);
    expect(runs).toBe(2);
  });

  it("reports errors and keeps working; calls afterRun after each run, not after stop", async () => {
    const errors: unknown[] = [];
    let after = 0;
    let fail = true;
    const runner = new CoalescingRunner(async () => {
      if (fail) throw new Error("boom");
    }, (err) => errors.push(err), () => after++);
    runner.run();
    await tick();
    expect(errors).toHaveLength(1);
    expect(after).toBe(1);
    fail = false;
    runner.run();
    await tick();
    expect(errors).toHaveLength(1);
    expect(after).toBe(2);
    await runner.stop();
    runner.run();
    await tick();
    expect(after).toBe(2);
  });

  it("stop waits for the run in progress and prevents the coalesced one", async () => {
    let runs = 0;
    let finished = false;
    const runner = new CoalescingRunner(async () => {
      runs++;
      await tick(30);
      finished = true;
    }, () => {});
    runner.run();
    runner.run(); // would run again
    await runner.stop();
    expect(finished).toBe(true);
    expect(runs).toBe(1);
    expect(runner.stopped).toBe(true);
  });
});
