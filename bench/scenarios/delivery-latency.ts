import http2 from "node:http2";
import { readdir, readFile } from "node:fs/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect as connectNats, type NatsConnection } from "@nats-io/transport-node";
import pg from "pg";
import { PublishRequestSchema, SubscribeRequestSchema } from "../../gen/tidings/v1/event_service_pb.js";
import { createScratchDatabase, type ScratchDatabase } from "../lib/database.js";
import { grpcCaller, grpcServerStream, probeSubscribeResponse, streamingSession } from "../lib/lean-clients.js";
import { type BenchLimits, within } from "../lib/limits.js";
import { atMostGoal, type BenchContext, type Case, type CaseResult, type GoalResult, type Metrics, medianOf, runCases, type Scenario } from "../lib/scenario.js";
import { quantile } from "../lib/stats.js";
import { startTidings, type TidingsProcess } from "../lib/tidings-process.js";

/**
 * Publish → subscriber latency: one publisher sends events at a steady 1,000 events/s while 1,
 * 10 or 100 subscribers in this same process receive them, so send and receipt are read from
 * one clock (performance.now()). Every event carries its index `n`; the publisher notes the
 * time just before it hands event n to its client, a subscriber subtracts it at receipt.
 *
 * Beside Tidings: NATS JetStream (file storage, one durable pull consumer per subscriber) at
 * the same rate, and the bare PostgreSQL round trip Tidings is built on (INSERT + NOTIFY, a
 * LISTENing connection SELECTs the row).
 */

const ratePerSecond = 1_000;
const subscriberCounts = [1, 10, 100] as const;
const natsServer = "127.0.0.1:4222";
/** Publishes one publisher may have outstanding: a second's worth, so a stall shows as latency, not as a lower rate. */
const maxInFlight = 1_000;
/** Connections of the bare PostgreSQL publisher: enough to keep 1,000 commits/s going at several ms each. */
const pgPublisherConnections = 16;
const pgChannel = "bench_latency";

interface Plan {
  /** Events sent before the measured ones (warm-up, not counted). */
  warm: number;
  /** Events measured. */
  counted: number;
  /** How long to wait after the last publish for the last answers and deliveries. */
  drainMs: number;
}

/**
 * A full run measures `phaseMs` of events (5,000 at 1,000/s); a quick run 800 of them, so that
 * even a quick run whose every case overruns its deadlines stays within 30 s.
 */
/** Events that warm a new server up before the first Tidings case: 3 s at the rate (0.3 s quick). */
function serverWarmupEvents(limits: BenchLimits): number {
  return limits.quick ? 300 : 3_000;
}

function planFor(limits: BenchLimits): Plan {
  const counted = limits.quick ? 800 : Math.max(1_000, Math.min(limits.maxOps, Math.round((limits.phaseMs * ratePerSecond) / 1000)));
  return { warm: limits.quick ? 100 : 300, counted, drainMs: limits.quick ? 1_000 : 2_500 };
}

/** Send times by event index, and what every receiver got; counts only events of the measured window. */
class DeliveryTracker {
  readonly sentAt: Float64Array;
  readonly failed: Uint8Array;
  /** Latency of every measured delivery, in ms. */
  readonly latencies: number[] = [];
  readonly #seen: Uint8Array[];
  readonly #ready: Uint8Array;
  #readyCount = 0;
  /** Tells this run's events from a previous run's stragglers. */
  readonly runId = Math.random().toString(36).slice(2, 10);
  /** Unique deliveries of measured events. */
  received = 0;
  duplicates = 0;
  /** Events no publish of this run sent (an index out of range or never stamped). */
  strays = 0;
  subscriberError: unknown;

  constructor(
    readonly plan: Plan,
    readonly receivers: number,
  ) {
    const total = plan.warm + plan.counted;
    this.sentAt = new Float64Array(total).fill(Number.NaN);
    this.failed = new Uint8Array(total);
    this.#seen = Array.from({ length: receivers }, () => new Uint8Array(total));
    this.#ready = new Uint8Array(receivers);
  }

  get total(): number {
    return this.sentAt.length;
  }

