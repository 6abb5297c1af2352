/**
 * Scenario 3: webhook throughput and latency, Tidings beside graphile-worker, pg-boss and the raw
 * undici POST limit, all POSTing the same signed Standard Webhooks JSON to the same receiver.
 *
 * - Throughput: `webhookEvents` deliveries to 1 endpoint, and to 10 endpoints (webhookEvents/10
 *   events, each to all 10: the same number of deliveries, so the rates compare). The clock
 *   starts when the producer starts handing the events over (PublishBatch / addJobs / insert, 1,000
 *   a call, with the deliverer already running; for undici when its first POST starts) and stops
 *   when the receiver has every delivery, or at a time cap (then counting what arrived):
 *   deliveries/s.
 * - Latency: a steady 500 events/s, one call per event, for `phaseMs`; each event carries its send
 *   time (process.hrtime.bigint(), CLOCK_MONOTONIC: one clock for every process on the machine) and
 *   the receiver records arrival − send: p50/p99 ms. What has not arrived some seconds after the
 *   last send counts as that late (a lower bound).
 *
 * Every deliverer runs in its own process: Tidings' server, a graphile-worker or pg-boss worker,
 * the undici sender, and the receiver (one loopback port per endpoint, 200 at once), so none
 * shares an event loop with the load generator. Each case gets its own scratch database. The
 * Tidings server's RSS is sampled every 200 ms during its cases ("peak rss MB"; for a peer, its
 * worker process).
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { create, type JsonObject, toBinary } from "@bufbuild/protobuf";
import { Logger as GraphileLogger, makeWorkerUtils, type WorkerUtils } from "graphile-worker";
import pg from "pg";
import { PgBoss } from "pg-boss";
import { PublishBatchRequestSchema, PublishRequestSchema } from "../../gen/tidings/v1/event_service_pb.js";
import { createWebhookClient } from "../../sdk/index.js";
import { generateWebhookSecret } from "../../server/webhooks/signing.js";
import { createScratchDatabase } from "../lib/database.js";
import { grpcCaller, type UnaryCaller } from "../lib/lean-clients.js";
import { within } from "../lib/limits.js";
import { atMostGoal, type BenchContext, type Case, type CaseResult, formatNumber, type GoalResult, medianOf, type Metrics, ratioGoal, runCases, type Scenario } from "../lib/scenario.js";
import { cpuSnapshot, cpuSpent } from "../lib/process-cpu.js";
import { quantile } from "../lib/stats.js";
import { rssMbOf, startTidings } from "../lib/tidings-process.js";
import { type GraphileWorkerSettings, type PeerConfig, type PgBossSettings, startWebhookPeer, type WebhookJob, webhookMessage, type WebhookMessage, type WebhookPeerProcess } from "../lib/webhook-peer-process.js";
import { startWebhookReceiver, type ReceiverStatus, type WebhookReceiverProcess } from "../lib/webhook-receiver-process.js";

const FANOUT = 10;
const LATENCY_RATE = 500;
/**
 * Unrecorded events at the same rate before a latency phase (none in a quick run). Every case
 * starts a new Tidings server, while each peer's process runs the whole scenario: the server
 * needs this long at 500/s before its code is compiled as the peers' already is.
 */
const WARMUP_MS = 3_000;
/**
 * Unrecorded deliveries before a throughput case's measured hand-over, for the same reason:
 * a tenth of the measured ones (none in a quick run).
 */
const THROUGHPUT_WARMUP_SHARE = 0.1;
/** How long the latency cases wait, after the last hand-over, for the last deliveries (full, quick). */
const LATENCY_DRAIN_MS = [5_000, 1_500] as const;
/**
 * A throughput case stops this long after its hand-over began, all delivered or not (full,
 * quick): what keeps the scenario within 8 minutes (40 s quick) on a busy 2-core machine.
 */
const THROUGHPUT_CAP_MS = [12_000, 2_000] as const;
/** Producer calls carry this many events (PublishBatch's maximum; the same for addJobs/insert). */
const HANDOVER_BATCH = 1000;
/** Most handover calls in flight during the paced latency phase. */
const MAX_PACED_IN_FLIGHT = 500;

