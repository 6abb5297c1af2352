import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { toBinary, create } from "@bufbuild/protobuf";
import pg from "pg";
import { MemoryCreatedSchema } from "../gen/tidings/events/memory/v1/memory_pb.js";
import { createTidingsClient } from "../sdk/index.js";
import { createTestStorage, needsPostgres, type TestStorage } from "./helpers/database.js";
import { spawnServer, type ServerProcess } from "./helpers/server-process.js";
import { collect } from "./helpers/stream.js";
import { callJson, memoryCreated, startTestServer } from "./helpers/test-server.js";

/** Several server processes on one PostgreSQL behave as one service. */
describe.runIf(needsPostgres("two server processes on one PostgreSQL"))("two server processes on one PostgreSQL", () => {
  let storage: TestStorage;
  let a: ServerProcess;
  let b: ServerProcess;

  beforeAll(async () => {
    storage = await createTestStorage();
    // A poll interval far longer than the test waits: only NOTIFY can wake the other node in time.
    const env = { DATABASE_URL: storage.databaseUrl!, TIDINGS_POLL_INTERVAL_MS: "600000", TIDINGS_SHUTDOWN_GRACE_MS: "2000" };
    a = await spawnServer([], env);
    b = await spawnServer([], env);
  });
  afterAll(async () => {
    await a?.kill("SIGKILL");
    await b?.kill("SIGKILL");
    await storage?.drop();
  });

  it("fans events out to the other node's subscribers, both ways, through NOTIFY", async () => {
    const onB = await collect(createTidingsClient({ baseUrl: b.url }), { patterns: ["memory.*"] });
    const onA = await collect(createTidingsClient({ baseUrl: a.url }), { patterns: ["memory.*"] });
    const x = await callJson(a.url, "Publish", { event: memoryCreated("from-a") });
    const y = await callJson(b.url, "Publish", { event: memoryCreated("from-b") });
    await onB.waitFor(2, 10_000);
    await onA.waitFor(2, 10_000);
    const expected = [BigInt(x.body.sequence), BigInt(y.body.sequence)];
    expect(onB.events.map((e) => e.sequence)).toEqual(expected);
    expect(onA.events.map((e) => e.sequence)).toEqual(expected);
    await onA.close();
    await onB.close();
  });

  it("serves /healthz and writes structured JSON logs", async () => {
    const res = await fetch(`${a.url}/healthz`);
    expect(await res.json()).toEqual({ status: "ok" });
    expect(a.logs.find((l) => l.msg === "tidings listening")).toMatchObject({ level: "info", database: "postgres" });
  });

  it("on SIGTERM ends streams with `unavailable` and a cursor; clients resume on the other node with no gap", async () => {
    const client = createTidingsClient({ baseUrl: a.url });
    const received: bigint[] = [];
    let cursor = -1n;
    let ending: ConnectError | undefined;
    const first = collectUntilError(client, received, (c) => (cursor = c)).then((e) => (ending = e));
    await eventuallyTrue(() => cursor >= 0n); // the first heartbeat: subscribed

    const published: bigint[] = [];
    const publishing = (async () => {
      for (let i = 0; i < 60; i++) {
        const res = await callJson(b.url, "Publish", { event: memoryCreated(`storm-${i}`) });
        published.push(BigInt(res.body.sequence));
        if (i === 20) void a.kill("SIGTERM");
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    expect(await a.exited).toBe(0);
    await first;
    expect(ending?.code).toBe(Code.Unavailable);
    expect(ending?.message).toContain(`after_sequence=${cursor}`);
    expect(a.logs.some((l) => l.msg === "stopped")).toBe(true);

    // Resume on B from the cursor A gave us.
    const resumed = await collect(createTidingsClient({ baseUrl: b.url }), { patterns: ["memory.*"], start: { case: "afterSequence", value: cursor } });
    await publishing;
    const stormStart = published[0]!;
    await resumed.waitFor(published.filter((s) => s > cursor).length, 15_000);
    await resumed.close();
    const all = [...received, ...resumed.events.map((e) => e.sequence)].filter((s) => s >= stormStart);
    expect(all).toEqual(published);
  });
});

describe.runIf(needsPostgres("poll fallback (a commit from another connection)"))("poll fallback", () => {
  it("finds events whose NOTIFY never came", async () => {
    const t = await startTestServer({ config: { pollIntervalMs: 100 } });
    try {
      const sub = await collect(t.client(), { patterns: ["memory.created"] });
      await appendWithoutNotify(t.storage.databaseUrl!);
      await sub.waitFor(1, 5000);
      expect(sub.events[0]?.id).toBe("silent-1");
      await sub.close();
    } finally {
      await t.close();
    }
  });
});

describe.runIf(needsPostgres("ringing only when another node listens"))("commit notifications", () => {
  it("a commit rings (NOTIFY) only while another node is registered as listening; a stopped node unregisters", async () => {
    // A poll interval far longer than the test waits, as in the cluster tests above.
    const t = await startTestServer({ config: { pollIntervalMs: 600_000 } });
    const listener = new pg.Client({ connectionString: t.storage.databaseUrl! });
    await listener.connect();
    const rings: string[] = [];
    listener.on("notification", (n) => rings.push(n.payload ?? ""));
    try {
      await listener.query("LISTEN tidings_events");
      const registered = async () => (await listener.query<{ n: number }>("SELECT count(*)::int AS n FROM tidings_event_listeners WHERE listening_until > now()")).rows[0]!.n;
      // The node registered its own listener, which its commits do not ring.
      expect(await registered()).toBe(1);
      const alone = await callJson(t.url, "Publish", { event: memoryCreated("alone") });
      expect(alone.status).toBe(200);
      // Rung commits notify before the publish answers; give a stray one time to arrive anyway.
      await new Promise((r) => setTimeout(r, 300));
      expect(rings).toEqual([]);

      // Another node registers: commits ring, with the new head.
      await listener.query("INSERT INTO tidings_event_listeners (id, listening_until) VALUES ('listener_other', now() + interval '1 minute')");
      const rung = await callJson(t.url, "Publish", { event: memoryCreated("rung") });
      await eventuallyTrue(() => rings.length === 1);
      expect(rings).toEqual([rung.body.sequence]);

      // Its registration ran out (it stopped renewing): commits stop ringing it.
      await listener.query("UPDATE tidings_event_listeners SET listening_until = now() - interval '1 second' WHERE id = 'listener_other'");
      await callJson(t.url, "Publish", { event: memoryCreated("expired") });
      await new Promise((r) => setTimeout(r, 300));
      expect(rings).toEqual([rung.body.sequence]);

      await t.stop();
      expect(await registered()).toBe(0);
    } finally {
      await listener.end();
      await t.close();
    }
  });
});

/** Appends like a node whose notification was lost: the same transaction, without pg_notify. */
async function appendWithoutNotify(databaseUrl: string) {
  const payload = Buffer.from(toBinary(MemoryCreatedSchema, create(MemoryCreatedSchema, { memoryId: "silent" })));
  const c = new pg.Client({ connectionString: databaseUrl });
  await c.connect();
  try {
    await c.query("BEGIN");
    const head = await c.query<{ last_sequence: string }>("SELECT last_sequence FROM tidings_log_head WHERE id = 1 FOR UPDATE");
    const sequence = BigInt(head.rows[0]!.last_sequence) + 1n;
    await c.query(
      "INSERT INTO tidings_events (sequence, id, type, source, subject, time, attributes, payload) VALUES ($1, 'silent-1', 'memory.created', 'test', '', now(), '{}', $2)",
      [sequence.toString(), payload],
    );
    await c.query("UPDATE tidings_log_head SET last_sequence = $1 WHERE id = 1", [sequence.toString()]);
    await c.query("COMMIT");
  } finally {
    await c.end();
  }
}

async function collectUntilError(client: ReturnType<typeof createTidingsClient>, into: bigint[], onCursor: (c: bigint) => void): Promise<ConnectError | undefined> {
  try {
    for await (const res of client.subscribe({ patterns: ["memory.*"] })) {
      onCursor(res.cursor);
      if (res.message.case === "event") into.push(res.message.value.sequence);
    }
    return undefined;
  } catch (err) {
    if (err instanceof ConnectError) return err;
    throw err;
  }
}

async function eventuallyTrue(check: () => boolean, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}
