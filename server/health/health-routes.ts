import type http from "node:http";
import type http2 from "node:http2";
import { type Kysely, sql } from "kysely";
import type { Logger } from "../logging/logger.js";
import { migrations } from "../storage/migrations/index.js";
import { requestPath } from "../transport/request-path.js";

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

export interface HealthOptions {
  db: Kysely<unknown>;
  logger: Logger;
  /** How long the readiness query may take before the database counts as unreachable. */
  timeoutMs?: number;
}

/**
 * GET /healthz: the process is alive and serving (no dependency is checked, so a slow database
 * never gets a live process restarted). GET /readyz: it can do its work: the database answers,
 * within a timeout, and every migration this build knows is applied. 200 with
 * {"status":"ready"}, or 503 with {"status":"unavailable","reason":…} for a load balancer to
 * route around. Returns false for any other path.
 */
export function healthRoutes(options: HealthOptions) {
  const timeoutMs = options.timeoutMs ?? 2_000;
  const expected = Object.keys(migrations).sort();
  let lastReason = "";

  const readiness = async (): Promise<{ ready: true } | { ready: false; reason: string }> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      const rows = await Promise.race([
        sql<{ name: string }>`SELECT name FROM tidings_migrations`.execute(options.db).then((r) => r.rows),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`the database did not answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      const applied = new Set(rows.map((r) => r.name));
      const missing = expected.filter((name) => !applied.has(name));
      if (missing.length > 0) return { ready: false, reason: `migrations not applied: ${missing.join(", ")}` };
      return { ready: true };
    } catch (err) {
      return { ready: false, reason: `the database is unreachable: ${(err as Error).message}` };
    } finally {
      clearTimeout(timer);
    }
  };

  return (req: NodeRequest, res: NodeResponse): boolean => {
    const path = requestPath(req);
    if (path !== "/healthz" && path !== "/readyz") return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "application/json" });
      res.end(JSON.stringify({ status: "method_not_allowed" }));
      return true;
    }
    if (path === "/healthz") {
      answer(req, res, 200, { status: "ok" });
      return true;
    }
    void readiness().then((r) => {
      if (r.ready) {
        if (lastReason) options.logger.info("ready again");
        lastReason = "";
        answer(req, res, 200, { status: "ready" });
        return;
      }
      // Logged when the reason changes, not on every probe.
      if (r.reason !== lastReason) options.logger.warn("not ready", { reason: r.reason });
      lastReason = r.reason;
      answer(req, res, 503, { status: "unavailable", reason: r.reason });
    });
    return true;
  };
}

function answer(req: NodeRequest, res: NodeResponse, status: number, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), "cache-control": "no-store" });
  if (req.method === "HEAD") res.end();
  else res.end(text);
}