  markReady(receiver: number): void {
    if (this.#ready[receiver]) return;
    this.#ready[receiver] = 1;
    this.#readyCount++;
  }

  get allReady(): boolean {
    return this.#readyCount === this.receivers;
  }

  /** Receiver `receiver` got event `n` at `now` (performance.now()). */
  deliver(receiver: number, n: number, now: number): void {
    this.markReady(receiver);
    if (!Number.isInteger(n) || n < 0 || n >= this.total) {
      this.strays++;
      return;
    }
    const sent = this.sentAt[n]!;
    if (Number.isNaN(sent)) {
      this.strays++;
      return;
    }
    const seen = this.#seen[receiver]!;
    if (seen[n]) {
      this.duplicates++;
      return;
    }
    seen[n] = 1;
    if (n < this.plan.warm) return;
    this.received++;
    this.latencies.push(now - sent);
  }

  /**
   * Counts each delivery of a measured, successfully published event that has not arrived by
   * `now` as a latency of `now - sent`: a lower bound, so a stalled run's percentiles are not
   * flattered by leaving its slowest deliveries out. Returns how many there were.
   */
  censorMissing(now: number): number {
    let missing = 0;
    for (const seen of this.#seen) {
      for (let n = this.plan.warm; n < this.total; n++) {
        const sent = this.sentAt[n]!;
        if (seen[n] || Number.isNaN(sent) || this.failed[n]) continue;
        missing++;
        this.latencies.push(now - sent);
      }
    }
    return missing;
  }

  /** Deliveries of measured events that were published successfully, over all receivers. */
  get expected(): number {
    let ok = 0;
    for (let n = this.plan.warm; n < this.total; n++) if (!Number.isNaN(this.sentAt[n]!) && !this.failed[n]) ok++;
    return ok * this.receivers;
  }
}

interface PacedResult {
  sent: number;
  errors: number;
  firstError: unknown;
  /** Publishes per second the publisher achieved while sending. */
  rate: number;
  /** How long each publish call took to answer (the publisher's ack), in ms. */
  acks: number[];
  /** Settles when every publish has answered. */
  settled: Promise<unknown>;
}

/**
 * Sends events 0..total-1 at `ratePerSecond`, each at its own time slot (t0 + n ms): a timer
 * wakes about every millisecond and sends what is due, so the load is steady, never a burst.
 * Publishes do not wait for each other (open loop), up to `maxInFlight` outstanding. A publisher
 * that falls behind stops at a quarter past the planned time: every run is bounded.
 */
async function pacedPublish(tracker: DeliveryTracker, send: (n: number) => Promise<unknown>): Promise<PacedResult> {
  const total = tracker.total;
  const intervalMs = 1000 / ratePerSecond;
  const inFlight = new Set<Promise<unknown>>();
  const acks: number[] = [];
  let errors = 0;
  let firstError: unknown;
  let next = 0;
  const t0 = performance.now();
  const deadline = t0 + total * intervalMs * 1.25 + 500;
  while (next < total && performance.now() < deadline) {
    const due = Math.min(total, Math.floor((performance.now() - t0) / intervalMs) + 1);
    while (next < due && inFlight.size < maxInFlight) {
      const n = next++;
      const sentAt = performance.now();
      tracker.sentAt[n] = sentAt;
      const p: Promise<unknown> = send(n).then(
        () => {
          acks.push(performance.now() - sentAt);
          inFlight.delete(p);
        },
        (err: unknown) => {
          inFlight.delete(p);
          tracker.failed[n] = 1;
          errors++;
          firstError ??= err;
        },
      );
      inFlight.add(p);
    }
    if (next >= total) break;
    const wait = t0 + next * intervalMs - performance.now();
    await new Promise((r) => setTimeout(r, Math.max(0, wait)));
  }
  const elapsed = performance.now() - t0;
  return { sent: next, errors, firstError, rate: (next / elapsed) * 1000, acks, settled: Promise.allSettled([...inFlight]) };
}

async function waitFor(condition: () => boolean, ms: number, pollMs = 5): Promise<boolean> {
  const end = performance.now() + ms;
  while (!condition()) {
    if (performance.now() >= end) return false;
    await new Promise((r) => setTimeout(r, pollMs));
  }
  return true;
}

/** CPU time of a process so far, in ms (user + system), from /proc. */
async function processCpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // Fields after the ")" that ends the command name: utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // USER_HZ is 100 on Linux
}

async function findPid(command: string): Promise<number | undefined> {
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const comm = await readFile(`/proc/${entry}/comm`, "utf8").catch(() => "");
    if (comm.trim() === command) return Number(entry);
  }
  return undefined;
}

/**
 * CPU use over a measured window, in % of one core: this process, and a server process if
 * given, whose CPU time per published event is reported too (a load-independent cost).
 */
