/**
 * The webhook receiver of the webhooks scenario, run as its own process by
 * webhook-receiver-process.ts so that it never shares an event loop with the load generator or
 * with whatever delivers to it. It listens on several loopback ports (one per endpoint), answers
 * 200 at once, and records for each request the body's `memory_id` (to count distinct
 * deliveries per endpoint) and `sent_ns` (the sender's process.hrtime.bigint(): CLOCK_MONOTONIC,
 * one clock for every process on the machine, so arrival − sent is a publish-to-receiver latency).
 *
 * Driven over the IPC channel: "reset" starts a new measurement for a token (memory ids that do not
 * start with "<token>-" are counted as strays), "wait" answers once `count` distinct deliveries have arrived,
 * "latencies" returns the latencies of the current token.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { ReceiverReply, ReceiverRequest } from "./webhook-receiver-process.js";

const ports = Number(process.env.BENCH_RECEIVER_PORTS ?? "1");

let token = "";
let seen = new Set<string>();
let latenciesMs: number[] = [];
let total = 0;
let duplicates = 0;
let strays = 0;
let firstNs = 0n;
let lastNs = 0n;
let waiting: { id: number; count: number } | undefined;

const memoryIdPattern = /"memory_id":"([^"]+)"/;
const sentPattern = /"sent_ns":"(\d+)"/;

function send(reply: ReceiverReply): void {
  process.send?.(reply);
}

function status(id: number, op: "reached" | "status"): ReceiverReply {
  return { op, id, unique: seen.size, total, duplicates, strays, firstNs: firstNs.toString(), lastNs: lastNs.toString() };
}

function onRequest(port: number, req: http.IncomingMessage, res: http.ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const now = process.hrtime.bigint();
    // Answer at once: the receiver must never be what limits a sender.
    res.writeHead(200, { "content-length": "0" });
    res.end();
    const body = chunks.length === 1 ? chunks[0]!.toString("latin1") : Buffer.concat(chunks).toString("latin1");
    const memoryId = memoryIdPattern.exec(body)?.[1];
    if (!memoryId || !token || !memoryId.startsWith(`${token}-`)) {
      strays++;
      return;
    }
    total++;
    const key = `${port}|${memoryId}`;
    if (seen.has(key)) {
      duplicates++;
      return;
    }
    seen.add(key);
    if (firstNs === 0n) firstNs = now;
    lastNs = now;
    const sent = sentPattern.exec(body)?.[1];
    if (sent) latenciesMs.push(Number(now - BigInt(sent)) / 1e6);
    if (waiting && seen.size >= waiting.count) {
      send(status(waiting.id, "reached"));
      waiting = undefined;
    }
  });
}

const servers: http.Server[] = [];
const urls: string[] = [];
for (let i = 0; i < ports; i++) {
  const server = http.createServer({ keepAliveTimeout: 60_000 });
  server.on("request", (req, res) => onRequest(i, req, res));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  servers.push(server);
  urls.push(`http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`);
}

process.on("message", (msg: ReceiverRequest) => {
  switch (msg.op) {
    case "reset":
      token = msg.token;
      seen = new Set();
      latenciesMs = [];
      total = duplicates = strays = 0;
      firstNs = lastNs = 0n;
      waiting = undefined;
      send({ op: "ok", id: msg.id });
      break;
    case "wait":
      if (seen.size >= msg.count) send(status(msg.id, "reached"));
      else waiting = { id: msg.id, count: msg.count };
      break;
    case "status":
      send(status(msg.id, "status"));
      break;
    case "latencies":
      send({ op: "latencies", id: msg.id, ms: latenciesMs });
      break;
    case "stop":
      for (const s of servers) s.closeAllConnections();
      Promise.all(servers.map((s) => new Promise((r) => s.close(r)))).finally(() => process.exit(0));
      break;
  }
});
// The parent going away ends the receiver too: it must never outlive the bench.
process.on("disconnect", () => process.exit(0));
send({ op: "ready", id: 0, urls });
