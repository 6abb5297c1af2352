/**
 * GET /healthz (alive) and GET /readyz (the database answers and every migration is applied),
 * against a real server and database. Breaking readiness is done to the database itself: a
 * migration row removed, and every connection refused (both on PostgreSQL: PGlite belongs to the
 * server's own process).
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrations } from "../server/storage/migrations/index.js";
import { needsPostgres } from "./helpers/database.js";
import { startTestServer, type TestServer } from "./helpers/test-server.js";

const get = async (url: string, method = "GET") => {
  const res = await fetch(url, { method });
  return { status: res.status, body: method === "HEAD" ? "" : await res.text(), type: res.headers.get("content-type") };
};

describe("health and readiness", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t?.close();
  });

  it("/healthz answers 200 while the process serves; /readyz 200 once the database answers with every migration applied", async () => {
    expect(await get(`${t.url}/healthz`)).toEqual({ status: 200, body: JSON.stringify({ status: "ok" }), type: "application/json" });
    expect(await get(`${t.url}/readyz`)).toEqual({ status: 200, body: JSON.stringify({ status: "ready" }), type: "application/json" });
    expect((await get(`${t.url}/readyz`, "HEAD")).status).toBe(200);
    expect((await get(`${t.url}/readyz?verbose=1`)).status).toBe(200);
    const post = await fetch(`${t.url}/readyz`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });
});

describe.runIf(needsPostgres("readiness when migrations are missing or PostgreSQL refuses connections"))("readiness when migrations are missing or PostgreSQL refuses connections", () => {
  it("/readyz answers 503 naming a migration that is not applied, and 200 again once it is", async () => {
    const t = await startTestServer();
    const db = new pg.Client({ connectionString: t.storage.databaseUrl });
    await db.connect();
    const last = Object.keys(migrations).sort().at(-1)!;
    try {
      const row = (await db.query("SELECT name, timestamp FROM tidings_migrations WHERE name = $1", [last])).rows[0];
      await db.query("DELETE FROM tidings_migrations WHERE name = $1", [last]);
      try {
        const res = await get(`${t.url}/readyz`);
        expect(res.status).toBe(503);
        expect(JSON.parse(res.body)).toEqual({ status: "unavailable", reason: `migrations not applied: ${last}` });
        expect((await get(`${t.url}/healthz`)).status).toBe(200); // alive all the same
      } finally {
        await db.query("INSERT INTO tidings_migrations (name, timestamp) VALUES ($1, $2)", [row.name, row.timestamp]);
      }
      expect((await get(`${t.url}/readyz`)).status).toBe(200);
    } finally {
      await db.end();
      await t.close();
    }
  });

  it("/readyz answers 503 while the database refuses connections, and 200 once it takes them again", async () => {
    const t = await startTestServer({ config: { poolSize: 2 } });
    const admin = new pg.Client({ connectionString: process.env.DATABASE_URL });
    await admin.connect();
    const name = new URL(t.storage.databaseUrl!).pathname.slice(1);
    try {
      await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS false`);
      await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", [name]);
      const res = await get(`${t.url}/readyz`);
      expect(res.status).toBe(503);
      expect(JSON.parse(res.body).reason).toMatch(/^the database is unreachable: /);
      expect((await get(`${t.url}/healthz`)).status).toBe(200);
      await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`);
      let status = 0;
      for (let i = 0; i < 50 && status !== 200; i++) {
        status = (await get(`${t.url}/readyz`)).status;
        if (status !== 200) await new Promise((r) => setTimeout(r, 100));
      }
      expect(status).toBe(200);
    } finally {
      await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`).catch(() => {});
      await admin.end();
      await t.close();
    }
  });
});