function cpuMeter(serverPid: number | undefined) {
  const wall0 = performance.now();
  const self0 = process.cpuUsage();
  const server0 = serverPid === undefined ? Promise.resolve(Number.NaN) : processCpuMs(serverPid).catch(() => Number.NaN);
  return async (events: number): Promise<Metrics> => {
    const wall = performance.now() - wall0;
    const self = process.cpuUsage(self0);
    const out: Metrics = { "bench CPU %": ((self.user + self.system) / 1000 / wall) * 100 };
    if (serverPid !== undefined) {
      const used = (await processCpuMs(serverPid).catch(() => Number.NaN)) - (await server0);
      out["server CPU %"] = (used / wall) * 100;
      out["server CPU µs/event"] = (used * 1000) / Math.max(1, events);
    }
    return out;
  };
}

/**
 * p50/p99/max of many samples (stats.ts' summarizeLatencies spreads them into Math.max, which
 * overflows the stack past ~100k samples: 100 subscribers × 5,000 events are 500k).
 */
function summarize(ms: readonly number[]): { p50: number; p99: number; max: number; count: number } {
  let max = Number.NEGATIVE_INFINITY;
  for (const v of ms) if (v > max) max = v;
  return { p50: quantile(ms, 0.5), p99: quantile(ms, 0.99), max, count: ms.length };
}

/**
 * One measured run, once every receiver is ready: publishes warm-up + measured events at the
 * steady rate, then waits up to `drainMs` for the last answers and deliveries.
 */
async function measure(tracker: DeliveryTracker, send: (n: number) => Promise<unknown>, serverPid: number | undefined, notes: Set<string>, label: string): Promise<Metrics> {
  const cpu = cpuMeter(serverPid);
  const pub = await pacedPublish(tracker, send);
  let settled = false;
  void pub.settled.then(() => (settled = true));
  await waitFor(() => (settled && tracker.received >= tracker.expected) || tracker.subscriberError !== undefined, tracker.plan.drainMs);
  if (tracker.subscriberError !== undefined) throw new Error(`a subscriber failed: ${String((tracker.subscriberError as Error)?.message ?? tracker.subscriberError)}`);
  if (pub.errors === pub.sent) throw new Error(`every publish failed: ${String((pub.firstError as Error)?.message ?? pub.firstError)}`);
  const usage = await cpu(pub.sent);
  if (tracker.duplicates > 0) notes.add(`${label}: ${tracker.duplicates} deliveries in a run were duplicates (an event a subscriber had already received).`);
  if (pub.errors > 0) notes.add(`${label}: ${pub.errors} of ${pub.sent} publishes failed in a run, e.g. ${String((pub.firstError as Error)?.message ?? pub.firstError).slice(0, 200)}`);
  const missed = tracker.censorMissing(performance.now());
  // Publishes still unanswered would load the next case: let them finish first (not measured).
  await within(tracker.plan.drainMs / 2, "the last publishes to answer", pub.settled).catch(() => undefined);
  const s = summarize(tracker.latencies);
  if (s.count === 0) throw new Error(`no measured event was published (${pub.sent} sent, ${pub.errors} failed)`);
  return {
    "p50 ms": s.p50,
    "p99 ms": s.p99,
    "max ms": s.max,
    "publish ack p50 ms": quantile(pub.acks, 0.5),
    "publish/s": pub.rate,
    missed,
    ...usage,
  };
}

// --- Tidings ------------------------------------------------------------------------------

