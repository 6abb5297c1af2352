import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { within } from "./limits.js";
import { rssMbOf } from "./tidings-process.js";

/** The JSON body every sender POSTs: the Standard Webhooks shape Tidings sends for one event. */
export interface WebhookMessage {
  id: string;
  type: string;
  timestamp: string;
  source: string;
  attributes: Record<string, string>;
  sequence: string;
  /** MemoryCreated's fields; the send time goes in its free-form `data` Struct. */
  data: { memory_id: string; tier: string; data?: { sent_ns: string } };
}

/** What a queue peer's job carries: where to POST, and what. */
export interface WebhookJob {
  url: string;
  message: WebhookMessage;
}

/**
 * The i-th message of a measurement: `memory_id` starts with the token (the receiver counts by
 * it); `data.sent_ns` is process.hrtime.bigint() when it was handed over, for latency.
 */
export function webhookMessage(token: string, i: number, attributes: Record<string, string>, sentNs?: bigint): WebhookMessage {
  return {
    id: `evt_${token}_${i}`,
    type: "memory.created",
    timestamp: new Date().toISOString(),
    source: "bench",
    attributes,
    sequence: String(i + 1),
    data: sentNs === undefined ? { memory_id: `${token}-${i}`, tier: "hot" } : { memory_id: `${token}-${i}`, tier: "hot", data: { sent_ns: sentNs.toString() } },
  };
}

/** graphile-worker's options, as in its performance docs (worker.graphile.org/docs/performance). */
export interface GraphileWorkerSettings {
  concurrency: number;
  maxPoolSize: number;
  localQueueSize: number;
  completeJobBatchDelay: number;
  failJobBatchDelay: number;
  pollIntervalMs: number;
}

/** pg-boss's worker and queue options. */
export interface PgBossSettings {
  queue: string;
  batchSize: number;
  localConcurrency: number;
  pollingIntervalSeconds: number;
  burstWhenBatchFull: boolean;
  useListenNotify: boolean;
  notify: boolean;
  poolSize: number;
}

export interface PeerConfig {
  kind: "graphile-worker" | "pg-boss" | "undici";
  /** whsec_ secret the requests are signed with. */
  secret: string;
  /** Keep-alive connections of the undici Agent, per origin. */
  connections: number;
  graphileWorker?: GraphileWorkerSettings;
  pgBoss?: PgBossSettings;
}

export type PeerRequest =
  | { op: "start"; id: number; databaseUrl: string }
  | { op: "stop-worker"; id: number }
  | { op: "blast"; id: number; token: string; events: number; urls: string[]; attributes: Record<string, string>; concurrency: number; timeoutMs: number }
  | { op: "stop"; id: number };

export type PeerReply =
  | { op: "ready"; id: 0 }
  | { op: "started"; id: number }
  | { op: "worker-stopped"; id: number; failures: number }
  | { op: "blasted"; id: number; startNs: string; sent: number; errors: number }
  | { op: "error"; id: number; error: string }
  | { op: "stopped"; id: number; failures: number };

/**
 * A peer sender's process, started once and reused: each case starts a worker on its own
 * scratch database (startWorker) and stops it after (stopWorker).
 */
export interface WebhookPeerProcess {
  pid: number;
  rssMb(): Promise<number>;
  /** Starts a worker (and a new undici Agent) on the database, migrating its schema. */
  startWorker(databaseUrl: string): Promise<void>;
  /** Stops the worker and its Agent; resolves with how many POSTs failed meanwhile. */
  stopWorker(): Promise<{ failures: number }>;
  /** undici only: POSTs `events` × `urls` messages; resolves with when it started (hrtime ns). */
  blast(r: Omit<Extract<PeerRequest, { op: "blast" }>, "op" | "id">): Promise<{ startNs: bigint; sent: number; errors: number }>;
  /** Stops the worker and ends the process; resolves with how many POSTs failed. */
  stop(): Promise<{ failures: number }>;
}

const childScript = fileURLToPath(new URL("./webhook-peer-child.ts", import.meta.url));

/** A peer sender in its own process; resolves once it is ready for startWorker / blast. */
export async function startWebhookPeer(config: PeerConfig): Promise<WebhookPeerProcess> {
  const child: ChildProcess = fork(childScript, [], {
    execArgv: ["--import", "tsx"],
    env: { ...process.env, BENCH_PEER_CONFIG: JSON.stringify(config) },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  let nextId = 1;
  const pending = new Map<number, (reply: PeerReply) => void>();
  let exited = false;
  const ready = new Promise<void>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the ${config.kind} process exited with ${code} before it was ready`)));
    child.on("message", (reply: PeerReply) => {
      if (reply.op === "ready") resolve();
      else pending.get(reply.id)?.(reply);
    });
  });
  child.once("exit", () => {
    exited = true;
    for (const resolve of pending.values()) resolve({ op: "error", id: -1, error: `the ${config.kind} process exited` });
  });
  try {
    await within(60_000, `the ${config.kind} process to start`, ready);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }

  function ask(request: PeerRequest): Promise<PeerReply> {
    if (exited) return Promise.resolve({ op: "error", id: request.id, error: `the ${config.kind} process has exited` });
    return new Promise((resolve) => {
      pending.set(request.id, (reply) => {
        pending.delete(request.id);
        resolve(reply);
      });
      child.send(request);
    });
  }

  return {
    pid: child.pid!,
    rssMb: () => rssMbOf(child.pid!),
    async startWorker(databaseUrl) {
      const reply = await within(60_000, `the ${config.kind} worker to start`, ask({ op: "start", id: nextId++, databaseUrl }));
      if (reply.op !== "started") throw new Error(reply.op === "error" ? reply.error : `the ${config.kind} process answered ${reply.op}`);
    },
    async stopWorker() {
      const reply = await within(30_000, `the ${config.kind} worker to stop`, ask({ op: "stop-worker", id: nextId++ }));
      if (reply.op !== "worker-stopped") throw new Error(reply.op === "error" ? reply.error : `the ${config.kind} process answered ${reply.op}`);
      return { failures: reply.failures };
    },
    async blast(r) {
      const reply = await within(r.timeoutMs + 10_000, `the ${config.kind} blast`, ask({ op: "blast", id: nextId++, ...r }));
      if (reply.op !== "blasted") throw new Error(reply.op === "error" ? reply.error : `the ${config.kind} process answered ${reply.op}`);
      return { startNs: BigInt(reply.startNs), sent: reply.sent, errors: reply.errors };
    },
    async stop() {
      if (exited) return { failures: Number.NaN };
      const gone = new Promise((r) => child.once("exit", r));
      const reply = within(15_000, `the ${config.kind} process to stop`, ask({ op: "stop", id: nextId++ })).catch(() => undefined);
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      const r = await reply;
      await gone;
      clearTimeout(timer);
      return { failures: r?.op === "stopped" ? r.failures : Number.NaN };
    },
  };
}
