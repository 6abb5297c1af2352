import { randomUUID } from "node:crypto";
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect as connectNats } from "@nats-io/transport-node";
import pg from "pg";
import { MemoryCreatedSchema } from "../../gen/tidings/events/memory/v1/memory_pb.js";
import { EventSchema } from "../../gen/tidings/v1/event_pb.js";
import { PublishBatchRequestSchema, PublishRequestSchema } from "../../gen/tidings/v1/event_service_pb.js";
import { packPayload } from "../../sdk/index.js";
import { newApiKey } from "../../server/auth/api-key.js";
import { createScratchDatabase, type ScratchDatabase } from "../lib/database.js";
import { connectCaller, grpcCaller } from "../lib/lean-clients.js";
import { closedLoop, type ClosedLoopResult } from "../lib/load.js";
import { within } from "../lib/limits.js";
import { type BenchContext, type Case, type Metrics, medianOf, ratioGoal, runCases, type Scenario } from "../lib/scenario.js";
import { startTidings, type TidingsProcess } from "../lib/tidings-process.js";

const batchSize = 100;
/** Connections of the raw single-row limit, as the issue sets it. */
const rawSingleConnections = 32;
/** Concurrent batch writers, the same for Tidings' PublishBatch and the raw multi-row INSERT. */
const batchWriters = 8;
/** Publishes JetStream's async publisher keeps in flight. */
const natsWindow = 1_000;

/** A realistic event: a memory.created with a typed payload, as the SDK's typed publish sends it. */
function sampleEvent(n: number): MessageInitShape<typeof EventSchema> {
  return {
    type: "memory.created",
    source: "bench/publisher",
    attributes: { agent: `agent-${n % 8}`, project: "bench" },
    payload: {
      case: "protoData",
      value: packPayload(MemoryCreatedSchema, {
        memoryId: randomUUID(),
        memoryType: "heuristic",
        tier: n % 3 === 0 ? "hot" : "warm",
      }),
    },
  };
}

/** The payload bytes as the log stores them, for the raw-INSERT limits (same row shape and size). */
const samplePayload = toBinary(MemoryCreatedSchema, create(MemoryCreatedSchema, { memoryId: randomUUID(), memoryType: "heuristic", tier: "hot" }));

function metricsOf(r: ClosedLoopResult, unit: string): Metrics {
  if (r.ops === 0) throw new Error(`nothing completed (${r.errors} errors): ${String((r.firstError as Error)?.message ?? r.firstError)}`);
  return { [`${unit}/s`]: r.opsPerSecond, "p50 ms": r.latency.p50, "p99 ms": r.latency.p99, errors: r.errors };
}

