import { describe, expect, it } from "vitest";
import { uuidV7 } from "../server/event-log/uuid-v7.js";

/** Event and delivery ids: RFC 9562 version 7 UUIDs, written into a reused buffer. */
describe("uuidV7", () => {
  const shape = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  it("is a version 7, RFC-variant UUID whose first 48 bits are the time in milliseconds", () => {
    for (const ms of [0, 1, 255, 256, 1_765_000_000_123, 2 ** 48 - 1]) {
      const id = uuidV7(ms);
      expect(id).toMatch(shape);
      expect(Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toBe(ms);
    }
  });

  it("sorts by time, stays unique over the random pool's refills, and never changes an id already returned", () => {
    const first = uuidV7(1_000);
    const copy = `${first}`;
    const ids = Array.from({ length: 10_000 }, (_, i) => uuidV7(1_000 + Math.floor(i / 100)));
    expect(first).toBe(copy);
    expect(new Set([first, ...ids]).size).toBe(10_001);
    for (let i = 100; i < ids.length; i += 100) expect(ids[i - 1]! < ids[i]!).toBe(true);
    expect(ids.every((id) => shape.test(id))).toBe(true);
  });
});