export async function tidingsRun(server: TidingsProcess, subscribers: number, plan: Plan, notes: Set<string>): Promise<Metrics> {
  // The publisher: unary Publish over gRPC on one HTTP/2 connection, without a client framework
  // (lean-clients.ts), so that the bench process leaves the server its share of the two cores.
  const publisher = grpcCaller(server.url, "/tidings.v1.EventService/Publish", 1);
  // The subscribers: every Subscribe stream on one HTTP/2 connection, read without a client
  // framework either (lean-clients.ts): with the SDK's client, 100 subscribers cost the bench
  // process more CPU than the server.
  const session = streamingSession(server.url);
  session.on("error", () => {});
  const tracker = new DeliveryTracker(plan, subscribers);
  const stop = new AbortController();
  const request = toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { patterns: ["memory.created"] }));
  const streams = Array.from({ length: subscribers }, (_, i) =>
    grpcServerStream(session, "/tidings.v1.EventService/Subscribe", request, (bytes) => {
      const now = performance.now();
      const res = probeSubscribeResponse(bytes);
      if (res === undefined) return;
      if (res.heartbeat) tracker.markReady(i);
      else if (res.attributes["run"] === tracker.runId) tracker.deliver(i, Number(res.attributes["n"]), now);
      else tracker.strays++;
    }));
  const loops = streams.map(async (s) => {
    const err = await s.ended;
    if (!stop.signal.aborted) tracker.subscriberError ??= err ?? new Error("the subscribe stream ended");
  });
  try {
    // Count only events published after every subscriber got its first heartbeat.
    if (!(await waitFor(() => tracker.allReady || tracker.subscriberError !== undefined, 20_000))) throw new Error("not every subscriber got its first heartbeat within 20 s");
    if (tracker.subscriberError !== undefined) throw tracker.subscriberError;
    return await measure(
      tracker,
      (n) =>
        publisher.call(
          0,
          toBinary(
            PublishRequestSchema,
            create(PublishRequestSchema, {
              event: { type: "memory.created", source: "bench", attributes: { run: tracker.runId, n: String(n) }, payload: { case: "data", value: { memory_id: `m-${n}`, tier: "hot" } } },
            }),
          ),
        ),
      server.pid,
      notes,
      tidingsName(subscribers),
    );
  } finally {
    stop.abort();
    for (const s of streams) s.cancel();
    await within(10_000, "the Tidings subscribers to stop", Promise.allSettled(loops)).catch(() => undefined);
    await within(10_000, "closing the subscribers' connection", new Promise<void>((r) => session.close(() => r()))).catch(() => undefined);
    await within(10_000, "closing the publisher's connection", publisher.close()).catch(() => undefined);
  }
}

// --- NATS JetStream -----------------------------------------------------------------------

async function jetStreamRun(consumers: number, plan: Plan, notes: Set<string>): Promise<Metrics> {
  const stream = `BENCH_LATENCY_${Date.now().toString(36).toUpperCase()}_${Math.random().toString(36).slice(2, 6).toUpperCase()}`;
  const subject = `${stream}.memory.created`;
  const connections: NatsConnection[] = [];
  const stops: Array<() => Promise<void>> = [];
  const loops: Array<Promise<void>> = [];
  let created = false;
  const tracker = new DeliveryTracker(plan, consumers);
  try {
    const publisherNc = await within(10_000, "connecting to NATS", connectNats({ servers: natsServer }));
    connections.push(publisherNc);
    const consumerNc = await within(10_000, "connecting to NATS", connectNats({ servers: natsServer }));
    connections.push(consumerNc);
    notes.add(`NATS server ${publisherNc.info?.version ?? "?"} on ${natsServer}.`);
    const jsm = await jetstreamManager(publisherNc);
    await within(10_000, "creating the JetStream stream", jsm.streams.add({ name: stream, subjects: [`${stream}.>`], storage: StorageType.File, max_msgs: 10 * (plan.warm + plan.counted) }));
    created = true;
    await within(30_000, `creating ${consumers} durable consumers`, Promise.all(Array.from({ length: consumers }, (_, i) =>
      jsm.consumers.add(stream, { durable_name: `sub${i}`, ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.New, filter_subject: subject }))));
    const jsConsumer = jetstream(consumerNc);
    for (let i = 0; i < consumers; i++) {
      const consumer = await jsConsumer.consumers.get(stream, `sub${i}`);
      const messages = await consumer.consume();
      stops.push(async () => {
        await messages.close().catch(() => undefined);
      });
      loops.push((async () => {
        try {
          for await (const m of messages) {
            const now = performance.now();
            tracker.deliver(i, (m.json() as { n: number }).n, now);
          }
        } catch (err) {
          tracker.subscriberError ??= err;
        }
      })());
    }
    const js = jetstream(publisherNc);
    // JetStream has no heartbeat on a new consumer: a probe message tells every consumer is pulling.
    await js.publish(subject, JSON.stringify({ n: -1 }));
    if (!(await waitFor(() => tracker.allReady || tracker.subscriberError !== undefined, 20_000))) throw new Error("not every JetStream consumer got the probe message within 20 s");
    tracker.strays = 0;
    return await measure(tracker, (n) => js.publish(subject, JSON.stringify({ n, memory_id: `m-${n}`, tier: "hot" })), await findPid("nats-server"), notes, jetStreamName(consumers));
  } finally {
    for (const stop of stops) await within(10_000, "stopping a JetStream consumer", stop()).catch(() => undefined);
    await within(10_000, "the JetStream consumers to stop", Promise.allSettled(loops)).catch(() => undefined);
    if (created) {
      const jsm = await jetstreamManager(connections[0]!);
      await within(10_000, `deleting stream ${stream}`, jsm.streams.delete(stream));
    }
    for (const nc of connections) await within(10_000, "closing a NATS connection", nc.close()).catch(() => undefined);
  }
}

