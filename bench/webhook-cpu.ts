/**
 * Where the CPU of a webhook delivery goes, process by process: npm run bench:webhook-cpu.
 *
 * The webhook throughput case of `npm run bench` (a backlog of events, each to every endpoint,
 * handed over with PublishBatch of 1,000, received by the bench's receiver), on its own, with
 * the CPU time each process spent on it divided by the deliveries: the Tidings server,
 * PostgreSQL (every postgres process: the server's backends and its writers), the receiver and
 * this process (the producer). On a machine whose cores all of them share, throughput is the
 * cores divided by the sum, so this says which part a change has to shrink; deliveries/s alone
 * moves by ±10% within minutes as the machine does.
 *
 * With --against DIR, runs alternate between this checkout's server and DIR's (a second checkout
 * whose node_modules exist, e.g. a symlink to this one's), each on a database of its own, which
 * goes first alternating too; the summary gives the medians of both and the median of each
 * back-to-back pair's ratios, with their range: the alternated A/B that the rounds in
 * docs/PERFORMANCE.md measure changes with.
 *
 *   npm run bench:webhook-cpu [-- --events 20000 --endpoints 1 --runs 4 --against ../base]
 *
 * BENCH_NODE_FLAGS adds flags to every server (as in npm run bench).
 */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { createWebhookClient } from "../sdk/index.js";
import { createScratchDatabase } from "./lib/database.js";
import { grpcCaller } from "./lib/lean-clients.js";
import { cpuSnapshot, cpuSpent } from "./lib/process-cpu.js";
import { median } from "./lib/stats.js";
import { startTidings } from "./lib/tidings-process.js";
import { startWebhookReceiver, type WebhookReceiverProcess } from "./lib/webhook-receiver-process.js";
import { publishToTidings, TIDINGS_FLAGS } from "./scenarios/webhooks.js";

const { values } = parseArgs({ options: { events: { type: "string" }, endpoints: { type: "string" }, runs: { type: "string" }, against: { type: "string" } } });
const events = Number(values.events ?? 20_000);
const endpoints = Number(values.endpoints ?? 1);
const runs = Number(values.runs ?? 4);
for (const [name, value, min, max] of [["events", events, 1_000, 1_000_000], ["endpoints", endpoints, 1, 10], ["runs", runs, 1, 50]] as const) {
  if (!Number.isInteger(value) || value < min || value > max) throw new Error(`--${name} must be an integer from ${min} to ${max}`);
}
const against = values.against === undefined ? undefined : resolve(values.against);
if (against !== undefined && !existsSync(join(against, "server", "main.ts"))) throw new Error(`--against ${against}: not a Tidings checkout (no server/main.ts)`);
if (against !== undefined && !existsSync(join(against, "node_modules"))) throw new Error(`--against ${against}: no node_modules there (a symlink to this checkout's will do)`);

/** The bench's warm-up share: every run starts a new server, whose first deliveries compile and connect. */
const warmEvents = Math.min(2_000, Math.ceil(events / 10));
const attributes = { tenant: "bench" };
const log = (msg: string) => process.stdout.write(`${msg}\n`);

/** Read and write system calls (its sockets', mostly) and preemptions of a process so far. */
function activityOf(pid: number): { reads: number; writes: number; preempted: number } {
  const io = readFileSync(`/proc/${pid}/io`, "utf8");
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (re: RegExp, text: string) => Number(re.exec(text)?.[1] ?? Number.NaN);
  return {
    reads: field(/^syscr:\s+(\d+)/m, io),
    writes: field(/^syscw:\s+(\d+)/m, io),
    preempted: field(/^nonvoluntary_ctxt_switches:\s+(\d+)/m, status),
  };
}

interface RunResult {
  variant: string;
  perSecond: number;
  /** CPU µs per delivery. */
  server: number;
  postgres: number;
  receiver: number;
  producer: number;
  /** Per delivery, of the server. */
  syscalls: number;
  preempted: number;
}