export const publishThroughputScenario: Scenario = {
  id: "publish",
  title: "Publish throughput",
  async run(ctx: BenchContext) {
    const { phaseMs, maxOps } = ctx.limits;
    const tidingsDb = await createScratchDatabase("publish");
    // A second server that requires API keys, to show what checking a key costs a publish.
    const keyedDb = await createScratchDatabase("publish_keyed");
    const apiKey = newApiKey();
    let keyed: TidingsProcess | undefined;
    const rawDb = await createScratchDatabase("publish_raw");
    let server: TidingsProcess | undefined;
    const pools: pg.Pool[] = [];
    const natsStream = `BENCH_PUBLISH_${Date.now().toString(36).toUpperCase()}`;
    const nats = await connectNats({ servers: "127.0.0.1:4222" });
    const notes: string[] = [];
    try {
      server = await startTidings(tidingsDb.url);
      keyed = await startTidings(keyedDb.url, ["--auth", "keys", "--admin-key", apiKey]);
      const raw = await prepareRawTable(rawDb);
      const single = new pg.Pool({ connectionString: rawDb.url, max: rawSingleConnections });
      const multi = new pg.Pool({ connectionString: rawDb.url, max: batchWriters });
      pools.push(raw, single, multi);
      const jsm = await jetstreamManager(nats);
      await jsm.streams.add({ name: natsStream, subjects: [`${natsStream}.>`], storage: StorageType.File });
      const js = jetstream(nats);
      const natsPayload = toBinary(PublishRequestSchema, create(PublishRequestSchema, { event: sampleEvent(0) }));

      // Requests are encoded once: the clients cost the bench process little (see lean-clients.ts).
      const publishBodies = Array.from({ length: 1024 }, (_, i) => toBinary(PublishRequestSchema, create(PublishRequestSchema, { event: sampleEvent(i) })));
      const batchBodies = Array.from({ length: 64 }, (_, b) =>
        toBinary(PublishBatchRequestSchema, create(PublishBatchRequestSchema, { entries: Array.from({ length: batchSize }, (_, i) => ({ event: sampleEvent(b * batchSize + i) })) })));
      const unary = (clients: number, transport: "grpc" | "connect", withKey = false): Case => ({
        name: `unary Publish, ${clients} client${clients === 1 ? "" : "s"}, ${transport === "grpc" ? "gRPC" : "Connect"}${withKey ? ", with an API key" : ""}`,
        role: "tidings",
        async run() {
          const target = withKey ? keyed! : server!;
          const headers: Record<string, string> = withKey ? { authorization: `Bearer ${apiKey}` } : {};
          const caller = (transport === "grpc" ? grpcCaller : connectCaller)(target.url, "/tidings.v1.EventService/Publish", clients, headers);
          let n = 0;
          try {
            return metricsOf(await closedLoop({ workers: clients, phaseMs, maxOps }, (w) => caller.call(w, publishBodies[n++ % publishBodies.length]!)), "events");
          } finally {
            await caller.close();
          }
        },
      });
      const cases: Case[] = [
        unary(1, "grpc"),
        unary(16, "grpc"),
        unary(64, "grpc"),
        unary(1, "connect"),
        unary(16, "connect"),
        unary(64, "connect"),
        {
          name: `PublishBatch of ${batchSize}, ${batchWriters} clients, gRPC`,
          role: "tidings",
          async run() {
            const caller = grpcCaller(server!.url, "/tidings.v1.EventService/PublishBatch", batchWriters);
            let n = 0;
            try {
              return metricsOf(await closedLoop({ workers: batchWriters, phaseMs, maxOps: Math.ceil(maxOps / batchSize), opSize: batchSize }, (w) => caller.call(w, batchBodies[n++ % batchBodies.length]!)), "events");
            } finally {
              await caller.close();
            }
          },
        },
        {
          name: `raw single-row INSERT, ${rawSingleConnections} connections`,
          role: "limit",
          async run() {
            return metricsOf(await closedLoop({ workers: rawSingleConnections, phaseMs, maxOps }, () => single.query(insertSql(1), rowParams(1))), "events");
          },
        },
        {
          name: `raw ${batchSize}-row INSERT, ${batchWriters} connections`,
          role: "limit",
          async run() {
            const text = insertSql(batchSize);
            return metricsOf(await closedLoop({ workers: batchWriters, phaseMs, maxOps: Math.ceil(maxOps / batchSize), opSize: batchSize }, () => multi.query(text, rowParams(batchSize))), "events");
          },
        },
        {
          name: `JetStream async publish (file storage, ${natsWindow} in flight)`,
          role: "peer",
          async run() {
            return natsAsyncPublish(js, `${natsStream}.events`, natsPayload, phaseMs, maxOps);
          },
        },
        unary(64, "grpc", true),
      ];
      const results = await runCases(ctx, cases);
      const unaryBest = Math.max(...cases.filter((c) => c.name.startsWith("unary")).map((c) => medianOf(results, c.name, "events/s")));
      const batchRate = medianOf(results, cases[6]!.name, "events/s");
      const keyedRatio = medianOf(results, cases[10]!.name, "events/s") / medianOf(results, cases[2]!.name, "events/s");
      notes.push(
        `Events are memory.created with a typed payload (proto_data), ${samplePayload.length} payload bytes; the raw limits insert rows of the same shape into a table with the same indexes as tidings_events.`,
        "Every write is a durable commit (synchronous_commit on) for Tidings and the raw limits alike; JetStream acknowledges after its file store accepted the message.",
        `Checking an API key (--auth keys; the bench's other servers run --auth open, like the peers, which have no authentication): 64 gRPC clients publish at ${keyedRatio.toFixed(2)}× the rate of the open server, each server on its own database.`,
        "Load generator, server and PostgreSQL share the machine's cores. The load generator sends pre-encoded requests over node:http2 (gRPC) and undici (Connect, HTTP/1.1) so that it costs little; the SDK's client costs about 0.75 ms of CPU per call in Node.",
      );
      return {
        id: "publish",
        title: "Publish throughput",
        cases: results,
        goals: [
          ratioGoal("best unary Publish vs raw single-row INSERT (events/s)", unaryBest, medianOf(results, cases[7]!.name, "events/s"), 1.0),
          ratioGoal(`PublishBatch vs raw ${batchSize}-row INSERT (events/s)`, batchRate, medianOf(results, cases[8]!.name, "events/s"), 0.5),
          ratioGoal("PublishBatch vs JetStream async publish (events/s)", batchRate, medianOf(results, cases[9]!.name, "events/s"), 2.0),
        ],
        notes,
      };
    } finally {
      await server?.stop();
      await keyed?.stop();
      for (const p of pools) await p.end().catch(() => {});
      await jetstreamManager(nats).then((m) => m.streams.delete(natsStream)).catch(() => {});
      await nats.close();
      await dropAll([tidingsDb, rawDb, keyedDb]);
    }
  },
};

