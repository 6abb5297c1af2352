import { describe, expect, it } from "vitest";
import { type BatchPace, BatchWriter } from "../server/concurrency/batch-writer.js";

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A writer whose writes take `writeMs`, recording each batch and when it began. */
function recordingWriter(writeMs: number, lingerMs: number, pace?: BatchPace) {
  const batches: Array<{ items: number[]; at: number }> = [];
  const started = performance.now();
  const writer = new BatchWriter<number>(async (items) => {
    batches.push({ items, at: performance.now() - started });
    await tick(writeMs);
  }, 500, lingerMs, pace);
  return { writer, batches };
}

describe("BatchWriter", () => {
  it("writes what arrives during a write in one next write, and rejects a failed batch's items only", async () => {
    let fail = false;
    const batches: number[][] = [];
    const writer = new BatchWriter<number>(async (items) => {
      batches.push(items);
      await tick(20);
      if (fail) throw new Error("write failed");
    });
    const first = writer.add(1);
    await tick(5);
    const during = [2, 3, 4].map((i) => writer.add(i));
    await Promise.all([first, ...during]);
    expect(batches).toEqual([[1], [2, 3, 4]]);
    fail = true;
    await expect(writer.add(5)).rejects.toThrow("write failed");
    fail = false;
    await writer.add(6);
    expect(batches.slice(2)).toEqual([[5], [6]]);
  });

  it("without a linger, an item that finds the writer idle is written alone at once", async () => {
    const { writer, batches } = recordingWriter(2, 0);
    for (let i = 0; i < 3; i++) {
      await writer.add(i);
      await tick(10);
    }
    expect(batches.map((b) => b.items)).toEqual([[0], [1], [2]]);
  });

  it("with a linger, a write that starts from idle waits for company; writes that follow one another do not wait", async () => {
    const lingerMs = 150;
    const { writer, batches } = recordingWriter(50, lingerMs);
    // Arriving a few ms apart at an idle writer: one write, after the linger.
    const added = [writer.add(0)];
    await tick(10);
    added.push(writer.add(1));
    await tick(10);
    added.push(writer.add(2));
    // Arrives while that write is under way: the next write starts when it ends, without lingering.
    await tick(lingerMs + 10);
    added.push(writer.add(3));
    await Promise.all(added);
    expect(batches.map((b) => b.items)).toEqual([[0, 1, 2], [3]]);
    expect(batches[0]!.at).toBeGreaterThanOrEqual(lingerMs - 5);
    // Back to back: the second began as the first write (50 ms) ended, not a linger later.
    expect(batches[1]!.at - batches[0]!.at).toBeLessThan(50 + lingerMs / 2);
  });

  it("with a pace, writes start at most every intervalMs, unless enoughItems wait", async () => {
    const { writer, batches } = recordingWriter(10, 0, { intervalMs: 200, enoughItems: 3, busyItems: 1 });
    const first = [writer.add(0)];
    await tick(5);
    // Arrives during the first write, alone: the next write waits for the interval.
    first.push(writer.add(1));
    await Promise.all(first);
    expect(batches.map((b) => b.items)).toEqual([[0], [1]]);
    expect(batches[1]!.at - batches[0]!.at).toBeGreaterThanOrEqual(195);
    // The writer is idle now, but the last write started within the interval: three items go at once.
    const second = [writer.add(2), writer.add(3), writer.add(4)];
    await Promise.all(second);
    // One alone waits for the interval, until enough join it.
    const third = [writer.add(5)];
    await tick(40);
    third.push(writer.add(6), writer.add(7));
    await Promise.all(third);
    expect(batches.map((b) => b.items)).toEqual([[0], [1], [2, 3, 4], [5, 6, 7]]);
    expect(batches[2]!.at - batches[1]!.at).toBeLessThan(100);
    expect(batches[3]!.at - batches[2]!.at).toBeGreaterThanOrEqual(45);
    expect(batches[3]!.at - batches[2]!.at).toBeLessThan(150);
  });

  it("with a pace, writes below busyItems are not held back", async () => {
    const { writer, batches } = recordingWriter(10, 0, { intervalMs: 200, enoughItems: 10, busyItems: 2 });
    // A write of one item: the next (one item again) is not held back.
    const first = [writer.add(0)];
    await tick(5);
    first.push(writer.add(1));
    await Promise.all(first);
    expect(batches[1]!.at - batches[0]!.at).toBeLessThan(100);
    // A write of two: the next waits for the interval.
    const second = [writer.add(2), writer.add(3)];
    await tick(5);
    second.push(writer.add(4));
    await Promise.all(second);
    expect(batches.map((b) => b.items)).toEqual([[0], [1], [2, 3], [4]]);
    expect(batches[3]!.at - batches[2]!.at).toBeGreaterThanOrEqual(195);
  });
});
