/**
 * Two server nodes on one PostgreSQL, one killed with SIGKILL while events flow: a subscriber on
 * the killed node loses its stream without a goodbye, reconnects to the other node from the
 * last cursor it saw, and ends up with every event once, in order.
 */
import { afterAll, describe, expect, it } from "vitest";
import { createTidingsClient } from "../../sdk/index.js";
import { createTestStorage, needsPostgres } from "../helpers/database.js";
import { spawnServer } from "../helpers/server-process.js";
import { callJson } from "../helpers/test-server.js";
import { reportFault } from "./report.js";

const cleanup: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

describe.runIf(needsPostgres("a node killed under load"))("a node killed under load", () => {
  it("its subscribers resume on the other node without a gap", async () => {
    const storage = await createTestStorage();
    cleanup.push(() => storage.drop());
    const env = { DATABASE_URL: storage.databaseUrl! };
    const a = await spawnServer(["--node-id", "doomed"], env);
    const b = await spawnServer(["--node-id", "survivor"], env);
    cleanup.push(() => a.kill("SIGKILL"), () => b.kill("SIGKILL"));

    // The subscriber: on A first; on any failure, on B from its last cursor.
    const seen: bigint[] = [];
    let cursor = 0n;
    let subscribed = false;
    let switched = 0;
    const stop = new AbortController();
    const subscriber = (async () => {
      for (const url of [a.url, b.url, b.url, b.url]) {
        try {
          for await (const m of createTidingsClient({ baseUrl: url, transport: "grpc" }).subscribe({ patterns: ["memory.created"], start: { case: "afterSequence", value: cursor } }, { signal: stop.signal })) {
            subscribed = true;
            cursor = m.cursor;
            if (m.message.case === "event") seen.push(m.message.value.sequence);
          }
        } catch {
          if (stop.signal.aborted) return;
          switched++;
        }
      }
    })();
    while (!subscribed) await new Promise((r) => setTimeout(r, 20));

    // Publishing through B all along; A is killed a third of the way in.
    const published: bigint[] = [];
    for (let i = 0; i < 150; i++) {
      const res = await callJson(b.url, "Publish", { event: { type: "memory.created", source: "kill", data: { memory_id: `k-${i}` } } });
      expect(res.status).toBe(200);
      published.push(BigInt(res.body.sequence));
      if (i === 50) await a.kill("SIGKILL");
      await new Promise((r) => setTimeout(r, 5));
    }
    const deadline = Date.now() + 15_000;
    while (seen.length < published.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    stop.abort();
    await subscriber;
    expect(switched).toBeGreaterThanOrEqual(1);
    expect(seen).toEqual(published);
    reportFault({ scenario: "a node killed", load: `${published.length} publishes, 1 subscriber`, faults: "SIGKILL of one of two nodes", lost: published.filter((s) => !seen.includes(s)).length, notes: `the subscriber switched nodes ${switched} time(s)` });
    process.stdout.write(`\nnode killed: SIGKILL of one of two nodes after 51 of ${published.length} publishes; its subscriber moved to the other node and received all ${seen.length} events, in order, none twice\n`);
  });
});
