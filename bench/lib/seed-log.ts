/**
 * Fills a Tidings event log straight in PostgreSQL, fast: rows are generated inside the server
 * with generate_series (no round trip per row), with the log's secondary indexes dropped during
 * a large load and rebuilt afterwards, and the head row moved to the last sequence written. The
 * Tidings server must not run against the database meanwhile: it hands out sequences from
 * tidings_log_head and would collide with the seeded rows.
 *
 * The rows look like real traffic: a mix of a dozen catalog types (memory.* most of it), each
 * with a protobuf payload of its catalog message whose id field differs per row, agent and
 * project attributes, time-ordered UUIDv7 ids, and times spread evenly over a span of days.
 */
import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import { DebateAgentMessageSchema, DebateVoteSchema } from "../../gen/tidings/events/debate/v1/debate_pb.js";
import { DreamCompletedSchema, DreamStartedSchema } from "../../gen/tidings/events/dream/v1/dream_pb.js";
import { GapDetectedSchema, GapFilledSchema } from "../../gen/tidings/events/gap/v1/gap_pb.js";
import {
  MemoryAccessedSchema,
  MemoryConsolidatedSchema,
  MemoryCreatedSchema,
  MemoryUpdatedSchema,
} from "../../gen/tidings/events/memory/v1/memory_pb.js";
import { SynapseFiredSchema, SynapseFormedSchema } from "../../gen/tidings/events/synapse/v1/synapse_pb.js";
import { TimeSummary } from "../../server/event-log/time-summary.js";
import { migrateToLatest } from "../../server/storage/migrations/index.js";
import type { Database } from "../../server/storage/schema.js";

/** One event type of the seeded mix: its share of the rows (per mille) and a payload template. */
interface SeedType {
  type: string;
  perMille: number;
  /** Two characters before the 10 digits of the row's id, e.g. "m-" for "m-0000012345". */
  idPrefix: string;
  payload: Uint8Array;
}

/** Ten digits stand for the row's sequence in the id field (field 1) of every payload. */
const idDigits = "0000000000";

function template<S extends DescMessage>(schema: S, idPrefix: string, init: (id: string) => MessageInitShape<S>): Uint8Array {
  const id = `${idPrefix}${idDigits}`;
  const bytes = toBinary(schema, create(schema, init(id)));
  // Field 1, length-delimited (tag 0x0a), 12 bytes: the digits sit at bytes 4..13, where the
  // seeding SQL overlays each row's own.
  const head = Buffer.from(bytes.subarray(0, 14));
  if (head[0] !== 0x0a || head[1] !== 12 || head.subarray(2).toString() !== id) throw new Error(`${schema.typeName}: id is not the first field`);
  return bytes;
}

const content =
  "Retries with exponential backoff fixed the flaky upload to the artifact store; the root cause was a 30 s idle timeout on the proxy in front of it.";

