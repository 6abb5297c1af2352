import { type Client } from "@connectrpc/connect";
import { defaultConfig, type ServerConfig } from "../../server/config/config.js";
import { silentLogger } from "../../server/logging/logger.js";
import { type RunningServer, startServer, type StartOptions } from "../../server/app.js";
import { type AdminService, createAdminClient, createTidingsClient, createWebhookClient, type EventService, type TransportKind, type WebhookService } from "../../sdk/index.js";
import { createTestStorage, type TestStorage } from "./database.js";

export interface TestServer {
  server: RunningServer;
  url: string;
  storage: TestStorage;
  client(transport?: TransportKind): Client<typeof EventService>;
  webhooks(): Client<typeof WebhookService>;
  admin(): Client<typeof AdminService>;
  /** Stops the server (the storage stays, so it can be restarted on it). */
  stop(): Promise<void>;
  /** Starts a server again on the same storage. */
  restart(): Promise<void>;
  /** Stops the server and drops its storage. */
  close(): Promise<void>;
}

export interface TestServerOptions {
  config?: Partial<ServerConfig>;
  storage?: TestStorage;
  start?: Partial<StartOptions>;
  /** The API key the clients above send (with `config.auth: "keys"`). */
  token?: string;
}

/** A real server on a loopback port over a fresh database. */
export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const storage = options.storage ?? (await createTestStorage());
  const boot = () =>
    startServer(
      {
        ...defaultConfig,
        port: 0,
        databaseUrl: storage.databaseUrl,
        dataDir: storage.dataDir,
        pollIntervalMs: 200,
        shutdownGraceMs: 500,
        // Test receivers listen on loopback, which webhooks may not reach by default.
        webhookAllowList: ["loopback"],
        dispatcherPollIntervalMs: 50,
        // Most suites test something other than keys (test/auth.test.ts tests them), and the
        // server would otherwise require keys whenever DATABASE_URL is set.
        auth: "open",
        ...options.config,
      },
      { logger: silentLogger, ...options.start },
    );
  let server = await boot();
  const t: TestServer = {
    server,
    url: server.url,
    storage,
    client: (transport) => createTidingsClient({ baseUrl: t.url, transport, token: options.token }),
    webhooks: () => createWebhookClient({ baseUrl: t.url, token: options.token }),
    admin: () => createAdminClient({ baseUrl: t.url, token: options.token }),
    stop: () => t.server.close(),
    async restart() {
      server = await boot();
      t.server = server;
      t.url = server.url;
    },
    async close() {
      await t.server.close();
      if (!options.storage) await storage.drop();
    },
  };
  return t;
}

/** POSTs JSON the way curl does (HTTP/1.1, Connect protocol) and returns status and body. */
export async function postJson(baseUrl: string, path: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${baseUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

/** Calls an EventService method over Connect JSON. */
export function callJson(baseUrl: string, method: string, body: unknown) {
  return postJson(baseUrl, `/tidings.v1.EventService/${method}`, body);
}

/** Polls until `check` returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const memoryCreated = (memoryId: string, extra: Record<string, unknown> = {}) => ({
  type: "memory.created",
  source: "alma/test",
  data: { memory_id: memoryId, ...extra },
});
