/**
 * The database goes away under load and comes back (PostgreSQL: every connection to the test
 * database is cut and refused for two seconds, as a restart looks to its clients): publishers get
 * `unavailable`, never `internal`, and retry with their idempotency keys; nothing acknowledged
 * is lost or stored twice; a subscriber that resumes from its cursor sees every event once, in
 * order; /readyz says 503 during the outage and 200 after it.
 */
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { createTidingsClient } from "../../sdk/index.js";
import { needsPostgres } from "../helpers/database.js";
import { callJson, startTestServer, type TestServer } from "../helpers/test-server.js";
import { reportFault } from "./report.js";

const cleanup: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

describe.runIf(needsPostgres("a database outage under load"))("a database outage under load", () => {
  it("costs retries, not events", async () => {
    const t: TestServer = await startTestServer({ config: { poolSize: 4 } });
    cleanup.push(() => t.close());
    const name = new URL(t.storage.databaseUrl!).pathname.slice(1);
    const admin = new pg.Client({ connectionString: process.env.DATABASE_URL });
    await admin.connect();
    cleanup.push(async () => {
      await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`).catch(() => {});
      await admin.end();
    });

    // A subscriber that resumes from its cursor whenever its stream fails.
    const client = createTidingsClient({ baseUrl: t.url, transport: "grpc" });
    const seen: bigint[] = [];
    const stop = new AbortController();
    let cursor = 0n;
    let resumed = 0;
    const subscriber = (async () => {
      while (!stop.signal.aborted) {
        try {
          for await (const m of client.subscribe({ patterns: ["memory.created"], attributes: { run: "outage" }, start: { case: "afterSequence", value: cursor } }, { signal: stop.signal })) {
            cursor = m.cursor;
            if (m.message.case === "event") seen.push(m.message.value.sequence);
          }
        } catch {
          if (stop.signal.aborted) return;
          resumed++;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    })();

    // Publishers that retry each event with its idempotency key until it is acknowledged.
    const acknowledged = new Map<string, string>();
    const codes = new Map<string, number>();
    let publishing = true;
    const publishers = Array.from({ length: 4 }, async (_, w) => {
      for (let i = 0; publishing; i++) {
        const key = `outage-${w}-${i}`;
        for (;;) {
          const res = await callJson(t.url, "Publish", { idempotencyKey: key, event: { type: "memory.created", source: "outage", attributes: { run: "outage" }, data: { memory_id: key } } }).catch(() => undefined);
          if (res?.status === 200) {
            acknowledged.set(key, res.body.id);
            break;
          }
          const code = res?.body?.code ?? "no answer";
          codes.set(code, (codes.get(code) ?? 0) + 1);
          await new Promise((r) => setTimeout(r, 100));
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    });

    await new Promise((r) => setTimeout(r, 800));
    const before = acknowledged.size;
    await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS false`);
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name]);
    await new Promise((r) => setTimeout(r, 500));
    const readyDuring = (await fetch(`${t.url}/readyz`)).status;
    await new Promise((r) => setTimeout(r, 1_500));
    await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`);
    await new Promise((r) => setTimeout(r, 2_000));
    publishing = false;
    await Promise.all(publishers);
    const readyAfter = (await fetch(`${t.url}/readyz`)).status;

    const db = new pg.Client({ connectionString: t.storage.databaseUrl });
    await db.connect();
    try {
      const stored = (await db.query<{ id: string; idempotency_key: string; sequence: string }>("SELECT id, idempotency_key, sequence FROM tidings_events WHERE source = 'outage' ORDER BY sequence")).rows;
      for (const [key, id] of acknowledged) expect(stored.find((r) => r.idempotency_key === key)?.id, key).toBe(id);
      expect(new Set(stored.map((r) => r.idempotency_key)).size).toBe(stored.length);
      // The subscriber saw every stored event once, in order, having resumed after the outage.
      const want = stored.map((r) => BigInt(r.sequence));
      await new Promise((r) => setTimeout(r, 1_000));
      stop.abort();
      await subscriber;
      expect(seen).toEqual(want);
      expect([...codes.keys()].filter((c) => c !== "unavailable" && c !== "no answer"), `codes: ${JSON.stringify([...codes])}`).toEqual([]);
      expect(codes.get("unavailable") ?? 0).toBeGreaterThan(0);
      expect(readyDuring).toBe(503);
      expect(readyAfter).toBe(200);
      reportFault({ scenario: "database outage", load: "4 publishers, 1 subscriber", faults: "every connection cut and refused for 2 s", lost: [...acknowledged.keys()].filter((k) => !stored.some((r) => r.idempotency_key === k)).length, notes: `${codes.get("unavailable") ?? 0} unavailable answers, 0 internal` });
      process.stdout.write(`\ndatabase outage: ${before} publishes before it, ${acknowledged.size} acknowledged in all; during 2 s without the database: ${[...codes].map(([c, n]) => `${n} × ${c}`).join(", ")}; 0 lost, 0 stored twice; the subscriber resumed ${resumed} time(s) and saw all ${seen.length} events in order\n`);
    } finally {
      await db.end();
    }
  });
});
