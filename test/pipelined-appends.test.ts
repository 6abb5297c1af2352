import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { createTestStorage, needsPostgres, type TestStorage } from "./helpers/database.js";
import { callJson, memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

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