// --- PostgreSQL INSERT + NOTIFY -------------------------------------------------------------

async function prepareNotifyTable(db: ScratchDatabase): Promise<void> {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  try {
    await client.query("CREATE TABLE bench_events (id bigint PRIMARY KEY, payload jsonb NOT NULL)");
  } finally {
    await client.end();
  }
}

async function notifyRun(db: ScratchDatabase, plan: Plan, notes: Set<string>): Promise<Metrics> {
  const pool = new pg.Pool({ connectionString: db.url, max: pgPublisherConnections });
  const listener = new pg.Client({ connectionString: db.url });
  const tracker = new DeliveryTracker(plan, 1);
  try {
    await pool.query("TRUNCATE bench_events");
    await listener.connect();
    // The listener reads the rows it was notified of; latency ends when a row is here. Rows
    // notified while a SELECT is running are read together by the next one, as a real consumer would.
    let pending: number[] = [];
    let reading = false;
    const readPending = async () => {
      if (reading) return;
      reading = true;
      try {
        while (pending.length > 0) {
          const ids = pending;
          pending = [];
          const r = await listener.query<{ id: string }>("SELECT id, payload FROM bench_events WHERE id = ANY($1::bigint[])", [ids]);
          const now = performance.now();
          if (r.rows.length !== ids.length) throw new Error(`notified of ${ids.length} rows, but the SELECT found ${r.rows.length}`);
          for (const row of r.rows) tracker.deliver(0, Number(row.id), now);
        }
      } catch (err) {
        tracker.subscriberError ??= err;
      } finally {
        reading = false;
      }
    };
    listener.on("notification", (msg) => {
      pending.push(Number(msg.payload));
      void readPending();
    });
    await listener.query(`LISTEN ${pgChannel}`);
    // One statement is one transaction: the INSERT and its NOTIFY commit together, in one round trip.
    const publish = (n: number) =>
      pool.query(`WITH row AS (INSERT INTO bench_events (id, payload) VALUES ($1, $2) RETURNING id) SELECT pg_notify('${pgChannel}', id::text) FROM row`, [
        n,
        JSON.stringify({ memory_id: `m-${n}`, tier: "hot" }),
      ]);
    await publish(-1);
    if (!(await waitFor(() => tracker.allReady || tracker.subscriberError !== undefined, 10_000))) throw new Error("the LISTEN connection did not get the probe notification within 10 s");
    tracker.strays = 0;
    return await measure(tracker, publish, undefined, notes, notifyName);
  } finally {
    await within(10_000, "closing the LISTEN connection", listener.end()).catch(() => undefined);
    await within(10_000, "closing the publisher pool", pool.end()).catch(() => undefined);
  }
}

// --- The scenario ---------------------------------------------------------------------------

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
const tidingsName = (n: number) => `Tidings, ${plural(n, "subscriber")}`;
const jetStreamName = (n: number) => `JetStream, ${plural(n, "durable consumer")}`;
const notifyName = "PostgreSQL INSERT + NOTIFY → LISTEN + SELECT";