async function measure(variant: string, root: string | undefined, receiver: WebhookReceiverProcess, run: number): Promise<RunResult> {
  const db = await createScratchDatabase("webhook_cpu");
  try {
    const server = await startTidings(db.url, TIDINGS_FLAGS, { root });
    const publishBatch = grpcCaller(server.url, "/tidings.v1.EventService/PublishBatch", 1);
    try {
      const hooks = createWebhookClient({ baseUrl: server.url, transport: "grpc" });
      for (let e = 0; e < endpoints; e++) await hooks.createWebhook({ webhook: { url: receiver.urls[e]!, patterns: ["memory.created"], attributes } });
      const handOver = (token: string, count: number) => publishToTidings(publishBatch, token, count, attributes);
      const deliveries = events * endpoints;
      const capMs = 30_000 + deliveries; // about a thousand deliveries a second at the slowest, and then some
      const warmToken = `c${run}w${Math.random().toString(36).slice(2, 7)}`;
      await receiver.reset(warmToken);
      await handOver(warmToken, warmEvents);
      await receiver.waitFor(warmEvents * endpoints, capMs);

      const token = `c${run}m${Math.random().toString(36).slice(2, 7)}`;
      await receiver.reset(token);
      const cpuBefore = cpuSnapshot();
      const ownBefore = process.cpuUsage();
      const serverBefore = activityOf(server.pid);
      const started = process.hrtime.bigint();
      await handOver(token, events);
      const status = await receiver.waitFor(deliveries, capMs);
      const cpuAfter = cpuSnapshot();
      const own = process.cpuUsage(ownBefore);
      const serverAfter = activityOf(server.pid);
      if (status.duplicates > 0) log(`    (${status.duplicates} duplicate deliveries)`);
      const spent = (pid: number) => cpuSpent(cpuBefore, cpuAfter, pid);
      const perDelivery = (seconds: number) => (seconds * 1e6) / deliveries;
      return {
        variant,
        perSecond: deliveries / (Number(status.lastNs - started) / 1e9),
        server: perDelivery(spent(server.pid)),
        postgres: perDelivery(cpuAfter.postgres - cpuBefore.postgres),
        receiver: perDelivery(spent(receiver.pid)),
        producer: perDelivery((own.user + own.system) / 1e6),
        syscalls: (serverAfter.reads + serverAfter.writes - serverBefore.reads - serverBefore.writes) / deliveries,
        preempted: (serverAfter.preempted - serverBefore.preempted) / deliveries,
      };
    } finally {
      await publishBatch.close();
      await server.stop();
    }
  } finally {
    await db.drop();
  }
}

const line = (r: RunResult) =>
  `${Math.round(r.perSecond).toLocaleString("en-US").padStart(7)}/s; CPU µs a delivery: server ${r.server.toFixed(0).padStart(4)}, PostgreSQL ${r.postgres.toFixed(0).padStart(3)}, ` +
  `receiver ${r.receiver.toFixed(0).padStart(3)}, producer ${r.producer.toFixed(0).padStart(3)}, all ${(r.server + r.postgres + r.receiver + r.producer).toFixed(0).padStart(4)} ` +
  `(${(((r.server + r.postgres + r.receiver + r.producer) * r.perSecond) / 1e6).toFixed(2)} cores busy); ` +
  `server syscalls ${r.syscalls.toFixed(2)}, preempted ${r.preempted.toFixed(3)} a delivery`;

const variants: Array<{ name: string; root: string | undefined }> = [{ name: "this", root: undefined }];
if (against !== undefined) variants.push({ name: "against", root: against });
log(`${events.toLocaleString("en-US")} events to ${endpoints} endpoint(s), ${runs} run(s)${against ? ` of each, alternating with ${against}` : ""}`);
const receiver = await startWebhookReceiver(endpoints);
const results: RunResult[] = [];
try {
  for (let run = 0; run < runs; run++) {
    // Alternate which goes first, so that a machine speeding up or slowing down favours neither.
    const order = run % 2 === 0 ? variants : [...variants].reverse();
    for (const v of order) {
      const r = await measure(v.name, v.root, receiver, run);
      results.push(r);
      log(`  run ${run + 1}/${runs} ${v.name.padEnd(7)} ${line(r)}`);
    }
  }
} finally {
  await receiver.stop();
}

const keys = ["perSecond", "server", "postgres", "receiver", "producer"] as const;
const medians = variants.map((v) => {
  const mine = results.filter((r) => r.variant === v.name);
  const m = Object.fromEntries(keys.map((k) => [k, median(mine.map((r) => r[k]))])) as Record<(typeof keys)[number], number>;
  return { name: v.name, ...m, syscalls: median(mine.map((r) => r.syscalls)), preempted: median(mine.map((r) => r.preempted)) };
});
log("medians:");
for (const m of medians) log(`  ${m.name.padEnd(7)} ${line({ variant: m.name, ...m })}`);
if (variants.length === 2) {
  // Each run's pair ran back to back: the median of the pairs' ratios is less moved by the
  // machine's drift over the whole series than the ratio of the medians.
  const pairs = Array.from({ length: runs }, (_, run) => {
    const pair = [results[2 * run]!, results[2 * run + 1]!];
    return { mine: pair.find((r) => r.variant === "this")!, theirs: pair.find((r) => r.variant === "against")! };
  });
  const ratio = (k: "perSecond" | "server" | "postgres") => {
    const each = pairs.map(({ mine, theirs }) => mine[k] / theirs[k]);
    return `${median(each).toFixed(3)} (${Math.min(...each).toFixed(2)}–${Math.max(...each).toFixed(2)})`;
  };
  log(`this / against, median of the ${runs} pairs (range): deliveries/s ${ratio("perSecond")}, server CPU ${ratio("server")}, PostgreSQL CPU ${ratio("postgres")}`);
}