/** The types seeded, most frequent first. The shares add up to 1000. */
export const seedTypes: readonly SeedType[] = [
  {
    type: "memory.created",
    perMille: 280,
    idPrefix: "m-",
    payload: template(MemoryCreatedSchema, "m-", (id) => ({
      memoryId: id,
      memoryType: "heuristic",
      agent: "helena",
      projectId: "p-atlas",
      content,
      tier: "hot",
      ltpStrength: 0.42,
      eig: 0.73,
      tags: ["ci", "uploads", "retries"],
      category: "debugging",
      agentId: "agent-helena",
      episodeId: "ep-20250114-0931",
    })),
  },
  {
    type: "memory.accessed",
    perMille: 250,
    idPrefix: "m-",
    payload: template(MemoryAccessedSchema, "m-", (id) => ({ memoryId: id, query: "why does the artifact upload time out", similarityScore: 0.87, rank: 2, tier: "warm", agent: "helena", projectId: "p-atlas" })),
  },
  {
    type: "synapse.fired",
    perMille: 120,
    idPrefix: "y-",
    payload: template(SynapseFiredSchema, "y-", (id) => ({ synapseId: id, sourceId: "n-000183", targetId: "n-004410", strength: 0.61, wasSuccessful: true })),
  },
  {
    type: "memory.updated",
    perMille: 100,
    idPrefix: "m-",
    payload: template(MemoryUpdatedSchema, "m-", (id) => ({
      memoryId: id,
      oldValue: { confidence: 0.6, strategy: "retry" },
      newValue: { confidence: 0.8, strategy: "retry with backoff" },
      changedFields: ["confidence", "strategy"],
      agent: "helena",
      projectId: "p-atlas",
      memoryType: "heuristic",
    })),
  },
  {
    type: "debate.agent_message",
    perMille: 100,
    idPrefix: "d-",
    payload: template(DebateAgentMessageSchema, "d-", (id) => ({ debateId: id, agent: "critic", content: content.slice(0, 90), round: 2, role: "opponent" })),
  },
  {
    type: "memory.consolidated",
    perMille: 50,
    idPrefix: "m-",
    payload: template(MemoryConsolidatedSchema, "m-", (id) => ({ memoryId: id, fromTier: "hot", toTier: "warm", consolidationType: "merge", ltpStrength: 0.55, mergedMemoryIds: ["m-0000000017", "m-0000000023"], agent: "helena", projectId: "p-atlas" })),
  },
  {
    type: "gap.detected",
    perMille: 30,
    idPrefix: "g-",
    payload: template(GapDetectedSchema, "g-", (id) => ({ gapId: id, query: "retention policy of the audit log", gapType: "missing_info", relatedMemoryIds: ["m-0000000101"], severity: 0.4 })),
  },
  {
    type: "debate.vote",
    perMille: 30,
    idPrefix: "d-",
    payload: template(DebateVoteSchema, "d-", (id) => ({ debateId: id, agent: "judge", choice: "option-b", confidence: 0.7, round: 3, reasoning: "fewer moving parts" })),
  },
  {
    type: "synapse.formed",
    perMille: 20,
    idPrefix: "y-",
    payload: template(SynapseFormedSchema, "y-", (id) => ({ synapseId: id, neuronAId: "n-000183", neuronBId: "n-004410", initialStrength: 0.2, formationReason: "co-activation" })),
  },
  {
    type: "gap.filled",
    perMille: 10,
    idPrefix: "g-",
    payload: template(GapFilledSchema, "g-", (id) => ({ gapId: id, memoryId: "m-0000000202", fillMethod: "llm_generation", confidence: 0.66 })),
  },
  {
    type: "dream.started",
    perMille: 5,
    idPrefix: "r-",
    payload: template(DreamStartedSchema, "r-", (id) => ({ sessionId: id, trigger: "schedule", scheduleName: "nightly", maxMemories: 500, stagesEnabled: ["cluster", "extract"] })),
  },
  {
    type: "dream.completed",
    perMille: 5,
    idPrefix: "r-",
    payload: template(DreamCompletedSchema, "r-", (id) => ({ sessionId: id, durationSeconds: 312.5, memoriesProcessed: 480, clustersFound: 37, patternsExtracted: 12 })),
  },
];

const agents = ["helena", "victor", "ines", "marek", "sol", "yara"];
const projects = ["p-atlas", "p-borealis", "p-cinder", "p-dune", "p-ember", "p-fjord", "p-gale", "p-haven"];

/** Share of the seeded rows that are of `type` (0..1). */
export function seedShare(type: string): number {
  return (seedTypes.find((t) => t.type === type)?.perMille ?? 0) / 1000;
}

export interface SeedPlan {
  /** Rows to append after the current head. */
  count: number;
  /** Times are `endMs - (timelineSize - sequence) * stepMs` (+ jitter): sequence `timelineSize` lands on `endMs`. */
  timelineSize: number;
  endMs: number;
  stepMs: number;
  /** Drop the secondary indexes and constraints during the load and rebuild them after. */
  rebuildIndexes: boolean;
  log(message: string): void;
  /** Gives up (throws) after this long. */
  deadline: number;
}

