import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build } from "esbuild";
import { create, type DescMessage, getOption, hasOption, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { catalogRegistry, createClient, eventTypeOf, type ReceivedEvent, type SubscribeOptions, type TidingsClient, type TransportKind } from "../sdk/index.js";
import { knownMessages } from "../sdk/catalog.js";
import { loadCatalog } from "../server/catalog/catalog.js";
import { event_type } from "../gen/tidings/v1/options_pb.js";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import { MemoryCreatedSchema } from "../gen/tidings/events/memory/v1/memory_pb.js";
import { RiskAlertSchema } from "../gen/tidings/events/risk/v1/risk_pb.js";
import { FileChangedSchema } from "../gen/tidings/events/file/v1/file_pb.js";
import { DebateVoteSchema } from "../gen/tidings/events/debate/v1/debate_pb.js";
import { DreamCompletedSchema } from "../gen/tidings/events/dream/v1/dream_pb.js";
import { eventually, startTestServer, type TestServer } from "./helpers/test-server.js";
import { freePort, type RecordedRequest, startRecorder } from "./helpers/sdk-recorder.js";

const root = fileURLToPath(new URL("../", import.meta.url));
const transports: TransportKind[] = ["connect", "grpc", "grpc-web"];
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
let runCounter = 0;
const newRun = (name: string) => `${name}-${process.pid}-${Date.now().toString(36)}-${runCounter++}`;

/** Rejects when `promise` has not settled after `ms`: every wait in this file is bounded. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads `n` events of a subscription, or what came within `timeoutMs`. */
async function take(client: TidingsClient, options: SubscribeOptions, n: number, timeoutMs = 15_000): Promise<ReceivedEvent[]> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  const events: ReceivedEvent[] = [];
  try {
    for await (const e of client.subscribe({ ...options, signal: abort.signal })) {
      events.push(e);
      if (events.length >= n) break;
    }
  } finally {
    clearTimeout(timer);
  }
  return events;
}

/** Runs `fn`, expects a ConnectError, and returns it. */
async function connectErrorOf(fn: () => Promise<unknown>): Promise<ConnectError> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConnectError);
    return err as ConnectError;
  }
  throw new Error("expected the call to fail");
}

const violationsOf = (err: ConnectError) => err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => ({ field: v.field, description: v.description })));

const noStreams = (t: TestServer, what: string) => eventually(() => (t.server.streamStats().active === 0 ? true : undefined), 5000, what);

// ---------------------------------------------------------------------------------------------

