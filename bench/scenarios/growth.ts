import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import { MemoryCreatedSchema } from "../../gen/tidings/events/memory/v1/memory_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { EventSchema } from "../../gen/tidings/v1/event_pb.js";
import { PayloadFormat } from "../../gen/tidings/v1/event_service_pb.js";
import { createTidingsClient, packPayload } from "../../sdk/index.js";
import { loadCatalog } from "../../server/catalog/catalog.js";
import { EventReader } from "../../server/event-log/event-reader.js";
import { parseTypePattern } from "../../server/filtering/type-pattern.js";
import { plannerStartupOptions } from "../../server/storage/planner-settings.js";
import type { Database } from "../../server/storage/schema.js";
import { createScratchDatabase, type ScratchDatabase } from "../lib/database.js";
import { within } from "../lib/limits.js";
import { closedLoop, type ClosedLoopResult } from "../lib/load.js";
import { LatencyRecorder } from "../lib/stats.js";
import { type BenchContext, type Case, type CaseResult, formatNumber, type GoalResult, medianOf, type Metrics, ratioGoal, runCases, type Scenario } from "../lib/scenario.js";
import { extendLog, migrateLog, seedShare, seedTypes } from "../lib/seed-log.js";
import { startTidings, type TidingsProcess } from "../lib/tidings-process.js";

/** Unary publishes in flight, spread over a few HTTP/2 connections. */
const publishWorkers = 64;
const publishConnections = 4;
/** The pattern ListEvents pages by: two types, about 4% of the seeded rows. */
const typePattern = "gap.*";
/** The pattern and window of ListEvents by type and time. */
const timePattern = "memory.*";
const hourMs = 60 * 60 * 1000;
const dayMs = 24 * hourMs;
/** The seeded log's times span this many days; the density of events in time is the same at every size. */
const timelineDays = 30;
const pageSize = 100;
/** Rows per catch-up read of a subscription (catchUpPageSize in server/rpc/event-service.ts). */
const catchUpPage = 500;

type Client = ReturnType<typeof createTidingsClient>;

/** Where the seeded rows sit in time: sequence s has time endMs - (timelineSize - s) * stepMs. */
interface Timeline {
  timelineSize: number;
  endMs: number;
  stepMs: number;
}

const timeOf = (t: Timeline, sequence: number) => new Date(t.endMs - (t.timelineSize - sequence) * t.stepMs);

function sizeLabel(size: number): string {
  if (size === 0) return "empty log";
  const [unit, suffix] = size >= 1_000_000 ? [1_000_000, "M"] : [1000, "k"];
  return `${Number((size / unit).toFixed(2))}${suffix} events`;
}

/** The empty log measured again beside a larger size (see the scenario's reference database). */
const besideLabel = (label: string) => `${sizeLabel(0)} beside ${label}`;

/**
 * A memory.created as the SDK's typed publish sends it. Its time follows the seeded timeline
 * (the publisher sets it), so that time keeps rising with the sequence across seeded and
 * published events, as in a real log.
 */
function publishEvent(n: number, time: Date): MessageInitShape<typeof EventSchema> {
  return {
    type: "memory.created",
    time: timestampFromDate(time),
    source: "bench/growth",
    subject: `m-g${n}`,
    attributes: { agent: `agent-${n % 6}`, project: "bench" },
    payload: { case: "protoData", value: packPayload(MemoryCreatedSchema, { memoryId: `m-g${n}`, memoryType: "heuristic", tier: n % 3 === 0 ? "hot" : "warm", content: "bench" }) },
  };
}

function publishMetrics(r: ClosedLoopResult): Metrics {
  if (r.ops === 0) throw new Error(`nothing completed (${r.errors} errors): ${String((r.firstError as Error)?.message ?? r.firstError)}`);
  if (r.errors > 0) throw new Error(`${r.errors} of ${r.ops + r.errors} requests failed: ${String((r.firstError as Error)?.message ?? r.firstError)}`);
  return { "events/s": r.opsPerSecond, "p50 ms": r.latency.p50, "p99 ms": r.latency.p99 };
}

async function headOf(pool: pg.Pool): Promise<number> {
  return Number((await pool.query<{ last_sequence: string }>("SELECT last_sequence FROM tidings_log_head WHERE id = 1")).rows[0]!.last_sequence);
}