export interface SeedOutcome {
  from: bigint;
  to: bigint;
  insertMs: number;
  indexMs: number;
  vacuumMs: number;
  /** Summarizing the loaded events' times (TimeSummary), as the server would have while the log grew. */
  summaryMs: number;
  /** The CHECKPOINT after the load; -1 when the role may not run one. */
  checkpointMs: number;
}

/** Brings the log's time summary up to its head. */
async function summarizeTimes(url: string): Promise<void> {
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) });
  try {
    const summary = new TimeSummary(db);
    await summary.update();
    await summary.settled();
  } finally {
    await db.destroy();
  }
}

/** Applies Tidings' migrations to an empty database, as the server does when it starts. */
export async function migrateLog(url: string): Promise<void> {
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) });
  try {
    await migrateToLatest(db);
  } finally {
    await db.destroy();
  }
}

const insertSql = `
INSERT INTO tidings_events (sequence, id, type, source, subject, time, attributes, payload, recorded_at)
SELECT s,
       substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4) || '-' || substr(h, 17, 4) || '-' || substr(h, 21, 12),
       ($4::text[])[k], ($6::text[])[1 + a], ($5::text[])[k] || lpad(s::text, 10, '0'),
       t, ($8::jsonb[])[1 + a * $9::int + (s * 31) % $9::int],
       overlay(($10::bytea[])[k] placing convert_to(lpad((s % 10000000000)::text, 10, '0'), 'UTF8') from 5 for 10),
       t + interval '3 milliseconds'
FROM (
  SELECT s, k, (s * 13) % $7::int AS a, to_timestamp(ms / 1000.0) AS t,
         lpad(to_hex(ms), 12, '0') || '7' || lpad(to_hex((s * 2654435761) % 4096), 3, '0') || '8' || lpad(to_hex(s), 15, '0') AS h
  FROM (
    SELECT s, ($3::int[])[1 + (s * 7919) % 1000] AS k,
           ($11::bigint - ($12::bigint - s) * $13::float8 + (s * 7) % 1500)::bigint AS ms
    FROM generate_series($1::bigint, $2::bigint) AS s
  ) numbered
) timed`;

