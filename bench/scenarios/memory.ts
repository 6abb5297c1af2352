import { MemoryCreatedSchema } from "../../gen/tidings/events/memory/v1/memory_pb.js";
import { PayloadFormat, StartPosition } from "../../gen/tidings/v1/event_service_pb.js";
import { createTidingsClient, packPayload } from "../../sdk/index.js";
import { createScratchDatabase } from "../lib/database.js";
import { within } from "../lib/limits.js";
import { atMostGoal, type BenchContext, formatNumber, medianOf, runCases, type Scenario } from "../lib/scenario.js";
import { median } from "../lib/stats.js";
import { startTidings, type TidingsProcess } from "../lib/tidings-process.js";

/** HTTP/2 connections the idle streams share. */
const connections = 4;
/** Streams opened at once while setting up. */
const openConcurrency = 100;
/** RSS samples per reading, 200 ms apart; the median is the reading. */
const samples = 5;
/** The goal: this many idle streams may cost at most `goalMb` over the idle server. */
const goalStreams = 1_000;
const goalMb = 100;

type Client = ReturnType<typeof createTidingsClient>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The server's RSS after things settle: the median of a few samples. */
async function settledRss(server: TidingsProcess, settleMs: number): Promise<number> {
  await sleep(settleMs);
  const values: number[] = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(200);
    values.push(await server.rssMb());
  }
  return median(values);
}

/** What a server sees in its first seconds: publishes, a history read, a subscriber that comes and goes. */
async function warmUp(client: Client): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await client.publishBatch({
      entries: Array.from({ length: 50 }, (_, j) => ({
        event: {
          type: "memory.created",
          source: "bench/memory",
          attributes: { agent: `agent-${j % 4}` },
          payload: { case: "protoData", value: packPayload(MemoryCreatedSchema, { memoryId: `m-warm-${i}-${j}`, tier: "hot", content: "warm-up" }) },
        },
      })),
    });
  }
  for (let i = 0; i < 5; i++) await client.listEvents({ patterns: ["memory.*"], pageSize: 100 });
  const abort = new AbortController();
  let events = 0;
  try {
    for await (const res of client.subscribe({ start: { case: "position", value: StartPosition.EARLIEST } }, { signal: abort.signal })) {
      if (res.message.case === "event" && ++events >= 250) break;
    }
  } finally {
    abort.abort();
  }
}

interface IdleStreams {
  /** Resolves when every stream has had its first heartbeat (the server holds its subscription). */
  ready: Promise<void>;
  /** Streams that ended or failed before they were closed. */
  failures(): number;
  close(): Promise<void>;
}

/** `count` Subscribe streams from the live end of the log, spread over `clients`, none of them receiving events. */
function openIdleStreams(clients: readonly Client[], count: number): IdleStreams {
  const abort = new AbortController();
  let failed = 0;
  let firstError: unknown;
  const loops: Array<Promise<void>> = [];
  const ready = (async () => {
    for (let i = 0; i < count; i += openConcurrency) {
      const batch = Array.from({ length: Math.min(openConcurrency, count - i) }, (_, j) => {
        const client = clients[(i + j) % clients.length]!;
        return new Promise<void>((subscribed) => {
          loops.push((async () => {
            try {
              for await (const res of client.subscribe({ start: { case: "position", value: StartPosition.LATEST }, payloadFormat: PayloadFormat.PROTO }, { signal: abort.signal })) {
                if (res.message.case === "heartbeat") subscribed();
              }
              if (!abort.signal.aborted) failed++;
            } catch (err) {
              if (!abort.signal.aborted) {
                failed++;
                firstError ??= err;
              }
            } finally {
              subscribed();
            }
          })());
        });
      });
      await Promise.all(batch);
    }
    if (failed > 0) throw new Error(`${failed} of ${count} streams failed: ${String((firstError as Error)?.message ?? firstError)}`);
  })();
  return {
    ready,
    failures: () => failed,
    async close() {
      abort.abort();
      await Promise.allSettled(loops);
    },
  };
}