/** Tidings as the bench runs it: its defaults, but as many requests per endpoint as in all. */
export const TIDINGS_FLAGS = ["--dispatcher-max-in-flight", "64", "--dispatcher-max-in-flight-per-endpoint", "64"];

/** graphile-worker's settings from its performance page (worker.graphile.org/docs/performance). */
const GRAPHILE_WORKER: GraphileWorkerSettings = {
  concurrency: 24,
  maxPoolSize: 25,
  localQueueSize: 500,
  completeJobBatchDelay: 0,
  failJobBatchDelay: 0,
  pollIntervalMs: 2000, // the default; new jobs wake workers by LISTEN/NOTIFY
};

/**
 * pg-boss's throughput settings: batches fetched per round trip, several workers per process,
 * fetching again at once while batches come back full, and LISTEN/NOTIFY instead of the
 * 0.5 s minimum poll for new jobs.
 */
const PG_BOSS: PgBossSettings = {
  queue: "deliver",
  batchSize: 50,
  localConcurrency: 4,
  pollingIntervalSeconds: 0.5,
  burstWhenBatchFull: true,
  useListenNotify: true,
  notify: true,
  poolSize: 10,
};

/** The raw limit: one process POSTing through a keep-alive Agent, this many requests at once. */
const UNDICI_CONCURRENCY = 64;