/** Appends `plan.count` rows after the current head and moves the head (and the webhook router) there. */
export async function extendLog(url: string, plan: SeedPlan): Promise<SeedOutcome> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const outcome: SeedOutcome = { from: 0n, to: 0n, insertMs: 0, indexMs: 0, vacuumMs: 0, summaryMs: 0, checkpointMs: 0 };
  try {
    await client.query("SET maintenance_work_mem = '1GB'");
    const head = BigInt((await client.query<{ last_sequence: string }>("SELECT last_sequence FROM tidings_log_head WHERE id = 1")).rows[0]!.last_sequence);
    outcome.from = head + 1n;
    outcome.to = head + BigInt(plan.count);
    if (plan.count <= 0) return outcome;

    const dropped = plan.rebuildIndexes ? await dropSecondaryIndexes(client) : [];
    const bucketType = new Array<number>(1000);
    let b = 0;
    seedTypes.forEach((t, i) => {
      for (let j = 0; j < t.perMille; j++) bucketType[b++] = i + 1;
    });
    if (b !== 1000) throw new Error(`seed type shares add up to ${b}, not 1000`);
    const attributes = agents.flatMap((agent) => projects.map((project, i) => JSON.stringify(i % 3 === 0 ? { agent, project, severity: "info" } : { agent, project })));
    const sources = agents.map((a) => `alma/${a}`);
    const params = (from: bigint, to: bigint) => [
      from.toString(),
      to.toString(),
      bucketType,
      seedTypes.map((t) => t.type),
      seedTypes.map((t) => t.idPrefix),
      sources,
      sources.length,
      attributes,
      projects.length,
      seedTypes.map((t) => Buffer.from(t.payload)),
      Math.round(plan.endMs),
      plan.timelineSize,
      plan.stepMs,
    ];

    // Two writers (the machine has two cores), chunks of half a million rows, so progress
    // shows and no statement runs for minutes.
    const started = Date.now();
    const chunk = 500_000n;
    let next = outcome.from;
    const writers = await Promise.all([0, 1].map(async () => {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      return c;
    }));
    try {
      await Promise.all(writers.map(async (w) => {
        // Bulk load: no need to wait for each chunk's WAL flush; the head moves in the
        // synchronous commit below, after every chunk is in.
        await w.query("SET synchronous_commit = off");
        while (next <= outcome.to) {
          if (Date.now() > plan.deadline) throw new Error("seeding ran past its deadline");
          const from = next;
          const to = from + chunk - 1n < outcome.to ? from + chunk - 1n : outcome.to;
          next = to + 1n;
          await w.query(insertSql, params(from, to));
          plan.log(`    seeded up to sequence ${to.toLocaleString("en-US")} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
        }
      }));
    } finally {
      await Promise.all(writers.map((w) => w.end().catch(() => {})));
    }
    await client.query("BEGIN");
    await client.query("UPDATE tidings_log_head SET last_sequence = $1 WHERE id = 1", [outcome.to.toString()]);
    await client.query("UPDATE tidings_webhook_router SET last_sequence = $1 WHERE id = 1", [outcome.to.toString()]);
    await client.query("COMMIT");
    outcome.insertMs = Date.now() - started;

    const indexStarted = Date.now();
    for (const statement of dropped) {
      plan.log(`    rebuilding: ${statement.slice(0, 90)}`);
      await client.query(statement);
    }
    outcome.indexMs = Date.now() - indexStarted;
    // As autovacuum would leave a table that has been written: hint bits set, visibility map
    // filled, statistics fresh. Otherwise the first reads pay for the load.
    const vacuumStarted = Date.now();
    await client.query("VACUUM (ANALYZE) tidings_events");
    outcome.vacuumMs = Date.now() - vacuumStarted;
    // A server keeps the time summary (Subscribe start_time) up with the log as it grows; a
    // load that bypasses it summarizes its events here, not in the first measurement after it.
    const summaryStarted = Date.now();
    await summarizeTimes(url);
    outcome.summaryMs = Date.now() - summaryStarted;
    // The load and the vacuum leave dirty pages and WAL behind; write them back now, not in a
    // checkpoint during the next measurement, whose I/O would be billed to publishing at this
    // size. It took 0.9 s after 9M rows on a machine where publishing at 10M measured no slower
    // without it; a slower disk would bill the write-back to whichever case ran next.
    const checkpointStarted = Date.now();
    try {
      await client.query("CHECKPOINT");
      outcome.checkpointMs = Date.now() - checkpointStarted;
    } catch (error) {
      if ((error as { code?: string }).code !== "42501") throw error;
      plan.log(`    CHECKPOINT refused (${(error as Error).message}): the next measurement may pay for writing the load back`);
      outcome.checkpointMs = -1;
    }
    return outcome;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Drops every index of tidings_events except its primary key (the constraints they back too),
 * and returns the statements that recreate them exactly as the migrations made them.
 */
async function dropSecondaryIndexes(client: pg.Client): Promise<string[]> {
  const constraints = await client.query<{ conname: string; def: string }>(`
    SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
    WHERE conrelid = 'tidings_events'::regclass AND contype = 'u' ORDER BY conname`);
  const indexes = await client.query<{ name: string; def: string }>(`
    SELECT i.relname AS name, pg_get_indexdef(i.oid) AS def
    FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
    WHERE x.indrelid = 'tidings_events'::regclass AND NOT x.indisprimary
      AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
    ORDER BY i.relname`);
  const recreate: string[] = [];
  for (const c of constraints.rows) {
    await client.query(`ALTER TABLE tidings_events DROP CONSTRAINT ${quoteIdent(c.conname)}`);
    recreate.push(`ALTER TABLE tidings_events ADD CONSTRAINT ${quoteIdent(c.conname)} ${c.def}`);
  }
  for (const i of indexes.rows) {
    await client.query(`DROP INDEX ${quoteIdent(i.name)}`);
    recreate.push(i.def);
  }
  return recreate;
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