describe("SDK against a real server", () => {
  let t: TestServer;
  const clients: TidingsClient[] = [];
  const client = (options: Partial<Parameters<typeof createClient>[0]> = {}) => {
    const c = createClient({ baseUrl: t.url, ...options });
    clients.push(c);
    return c;
  };
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await t?.close();
  });

  describe.each(transports)("typed publish and receive over %s", (transport) => {
    it("publishes catalog messages and receives them narrowed, with their envelopes", async () => {
      const run = newRun(`typed-${transport}`);
      const plain = client({ transport }); // source defaults to "tidings-sdk"
      const helena = client({ transport, source: "alma/helena" });
      const detectedAt = timestampFromDate(new Date("2025-05-01T12:34:56.789Z"));
      const memory: MessageInitShape<typeof MemoryCreatedSchema> = {
        memoryId: "m-1",
        memoryType: "heuristic",
        agent: "helena",
        data: { strategy: "retry", confidence: 0.9, nested: { ok: true, list: [1, "two", null] } },
        tier: "hot",
        ltpStrength: 0.5,
        tags: ["a", "b"],
      };
      const risk: MessageInitShape<typeof RiskAlertSchema> = {
        alertId: "security_alert_001",
        riskType: "security",
        severity: "high",
        title: "Open port",
        affectedResources: ["db-1", "db-2"],
        riskScore: 0.85,
        detectedAt,
        mitigationSteps: ["close it"],
        metadata: { incident: "INC-7" },
      };
      const file: MessageInitShape<typeof FileChangedSchema> = { filePath: "/srv/a.txt", changeType: "modified", size: 12_345_678_901n, checksum: "sha256:abc" };
      const vote: MessageInitShape<typeof DebateVoteSchema> = { debateId: "d-1", agent: "critic", choice: "B", confidence: 0, round: 2, reasoning: "because" };
      const dream: MessageInitShape<typeof DreamCompletedSchema> = { sessionId: "s-1", durationSeconds: 0, memoriesProcessed: 42 };

      const attrs = (i: number) => ({ run, n: String(i) });
      const published = [
        await plain.publish(MemoryCreatedSchema, memory, { attributes: attrs(0), subject: "memory/m-1", idempotencyKey: `${run}-0` }),
        await helena.publish(RiskAlertSchema, risk, { attributes: attrs(1), subject: "alert/1", idempotencyKey: `${run}-1` }),
        await plain.publish(FileChangedSchema, file, { attributes: attrs(2), subject: "/srv/a.txt", idempotencyKey: `${run}-2` }),
        await helena.publish(DebateVoteSchema, vote, { attributes: attrs(3), subject: "debate/d-1", idempotencyKey: `${run}-3` }),
        await helena.publish(DreamCompletedSchema, dream, { attributes: attrs(4), subject: "dream/s-1", idempotencyKey: `${run}-4`, source: "mnemocore/dreamer" }),
      ];
      expect(published.every((p) => p.duplicate === false && p.id !== "")).toBe(true);
      const seqs = published.map((p) => p.sequence);
      expect([...seqs].sort((a, b) => (a < b ? -1 : 1))).toEqual(seqs);

      // The idempotency key makes a retry safe: the original event comes back, nothing new.
      const retry = await plain.publish(MemoryCreatedSchema, memory, { attributes: attrs(0), subject: "memory/m-1", idempotencyKey: `${run}-0` });
      expect(retry).toMatchObject({ duplicate: true, id: published[0]!.id, sequence: published[0]!.sequence });

      const events = await take(plain, { patterns: ["memory.*", "risk.alert", "file.**", "debate.vote", "dream.completed"], attributes: { run }, from: "earliest" }, 5);
      expect(events.map((e) => e.sequence)).toEqual(seqs);
      expect(events.map((e) => e.type)).toEqual(["memory.created", "risk.alert", "file.changed", "debate.vote", "dream.completed"]);
      expect(events.map((e) => e.source)).toEqual(["tidings-sdk", "alma/helena", "tidings-sdk", "alma/helena", "mnemocore/dreamer"]);
      expect(events.map((e) => e.subject)).toEqual(["memory/m-1", "alert/1", "/srv/a.txt", "debate/d-1", "dream/s-1"]);
      events.forEach((e, i) => {
        expect(e.attributes).toEqual(attrs(i));
        expect(e.id).toBe(published[i]!.id);
        expect(e.raw?.typeUrl).toMatch(/^type\.googleapis\.com\/tidings\.events\./);
        expect(Math.abs(e.time.getTime() - Date.now())).toBeLessThan(60_000);
      });

      const [m, r, f, v, d] = events as [ReceivedEvent, ReceivedEvent, ReceivedEvent, ReceivedEvent, ReceivedEvent];
      // is() narrows to the one message and only that one.
      expect(m.is(RiskAlertSchema)).toBe(false);
      expect(r.is(MemoryCreatedSchema)).toBe(false);
      if (!m.is(MemoryCreatedSchema) || !r.is(RiskAlertSchema) || !f.is(FileChangedSchema) || !v.is(DebateVoteSchema) || !d.is(DreamCompletedSchema)) {
        throw new Error(`is() did not narrow: ${events.map((e) => e.data?.$typeName).join(", ")}`);
      }
      // Typed field access (compile-time check of the narrowing), then the whole messages.
      const memoryId: string = m.data.memoryId;
      const score: number | undefined = r.data.riskScore;
      const size: bigint | undefined = f.data.size;
      const choice: string = v.data.choice;
      const duration: number | undefined = d.data.durationSeconds;
      expect({ memoryId, score, size, choice, duration }).toEqual({ memoryId: "m-1", score: 0.85, size: 12_345_678_901n, choice: "B", duration: 0 });
      expect(m.data).toEqual(create(MemoryCreatedSchema, memory));
      expect(r.data).toEqual(create(RiskAlertSchema, risk));
      expect(f.data).toEqual(create(FileChangedSchema, file));
      expect(v.data).toEqual(create(DebateVoteSchema, vote));
      expect(d.data).toEqual(create(DreamCompletedSchema, dream));
      // Explicit presence survives the trip: a zero that was set is not "unset".
      expect(v.data.confidence).toBe(0);
      expect(d.data.durationSeconds).toBe(0);
      expect(r.data.detectedAt).toEqual(detectedAt);

      // Nothing else carries the run: the retry did not publish a second event.
      const history = await plain.events.listEvents({ attributes: { run } });
      expect(history.events.map((e) => e.sequence)).toEqual(seqs);
    });

    it("publishJson publishes a type name and a JSON payload", async () => {
      const run = newRun(`json-${transport}`);
      const c = client({ transport });
      const res = await c.publishJson(
        "risk.alert",
        { alert_id: "j-1", risk_type: "compliance", severity: "low", title: "t", risk_score: 0.25, affected_resources: ["x"] },
        { attributes: { run }, subject: "json", source: "pm/json", id: `${run}-own-id`, time: new Date("2024-01-02T03:04:05.678Z") },
      );
      expect(res.id).toBe(`${run}-own-id`);
      const [e] = await take(c, { patterns: ["risk.*"], attributes: { run }, from: "earliest" }, 1);
      expect(e).toBeDefined();
      expect(e!.sequence).toBe(res.sequence);
      expect({ type: e!.type, source: e!.source, subject: e!.subject, id: e!.id, time: e!.time }).toEqual({ type: "risk.alert", source: "pm/json", subject: "json", id: `${run}-own-id`, time: new Date("2024-01-02T03:04:05.678Z") });
      if (!e!.is(RiskAlertSchema)) throw new Error("not a RiskAlert");
      expect(e!.data).toEqual(create(RiskAlertSchema, { alertId: "j-1", riskType: "compliance", severity: "low", title: "t", riskScore: 0.25, affectedResources: ["x"] }));

      const err = await connectErrorOf(() => c.publishJson("memory.nonexistent", { memory_id: "x" }, { attributes: { run } }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(violationsOf(err).map((v) => v.field)).toEqual(["event.type"]);
    });

    it("publishBatch is all or nothing", async () => {
      const run = newRun(`batch-${transport}`);
      const c = client({ transport });
      const err = await connectErrorOf(() =>
        c.publishBatch([
          { schema: MemoryCreatedSchema, data: { memoryId: "b-0" }, options: { attributes: { run } } },
          { schema: DebateVoteSchema, data: { agent: "a", choice: "A" } as MessageInitShape<DescMessage>, options: { attributes: { run } } }, // no debate_id
          { schema: FileChangedSchema, data: { filePath: "/x", changeType: "created" } as MessageInitShape<DescMessage>, options: { attributes: { run } } },
        ]),
      );
      expect(err.code).toBe(Code.InvalidArgument);
      expect(violationsOf(err)).toEqual([{ field: "entries[1].event.proto_data.debate_id", description: "is required" }]);
      expect((await c.events.listEvents({ attributes: { run } })).events).toHaveLength(0);

      const results = await c.publishBatch([
        { schema: MemoryCreatedSchema, data: { memoryId: "b-0" }, options: { attributes: { run } } },
        { schema: DebateVoteSchema, data: { debateId: "d", agent: "a", choice: "A" } as MessageInitShape<DescMessage>, options: { attributes: { run }, subject: "vote" } },
        { schema: FileChangedSchema, data: { filePath: "/x", changeType: "created" } as MessageInitShape<DescMessage>, options: { attributes: { run } } },
      ]);
      expect(results).toHaveLength(3);
      expect(results[1]!.sequence).toBe(results[0]!.sequence + 1n);
      expect(results[2]!.sequence).toBe(results[1]!.sequence + 1n);
      const events = await take(c, { attributes: { run }, from: "earliest" }, 3);
      expect(events.map((e) => [e.type, e.sequence, e.source])).toEqual([
        ["memory.created", results[0]!.sequence, "tidings-sdk"],
        ["debate.vote", results[1]!.sequence, "tidings-sdk"],
        ["file.changed", results[2]!.sequence, "tidings-sdk"],
      ]);
      expect(events[1]!.subject).toBe("vote");
    });

    it("errors are ConnectErrors with the server's code and field violations", async () => {
      const c = client({ transport });
      const err = await connectErrorOf(() => c.publish(FileChangedSchema, { changeType: "renamed" }));
      expect(err.code).toBe(Code.InvalidArgument);
      const violations = violationsOf(err);
      expect(violations.map((v) => v.field).sort()).toEqual(["event.proto_data.change_type", "event.proto_data.file_path"]);
      expect(violations.find((v) => v.field === "event.proto_data.file_path")?.description).toBe("is required");
      expect(violations.find((v) => v.field === "event.proto_data.change_type")?.description).toMatch(/created.*modified.*deleted/);
      expect(err.rawMessage).toContain("event.proto_data.file_path");

      // A refused subscription throws at once: no reconnect loop (its backoff would be 5 s).
      for (const bad of [{ filter: "data.tier ==" }, { patterns: ["Memory.*"] }] satisfies SubscribeOptions[]) {
        const started = Date.now();
        const subErr = await within(
          connectErrorOf(async () => {
            for await (const _ of c.subscribe({ ...bad, from: "earliest", backoff: { initialMs: 5000, maxMs: 5000 } })) {
              throw new Error("no event expected");
            }
          }),
          4000,
          `a refused subscription (${JSON.stringify(bad)}) to throw`,
        );
        expect(subErr.code).toBe(Code.InvalidArgument);
        expect(violationsOf(subErr).map((v) => v.field)).toEqual([bad.filter !== undefined ? "filter" : "patterns[0]"]);
        expect(Date.now() - started).toBeLessThan(3000);
      }
      await noStreams(t, "refused streams to be gone");
    });
  });

  describe("on() handlers", () => {
    it("isolates handlers: throws and rejections go to onError, others see everything, unsubscribe stops one", async () => {
      await noStreams(t, "a quiet server");
      const run = newRun("on");
      const errors: Array<{ error: unknown; pattern?: string[]; sequence?: bigint }> = [];
      const c = client({ onError: (error, ctx) => errors.push({ error, pattern: ctx.pattern, sequence: ctx.event?.sequence }) });
      const seen = { sync: [] as bigint[], async: [] as bigint[], throwing: [] as bigint[], rejecting: [] as bigint[] };
      const opts = { attributes: { run }, from: "earliest" as const };
      const offSync = c.on("memory.*", (e) => void seen.sync.push(e.sequence), opts);
      const offAsync = c.on("memory.*", async (e) => {
        await sleep(20);
        seen.async.push(e.sequence);
      }, opts);
      const offThrowing = c.on("memory.*", (e) => {
        seen.throwing.push(e.sequence);
        if (seen.throwing.length % 2 === 0) throw new Error(`throw ${e.sequence}`);
      }, opts);
      const offRejecting = c.on("memory.*", (e) => {
        seen.rejecting.push(e.sequence);
        return seen.rejecting.length % 2 === 0 ? Promise.reject(new Error(`reject ${e.sequence}`)) : Promise.resolve();
      }, opts);
      try {
        const first = (await c.publishBatch(Array.from({ length: 10 }, (_, i) => ({ schema: MemoryCreatedSchema, data: { memoryId: `on-${i}` }, options: { attributes: { run } } })))).map((r) => r.sequence);
        await eventually(() => (Object.values(seen).every((s) => s.length >= 10) && errors.length >= 10 ? true : undefined), 10_000, "every handler to see 10 events");
        for (const s of Object.values(seen)) expect(s).toEqual(first);
        const odd = first.filter((_, i) => i % 2 === 1);
        expect(errors.filter((e) => String(e.error).includes("throw")).map((e) => e.sequence)).toEqual(odd);
        expect(errors.filter((e) => String(e.error).includes("reject")).map((e) => e.sequence)).toEqual(odd);
        expect(errors).toHaveLength(10);
        expect(errors.every((e) => e.error instanceof Error && e.pattern?.join() === "memory.*")).toBe(true);

        // Unsubscribing one handler stops it alone (and its stream on the server).
        await eventually(() => (t.server.streamStats().active === 4 ? true : undefined), 5000, "4 handler streams");
        offThrowing();
        await eventually(() => (t.server.streamStats().active === 3 ? true : undefined), 5000, "the unsubscribed handler's stream to close");
        const second = (await c.publishBatch(Array.from({ length: 4 }, (_, i) => ({ schema: MemoryCreatedSchema, data: { memoryId: `on2-${i}` }, options: { attributes: { run } } })))).map((r) => r.sequence);
        await eventually(() => ([seen.sync, seen.async, seen.rejecting].every((s) => s.length >= 14) ? true : undefined), 10_000, "the others to see 14 events");
        await sleep(100);
        expect(seen.sync).toEqual([...first, ...second]);
        expect(seen.async).toEqual([...first, ...second]);
        expect(seen.rejecting).toEqual([...first, ...second]);
        expect(seen.throwing).toEqual(first);
        expect(errors.filter((e) => String(e.error).includes("reject"))).toHaveLength(7);
      } finally {
        offSync();
        offAsync();
        offThrowing();
        offRejecting();
      }
      await noStreams(t, "every handler stream to close");
      c.close();
    });

    it("a handler whose subscription is refused reports it to onError once", async () => {
      const errors: unknown[] = [];
      const c = client({ onError: (error) => errors.push(error) });
      const off = c.on("memory.*", () => undefined, { filter: "data.(", backoff: { initialMs: 5000 } });
      await eventually(() => (errors.length > 0 ? true : undefined), 4000, "onError to hear of the refused subscription");
      await sleep(200);
      expect(errors).toHaveLength(1);
      expect(ConnectError.from(errors[0]).code).toBe(Code.InvalidArgument);
      off();
      c.close();
    });
  });

  describe.each(transports)("ending subscriptions over %s", (transport) => {
    it("an aborted signal ends the loop without throwing and frees the stream", async () => {
      await noStreams(t, "a quiet server");
      const run = newRun(`abort-${transport}`);
      const c = client({ transport });
      await c.publish(MemoryCreatedSchema, { memoryId: "a-1" }, { attributes: { run } });
      const abort = new AbortController();
      const got: bigint[] = [];
      const loop = (async () => {
        for await (const e of c.subscribe({ attributes: { run }, from: "earliest", signal: abort.signal })) got.push(e.sequence);
        return "ended";
      })();
      await eventually(() => (got.length === 1 && t.server.streamStats().active === 1 ? true : undefined), 5000, "the subscription to be open");
      abort.abort();
      expect(await within(loop, 5000, "the loop to end on abort")).toBe("ended");
      await noStreams(t, "the aborted stream to close");
      c.close();
    });

    it("break ends the stream on the server", async () => {
      await noStreams(t, "a quiet server");
      const run = newRun(`break-${transport}`);
      const c = client({ transport });
      await c.publishBatch(Array.from({ length: 3 }, (_, i) => ({ schema: MemoryCreatedSchema, data: { memoryId: `b-${i}` }, options: { attributes: { run } } })));
      const loop = (async () => {
        for await (const e of c.subscribe({ attributes: { run }, from: "earliest" })) {
          if (e.is(MemoryCreatedSchema)) break;
        }
        return "ended";
      })();
      expect(await within(loop, 5000, "the loop to end on break")).toBe("ended");
      await noStreams(t, "the stream left by break to close");
      c.close();
    });

    it("close() ends every subscription and handler of the client", async () => {
      await noStreams(t, "a quiet server");
      const run = newRun(`close-${transport}`);
      const c = client({ transport });
      const other = client({ transport }); // another client's stream is not touched
      const handled: bigint[] = [];
      c.on("memory.*", (e) => void handled.push(e.sequence), { attributes: { run } });
      c.on("**", () => undefined, { attributes: { run } });
      const loops = [0, 1].map(() =>
        (async () => {
          let n = 0;
          for await (const _ of c.subscribe({ attributes: { run }, from: "earliest" })) n++;
          return n;
        })(),
      );
      const otherEvents: bigint[] = [];
      const otherAbort = new AbortController();
      const otherLoop = (async () => {
        for await (const e of other.subscribe({ attributes: { run }, signal: otherAbort.signal })) otherEvents.push(e.sequence);
      })();
      await eventually(() => (t.server.streamStats().active === 5 ? true : undefined), 5000, "5 open streams");
      const before = await c.publish(MemoryCreatedSchema, { memoryId: "c-1" }, { attributes: { run } });
      await eventually(() => (handled.length === 1 && otherEvents.length === 1 ? true : undefined), 5000, "the event to reach the handler");
      c.close();
      expect(await within(Promise.all(loops), 5000, "close() to end the loops")).toEqual([1, 1]);
      await eventually(() => (t.server.streamStats().active === 1 ? true : undefined), 5000, "only the other client's stream to remain");
      // The closed client's handlers see nothing more; the other client still does.
      await other.publish(MemoryCreatedSchema, { memoryId: "c-2" }, { attributes: { run } });
      await eventually(() => (otherEvents.length === 2 ? true : undefined), 5000, "the other client to see the second event");
      await sleep(100);
      expect(handled).toEqual([before.sequence]);
      otherAbort.abort();
      await within(otherLoop, 5000, "the other loop to end");
      await noStreams(t, "every stream to close");
      other.close();
    });
  });
});