export const memoryScenario: Scenario = {
  id: "memory",
  title: "Server memory",
  async run(ctx: BenchContext) {
    const { quick, idleStreams } = ctx.limits;
    const settleMs = quick ? 1_000 : 2_000;
    const streamsName = `${formatNumber(idleStreams)} idle Subscribe streams`;
    const db = await createScratchDatabase("memory");
    try {
      // A fresh server per run: each run's streams are measured against that process's own idle RSS.
      const results = await runCases(ctx, [
        {
          name: `Tidings server, ${streamsName} over ${connections} HTTP/2 connections`,
          role: "tidings",
          async run() {
            const server = await startTidings(db.url);
            let streams: IdleStreams | undefined;
            try {
              const afterStart = await server.rssMb();
              await within(30_000, "the warm-up", warmUp(createTidingsClient({ baseUrl: server.url, transport: "grpc" })));
              const idle = await settledRss(server, settleMs);
              ctx.log(`    idle RSS ${idle.toFixed(1)} MB; opening ${idleStreams} streams`);
              const clients = Array.from({ length: connections }, () => createTidingsClient({ baseUrl: server.url, transport: "grpc" }));
              const opening = Date.now();
              streams = openIdleStreams(clients, idleStreams);
              await within(60_000, `${idleStreams} streams to open`, streams.ready);
              const openMs = Date.now() - opening;
              const withStreams = await settledRss(server, settleMs);
              if (streams.failures() > 0) throw new Error(`${streams.failures()} streams ended while held`);
              await streams.close();
              streams = undefined;
              const afterClose = await settledRss(server, settleMs);
              const delta = withStreams - idle;
              return {
                "MB over idle": delta,
                "idle RSS MB": idle,
                "RSS with streams MB": withStreams,
                "KB per stream": (delta * 1024) / idleStreams,
                "RSS after close MB": afterClose,
                "RSS at start MB": afterStart,
                "open ms": openMs,
              };
            } finally {
              await streams?.close();
              await server.stop();
            }
          },
        },
      ]);
      const name = results[0]!.name;
      const delta = medianOf(results, name, "MB over idle");
      const scaled = (delta * goalStreams) / idleStreams;
      return {
        id: "memory",
        title: "Server memory",
        cases: results,
        goals: [
          atMostGoal(
            idleStreams === goalStreams
              ? `RSS of ${formatNumber(goalStreams)} idle Subscribe streams over the idle server`
              : `RSS of ${formatNumber(goalStreams)} idle Subscribe streams over the idle server (scaled from ${formatNumber(idleStreams)})`,
            scaled,
            goalMb,
            "MB",
          ),
        ],
        notes: [
          `Each run starts a fresh server on an empty database, warms it up (250 events published in batches, 5 ListEvents, one Subscribe reading them), waits ${settleMs / 1000} s and reads its RSS (/proc VmRSS, median of ${samples} samples 200 ms apart): "idle RSS".`,
          `Then ${formatNumber(idleStreams)} Subscribe streams from the live end (START_POSITION_LATEST, protobuf payloads, default 15 s heartbeats) are opened over ${connections} HTTP/2 connections (gRPC), ${openConcurrency} at a time; each counts once the server sent its first heartbeat. No events flow. RSS is read again after ${settleMs / 1000} s while all are held, and once more after they are closed.`,
          `Median idle RSS ${formatNumber(medianOf(results, name, "idle RSS MB"))} MB; ${formatNumber(medianOf(results, name, "KB per stream"))} KB per idle stream.`,
          ...(idleStreams < goalStreams
            ? [`Scaled linearly from ${formatNumber(idleStreams)} streams: a small number of streams fits in heap the idle server has already reserved, so this understates the cost of ${formatNumber(goalStreams)} (a full run measures them).`]
            : []),
        ],
      };
    } finally {
      await db.drop().catch((err) => ctx.log(`  could not drop ${db.name}: ${(err as Error).message}`));
    }
  },
};
