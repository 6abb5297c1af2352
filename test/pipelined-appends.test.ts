import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { createTestStorage, needsPostgres, type TestStorage } from "./helpers/database.js";
import { callJson, eventually, memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

/**
 * On PostgreSQL a node sends its next single-statement append while the one before it still
 * holds the head row (AppendQueue#oneStatements); test/ordering.test.ts checks the order readers see.
 * Here the first statement fails after taking the head row: the one waiting beside it must
 * neither fail with it nor leave a gap in the sequence.
 */
describe.runIf(needsPostgres("pipelined appends"))("an append sent beside one that fails", () => {
  let storage: TestStorage;
  let t: TestServer;

  beforeAll(async () => {
    storage = await createTestStorage();
    t = await startTestServer({ storage });
    const admin = new pg.Client({ connectionString: storage.databaseUrl });
    await admin.connect();
    // Holds the head row (taken by the statement's UPDATE before its INSERT) for 300 ms, then
    // fails the statement the way a serialization failure would.
    await admin.query(`CREATE FUNCTION tidings_test_fail_beside() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.source = 'test/fail-beside' THEN
          PERFORM pg_sleep(0.3);
          RAISE EXCEPTION 'injected failure' USING ERRCODE = '40001';
        END IF;
        RETURN NEW;
      END $$`);
    await admin.query("CREATE TRIGGER tidings_test_fail_beside BEFORE INSERT ON tidings_events FOR EACH ROW EXECUTE FUNCTION tidings_test_fail_beside()");
    await admin.end();
  });
  afterAll(async () => {
    // The server was given its storage, so closing it leaves the database: drop it here.
    await t?.close();
    await storage?.drop();
  });

  it("commits the second with the next sequence and refuses only the first", async () => {
    const first = await callJson(t.url, "Publish", { event: memoryCreated("before") });
    expect(first.status).toBe(200);
    const before = t.server.commitStats();

    const failing = callJson(t.url, "Publish", { event: { ...memoryCreated("fails"), source: "test/fail-beside" } });
    // The failing statement is in PostgreSQL, holding the head row, when the next one is sent.
    await new Promise((r) => setTimeout(r, 100));
    const beside = callJson(t.url, "Publish", { event: memoryCreated("beside") });

    const [failed, committed] = await Promise.all([failing, beside]);
    expect(failed.status).toBe(503);
    expect(failed.body.code).toBe("unavailable");
    expect(committed.status, JSON.stringify(committed.body)).toBe(200);
    expect(BigInt(committed.body.sequence)).toBe(BigInt(first.body.sequence) + 1n);
    expect(t.server.commitStats().pipelinedCommits - before.pipelinedCommits).toBe(1);

    const after = await callJson(t.url, "Publish", { event: memoryCreated("after") });
    expect(BigInt(after.body.sequence)).toBe(BigInt(first.body.sequence) + 2n);
    const listed = await callJson(t.url, "ListEvents", { afterSequence: first.body.sequence });
    expect(listed.body.events.map((e: { id: string; sequence: string }) => [e.id, e.sequence])).toEqual([
      [committed.body.id, committed.body.sequence],
      [after.body.id, after.body.sequence],
    ]);
  });
});

/**
 * Which groups are sent beside the one being written (AppendQueue's sendsBeside): beside one or
 * two publishes (few publishers: latency), and beside a group of many events (PublishBatch), but
 * not beside a group of several unary publishes, where waiting makes the next group larger and
 * the statements fewer. The head row is held by a session of the test's own, so the first
 * group's statement waits in PostgreSQL, and what else was sent shows as sessions waiting too.
 */
describe.runIf(needsPostgres("pipelined appends"))("which appends are sent beside the one being written", () => {
  let t: TestServer;
  let db: pg.Client;

  beforeAll(async () => {
    t = await startTestServer();
    db = new pg.Client({ connectionString: t.storage.databaseUrl });
    await db.connect();
    expect((await callJson(t.url, "Publish", { event: memoryCreated("warm") })).status).toBe(200);
  });
  afterAll(async () => {
    await db?.end();
    await t?.close();
  });

  /** Append statements waiting for the head row. */
  const waiting = async () =>
    (await db.query(`SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%tidings_log_head%'`)).rows[0].n as number;
  const batchOf = (n: number, prefix: string) => ({ entries: Array.from({ length: n }, (_, i) => ({ event: memoryCreated(`${prefix}-${i}`) })) });

  /**
   * Holds the head row, sends `first` and waits until its statement waits for the row, then sends
   * one Publish and gives it `settleMs` to be sent; returns how many statements were waiting then,
   * and, once the row is let go, both answers and how many groups were sent beside another.
   */
  const besideOf = async (first: () => Promise<{ status: number; body: any }>, id: string, settleMs = 300) => {
    const holder = new pg.Client({ connectionString: t.storage.databaseUrl });
    await holder.connect();
    await holder.query("BEGIN");
    await holder.query("SELECT * FROM tidings_log_head FOR UPDATE");
    const before = t.server.commitStats();
    let answers;
    let waitingThen: number;
    try {
      const firstAnswer = first();
      await eventually(async () => ((await waiting()) === 1 ? true : undefined), 10_000, "the first statement to wait for the head row");
      const second = callJson(t.url, "Publish", { event: memoryCreated(id) });
      await new Promise((r) => setTimeout(r, settleMs));
      waitingThen = await waiting();
      await holder.query("ROLLBACK");
      answers = await Promise.all([firstAnswer, second]);
    } finally {
      await holder.end();
    }
    for (const a of answers) expect(a.status, JSON.stringify(a.body)).toBe(200);
    const after = t.server.commitStats();
    return { waitingThen, answers, pipelined: after.pipelinedCommits - before.pipelinedCommits, commits: after.commits - before.commits };
  };

  it("sends a publish beside a single publish being written", async () => {
    const r = await besideOf(() => callJson(t.url, "Publish", { event: memoryCreated("one") }), "beside-one");
    expect(r.waitingThen).toBe(2);
    expect(r.pipelined).toBe(1);
    expect(r.commits).toBe(2);
  });

  it("holds a publish back while a group of several publishes is written, and sends it after", async () => {
    const r = await besideOf(() => callJson(t.url, "PublishBatch", batchOf(5, "several")), "after-several");
    expect(r.waitingThen, "nothing sent beside five events").toBe(1);
    expect(r.pipelined).toBe(0);
    expect(r.commits).toBe(2);
    const [batch, single] = r.answers;
    expect(BigInt(single!.body.sequence)).toBe(BigInt(batch!.body.results[4].sequence) + 1n);
  });

  it("sends a publish beside a large batch being written", async () => {
    const r = await besideOf(() => callJson(t.url, "PublishBatch", batchOf(64, "large")), "beside-large");
    expect(r.waitingThen).toBe(2);
    expect(r.pipelined).toBe(1);
    const [batch, single] = r.answers;
    expect(BigInt(single!.body.sequence)).toBe(BigInt(batch!.body.results[63].sequence) + 1n);
  });
});