/**
 * Catch-up: Subscribe after a random cursor with at least `window` events after it and read
 * `window` events, again and again, until `phaseMs` is over. Events read per second, setup
 * of each stream included. Payloads come as protobuf (what the SDK asks for).
 */
async function catchUp(client: Client, pool: pg.Pool, window: number, phaseMs: number, maxEvents: number): Promise<Metrics> {
  const started = Date.now();
  let events = 0;
  let streams = 0;
  while (Date.now() - started < phaseMs && events < maxEvents) {
    const head = await headOf(pool);
    const after = Math.floor(Math.random() * Math.max(0, head - window));
    const abort = new AbortController();
    let read = 0;
    await within(phaseMs + 30_000, "a catch-up stream", (async () => {
      for await (const res of client.subscribe({ start: { case: "afterSequence", value: BigInt(after) }, payloadFormat: PayloadFormat.PROTO }, { signal: abort.signal })) {
        if (res.message.case === "event" && ++read >= window) break;
        if (Date.now() - started > phaseMs * 3) break; // a stalled stream must not hold the bench
      }
    })()).finally(() => abort.abort());
    events += read;
    streams++;
  }
  const seconds = (Date.now() - started) / 1000;
  return { "events/s": events / seconds, streams };
}

/**
 * One client, calls back to back after one untimed warm-up call: at least `minOps`, then until
 * `phaseMs` is over or `maxOps` were made. Latency in ms.
 */
async function sequentialLatency(o: { phaseMs: number; minOps: number; maxOps: number }, op: () => Promise<unknown>): Promise<Metrics> {
  await within(60_000, "a warm-up call", op());
  const recorder = new LatencyRecorder();
  const started = Date.now();
  while (recorder.count < o.maxOps && (recorder.count < o.minOps || Date.now() - started < o.phaseMs)) {
    const t0 = process.hrtime.bigint();
    await within(60_000, "a timed call", op());
    recorder.record(t0);
  }
  const { p50, p99 } = recorder.summary();
  return { "p50 ms": p50, "p99 ms": p99, calls: recorder.count };
}

/** Subscribe from a time; resolves when the first event arrives (the first message, a heartbeat, comes once the cursor is found). */
async function firstEventAfter(client: Client, start: Date): Promise<void> {
  const abort = new AbortController();
  try {
    for await (const res of client.subscribe({ start: { case: "startTime", value: timestampFromDate(start) }, payloadFormat: PayloadFormat.PROTO }, { signal: abort.signal })) {
      if (res.message.case === "event") return;
    }
    throw new Error("the stream ended before an event arrived");
  } finally {
    abort.abort();
  }
}

/** The page's own query, not the planner estimate a time window asks for first (EXPLAIN). */
const isPageQuery = (sql: string) => sql.includes('from "tidings_events"') && !/^\s*explain/i.test(sql);
/**
 * cursorBeforeTime's read: of the one block the time summary names (TimeSummary), or, for a
 * time with few events after it, of those events through the time index.
 */
const isCursorLookup = (sql: string) => /FROM tidings_events WHERE (sequence >= \$1 AND sequence < \$2 AND time >= \$3|time >= \$1)/.test(sql);

/** The SQL a real EventReader issues over the same database, captured from its query log. */
async function readerSql(url: string, read: (reader: EventReader) => Promise<unknown>, pick = isPageQuery): Promise<{ sql: string; parameters: readonly unknown[] }> {
  const captured: Array<{ sql: string; parameters: readonly unknown[] }> = [];
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }),
    log: (e) => {
      if (e.level === "query") captured.push({ sql: e.query.sql, parameters: e.query.parameters });
    },
  });
  try {
    await read(new EventReader(db, await loadCatalog()));
  } finally {
    await db.destroy();
  }
  // The last: a read may look near the window's start first and then read the window (EventReader.#query).
  const q = captured.filter((c) => pick(c.sql)).at(-1);
  if (!q) throw new Error("the reader issued no query on tidings_events");
  return q;
}

interface PlanCheck {
  name: string;
  sql: string;
  parameters: readonly unknown[];
  plan: string;
  indexes: string[];
  seqScan: boolean;
  /** One of the columns the read filters on bounds an index scan (Index Cond / Recheck Cond). */
  bounded: boolean;
  boundColumns: readonly string[];
  rowsReturned: number;
  rowsRemoved: number;
  executionMs: number;
}