const root = fileURLToPath(new URL("../../", import.meta.url));
function versionOf(pkg: string): string {
  try {
    return (JSON.parse(readFileSync(`${root}node_modules/${pkg}/package.json`, "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const count = (n: number) => n.toLocaleString("en-US");
let tokens = 0;
/** A short id for one measurement: letters and digits only (the receiver splits on "-"). */
const newToken = () => `w${(tokens++).toString(36)}${Math.random().toString(36).slice(2, 7)}`;

/** The peak RSS of a process, sampled every 200 ms until stop(). */
function rssSampler(pid: number): { stop(): Promise<number> } {
  let peak = 0;
  const sample = () => rssMbOf(pid).then((mb) => (peak = Math.max(peak, mb)), () => undefined);
  void sample();
  const timer = setInterval(sample, 200);
  return {
    async stop() {
      clearInterval(timer);
      await sample();
      return peak;
    },
  };
}

/** One deliverer, set up for one case: hands events over, and is torn down after. */
interface Deliverer {
  pid: number;
  /**
   * Hands `events` messages over, each to every endpoint; returns when the first hand-over began
   * (hrtime ns). `timeoutMs` bounds a sender that delivers as it hands over (undici).
   */
  handOver(token: string, events: number, timeoutMs: number): Promise<bigint>;
  /** Hands one message over (to endpoint 0) and resolves when the call returns. */
  handOverOne(token: string, i: number): Promise<unknown>;
  close(): Promise<void>;
}

interface System {
  name: string;
  role: "tidings" | "peer" | "limit";
  /** Whether it takes part in the latency cases. */
  latency: boolean;
  start(receiver: WebhookReceiverProcess, endpoints: number, attributes: Record<string, string>): Promise<Deliverer>;
}

/** Everything a setup made, undone last first; errors are logged, not thrown. */
class Cleanup {
  #steps: Array<[string, () => Promise<unknown>]> = [];
  constructor(private readonly ctx: BenchContext) {}
  add(what: string, step: () => Promise<unknown>): void {
    this.#steps.push([what, step]);
  }
  async run(): Promise<void> {
    for (const [what, step] of this.#steps.reverse()) {
      await within(30_000, what, step()).catch((err) => this.ctx.log(`    cleanup: ${what} failed: ${(err as Error).message}`));
    }
    this.#steps = [];
  }
}

function jobsFor(urls: readonly string[], token: string, from: number, to: number, attributes: Record<string, string>): WebhookJob[] {
  const jobs: WebhookJob[] = [];
  for (let i = from; i < to; i++) {
    const message = webhookMessage(token, i, attributes);
    for (const url of urls) jobs.push({ url, message });
  }
  return jobs;
}

/** Hands `count` messages over to Tidings, HANDOVER_BATCH events a PublishBatch call, one call at a time. */
export async function publishToTidings(publishBatch: UnaryCaller, token: string, count: number, attributes: Record<string, string>): Promise<void> {
  for (let i = 0; i < count; i += HANDOVER_BATCH) {
    const entries = [];
    for (let k = i; k < Math.min(count, i + HANDOVER_BATCH); k++) entries.push({ event: tidingsEvent(webhookMessage(token, k, attributes)) });
    await publishBatch.call(0, toBinary(PublishBatchRequestSchema, create(PublishBatchRequestSchema, { entries })));
  }
}

/** A Tidings event with the message's payload. */
function tidingsEvent(m: WebhookMessage) {
  const data: JsonObject = { memory_id: m.data.memory_id, tier: m.data.tier };
  if (m.data.data) data.data = { sent_ns: m.data.data.sent_ns };
  return { type: m.type, source: m.source, attributes: m.attributes, payload: { case: "data" as const, value: data } };
}

function systems(ctx: BenchContext, secret: string, shared: Cleanup): System[] {
  /**
   * A peer's process, started on first use and stopped with the scenario: it holds no state
   * between cases (each case starts a worker on its own database), and starting Node with tsx
   * for every case would cost more than the quick run has.
   */
  const sharedPeer = (config: PeerConfig): (() => Promise<WebhookPeerProcess>) => {
    let started: Promise<WebhookPeerProcess> | undefined;
    shared.add(`stopping the ${config.kind} process`, async () => {
      const peer = await started?.catch(() => undefined);
      if (!peer) return;
      const { failures } = await peer.stop();
      if (failures > 0) ctx.log(`    ${config.kind}: ${failures} POSTs failed`);
    });
    return () => (started ??= startWebhookPeer(config));
  };
  const graphileProcess = sharedPeer({ kind: "graphile-worker", secret, connections: GRAPHILE_WORKER.concurrency, graphileWorker: GRAPHILE_WORKER });
  const pgBossProcess = sharedPeer({ kind: "pg-boss", secret, connections: PG_BOSS.batchSize * PG_BOSS.localConcurrency, pgBoss: PG_BOSS });
  const undiciProcess = sharedPeer({ kind: "undici", secret, connections: UNDICI_CONCURRENCY });

  /** Starts the peer's worker on the case's database; stopping it is the case's cleanup. */
  const startWorker = async (peer: WebhookPeerProcess, databaseUrl: string, cleanup: Cleanup, kind: string) => {
    await peer.startWorker(databaseUrl);
    cleanup.add(`stopping the ${kind} worker`, async () => {
      const { failures } = await peer.stopWorker();
      if (failures > 0) ctx.log(`    ${kind}: ${failures} POSTs failed`);
    });
  };

  const tidings: System = {
    name: "tidings",
    role: "tidings",
    latency: true,
    async start(receiver, endpoints, attributes) {
      const cleanup = new Cleanup(ctx);
      try {
        const db = await createScratchDatabase("wh_tidings");
        cleanup.add("dropping the Tidings database", () => db.drop());
        const server = await startTidings(db.url, TIDINGS_FLAGS);
        cleanup.add("stopping the Tidings server", () => server.stop());
        // The producer sends its requests without a client framework, as the other scenarios'
        // load generators do (lean-clients.ts): the SDK's client costs about 0.5 ms more CPU per
        // call than this in Node, CPU the server lacks on two cores, where the queue peers'
        // producers are plain pg queries. Endpoints are made with the SDK.
        const publish = grpcCaller(server.url, "/tidings.v1.EventService/Publish", 1);
        const publishBatch = grpcCaller(server.url, "/tidings.v1.EventService/PublishBatch", 1);
        cleanup.add("closing the Tidings producer", async () => {
          await publish.close();
          await publishBatch.close();
        });
        const hooks = createWebhookClient({ baseUrl: server.url, transport: "grpc" });
        for (let e = 0; e < endpoints; e++) {
          await hooks.createWebhook({ webhook: { url: receiver.urls[e]!, patterns: ["memory.created"], attributes } });
        }
        return {
          pid: server.pid,
          async handOver(token, count) {
            const start = process.hrtime.bigint();
            await publishToTidings(publishBatch, token, count, attributes);
            return start;
          },
          handOverOne: (token, i) => publish.call(0, toBinary(PublishRequestSchema, create(PublishRequestSchema, { event: tidingsEvent(webhookMessage(token, i, attributes, process.hrtime.bigint())) }))),
          close: () => cleanup.run(),
        };
      } catch (err) {
        await cleanup.run();
        throw err;
      }
    },
  };

  const graphileWorker: System = {
    name: "graphile-worker",
    role: "peer",
    latency: true,
    async start(receiver, endpoints, attributes) {
      const cleanup = new Cleanup(ctx);
      try {
        const db = await createScratchDatabase("wh_graphile");
        cleanup.add("dropping the graphile-worker database", () => db.drop());
        const worker = await graphileProcess();
        await startWorker(worker, db.url, cleanup, "graphile-worker");
        const logger = new GraphileLogger(() => (level, message) => {
          if (level === "error") ctx.log(`    graphile-worker: ${message}`);
        });
        // Our own pool, with error handlers, ended before the database is dropped: a client that
        // the drop terminates must not take the bench process down.
        const pool = new pg.Pool({ connectionString: db.url, max: 10 });
        const onError = (err: Error) => ctx.log(`    graphile-worker utils: ${err.message}`);
        pool.on("error", onError);
        pool.on("connect", (client) => client.on("error", onError));
        cleanup.add("ending graphile-worker's pool", () => pool.end());
        const utils: WorkerUtils = await makeWorkerUtils({ pgPool: pool, logger });
        cleanup.add("releasing graphile-worker's utils", async () => utils.release());
        const urls = receiver.urls.slice(0, endpoints);
        return {
          pid: worker.pid,
          async handOver(token, count) {
            const start = process.hrtime.bigint();
            const perCall = Math.max(1, Math.floor(HANDOVER_BATCH / urls.length));
            for (let i = 0; i < count; i += perCall) {
              await utils.addJobs(jobsFor(urls, token, i, Math.min(count, i + perCall), attributes).map((payload) => ({ identifier: "deliver", payload })));
            }
            return start;
          },
          handOverOne: (token, i) => utils.addJob("deliver", { url: urls[0]!, message: webhookMessage(token, i, attributes, process.hrtime.bigint()) } satisfies WebhookJob),
          close: () => cleanup.run(),
        };
      } catch (err) {
        await cleanup.run();
        throw err;
      }
    },
  };

  const pgBoss: System = {
    name: "pg-boss",
    role: "peer",
    latency: true,
    async start(receiver, endpoints, attributes) {
      const cleanup = new Cleanup(ctx);
      try {
        const db = await createScratchDatabase("wh_pgboss");
        cleanup.add("dropping the pg-boss database", () => db.drop());
        const worker = await pgBossProcess();
        await startWorker(worker, db.url, cleanup, "pg-boss");
        // The producer: schema and queue exist (the worker made them); no maintenance here.
        const producer = new PgBoss({ connectionString: db.url, supervise: false, schedule: false, migrate: false, max: 10 });
        producer.on("error", (err: Error) => ctx.log(`    pg-boss producer: ${err.message}`));
        await producer.start();
        cleanup.add("stopping the pg-boss producer", () => producer.stop({ graceful: false, close: true }));
        const urls = receiver.urls.slice(0, endpoints);
        return {
          pid: worker.pid,
          async handOver(token, count) {
            const start = process.hrtime.bigint();
            const perCall = Math.max(1, Math.floor(HANDOVER_BATCH / urls.length));
            for (let i = 0; i < count; i += perCall) {
              await producer.insert(PG_BOSS.queue, jobsFor(urls, token, i, Math.min(count, i + perCall), attributes).map((data) => ({ data })));
            }
            return start;
          },
          handOverOne: (token, i) => producer.send(PG_BOSS.queue, { url: urls[0]!, message: webhookMessage(token, i, attributes, process.hrtime.bigint()) } satisfies WebhookJob),
          close: () => cleanup.run(),
        };
      } catch (err) {
        await cleanup.run();
        throw err;
      }
    },
  };

  const undici: System = {
    name: "undici (raw POST)",
    role: "limit",
    latency: false,
    async start(receiver, endpoints, attributes) {
      const s = await undiciProcess();
      const urls = receiver.urls.slice(0, endpoints);
      return {
        pid: s.pid,
        async handOver(token, count, timeoutMs) {
          const r = await s.blast({ token, events: count, urls, attributes, concurrency: UNDICI_CONCURRENCY, timeoutMs });
          if (r.errors > 0) throw new Error(`the undici sender had ${r.errors} failed POSTs`);
          return r.startNs;
        },
        handOverOne: () => Promise.reject(new Error("the undici sender has no paced mode")),
        close: async () => {},
      };
    },
  };

  return [tidings, graphileWorker, pgBoss, undici];
}

const throughputCase = (name: string, endpoints: number) => `${name} → ${endpoints === 1 ? "1 endpoint" : `${endpoints} endpoints`}`;
const latencyCase = (name: string) => `${name} @ ${LATENCY_RATE}/s → 1 endpoint`;

/** Waits for `count` deliveries; at the timeout, says how far it got instead of failing the case. */
async function waitForDeliveries(receiver: WebhookReceiverProcess, count: number, timeoutMs: number): Promise<{ status: ReceiverStatus; complete: boolean }> {
  try {
    return { status: await receiver.waitFor(count, Math.max(1, timeoutMs)), complete: true };
  } catch {
    return { status: await receiver.status(), complete: false };
  }
}

/**
 * Calls `send(i)` for i = 0.. at `rate` per second for `durationMs` (at most `rate × duration`
 * calls, at most MAX_PACED_IN_FLIGHT unanswered, never past twice the duration), then waits for
 * the calls to return.
 */
async function paced(rate: number, durationMs: number, send: (i: number) => Promise<unknown>): Promise<{ sent: number; errors: number; firstError?: string; callMs: number[] }> {
  const total = Math.round((rate * durationMs) / 1000);
  const start = performance.now();
  let sent = 0;
  let errors = 0;
  let firstError: string | undefined;
  const inFlight = new Set<Promise<unknown>>();
  const callMs: number[] = [];
  while (sent < total && performance.now() - start < durationMs * 2) {
    const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000) + 1);
    while (sent < due && inFlight.size < MAX_PACED_IN_FLIGHT) {
      const called = performance.now();
      const p: Promise<unknown> = send(sent++)
        .then(() => callMs.push(performance.now() - called))
        .catch((err) => {
          errors++;
          firstError ??= String((err as Error).message ?? err);
        })
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
    await sleep(1);
  }
  await within(30_000, "the paced hand-over calls to return", Promise.all(inFlight));
  return { sent, errors, firstError, callMs };
}

/** Notes about runs that fell short, one line per case however many runs did. */
class Shortfalls {
  #byCase = new Map<string, string[]>();
  add(caseName: string, what: string): void {
    this.#byCase.set(caseName, [...(this.#byCase.get(caseName) ?? []), what]);
  }
  notes(): string[] {
    return [...this.#byCase].map(([name, list]) => `${name}: ${list.join("; ")}`);
  }
}

export const webhooksScenario: Scenario = {
  id: "webhooks",
  title: "Webhook throughput and latency",
  async run(ctx) {
    const { limits } = ctx;
    const shortfalls = new Shortfalls();
    const secret = generateWebhookSecret();
    const shared = new Cleanup(ctx);
    const all = systems(ctx, secret, shared);
    const eventsFor = (endpoints: number) => (endpoints === 1 ? limits.webhookEvents : Math.ceil(limits.webhookEvents / endpoints));
    // Every throughput case ends at this cap, from the start of its hand-over, delivered or not.
    const capMs = THROUGHPUT_CAP_MS[limits.quick ? 1 : 0];
    const drainMs = LATENCY_DRAIN_MS[limits.quick ? 1 : 0];
    const warmupMs = limits.quick ? 0 : WARMUP_MS;
    const receiver = await startWebhookReceiver(FANOUT);
    shared.add("stopping the webhook receiver", () => receiver.stop());
    ctx.log(`  receiver pid ${receiver.pid} on ${receiver.urls.length} ports`);
    try {
      const throughput = (system: System, endpoints: number): Case => ({
        name: throughputCase(system.name, endpoints),
        role: system.role,
        async run(): Promise<Metrics> {
          const name = throughputCase(system.name, endpoints);
          const attributes = { run: newToken() };
          const token = newToken();
          const events = eventsFor(endpoints);
          const deliveries = events * endpoints;
          const deliverer = await system.start(receiver, endpoints, attributes);
          const rss = rssSampler(deliverer.pid);
          try {
            if (!limits.quick) {
              // Warm-up (JIT, connections, caches), not measured.
              const warm = newToken();
              const warmEvents = Math.max(1, Math.round(events * THROUGHPUT_WARMUP_SHARE));
              await receiver.reset(warm);
              await deliverer.handOver(warm, warmEvents, capMs);
              await waitForDeliveries(receiver, warmEvents * endpoints, capMs);
            }
            await receiver.reset(token);
            const cpuBefore = cpuSnapshot();
            const ownBefore = process.cpuUsage();
            const began = performance.now();
            const started = await deliverer.handOver(token, events, capMs);
            const handedOver = process.hrtime.bigint();
            const { status, complete } = await waitForDeliveries(receiver, deliveries, capMs - (performance.now() - began));
            const cpuAfter = cpuSnapshot();
            const own = process.cpuUsage(ownBefore);
            if (!complete) shortfalls.add(name, `${count(status.unique)} of ${count(deliveries)} deliveries by the ${capMs / 1000} s cap`);
            if (status.duplicates > 0) shortfalls.add(name, `${status.duplicates} duplicate deliveries`);
            // Deliveries over the time to the last of them: a capped run counts what arrived.
            const seconds = Number(status.lastNs - started) / 1e9;
            // CPU per delivery (see the notes): what throughput on shared cores is made of.
            const perDelivery = (cpuSeconds: number) => (status.unique > 0 ? (cpuSeconds * 1e6) / status.unique : Number.NaN);
            const sender = cpuSpent(cpuBefore, cpuAfter, deliverer.pid);
            const postgres = cpuAfter.postgres - cpuBefore.postgres;
            const all = sender + postgres + cpuSpent(cpuBefore, cpuAfter, receiver.pid) + (own.user + own.system) / 1e6;
            return {
              "deliveries/s": status.unique > 0 ? status.unique / seconds : 0,
              "hand-over s": Number(handedOver - started) / 1e9,
              "peak rss MB": await rss.stop(),
              "sender CPU µs": perDelivery(sender),
              "PostgreSQL CPU µs": perDelivery(postgres),
              "all CPU µs": perDelivery(all),
            };
          } finally {
            await rss.stop();
            await deliverer.close();
          }
        },
      });

      const latency = (system: System): Case => ({
        name: latencyCase(system.name),
        role: system.role,
        async run(): Promise<Metrics> {
          const name = latencyCase(system.name);
          const attributes = { run: newToken() };
          const deliverer = await system.start(receiver, 1, attributes);
          const rss = rssSampler(deliverer.pid);
          try {
            if (warmupMs > 0) {
              // Warm-up at the same rate (connections, JIT, caches), not recorded.
              const warm = newToken();
              await receiver.reset(warm);
              const w = await paced(LATENCY_RATE, warmupMs, (i) => deliverer.handOverOne(warm, i));
              await waitForDeliveries(receiver, w.sent - w.errors, 2_000);
            }

            const token = newToken();
            await receiver.reset(token);
            const r = await paced(LATENCY_RATE, limits.phaseMs, (i) => deliverer.handOverOne(token, i));
            if (r.errors > 0) shortfalls.add(name, `${r.errors} of ${r.sent} hand-over calls failed (${r.firstError})`);
            const handedOver = performance.now();
            const { status, complete } = await waitForDeliveries(receiver, r.sent - r.errors, drainMs);
            const ms = await receiver.latencies();
            if (!complete) {
              // What never arrived is at least as late as the wait: a lower bound, and said so.
              const waited = performance.now() - handedOver;
              ms.push(...Array<number>(Math.max(0, r.sent - r.errors - ms.length)).fill(waited));
              shortfalls.add(name, `${count(status.unique)} of ${count(r.sent - r.errors)} delivered ${formatNumber(waited / 1000)} s after the last hand-over; the rest count as that late, so its latencies are lower bounds`);
            }
            return {
              // p99 first: it is the goal, and a chart shows each case's first metric.
              "p99 ms": quantile(ms, 0.99),
              "p50 ms": quantile(ms, 0.5),
              "max ms": ms.length ? ms.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY) : Number.NaN,
              "hand-over p99 ms": quantile(r.callMs, 0.99),
              "peak rss MB": await rss.stop(),
            };
          } finally {
            await rss.stop();
            await deliverer.close();
          }
        },
      });

      const throughputCases = [1, FANOUT].flatMap((endpoints) => all.map((s) => throughput(s, endpoints)));
      const latencyCases = all.filter((s) => s.latency).map(latency);
      const results: CaseResult[] = [...(await runCases(ctx, throughputCases)), ...(await runCases(ctx, latencyCases))];

      const goals: GoalResult[] = [];
      const queuePeers = all.filter((s) => s.role === "peer");
      const limit = all.find((s) => s.role === "limit")!;
      for (const endpoints of [1, FANOUT]) {
        const metric = "deliveries/s";
        const t = medianOf(results, throughputCase("tidings", endpoints), metric);
        const best = queuePeers
          .map((p) => ({ name: p.name, value: medianOf(results, throughputCase(p.name, endpoints), metric) }))
          .reduce((a, b) => (b.value > a.value ? b : a));
        const where = endpoints === 1 ? "1 endpoint" : `${endpoints} endpoints`;
        goals.push(ratioGoal(`${where}: Tidings deliveries/s vs the best queue peer (${best.name})`, t, best.value, 2));
        goals.push(ratioGoal(`${where}: Tidings deliveries/s vs the raw undici limit`, t, medianOf(results, throughputCase(limit.name, endpoints), metric), 0.5));
      }
      const p99 = medianOf(results, latencyCase("tidings"), "p99 ms");
      goals.push(atMostGoal(`Tidings p99 publish-to-receiver at ${LATENCY_RATE} events/s`, p99, 10, "ms"));
      for (const p of queuePeers) {
        const peer = medianOf(results, latencyCase(p.name), "p99 ms");
        goals.push({ goal: `Tidings p99 at ${LATENCY_RATE}/s below ${p.name}'s`, measured: `${formatNumber(p99)} vs ${formatNumber(peer)} ms`, target: `< ${p.name}'s`, pass: p99 < peer });
      }

      const notes = [
        `Throughput: ${formatNumber(limits.webhookEvents)} deliveries a case; to ${FANOUT} endpoints that is ${formatNumber(eventsFor(FANOUT))} events, each to all ${FANOUT} (the queue peers enqueue one job per endpoint; Tidings publishes each event once and routes it). ` +
          `${limits.quick ? "No warm-up in a quick run. " : `Each case first delivers a tenth as many, unmeasured: every case starts a new Tidings server, while each peer's process runs the whole scenario and is warm after its first case. `}` +
          `The clock runs from the start of the hand-over (PublishBatch / addJobs / insert of ${HANDOVER_BATCH} deliveries a call, the deliverer already running; for undici its first POST) to the last delivery the receiver got; a case stops at ${capMs / 1000} s, and then counts what arrived. "hand-over s" is how long handing over took.`,
        `Latency: ${LATENCY_RATE} events/s for ${limits.phaseMs / 1000} s (${warmupMs > 0 ? `after a ${warmupMs / 1000} s warm-up at the same rate` : "no warm-up in a quick run"}), one Publish / addJob / send per event, each carrying its send time (process.hrtime.bigint(), the machine's monotonic clock); the receiver records arrival − send. The case waits ${drainMs / 1000} s after the last hand-over at most. "hand-over p99 ms" is how long the Publish / addJob / send call itself took (in the latency, too).`,
        `Every request is the same Standard Webhooks JSON ({id, type, timestamp, source, attributes, sequence, data}) of a memory.created event, HMAC-signed (webhook-id/-timestamp/-signature) by every sender. The receiver is one process listening on ${FANOUT} loopback ports (one per endpoint), answering 200 at once.`,
        `Tidings ${TIDINGS_FLAGS.join(" ")} (the default allows 8 per endpoint); its own process and scratch database per case. peak rss MB is the Tidings server's RSS (for a peer, its worker process; for undici, the sender), sampled every 200 ms.`,
        "CPU per delivery, in µs, from /proc over the measured hand-over and delivery (in 10 ms ticks: coarse in a --quick run's few deliveries): sender CPU is the Tidings server's (for a peer, its worker process; for undici, the sender); PostgreSQL CPU is every postgres process's (backends and writers; none for undici); all CPU adds the receiver and the bench process (the producer). With every process on the same cores, throughput is about the busy cores divided by all CPU, so these say where a system's deliveries cost (`npm run bench:webhook-cpu` measures Tidings' case alone, and compares builds).",
        `graphile-worker ${versionOf("graphile-worker")}: concurrency ${GRAPHILE_WORKER.concurrency}, maxPoolSize ${GRAPHILE_WORKER.maxPoolSize}, localQueue.size ${GRAPHILE_WORKER.localQueueSize}, completeJobBatchDelay ${GRAPHILE_WORKER.completeJobBatchDelay}, failJobBatchDelay ${GRAPHILE_WORKER.failJobBatchDelay} (its performance page's settings), pollInterval ${GRAPHILE_WORKER.pollIntervalMs} ms with LISTEN/NOTIFY; jobs added with addJobs / addJob; an undici Agent with ${GRAPHILE_WORKER.concurrency} connections per origin.`,
        `pg-boss ${versionOf("pg-boss")}: work() batchSize ${PG_BOSS.batchSize} (a batch's POSTs in parallel), localConcurrency ${PG_BOSS.localConcurrency}, burstWhenBatchFull ${PG_BOSS.burstWhenBatchFull}, pollingIntervalSeconds ${PG_BOSS.pollingIntervalSeconds} (its minimum), useListenNotify ${PG_BOSS.useListenNotify} with a notify queue, pool ${PG_BOSS.poolSize}; jobs added with insert / send; an undici Agent with ${PG_BOSS.batchSize * PG_BOSS.localConcurrency} connections per origin.`,
        `undici ${versionOf("undici")} raw limit: one process, a keep-alive Agent, ${UNDICI_CONCURRENCY} requests in flight, the same signed bodies; no queue and no database.`,
        "Tidings' producer sends each PublishBatch / Publish through bench/lib/lean-clients.ts (one HTTP/2 connection, no client framework), as the other scenarios' load generators do; the SDK's client costs about 0.5 ms more CPU per call in Node, CPU the server would lack on two cores. The queue peers' producers are their libraries' own pg queries.",
        "Each peer runs in one process for the whole scenario (started with tsx once, not per case); every case starts a new worker (graphile-worker runner / PgBoss instance, and a new undici Agent) in it on the case's own scratch database, and stops it after.",
        `graphile-worker and pg-boss declare Node ≥ 22; both ran here on Node ${process.version} unchanged.`,
        ...shortfalls.notes(),
      ];
      return { id: "webhooks", title: "Webhook throughput and latency", cases: results, goals, notes };
    } finally {
      await shared.run();
    }
  },
};
