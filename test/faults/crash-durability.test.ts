/**
 * SIGKILL during a publish storm (PostgreSQL; a real server process): every publish that was
 * acknowledged is in the log after a restart, exactly once, and an idempotent retry of any
 * publish, acknowledged or cut off, does not store it twice.
 */
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { createTestStorage, needsPostgres, type TestStorage } from "../helpers/database.js";
import { spawnServer } from "../helpers/server-process.js";
import { callJson } from "../helpers/test-server.js";
import { reportFault } from "./report.js";

const cleanup: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

describe.runIf(needsPostgres("SIGKILL during a publish storm"))("SIGKILL during a publish storm", () => {
  it("loses no acknowledged event and stores none twice", async () => {
    const storage: TestStorage = await createTestStorage();
    cleanup.push(() => storage.drop());
    const env = { DATABASE_URL: storage.databaseUrl! };
    const first = await spawnServer([], env);
    cleanup.push(() => first.kill("SIGKILL"));

    // 16 publishers, each with its own idempotency keys, until the kill cuts them off.
    const acknowledged = new Map<string, string>(); // idempotency key → event id
    const attempted: string[] = [];
    let stop = false;
    const publishers = Array.from({ length: 16 }, async (_, w) => {
      for (let i = 0; !stop; i++) {
        const key = `storm-${w}-${i}`;
        attempted.push(key);
        const batch = i % 5 === 0;
        try {
          const res = batch
            ? await callJson(first.url, "PublishBatch", { entries: [0, 1, 2].map((j) => ({ idempotencyKey: `${key}-${j}`, event: { type: "memory.created", source: "storm", data: { memory_id: `${key}-${j}` } } })) })
            : await callJson(first.url, "Publish", { idempotencyKey: key, event: { type: "memory.created", source: "storm", data: { memory_id: key } } });
          if (res.status !== 200) continue;
          if (batch) res.body.results.forEach((r: { id: string }, j: number) => acknowledged.set(`${key}-${j}`, r.id));
          else acknowledged.set(key, res.body.id);
        } catch {
          return; // the connection died with the server
        }
      }
    });
    await new Promise((r) => setTimeout(r, 1_500));
    await first.kill("SIGKILL");
    stop = true;
    await Promise.all(publishers);
    expect(acknowledged.size).toBeGreaterThan(100);

    const second = await spawnServer([], env);
    cleanup.push(() => second.kill("SIGKILL"));
    const db = new pg.Client({ connectionString: storage.databaseUrl });
    await db.connect();
    try {
      const rows = (await db.query<{ id: string; idempotency_key: string }>("SELECT id, idempotency_key FROM tidings_events WHERE source = 'storm'")).rows;
      const byKey = new Map(rows.map((r) => [r.idempotency_key, r.id]));
      // Every acknowledged publish is there, with the id it was acknowledged with.
      for (const [key, id] of acknowledged) expect(byKey.get(key), `acknowledged ${key}`).toBe(id);
      // None twice.
      expect(new Set(rows.map((r) => r.idempotency_key)).size).toBe(rows.length);
      expect(new Set(rows.map((r) => r.id)).size).toBe(rows.length);
      // A retry of a publish the kill cut off is stored at most once; of an acknowledged one, not again.
      const unanswered = attempted.filter((k) => !acknowledged.has(k) && !acknowledged.has(`${k}-0`)).slice(0, 10);
      const retriedKeys = [...unanswered, ...[...acknowledged.keys()].filter((k) => !/-\d+-\d+-\d$/.test(k)).slice(0, 10)];
      for (const key of retriedKeys) {
        const res = await callJson(second.url, "Publish", { idempotencyKey: key, event: { type: "memory.created", source: "storm", data: { memory_id: key } } });
        expect(res.status, JSON.stringify(res.body)).toBe(200);
        if (acknowledged.has(key)) expect(res.body.id).toBe(acknowledged.get(key));
      }
      const after = (await db.query<{ n: string; keys: string }>("SELECT count(*) AS n, count(DISTINCT idempotency_key) AS keys FROM tidings_events WHERE source = 'storm'")).rows[0]!;
      expect(Number(after.n)).toBe(Number(after.keys));
      reportFault({ scenario: "SIGKILL during a publish storm", load: "16 publishers (Publish and PublishBatch)", faults: "SIGKILL, restart", lost: [...acknowledged.keys()].filter((k) => !byKey.has(k)).length, notes: `${acknowledged.size} acknowledged before the kill, 0 stored twice` });
      process.stdout.write(`\ncrash durability: ${acknowledged.size} publishes acknowledged before SIGKILL, ${rows.length} events found after restart, 0 acknowledged lost, 0 stored twice; ${retriedKeys.length} retries after restart stored once\n`);
    } finally {
      await db.end();
    }
  });
});