/** Rows an index scan may read and throw away per row it returns before the read counts as a scan of the log. */
const maxFilteredPerRow = 100;

/** EXPLAIN (ANALYZE, BUFFERS) of a captured query. */
async function explain(pool: pg.Pool, name: string, q: { sql: string; parameters: readonly unknown[] }, boundColumns: readonly string[]): Promise<PlanCheck> {
  const res = await pool.query<{ "QUERY PLAN": string }>(`EXPLAIN (ANALYZE, BUFFERS) ${q.sql}`, [...q.parameters]);
  const plan = res.rows.map((r) => r["QUERY PLAN"]).join("\n");
  const indexes = [...plan.matchAll(/(?:Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\w+)/g)].map((m) => m[1]!);
  const conditions = plan.split("\n").filter((l) => /(Index Cond|Recheck Cond):/.test(l));
  return {
    name,
    sql: q.sql,
    parameters: q.parameters,
    plan,
    indexes: [...new Set(indexes)],
    seqScan: /Seq Scan on tidings_events/.test(plan),
    bounded: conditions.some((l) => boundColumns.some((c) => new RegExp(`[("]${c}"? (=|<|>|<=|>=) `).test(l))),
    boundColumns,
    rowsReturned: Number(/actual time=[\d.]+\.\.[\d.]+ rows=(\d+)/.exec(plan)?.[1] ?? 0),
    rowsRemoved: [...plan.matchAll(/Rows Removed by Filter: (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0),
    executionMs: Number(/Execution Time: ([\d.]+) ms/.exec(plan)?.[1] ?? Number.NaN),
  };
}

/**
 * Index-backed: the log is read through an index (no Seq Scan), and the index finds the rows.
 * An index scan that reads the log in sequence order and throws away whatever does not match
 * (an index scan too, in EXPLAIN's words) reads a part of the log that grows with it. So either
 * a column the read filters on bounds the index scan (Index Cond: what it reads is the window,
 * whatever the log's size), or at most `maxFilteredPerRow` rows are read and discarded per row
 * returned.
 */
const indexBacked = (c: PlanCheck) => c.indexes.length > 0 && !c.seqScan && (c.bounded || c.rowsRemoved <= maxFilteredPerRow * Math.max(1, c.rowsReturned));

function describePlan(c: PlanCheck): string {
  const how = c.seqScan ? "Seq Scan" : c.indexes.join(" + ") || "no index";
  const bound = c.bounded ? `${c.boundColumns.join("/")} in Index Cond` : `${c.boundColumns.join("/")} only filtered`;
  return `${how} (${bound}), ${c.rowsRemoved.toLocaleString("en-US")} rows read and discarded for ${c.rowsReturned.toLocaleString("en-US")}, ${formatNumber(c.executionMs)} ms`;
}

function indexGoal(goal: string, checks: ReadonlyArray<{ label: string; check: PlanCheck }>): GoalResult {
  return {
    goal,
    measured: checks.map(({ label, check }) => `${label}: ${describePlan(check)}`).join("; "),
    target: `index scan bounded by the filter, or ≤ ${maxFilteredPerRow} rows discarded per row`,
    pass: checks.length > 0 && checks.every(({ check }) => indexBacked(check)),
  };
}

const fmtParams = (ps: readonly unknown[]) => ps.map((p) => (p instanceof Date ? p.toISOString() : JSON.stringify(p))).join(", ");

export const growthScenario: Scenario = {
  id: "growth",
  title: "Cost as the log grows",
  async run(ctx: BenchContext) {
    const { quick, phaseMs, maxOps, growthSizes } = ctx.limits;
    const scenarioStarted = Date.now();
    // The whole scenario, seeding included: 15 minutes full, 30 s quick (with some slack).
    const deadline = scenarioStarted + (quick ? 60_000 : 14 * 60_000);
    const sizes = [...new Set(growthSizes)].sort((a, b) => a - b);
    const largest = sizes[sizes.length - 1]!;
    /** Events each catch-up stream reads; the "empty" log holds just these (seeded) so there is something to catch up on. */
    const window = quick ? 5_000 : 20_000;
    // A little past the largest size, so that events published at that size still fall before the scenario's start.
    const timelineSize = Math.ceil(Math.max(largest, window) * 1.05);
    const timeline: Timeline = { timelineSize, endMs: scenarioStarted, stepMs: (timelineDays * dayMs) / timelineSize };
    const listPhaseMs = Math.max(1_000, phaseMs / 2);
    const list = { phaseMs: listPhaseMs, minOps: 3, maxOps: quick ? 500 : 2_000 };
    /** Reads whose cost may grow with the log: few calls, each bounded. */
    const slow = { phaseMs: listPhaseMs, minOps: 3, maxOps: quick ? 5 : 8 };

    const db: ScratchDatabase = await createScratchDatabase("growth");
    // Planned as the server's own sessions plan, so that the plans shown are the server's.
    const pool = new pg.Pool({ connectionString: db.url, max: 2, options: plannerStartupOptions });
    let server: TidingsProcess | undefined;
    // The empty log again, beside every larger size: its publish and catch-up runs alternate
    // with that size's, so a ratio compares rates measured in the same minutes. Compared with
    // the empty step alone, minutes before, the ratio moved with the machine's drift (0.65×
    // in one full run, 0.89× for the same build in a run of this scenario alone).
    const refDb: ScratchDatabase = await createScratchDatabase("growth_empty");
    const refPool = new pg.Pool({ connectionString: refDb.url, max: 2 });
    let refServer: TidingsProcess | undefined;
    const results: CaseResult[] = [];
    const notes: string[] = [];
    const sizeNotes: string[] = [];
    let seededHead = 0;
    /** The time of a random seeded event: windows and start times land where the log has events. */
    const randomSeededTime = () => timeOf(timeline, 1 + Math.floor(Math.random() * seededHead));
    /** The plans of the reads on the log as it stands (the server stopped), at its middle. */
    const takePlans = async () => {
      const mid = Math.floor(seededHead / 2);
      const midTime = timeOf(timeline, mid);
      const lastDay = new Date(timeOf(timeline, seededHead).getTime() - dayMs);
      const byType = { patterns: [parseTypePattern(typePattern)], attributes: {}, after: BigInt(mid), limit: pageSize + 1, descending: false };
      const byTime = (windowMs: number, from = midTime) => ({ patterns: [parseTypePattern(timePattern)], attributes: {}, startTime: from, endTime: new Date(from.getTime() + windowMs), limit: pageSize + 1, descending: false });
      const plan = async (name: string, read: (r: EventReader) => Promise<unknown>, bound: readonly string[], pick = isPageQuery) => explain(pool, name, await readerSql(db.url, read, pick), bound);
      const head = await headOf(pool);
      return {
        head,
        type: await plan(`ListEvents by type ("${typePattern}", after_sequence ${mid}, page_size ${pageSize})`, (r) => r.page(byType), ["type", "sequence"]),
        hour: await plan(`ListEvents by type and time ("${timePattern}", 1 hour from ${midTime.toISOString()}, page_size ${pageSize})`, (r) => r.page(byTime(hourMs)), ["time", "sequence"]),
        day: await plan(`ListEvents by type and time ("${timePattern}", 1 day from ${midTime.toISOString()}, page_size ${pageSize})`, (r) => r.page(byTime(dayMs)), ["time", "sequence"]),
        cursorLookup: await plan(`Subscribe start_time: the cursor lookup (EventReader.cursorBeforeTime, ${midTime.toISOString()})`, (r) => r.cursorBeforeTime(midTime), ["sequence", "time"], isCursorLookup),
        extra: [
          await plan(`ListEvents by type, newest first ("${typePattern}", descending, page_size ${pageSize})`, (r) => r.page({ ...byType, after: undefined, descending: true }), ["type", "sequence"]),
          await plan(`ListEvents by type and time, the last day ("${timePattern}", 1 day from ${lastDay.toISOString()}, oldest first)`, (r) => r.page(byTime(dayMs, lastDay)), ["time", "sequence"]),
          await plan(`ListEvents by time, every type (1 day from ${midTime.toISOString()}, page_size ${pageSize})`, (r) => r.page({ ...byTime(dayMs), patterns: undefined }), ["time", "sequence"]),
          await plan(`ListEvents by time, every type, newest first (1 day from ${midTime.toISOString()}, page_size ${pageSize})`, (r) => r.page({ ...byTime(dayMs), patterns: undefined, descending: true }), ["time", "sequence"]),
          await plan(`Subscribe catch-up: one page of the log (EventReader.readRange after ${mid}, every type, ${catchUpPage} rows)`, (r) => r.readRange(BigInt(mid), BigInt(head), catchUpPage, { patterns: undefined, attributes: {} }), ["sequence"]),
          await plan(`Subscribe catch-up: one page of the log for "${typePattern}" (EventReader.readRange after ${mid}, ${catchUpPage} rows)`, (r) => r.readRange(BigInt(mid), BigInt(head), catchUpPage, { patterns: [parseTypePattern(typePattern)], attributes: {} }), ["type", "sequence"]),
        ],
      };
    };
    let n = 0;
    /** Publishing and catching up on the log behind `url`: the two rates the growth goals compare. */
    const rateCases = (label: string, url: string, logPool: pg.Pool): Case[] => {
      const publishers = Array.from({ length: publishConnections }, () => createTidingsClient({ baseUrl: url, transport: "grpc" }));
      const reader = createTidingsClient({ baseUrl: url, transport: "grpc" });
      return [
        {
          name: `${label}: unary Publish, ${publishWorkers} in flight, gRPC`,
          role: "tidings",
          async run() {
            const base = await headOf(logPool);
            let k = 0;
            const r = await closedLoop({ workers: publishWorkers, phaseMs, maxOps }, (w) => publishers[w % publishConnections]!.publish({ event: publishEvent(n++, timeOf(timeline, base + ++k)) }));
            return publishMetrics(r);
          },
        },
        {
          name: `${label}: Subscribe catch-up from a random cursor, ${formatNumber(window)} events a stream`,
          role: "tidings",
          run: () => catchUp(reader, logPool, window, phaseMs, maxOps),
        },
      ];
    };
    let plans: Awaited<ReturnType<typeof takePlans>> | undefined;
    const planNotes: string[] = [];
    try {
      await migrateLog(db.url);
      await migrateLog(refDb.url);
      await extendLog(refDb.url, { count: window, ...timeline, rebuildIndexes: false, log: ctx.log, deadline });
      for (const size of sizes) {
        if (Date.now() > deadline) throw new Error(`out of time before the ${sizeLabel(size)} step`);
        const label = sizeLabel(size);
        const head = await headOf(pool);
        const count = Math.max(size, window) - head;
        if (count > 0) {
          ctx.log(`  ${label}: seeding ${count.toLocaleString("en-US")} events (server stopped)`);
          const seeded = await extendLog(db.url, { count, ...timeline, rebuildIndexes: count >= 200_000, log: ctx.log, deadline });
          seededHead = Number(seeded.to);
          sizeNotes.push(`${label}: seeded ${count.toLocaleString("en-US")} rows in ${((seeded.insertMs + seeded.indexMs + seeded.vacuumMs + seeded.summaryMs + Math.max(0, seeded.checkpointMs)) / 1000).toFixed(0)} s (insert ${(seeded.insertMs / 1000).toFixed(1)} s, index rebuild ${(seeded.indexMs / 1000).toFixed(1)} s, vacuum ${(seeded.vacuumMs / 1000).toFixed(1)} s, time summary ${(seeded.summaryMs / 1000).toFixed(1)} s, ${seeded.checkpointMs < 0 ? "no checkpoint: the role may not run CHECKPOINT" : `checkpoint ${(seeded.checkpointMs / 1000).toFixed(1)} s`})`);
        }
        const stored = await headOf(pool);
        const { rows } = await pool.query<{ table: string; indexes: string }>("SELECT pg_size_pretty(pg_table_size('tidings_events')) AS table, pg_size_pretty(pg_indexes_size('tidings_events')) AS indexes");
        sizeNotes.push(`${label}: ${stored.toLocaleString("en-US")} events stored when measuring began (table ${rows[0]!.table}, indexes ${rows[0]!.indexes})`);

        server = await startTidings(db.url);
        ctx.log(`  ${label}: ${stored.toLocaleString("en-US")} events stored, server pid ${server.pid}`);
        const url = server.url;
        const reader = createTidingsClient({ baseUrl: url, transport: "grpc" });
        let beside: Case[] = [];
        if (size !== sizes[0]) {
          refServer = await startTidings(refDb.url);
          beside = rateCases(besideLabel(label), refServer.url, refPool);
        }
        const listInWindow = (windowMs: number) => () => {
          const start = randomSeededTime();
          return reader.listEvents({ patterns: [timePattern], startTime: timestampFromDate(start), endTime: timestampFromDate(new Date(start.getTime() + windowMs)), pageSize, payloadFormat: PayloadFormat.PROTO });
        };
        const cases: Case[] = [
          ...rateCases(label, url, pool),
          ...beside,
          {
            name: `${label}: ListEvents "${typePattern}" after a random sequence`,
            role: "tidings",
            async run() {
              const head = await headOf(pool);
              return sequentialLatency(list, () => reader.listEvents({ patterns: [typePattern], afterSequence: BigInt(Math.floor(Math.random() * head)), pageSize, payloadFormat: PayloadFormat.PROTO }));
            },
          },
          {
            name: `${label}: ListEvents "${timePattern}" in a random 1-hour window`,
            role: "tidings",
            run: () => sequentialLatency(list, listInWindow(hourMs)),
          },
          {
            name: `${label}: ListEvents "${timePattern}" in a random 1-day window`,
            role: "tidings",
            run: () => sequentialLatency(slow, listInWindow(dayMs)),
          },
          {
            name: `${label}: Subscribe from a random start_time, to the first event`,
            role: "tidings",
            run: () => sequentialLatency(slow, () => firstEventAfter(reader, randomSeededTime())),
          },
        ];
        results.push(...(await runCases(ctx, cases)));
        ctx.log(`  ${label}: done, server RSS ${(await server.rssMb()).toFixed(0)} MB`);
        await server.stop();
        server = undefined;
        await refServer?.stop();
        refServer = undefined;
        plans = await takePlans();
        const brief = [["by type", plans.type], ["1-hour window", plans.hour], ["1-day window", plans.day], ["start_time lookup", plans.cursorLookup]] as const;
        planNotes.push(`Plans at ${label} (${plans.head.toLocaleString("en-US")} events), at the middle of the log: ${brief.map(([what, c]) => `${what}: ${describePlan(c)}`).join("; ")}.`);
        ctx.log(`  ${label}: plans taken`);
      }
      if (!plans) throw new Error("no plans were taken");
      const { type: typePlan, hour: hourPlan, day: dayPlan, cursorLookup, extra: extraPlans, head } = plans;

      const first = sizeLabel(sizes[0]!);
      const last = sizeLabel(largest);
      const caseOf = (label: string, prefix: string) => results.find((c) => c.name.startsWith(`${label}: ${prefix}`))!.name;
      const reference = besideLabel(last);
      const median = (label: string, prefix: string, metric = "events/s") => medianOf(results, caseOf(label, prefix), metric);
      const goals: GoalResult[] = [
        ratioGoal(`publish rate, ${last} vs the ${first} beside it (events/s)`, median(last, "unary Publish"), median(reference, "unary Publish"), 0.8),
        ratioGoal(`catch-up read rate, ${last} vs the ${first} beside it (events/s)`, median(last, "Subscribe catch-up"), median(reference, "Subscribe catch-up"), 0.8),
        indexGoal(`ListEvents by type is index-backed at ${last}`, [{ label: `"${typePattern}"`, check: typePlan }]),
        indexGoal(`ListEvents by type and time is index-backed at ${last}`, [{ label: "1-hour window", check: hourPlan }, { label: "1-day window", check: dayPlan }]),
      ];
      for (const prefix of ["unary Publish", "Subscribe catch-up"]) {
        notes.push(`${prefix}…: ${formatNumber(median(last, prefix))} events/s at ${last}, ${formatNumber(median(reference, prefix))} on the ${first} in the same runs (${(median(last, prefix) / median(reference, prefix)).toFixed(2)}×), ${formatNumber(median(first, prefix))} on the ${first} measured first (${(median(last, prefix) / median(first, prefix)).toFixed(2)}×, across minutes of the machine's drift).`);
      }
      for (const prefix of [`ListEvents "${typePattern}"`, `ListEvents "${timePattern}" in a random 1-hour`, `ListEvents "${timePattern}" in a random 1-day`, "Subscribe from a random start_time"]) {
        const a = median(first, prefix, "p50 ms");
        const b = median(last, prefix, "p50 ms");
        notes.push(`${prefix}…: p50 ${formatNumber(a)} ms on the ${first}, ${formatNumber(b)} ms at ${last} (${(b / a).toFixed(1)}×).`);
      }
      for (const c of [...extraPlans, cursorLookup]) notes.push(`${c.name}: ${describePlan(c)}${indexBacked(c) ? "" : " — not index-backed"}.`);
      notes.push(
        ...planNotes,
        ...sizeNotes,
        `Seeded rows: ${seedTypes.length} catalog types (memory.* ${Math.round((seedShare("memory.created") + seedShare("memory.accessed") + seedShare("memory.updated") + seedShare("memory.consolidated")) * 100)}%, gap.* ${Math.round((seedShare("gap.detected") + seedShare("gap.filled")) * 100)}%), protobuf payloads of their catalog messages (${Math.round(seedTypes.reduce((sum, t) => sum + t.perMille * t.payload.length, 0) / 1000)} bytes on average), agent/project attributes, UUIDv7 ids, times rising with the sequence over ${timelineDays} days at the same density at every size (${formatNumber(timelineSize / (timelineDays * 24))} events an hour; published events carry times that continue the timeline); written with generate_series while the server was stopped, secondary indexes rebuilt after large loads, then VACUUM ANALYZE and a CHECKPOINT (so that writing the load back is not billed to the measurements that follow).`,
        `The "${sizeLabel(0)}" case holds just the ${formatNumber(window)} events a catch-up stream reads (seeded), plus what the publish runs added. Every size also grows by the events its publish runs add. "${besideLabel("…")}" is a second database seeded the same way, served by a second server beside each larger size's, whose publish and catch-up runs alternate with that size's; the goals compare the largest size with it (it too grows by its publish runs, by tens of thousands of events).`,
        `Catch-up: Subscribe with after_sequence at a random point at least ${formatNumber(window)} events before the head, read ${formatNumber(window)} events (protobuf payloads), close, repeat for ${phaseMs / 1000} s; the rate includes opening each stream. ListEvents: one client, back to back after one warm-up call, page_size ${pageSize}, protobuf payloads, windows starting at the time of a random seeded event; ${listPhaseMs / 1000} s or ${list.maxOps} calls (the 1-day window and start_time: at least ${slow.minOps}, at most ${slow.maxOps} calls).`,
        "Server, load generator and PostgreSQL share the machine (2 cores), and other benchmarks may run at the same time: rates are noisy.",
        `Index-backed (the two plan goals): no Seq Scan of tidings_events, and either a column the read filters on bounds the index scan (in its Index Cond, so it reads the window, whatever the log's size) or the scans read and discard at most ${maxFilteredPerRow} rows per row returned. An Index Scan of the primary key that only filters on time is an index scan in EXPLAIN's words, but it reads the log in sequence order up to the window: work that grows with the log. A small time window is read through the time index and sorted (EventReader asks the planner how many events the window holds first). The plans below are for the SQL a real EventReader issues (captured from its query log), run with EXPLAIN (ANALYZE, BUFFERS) after each size's measurements with the server stopped (in full below for the largest log).`,
      );
      for (const c of [typePlan, hourPlan, dayPlan, ...extraPlans, cursorLookup]) {
        notes.push(`Plan, ${c.name}, on ${head.toLocaleString("en-US")} events:\n\n    ${c.sql}\n    -- parameters: ${fmtParams(c.parameters)}\n${c.plan.split("\n").map((l) => `    ${l}`).join("\n")}\n`);
      }
      return { id: "growth", title: "Cost as the log grows", cases: results, goals, notes };
    } finally {
      await server?.stop().catch(() => {});
      await refServer?.stop().catch(() => {});
      await pool.end().catch(() => {});
      await refPool.end().catch(() => {});
      await db.drop().catch((err) => ctx.log(`  could not drop ${db.name}: ${(err as Error).message}`));
      await refDb.drop().catch((err) => ctx.log(`  could not drop ${refDb.name}: ${(err as Error).message}`));
    }
  },
};
