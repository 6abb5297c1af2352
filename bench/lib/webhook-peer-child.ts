/**
 * A webhook sender that is not Tidings, in its own process (as Tidings' server is), for the
 * webhooks scenario. Three kinds, each POSTing the same signed Standard Webhooks requests with
 * an undici keep-alive Agent:
 *
 * - graphile-worker: a worker whose `deliver` task POSTs `payload.message` to `payload.url`;
 * - pg-boss: a batch worker on the `deliver` queue doing the same for every job of a batch;
 * - undici: no queue at all, the raw limit: on "blast" it POSTs n messages with bounded
 *   concurrency and reports when it started.
 *
 * One process serves many cases: "start" runs a new worker (and a new Agent) on a case's own
 * scratch database, "stop-worker" stops it. Configured by BENCH_PEER_CONFIG (JSON, see
 * PeerConfig); driven over the IPC channel.
 */
import { Agent, request } from "undici";
import { Logger as GraphileLogger, run as runGraphileWorker } from "graphile-worker";
import pg from "pg";
import { PgBoss } from "pg-boss";
import { signWebhook } from "../../server/webhooks/signing.js";
import { type PeerConfig, type PeerReply, type PeerRequest, type WebhookJob, webhookMessage } from "./webhook-peer-process.js";

const config = JSON.parse(process.env.BENCH_PEER_CONFIG ?? "{}") as PeerConfig;
const newAgent = () => new Agent({ connections: config.connections, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 60_000 });
let agent = newAgent();
let failures = 0;

function send(reply: PeerReply): void {
  process.send?.(reply);
}

/** One delivery: the JSON body, signed like Tidings signs it, POSTed; non-2xx throws (a retry). */
async function deliver(job: WebhookJob): Promise<void> {
  const body = JSON.stringify(job.message);
  const headers = {
    ...signWebhook({ id: job.message.id, timestamp: Math.floor(Date.now() / 1000), body, secrets: [config.secret] }),
    "content-type": "application/json",
    "user-agent": `bench-${config.kind}`,
  };
  const res = await request(job.url, { method: "POST", headers, body, dispatcher: agent, headersTimeout: 10_000, bodyTimeout: 10_000 });
  await res.body.dump();
  if (res.statusCode < 200 || res.statusCode >= 300) {
    failures++;
    throw new Error(`HTTP ${res.statusCode}`);
  }
}

/** Starts a worker on `databaseUrl` (migrating its schema); resolves with how to stop it. */
async function startWorker(databaseUrl: string): Promise<() => Promise<void>> {
  if (config.kind === "graphile-worker") {
    const s = config.graphileWorker!;
    const logger = new GraphileLogger(() => (level, message) => {
      if (level === "error") process.stderr.write(`[graphile-worker] ${message}\n`);
    });
    // Our own pool, so that it is surely ended before the case drops the database (a client
    // the database drop terminates must not crash this process, which serves the next case).
    const pool = new pg.Pool({ connectionString: databaseUrl, max: s.maxPoolSize });
    const onError = (err: Error) => process.stderr.write(`[graphile-worker] a client of ${new URL(databaseUrl).pathname.slice(1)}: ${err.message}\n`);
    pool.on("error", onError);
    pool.on("connect", (client) => client.on("error", onError));
    const runner = await runGraphileWorker({
      pgPool: pool,
      concurrency: s.concurrency,
      maxPoolSize: s.maxPoolSize,
      pollInterval: s.pollIntervalMs,
      noHandleSignals: true,
      logger,
      preset: { worker: { localQueue: { size: s.localQueueSize }, completeJobBatchDelay: s.completeJobBatchDelay, failJobBatchDelay: s.failJobBatchDelay } },
      taskList: { deliver: async (payload) => deliver(payload as WebhookJob) },
    });
    return async () => {
      await runner.stop();
      await runner.promise.catch(() => undefined);
      await pool.end();
    };
  }
  if (config.kind === "pg-boss") {
    const s = config.pgBoss!;
    const boss = new PgBoss({ connectionString: databaseUrl, useListenNotify: s.useListenNotify, max: s.poolSize });
    boss.on("error", (err: Error) => process.stderr.write(`[pg-boss] ${err.message}\n`));
    await boss.start();
    await boss.createQueue(s.queue, { notify: s.notify });
    await boss.work<WebhookJob>(s.queue, {
      batchSize: s.batchSize,
      localConcurrency: s.localConcurrency,
      pollingIntervalSeconds: s.pollingIntervalSeconds,
      burstWhenBatchFull: s.burstWhenBatchFull,
    }, async (jobs) => {
      await Promise.all(jobs.map((job) => deliver(job.data)));
    });
    // Resolves once its pool is closed, before the case drops the database.
    return () => boss.stop({ graceful: true, close: true, timeout: 5_000 });
  }
  return async () => {};
}

/** The raw limit: `events` messages, each to every URL, at most `concurrency` in flight. */
async function blast(r: Extract<PeerRequest, { op: "blast" }>): Promise<void> {
  const jobs: WebhookJob[] = [];
  for (let i = 0; i < r.events; i++) {
    const message = webhookMessage(r.token, i, r.attributes);
    for (const url of r.urls) jobs.push({ url, message });
  }
  const startNs = process.hrtime.bigint();
  let next = 0;
  let errors = 0;
  const deadline = Date.now() + r.timeoutMs;
  const lane = async () => {
    while (next < jobs.length && Date.now() < deadline) {
      const job = jobs[next++]!;
      try {
        await deliver(job);
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(r.concurrency, jobs.length) }, lane));
  send({ op: "blasted", id: r.id, startNs: startNs.toString(), sent: next, errors });
}

let stopWorker: (() => Promise<void>) | undefined;

/** Stops the running worker and its Agent; resolves with the failed POSTs since it started. */
async function stopCurrent(): Promise<number> {
  const stop = stopWorker;
  stopWorker = undefined;
  await stop?.().catch((err) => process.stderr.write(`[${config.kind}] stopping: ${(err as Error).message}\n`));
  await agent.close().catch(() => undefined);
  agent = newAgent();
  const failed = failures;
  failures = 0;
  return failed;
}

process.on("message", (msg: PeerRequest) => {
  const fail = (err: unknown) => send({ op: "error", id: msg.id, error: String((err as Error)?.message ?? err) });
  switch (msg.op) {
    case "start":
      stopCurrent()
        .then(() => startWorker(msg.databaseUrl))
        .then((stop) => {
          stopWorker = stop;
          send({ op: "started", id: msg.id });
        }, fail);
      break;
    case "stop-worker":
      stopCurrent().then((failed) => send({ op: "worker-stopped", id: msg.id, failures: failed }), fail);
      break;
    case "blast":
      blast(msg).catch(fail);
      break;
    case "stop":
      stopCurrent()
        .catch(() => failures)
        .then((failed) => {
          send({ op: "stopped", id: msg.id, failures: failed });
          process.exit(0);
        });
      break;
  }
});
process.on("disconnect", () => process.exit(0));
send({ op: "ready", id: 0 });