/** A table shaped like tidings_events (same columns and indexes), in its own database. */
async function prepareRawTable(db: ScratchDatabase): Promise<pg.Pool> {
  const pool = new pg.Pool({ connectionString: db.url, max: 1 });
  await pool.query(`CREATE TABLE raw_events (
    sequence bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    type text NOT NULL,
    source text NOT NULL,
    subject text NOT NULL DEFAULT '',
    time timestamptz NOT NULL,
    attributes jsonb NOT NULL DEFAULT '{}',
    payload bytea NOT NULL,
    idempotency_key text UNIQUE,
    recorded_at timestamptz NOT NULL DEFAULT now()
  )`);
  await pool.query("CREATE INDEX raw_events_type_sequence ON raw_events (type, sequence)");
  await pool.query("CREATE INDEX raw_events_time ON raw_events (time)");
  await pool.query("CREATE INDEX raw_events_attributes ON raw_events USING gin (attributes jsonb_path_ops)");
  return pool;
}

function insertSql(rows: number): string {
  const values = Array.from({ length: rows }, (_, r) => `($${r * 6 + 1}, $${r * 6 + 2}, $${r * 6 + 3}, $${r * 6 + 4}, $${r * 6 + 5}, $${r * 6 + 6})`);
  return `INSERT INTO raw_events (id, type, source, time, attributes, payload) VALUES ${values.join(", ")}`;
}

let rawCounter = 0;
function rowParams(rows: number): unknown[] {
  const params: unknown[] = [];
  for (let r = 0; r < rows; r++) {
    const n = rawCounter++;
    params.push(randomUUID(), "memory.created", "bench/publisher", new Date(), JSON.stringify({ agent: `agent-${n % 8}`, project: "bench" }), samplePayload);
  }
  return params;
}

/** Publishes without waiting for each ack, keeping `natsWindow` in flight; counts acknowledged messages. */
async function natsAsyncPublish(js: ReturnType<typeof jetstream>, subject: string, payload: Uint8Array, phaseMs: number, maxOps: number): Promise<Metrics> {
  const run = async (ms: number, limit: number) => {
    const deadline = Date.now() + ms;
    const started = process.hrtime.bigint();
    let sent = 0;
    let acked = 0;
    let failed = 0;
    const inFlight = new Set<Promise<unknown>>();
    while (Date.now() < deadline && sent < limit) {
      const p = js.publish(subject, payload).then(
        () => void acked++,
        () => void failed++,
      );
      sent++;
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      if (inFlight.size >= natsWindow) await Promise.race(inFlight);
    }
    await within(30_000, "JetStream acks", Promise.all(inFlight));
    return { acked, failed, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
  };
  await run(Math.min(1_000, phaseMs / 4), Math.ceil(maxOps / 4)); // warm-up
  const r = await run(phaseMs, maxOps);
  if (r.acked === 0) throw new Error(`JetStream acknowledged nothing (${r.failed} failed)`);
  return { "events/s": r.acked / r.seconds, errors: r.failed };
}

async function dropAll(dbs: ScratchDatabase[]): Promise<void> {
  for (const db of dbs) await db.drop().catch(() => {});
}
