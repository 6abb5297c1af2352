import type http from "node:http";
import type http2 from "node:http2";
import type { Kysely } from "kysely";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Logger } from "../logging/logger.js";
import type { Database } from "../storage/schema.js";
import { deliveryStatus } from "../storage/schema.js";
import { countDeliveries } from "../webhooks/delivery-counts.js";
import { requestPath } from "../transport/request-path.js";

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/** What the metrics read when they are scraped, rather than count as things happen. */
export interface MetricSources {
  db: Kysely<Database>;
  /** Subscribe streams open on this node. */
  activeStreams(): number;
  /** How far behind the log's head each open stream's cursor is, in events. */
  streamLags(): Iterable<number>;
  /** The database pool: connections open, idle, and callers waiting for one (PostgreSQL only). */
  pool(): { total: number; idle: number; waiting: number } | undefined;
}

/**
 * The server's Prometheus metrics, in a registry of its own (no global state): counters and
 * histograms the code records into as things happen, and gauges read at scrape time. Node's
 * process metrics (CPU, memory, event-loop lag, GC) come with them.
 */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly published: Counter<"type">;
  readonly rejected: Counter<"method" | "code">;
  readonly rejectedEvents: Counter<"type" | "code">;
  readonly publishSeconds: Histogram<"method">;
  readonly deliveries: Counter<"outcome">;
  readonly attemptSeconds: Histogram<"outcome">;
  readonly deliveryLatency: Histogram;
  readonly leaseTakeovers: Counter;
  readonly authFailures: Counter<"reason">;

  constructor(sources: MetricSources, logger: Logger) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "tidings_" });
    this.published = new Counter({ name: "tidings_events_published_total", help: "Events committed to the log, by type", labelNames: ["type"], registers });
    this.rejected = new Counter({ name: "tidings_publish_rejected_total", help: "Publish calls refused, by method and Connect code", labelNames: ["method", "code"], registers });
    this.rejectedEvents = new Counter({
      name: "tidings_events_rejected_total",
      help: "Events refused by Publish and PublishBatch (every entry of a refused batch), by type (unknown for a type the catalog does not know) and Connect code",
      labelNames: ["type", "code"],
      registers,
    });
    this.publishSeconds = new Histogram({
      name: "tidings_publish_duration_seconds",
      help: "Publish calls from the request to the committed answer, by method",
      labelNames: ["method"],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.deliveries = new Counter({
      name: "tidings_webhook_attempts_total",
      help: "Webhook delivery attempts finished on this node, by outcome: success, failure (retried), dead_letter",
      labelNames: ["outcome"],
      registers,
    });
    this.attemptSeconds = new Histogram({
      name: "tidings_webhook_attempt_duration_seconds",
      help: "Webhook requests from sending to the answer (or the timeout), by outcome",
      labelNames: ["outcome"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.deliveryLatency = new Histogram({
      name: "tidings_webhook_delivery_latency_seconds",
      help: "Succeeded deliveries, from the delivery being created (its event routed to the endpoint, or a replay) to the success being recorded, retries included",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36_000, 86_400],
      registers,
    });
    this.leaseTakeovers = new Counter({ name: "tidings_webhook_lease_takeovers_total", help: "Deliveries this node took over after another node's lease expired mid-attempt", registers });
    this.authFailures = new Counter({ name: "tidings_auth_failures_total", help: "Calls refused for their API key (unauthenticated or permission_denied), by reason", labelNames: ["reason"], registers });
    new Gauge({
      name: "tidings_streams_active",
      help: "Subscribe streams open on this node",
      registers,
      collect() {
        this.set(sources.activeStreams());
      },
    });
    new Gauge({
      name: "tidings_stream_lag_events",
      help: "Events between the log's head and an open stream's cursor: the largest, and the sum over streams",
      labelNames: ["of"],
      registers,
      collect() {
        let max = 0;
        let sum = 0;
        for (const lag of sources.streamLags()) {
          max = Math.max(max, lag);
          sum += lag;
        }
        this.set({ of: "max" }, max);
        this.set({ of: "sum" }, sum);
      },
    });
    // Read from the database at scrape time: shared by every node, so any node's scrape tells.
    new Gauge({
      name: "tidings_webhook_deliveries",
      help: "Webhook deliveries in the database by status: pending (the queue), succeeded, dead (dead letters)",
      labelNames: ["status"],
      registers,
      async collect() {
        try {
          const byStatus = await countDeliveries(sources.db, [deliveryStatus.pending, deliveryStatus.succeeded, deliveryStatus.dead]);
          this.set({ status: "pending" }, byStatus.get(deliveryStatus.pending)!);
          this.set({ status: "succeeded" }, byStatus.get(deliveryStatus.succeeded)!);
          this.set({ status: "dead" }, byStatus.get(deliveryStatus.dead)!);
        } catch (err) {
          logger.warn("could not count deliveries for /metrics", { err });
        }
      },
    });
    new Gauge({
      name: "tidings_db_pool_connections",
      help: "The PostgreSQL pool: connections open (total), idle, and callers waiting for one",
      labelNames: ["state"],
      registers,
      collect() {
        const pool = sources.pool();
        if (!pool) return;
        this.set({ state: "total" }, pool.total);
        this.set({ state: "idle" }, pool.idle);
        this.set({ state: "waiting" }, pool.waiting);
      },
    });
  }

  /**
   * Counts committed events by type: one increment per type and commit, since prom-client
   * builds a label key on every call, and a commit holds up to thousands of events.
   */
  countPublished(events: ReadonlyArray<{ type: string }>): void {
    if (events.length === 0) return;
    const first = events[0]!.type;
    if (events.every((e) => e.type === first)) {
      this.published.inc({ type: first }, events.length);
      return;
    }
    const byType = new Map<string, number>();
    for (const e of events) byType.set(e.type, (byType.get(e.type) ?? 0) + 1);
    for (const [type, n] of byType) this.published.inc({ type }, n);
  }

  /** GET /metrics in the Prometheus text format; false for any other path. */
  route(): (req: NodeRequest, res: NodeResponse) => boolean {
    return (req, res) => {
      if (requestPath(req) !== "/metrics") return false;
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { allow: "GET, HEAD", "content-type": "application/json" });
        res.end(JSON.stringify({ status: "method_not_allowed" }));
        return true;
      }
      void this.registry.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": this.registry.contentType, "cache-control": "no-store" });
          if (req.method === "HEAD") res.end();
          else res.end(text);
        },
        (err: unknown) => {
          res.writeHead(500, { "content-type": "text/plain" });
          res.end(`metrics failed: ${(err as Error).message}\n`);
        },
      );
      return true;
    };
  }
}