// ---------------------------------------------------------------------------------------------

describe("resuming after a server restart", () => {
  const servers: TestServer[] = [];
  afterAll(async () => {
    for (const s of servers) await s.close().catch(() => undefined);
  });

  it.each(transports)("over %s: no gap and no duplicate", async (transport) => {
    const port = await freePort();
    const t = await startTestServer({ config: { port } });
    servers.push(t);
    const run = newRun(`restart-${transport}`);
    const c = createClient({ baseUrl: t.url, transport });
    const abort = new AbortController();
    const deadline = setTimeout(() => abort.abort(), 45_000);
    const received: bigint[] = [];
    const reading = (async () => {
      for await (const e of c.subscribe({ attributes: { run }, from: "earliest", backoff: { initialMs: 50, maxMs: 500 }, signal: abort.signal })) {
        received.push(e.sequence);
        if (received.length <= 50) await sleep(10); // a reader still busy when the server goes
        if (received.length >= 100) break;
      }
    })();
    // A subscriber from "latest" that has seen no event yet when the server goes: its cursor
    // is the head the server's first heartbeat named, so events published after the restart
    // but before it reconnects (its backoff is longer) are not skipped.
    const late = newRun(`restart-latest-${transport}`);
    const lateReceived: bigint[] = [];
    const lateReading = (async () => {
      for await (const e of c.subscribe({ attributes: { run: late }, backoff: { initialMs: 400, maxMs: 500 }, signal: abort.signal })) {
        lateReceived.push(e.sequence);
        if (lateReceived.length >= 3) break;
      }
    })();
    try {
      await eventually(() => (t.server.streamStats().active === 2 ? true : undefined), 5000, "both subscriptions to be open");
      const publishOne = (i: number, r = run) => c.publish(MemoryCreatedSchema, { memoryId: `r-${i}` }, { attributes: { run: r } }).then((res) => res.sequence);
      // One batch, so the slow reader is still working through it when the server stops.
      const first = (await c.publishBatch(Array.from({ length: 50 }, (_, i) => ({ schema: MemoryCreatedSchema, data: { memoryId: `r-${i}` }, options: { attributes: { run } } })))).map((r) => r.sequence);
      await eventually(() => (received.length >= 5 ? true : undefined), 10_000, "the subscriber to be reading");
      const atStop = received.length;
      await t.stop();
      await t.restart();
      expect(t.server.port).toBe(port);
      const lateSeqs = [await publishOne(0, late), await publishOne(1, late), await publishOne(2, late)];
      const second: bigint[] = [];
      for (let i = 50; i < 100; i++) second.push(await publishOne(i));
      await within(reading, 30_000, `100 events (have ${received.length})`);
      expect(received).toHaveLength(100);
      expect(received).toEqual([...first, ...second]);
      expect(new Set(received).size).toBe(100);
      expect(atStop).toBeLessThan(50); // the server went while the subscriber was mid-way
      await within(lateReading, 10_000, `3 events from "latest" (have ${lateReceived.length})`);
      expect(lateReceived).toEqual(lateSeqs);
    } finally {
      clearTimeout(deadline);
      abort.abort();
      c.close();
    }
    await noStreams(t, "the resumed stream to close");
  });
});