export const deliveryLatencyScenario: Scenario = {
  id: "latency",
  title: "Publish → subscriber latency",
  async run(ctx: BenchContext) {
    const plan = planFor(ctx.limits);
    const notes = new Set<string>();
    const tidingsDb = await createScratchDatabase("latency");
    let notifyDb: ScratchDatabase | undefined;
    let server: TidingsProcess | undefined;
    try {
      notifyDb = await createScratchDatabase("latency_notify");
      await prepareNotifyTable(notifyDb);
      ctx.log("  starting Tidings");
      server = await startTidings(tidingsDb.url);
      const tidings = server;
      // A fresh server compiles its hot paths during its first seconds of load: warm it (and the
      // connections' code in this process) first, as PostgreSQL and nats-server already are.
      ctx.log("  warming Tidings up");
      await tidingsRun(tidings, 5, { warm: 0, counted: serverWarmupEvents(ctx.limits), drainMs: 500 }, new Set());
      const cases: Case[] = [
        ...subscriberCounts.map((n): Case => ({ name: tidingsName(n), role: "tidings", run: () => tidingsRun(tidings, n, plan, notes) })),
        ...subscriberCounts.map((n): Case => ({ name: jetStreamName(n), role: "peer", run: () => jetStreamRun(n, plan, notes) })),
        { name: notifyName, role: "limit", run: () => notifyRun(notifyDb!, plan, notes) },
      ];
      const results = await runCases(ctx, cases);
      return {
        id: "latency",
        title: "Publish → subscriber latency",
        cases: results,
        goals: goalsOf(results),
        notes: [
          `${ratePerSecond.toLocaleString("en-US")} events/s from one publisher, each event sent at its own millisecond (open loop, at most ${maxInFlight} outstanding, so a server that falls behind shows it as latency); ${plan.warm} warm-up events, then ${plan.counted.toLocaleString("en-US")} measured per run. Latency runs from just before the publish call to receipt in the subscriber, on one clock (this process); p50/p99/max are over every (measured event, subscriber) delivery.`,
          `A delivery still missing ${plan.drainMs} ms after the last publish is counted in "missed" and enters the percentiles as its age at that moment (a lower bound), so a stalled run is not flattered by leaving its slowest deliveries out. A publisher that falls behind stops at 1.25× the planned time; publish/s shows the rate it achieved.`,
          `Tidings: unary Publish over gRPC on one HTTP/2 connection, each request encoded when it is sent, through bench/lib/lean-clients.ts rather than the SDK (the SDK's client spends ~0.6 ms of CPU per call in this process, CPU the server then lacks on 2 cores). Each subscriber is its own Subscribe stream (gRPC, pattern memory.created, payload as JSON), all on a second HTTP/2 connection whose receive window is 16 MiB, as a gRPC client grows it (grpc-go; Node's default of 64 KiB for the whole connection held the 100 streams back on flow control), read by lean-clients.ts too: it splits the envelopes and reads only the attributes it needs off the wire (with the SDK's client, 100 subscribers cost the bench process more CPU than the server). Measuring starts only after every subscriber got its first heartbeat. One server for the scenario, warmed up with ${serverWarmupEvents(ctx.limits).toLocaleString("en-US")} events (at the same rate) to 5 subscribers before the first case.`,
          "JetStream: js.publish (waits for the stream's ack) on one connection; each subscriber is a durable pull consumer (consume(), ack policy none, deliver new) of a file-storage stream, all on a second connection: the same fan-out as Tidings, each consumer with its own cursor. A probe message that every consumer received opens the measurement. The stream is created per run and deleted after it.",
          "Durability differs: a Tidings publish returns (and is delivered) after a PostgreSQL commit that fsyncs (synchronous_commit on); JetStream's file store acks once the message is written to the OS and fsyncs on its sync_interval (2 min by default).",
          `PostgreSQL: one statement per event (INSERT … RETURNING with pg_notify, one transaction) from a pool of ${pgPublisherConnections} connections; one LISTEN connection SELECTs the notified rows (those notified while a SELECT runs are read by the next one). One listener only: the floor that Tidings' own delivery sits on.`,
          "bench CPU % is this process (publisher and every subscriber), server CPU % the Tidings or nats-server process, in % of one core, over the publishing and drain time; server CPU µs/event is that server's CPU time per published event, fan-out included. The machine has 2 cores shared by the bench, the servers, PostgreSQL and whatever else runs; a server's low CPU % next to high latency means it waited for a core (or for PostgreSQL). nats-server and PostgreSQL are the machine's shared instances: other work on them shows in these numbers too.",
          "publish ack p50 ms is how long the publish call took to answer (Tidings: committed; JetStream: stored; PostgreSQL: committed); the delivery latency minus it is roughly what the delivery path adds.",
          ...notes,
        ],
      };
    } finally {
      try {
        await server?.stop();
      } finally {
        await tidingsDb.drop();
        await notifyDb?.drop();
      }
    }
  },
};

function goalsOf(results: readonly CaseResult[]): GoalResult[] {
  const goals: GoalResult[] = [];
  for (const n of subscriberCounts) {
    goals.push(atMostGoal(`Tidings publish→subscriber p50, ${plural(n, "subscriber")}`, medianOf(results, tidingsName(n), "p50 ms"), 2, "ms"));
  }
  for (const n of subscriberCounts) {
    // The target is JetStream's own p99 in the same bench run, at the same rate and fan-out.
    goals.push(atMostGoal(`Tidings p99 ≤ JetStream p99 (target = JetStream's), ${plural(n, "subscriber")}`, medianOf(results, tidingsName(n), "p99 ms"), medianOf(results, jetStreamName(n), "p99 ms"), "ms"));
  }
  return goals;
}
