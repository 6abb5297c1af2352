import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { StartPosition } from "../sdk/index.js";
import { createTestStorage, onPostgres, type TestStorage } from "./helpers/database.js";
import { collect } from "./helpers/stream.js";
import { callJson, memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

/**
 * The ordering invariant: a subscriber resuming after sequence S receives every event committed
 * after S exactly once and in sequence order, even when concurrent publishers commit out of
 * order. Commit delays are injected inside the publish transaction (after sequences are taken,
 * before COMMIT); several nodes share one database when it is PostgreSQL.
 */
/**
 * Two ways a group reaches the log: the explicit transaction (delays injected before COMMIT by
 * the test hook) and, on PostgreSQL, the one-statement append (delays injected by a trigger
 * that sleeps after the insert, inside the statement, while the head row is locked), where a
 * node sends its next statement while the one before it still holds the head row.
 */
const variants = [
  { name: "explicit transaction", hook: true },
  ...(onPostgres ? [{ name: "one-statement append", hook: false }] : []),
];

describe.each(variants)("ordering invariant ($name)", ({ hook }) => {
  const nodeCount = onPostgres ? 3 : 1; // PGlite is one process's database
  const publishers = 24;
  const eventsPerPublisher = 25;
  let storage: TestStorage;
  const nodes: TestServer[] = [];

  beforeAll(async () => {
    if (!onPostgres) console.log("ordering: PGlite run uses one node; set DATABASE_URL for three nodes on one PostgreSQL");
    storage = await createTestStorage();
    for (let i = 0; i < nodeCount; i++) {
      nodes.push(await startTestServer({
        storage,
        config: { groupCommitMaxEvents: 8 }, // small groups: more transactions racing
        start: hook ? { beforeCommit: () => new Promise((r) => setTimeout(r, Math.random() * 15)) } : {},
      }));
    }
    if (!hook) {
      const admin = new pg.Client({ connectionString: storage.databaseUrl });
      await admin.connect();
      await admin.query(`CREATE FUNCTION tidings_test_commit_delay() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(random() * 0.015); RETURN NULL; END $$`);
      await admin.query("CREATE TRIGGER tidings_test_commit_delay AFTER INSERT ON tidings_events FOR EACH STATEMENT EXECUTE FUNCTION tidings_test_commit_delay()");
      await admin.end();
    }
  });
  afterAll(async () => {
    for (const n of nodes) await n.stop();
    await storage.drop();
  });

  it("every committed event reaches continuous and resuming readers exactly once, in order", async () => {
    const node = (i: number) => nodes[i % nodes.length]!;
    const continuous = await collect(node(0).client(), { start: { case: "position", value: StartPosition.EARLIEST } });
    const naive = startNaivePoller(storage);

    const acked: bigint[] = [];
    const expected = () => acked.length;

    // The resuming reader hops between nodes, reading a few events each time, resuming after its cursor.
    let stopResuming = false;
    const resumed: bigint[] = [];
    const resuming = (async () => {
      let cursor = 0n;
      for (let hop = 0; !stopResuming || resumed.length < expected(); hop++) {
        const abort = new AbortController();
        let taken = 0;
        const want = 1 + Math.floor(Math.random() * 40);
        try {
          for await (const res of node(hop).client().subscribe({ start: { case: "afterSequence", value: cursor } }, { signal: abort.signal })) {
            if (res.message.case === "event") {
              resumed.push(res.message.value.sequence);
              taken++;
            }
            cursor = res.cursor;
            if (taken >= want || (stopResuming && resumed.length >= expected())) abort.abort();
          }
        } catch (err) {
          if (!abort.signal.aborted) throw err;
        }
      }
    })();

    await Promise.all(Array.from({ length: publishers }, async (_, p) => {
      for (let i = 0; i < eventsPerPublisher; i++) {
        const target = node(p + i);
        if (i % 5 === 4) {
          const res = await callJson(target.url, "PublishBatch", { entries: [0, 1, 2].map((k) => ({ event: memoryCreated(`p${p}-${i}-${k}`) })) });
          expect(res.status, JSON.stringify(res.body)).toBe(200);
          acked.push(...res.body.results.map((r: { sequence: string }) => BigInt(r.sequence)));
        } else {
          const res = await callJson(target.url, "Publish", { event: memoryCreated(`p${p}-${i}`) });
          expect(res.status, JSON.stringify(res.body)).toBe(200);
          acked.push(BigInt(res.body.sequence));
        }
      }
    }));
    stopResuming = true;

    const all = [...acked].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    expect(new Set(all).size).toBe(all.length);
    // Sequences are handed out by one locked row, so they are contiguous.
    expect(all).toEqual(Array.from({ length: all.length }, (_, i) => BigInt(i + 1)));

    await continuous.waitFor(all.length, 30_000);
    await resuming;
    await continuous.close();
    const naiveSeen = await naive.stop(all.length);
    if (naiveSeen === undefined) console.log("ordering: naive SQL poller skipped: PGlite allows no second connection");

    expect(continuous.events.map((e) => e.sequence)).toEqual(all);
    expect(resumed).toEqual(all);
    if (naiveSeen !== undefined) expect(naiveSeen).toEqual(all);
    // The variant really took the path it names.
    const oneStatement = nodes.reduce((sum, n) => sum + n.server.commitStats().oneStatementCommits, 0);
    const pipelined = nodes.reduce((sum, n) => sum + n.server.commitStats().pipelinedCommits, 0);
    if (hook) expect(oneStatement + pipelined).toBe(0);
    else {
      expect(oneStatement).toBeGreaterThan(0);
      // Statements were sent while the one before them held the head row (AppendQueue#oneStatements).
      expect(pipelined).toBeGreaterThan(0);
    }
  });
});

/**
 * A reader that does the naive thing — `sequence > cursor` in a loop — straight against the
 * database. It only works because writers commit in sequence order; it records what it sees.
 */
function startNaivePoller(storage: TestStorage) {
  const seen: bigint[] = [];
  let stop = false;
  let target = Number.POSITIVE_INFINITY;
  const run = (async () => {
    if (!storage.databaseUrl) return false;
    const client = new pg.Client({ connectionString: storage.databaseUrl });
    await client.connect();
    try {
      let cursor = 0n;
      while (!(stop && seen.length >= target)) {
        const { rows } = await client.query<{ sequence: string }>("SELECT sequence FROM tidings_events WHERE sequence > $1 ORDER BY sequence LIMIT 500", [cursor.toString()]);
        for (const r of rows) seen.push((cursor = BigInt(r.sequence)));
        if (rows.length === 0) await new Promise((r) => setTimeout(r, 2));
      }
    } finally {
      await client.end();
    }
    return true;
  })();
  return {
    /** What the poller saw, or undefined on PGlite (no second connection to poll with). */
    async stop(expectedCount: number): Promise<bigint[] | undefined> {
      stop = true;
      target = expectedCount;
      return (await run) ? seen : undefined;
    },
  };
}