// ---------------------------------------------------------------------------------------------

describe("client options on the wire", () => {
  const expectHeaders = (requests: RecordedRequest[], n: number) => {
    expect(requests).toHaveLength(n);
    for (const r of requests) {
      expect(r.headers["authorization"], r.path).toBe("Bearer s3cret");
      expect(r.headers["x-tenant"], r.path).toBe("acme");
      expect(r.headers["x-trace-id"], r.path).toBe("trace-1");
    }
  };

  it.each(transports)("token and headers go with every call over %s", async (transport) => {
    const recorder = await startRecorder({ http2: transport === "grpc", mode: "refuse" });
    const c = createClient({ baseUrl: recorder.url, transport, token: "s3cret", headers: { "x-tenant": "acme", "x-trace-id": "trace-1" } });
    try {
      const calls: Array<() => Promise<unknown>> = [
        () => c.publish(MemoryCreatedSchema, { memoryId: "h-1" }),
        () => c.publishJson("memory.created", { memory_id: "h-2" }),
        () => c.publishBatch([{ schema: MemoryCreatedSchema, data: { memoryId: "h-3" } }]),
        async () => {
          for await (const _ of c.subscribe({ from: "earliest" })) break;
        },
        () => c.events.listEvents({}),
        () => c.webhooks.listWebhooks({}),
      ];
      for (const call of calls) {
        const err = await within(connectErrorOf(call), 5000, "a refused call");
        expect(err.code).toBe(Code.Unauthenticated);
      }
      expectHeaders(recorder.requests, calls.length);
      expect(recorder.requests.map((r) => r.path)).toEqual([
        "/tidings.v1.EventService/Publish",
        "/tidings.v1.EventService/Publish",
        "/tidings.v1.EventService/PublishBatch",
        "/tidings.v1.EventService/Subscribe",
        "/tidings.v1.EventService/ListEvents",
        "/tidings.v1.WebhookService/ListWebhooks",
      ]);
    } finally {
      c.close();
      await recorder.close();
    }
  });

  it.each(transports)("timeoutMs: a unary call to a server that never answers ends with DeadlineExceeded over %s", async (transport) => {
    const recorder = await startRecorder({ http2: transport === "grpc", mode: "hang" });
    const c = createClient({ baseUrl: recorder.url, transport, timeoutMs: 300 });
    try {
      for (const call of [
        () => c.publish(MemoryCreatedSchema, { memoryId: "t-1" }),
        () => c.publishJson("memory.created", { memory_id: "t-2" }),
        () => c.publishBatch([{ schema: MemoryCreatedSchema, data: { memoryId: "t-3" } }]),
      ]) {
        const started = Date.now();
        const err = await within(connectErrorOf(call), 5000, "the deadline");
        expect(err.code).toBe(Code.DeadlineExceeded);
        expect(Date.now() - started).toBeGreaterThanOrEqual(250);
        expect(Date.now() - started).toBeLessThan(3000);
      }
      // A subscription has no deadline: it stays on its one request instead of failing at
      // 300 ms and reconnecting.
      const abort = new AbortController();
      const before = recorder.requests.length;
      const loop = (async () => {
        for await (const _ of c.subscribe({ signal: abort.signal, backoff: { initialMs: 10, maxMs: 10 } })) break;
        return "ended";
      })();
      await sleep(1200);
      abort.abort();
      expect(await within(loop, 5000, "the hanging subscription to end on abort")).toBe("ended");
      expect(recorder.requests.length - before).toBe(1);
    } finally {
      c.close();
      await recorder.close();
    }
  });

  // `timeoutMs` is documented as the deadline of each unary call (README: "applies to unary calls
  // only"); `client.events` and `client.webhooks` are the same client's unary calls, and they
  // do get its token and headers (above).
  it("timeoutMs also bounds the raw clients' unary calls (client.events, client.webhooks)", async () => {
    for (const transport of transports) {
      const recorder = await startRecorder({ http2: transport === "grpc", mode: "hang" });
      const c = createClient({ baseUrl: recorder.url, transport, timeoutMs: 300 });
      try {
        for (const [name, call] of [["events.listEvents", () => c.events.listEvents({})], ["webhooks.listWebhooks", () => c.webhooks.listWebhooks({})]] as const) {
          const err = await within(connectErrorOf(call), 3000, `the deadline of ${name} over ${transport}`);
          expect(err.code).toBe(Code.DeadlineExceeded);
        }
      } finally {
        c.close();
        await recorder.close();
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe("browser entry", () => {
  let t: TestServer;
  let bundleFile: string | undefined;
  let code = "";
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    if (bundleFile) await rm(bundleFile, { force: true });
    await t?.close();
  });

  it("bundles for the browser with no Node built-in", async () => {
    const result = await build({
      entryPoints: [join(root, "sdk/browser.ts")],
      bundle: true,
      platform: "browser",
      format: "esm",
      write: false,
      metafile: true,
      logLevel: "silent",
    });
    expect(result.errors).toEqual([]);
    expect(result.outputFiles).toHaveLength(1);
    code = result.outputFiles[0]!.text;
    const builtins = /^(node:|(http|http2|https|crypto|net|tls|zlib|stream|buffer|events|fs|os|path|url|util)(\/|$))/;
    const imports = Object.values(result.metafile.outputs).flatMap((o) => o.imports.map((i) => i.path));
    expect(imports.filter((p) => builtins.test(p))).toEqual([]);
    expect(code).not.toMatch(/\bfrom\s*["'](node:|https?["']|http2["']|crypto["'])/);
    expect(code).not.toMatch(/\b(import|require)\s*\(\s*["'](node:|https?["']|http2["']|crypto["'])/);
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.some((p) => p.includes("@connectrpc/connect-node"))).toBe(false);
    expect(inputs.some((p) => p.includes("@connectrpc/connect-web"))).toBe(true);
  });

  it.each(["connect", "grpc-web"] as const)("the bundle publishes and receives typed events in Node over fetch (%s)", async (transport) => {
    expect(code, "the bundle test must run first").not.toBe("");
    if (!bundleFile) {
      bundleFile = join(root, `.tmp-sdk-browser-${process.pid}.mjs`);
      await writeFile(bundleFile, code);
    }
    const sdk = (await import(pathToFileURL(bundleFile).href)) as typeof import("../sdk/browser.js");
    const run = newRun(`browser-${transport}`);
    const c = sdk.createClient({ baseUrl: t.url, transport, source: "browser/app" });
    try {
      const res = await c.publish(MemoryCreatedSchema, { memoryId: `web-${transport}`, tier: "warm", tags: ["x"] }, { attributes: { run }, subject: "s" });
      const events: ReceivedEvent[] = [];
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), 15_000);
      for await (const e of c.subscribe({ patterns: ["memory.*"], attributes: { run }, from: "earliest", signal: abort.signal })) {
        events.push(e);
        break;
      }
      clearTimeout(timer);
      expect(events).toHaveLength(1);
      const e = events[0]!;
      expect({ type: e.type, source: e.source, subject: e.subject, sequence: e.sequence, attributes: e.attributes }).toEqual({ type: "memory.created", source: "browser/app", subject: "s", sequence: res.sequence, attributes: { run } });
      if (!e.is(MemoryCreatedSchema)) throw new Error("is() did not narrow");
      expect(e.data.memoryId).toBe(`web-${transport}`);
      expect(e.data.tags).toEqual(["x"]);

      const err = await connectErrorOf(() => c.publish(MemoryCreatedSchema, { memoryId: "" }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field)).toEqual(["event.proto_data.memory_id"]);
      await noStreams(t, "the browser client's stream to close");
    } finally {
      c.close();
    }
  });

  it("the bundle refuses the grpc transport with a clear error", async () => {
    expect(code, "the bundle test must run first").not.toBe("");
    if (!bundleFile) {
      bundleFile = join(root, `.tmp-sdk-browser-${process.pid}.mjs`);
      await writeFile(bundleFile, code);
    }
    const sdk = (await import(pathToFileURL(bundleFile).href)) as typeof import("../sdk/browser.js");
    expect(() => sdk.createClient({ baseUrl: t.url, transport: "grpc" })).toThrow(/"grpc" transport.*HTTP\/2 trailers.*"connect" or "grpc-web"/);
  });
});

// ---------------------------------------------------------------------------------------------

describe("catalogRegistry", () => {
  it("covers every event type the server knows", async () => {
    const catalog = await loadCatalog();
    const server = catalog.list().map((e) => ({ name: e.name, typeName: e.message.typeName }));
    expect(server.length).toBeGreaterThan(10);
    const sdk = knownMessages()
      .filter((m) => hasOption(m, event_type))
      .map((m) => ({ name: getOption(m, event_type).name, typeName: m.typeName }))
      .sort((a, b) => a.name.localeCompare(b.name));
    expect(sdk).toEqual(server);
    for (const { name, typeName } of server) {
      const m = catalogRegistry.getMessage(typeName);
      expect(m, typeName).toBeDefined();
      expect(eventTypeOf(m!)).toBe(name);
    }
  });
});

describe("subscription state", () => {
  it("onSubscribed reports each (re)connection with its cursor; the stream resumes in between", async () => {
    const port = await freePort();
    const t = await startTestServer({ config: { port } });
    const client = createClient({ baseUrl: t.url });
    const cursors: bigint[] = [];
    const received: bigint[] = [];
    const abort = new AbortController();
    const reading = (async () => {
      for await (const e of client.subscribe({ from: "earliest", signal: abort.signal, backoff: { initialMs: 50, maxMs: 300 }, onSubscribed: (c) => cursors.push(c) })) {
        received.push(e.sequence);
      }
    })();
    try {
      await eventually(() => (cursors.length === 1 ? true : undefined), 10_000, "the first onSubscribed");
      const first = await client.publish(MemoryCreatedSchema, { memoryId: "s-1" });
      await eventually(() => (received.length === 1 ? true : undefined), 10_000, "the first event");
      await t.stop();
      await t.restart();
      await eventually(() => (cursors.length === 2 ? true : undefined), 15_000, "onSubscribed after the restart");
      expect(cursors[1]).toBe(first.sequence); // it resumed after the last event it had seen
      const second = await client.publish(MemoryCreatedSchema, { memoryId: "s-2" });
      await eventually(() => (received.length === 2 ? true : undefined), 10_000, "the event after the restart");
      expect(received).toEqual([first.sequence, second.sequence]);
    } finally {
      abort.abort();
      await reading;
      client.close();
      await t.close();
    }
  });

  it("failFast throws at once when the server cannot be reached; without it the subscription keeps trying", async () => {
    const port = await freePort(); // nothing listens there
    const client = createClient({ baseUrl: `http://127.0.0.1:${port}` });
    try {
      const err = await within(connectErrorOf(async () => {
        for await (const _ of client.subscribe({ failFast: true })) break;
      }), 5_000, "failFast to throw");
      expect(err.code).toBe(Code.Unavailable);

      const abort = new AbortController();
      let ended = false;
      const patient = (async () => {
        for await (const _ of client.subscribe({ signal: abort.signal, backoff: { initialMs: 20, maxMs: 50 } })) break;
        ended = true;
      })();
      await new Promise((r) => setTimeout(r, 500));
      expect(ended).toBe(false); // still retrying
      abort.abort();
      await within(patient, 5_000, "the retrying subscription to end on abort");
      expect(ended).toBe(true);
    } finally {
      client.close();
    }
  });
});
