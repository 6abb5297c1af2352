import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sendRequest } from "../server/webhooks/http-sender.js";

/**
 * The webhook sender against a real loopback server that answers in every awkward way: the
 * hard timeout must hold over the whole attempt, whatever the receiver does, and an answer
 * must be read as far as its excerpt and no further.
 */
describe("sendRequest", () => {
  let server: http.Server;
  let base: string;
  const agent = new Agent({ connections: 4 });
  const open = new Set<net.Socket>();
  const received: Array<{ path: string; body: string; signature: string | undefined }> = [];

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString("utf8")));
      req.on("end", () => {
        received.push({ path: req.url ?? "", body, signature: req.headers["webhook-signature"] as string | undefined });
        const route = new URL(req.url ?? "/", "http://x").pathname;
        switch (route) {
          case "/ok":
            res.writeHead(200, { "content-type": "text/plain" }).end("thanks");
            return;
          case "/big":
            // 64 KB of "é" (two bytes each): the excerpt stops at 1 KB, never mid-character garbage beyond it.
            res.writeHead(200).end("é".repeat(32 * 1024));
            return;
          case "/busy":
            res.writeHead(503, { "retry-after": "7" }).end("come back later");
            return;
          case "/hang":
            return; // never answers
          case "/drip": {
            // Headers at once, then a byte every 100 ms: undici's body timeout (between chunks)
            // never fires, only the attempt's total timeout can end it.
            // The first byte goes with the headers at once, so a loaded machine cannot delay the
            // answer past the attempt's timeout.
            res.writeHead(200);
            res.write(".");
            const timer = setInterval(() => res.write("."), 100);
            res.on("close", () => clearInterval(timer));
            return;
          }
          case "/reset":
            req.socket.resetAndDestroy();
            return;
          default:
            res.writeHead(404).end();
        }
      });
    });
    server.on("connection", (s) => {
      open.add(s);
      s.on("close", () => open.delete(s));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await agent.close();
    for (const s of open) s.destroy();
    await new Promise((r) => server.close(r));
  });

  const request = { headers: { "content-type": "application/json", "webhook-signature": "v1,abc" }, body: '{"hello":"world"}' };

  it("POSTs the body and headers, and reads the answer", async () => {
    const o = await sendRequest(agent, `${base}/ok?token=1`, request, 2_000);
    expect(o).toMatchObject({ statusCode: 200, responseExcerpt: "thanks", error: "", retryAfterMs: undefined });
    expect(received.at(-1)).toEqual({ path: "/ok?token=1", body: '{"hello":"world"}', signature: "v1,abc" });
    expect(o.durationMs).toBeGreaterThanOrEqual(0);
  });

  it("reads at most 1 KB of a long answer", async () => {
    const o = await sendRequest(agent, `${base}/big`, request, 2_000);
    expect(o.statusCode).toBe(200);
    expect(Buffer.byteLength(o.responseExcerpt)).toBeLessThanOrEqual(1024);
    expect(o.responseExcerpt.startsWith("é".repeat(500))).toBe(true);
    // The connection it left is not reused half-read: the next request is answered normally.
    expect((await sendRequest(agent, `${base}/ok`, request, 2_000)).responseExcerpt).toBe("thanks");
  });

  it("reports a refusal with its status, body and Retry-After", async () => {
    const o = await sendRequest(agent, `${base}/busy`, request, 2_000);
    expect(o).toMatchObject({ statusCode: 503, responseExcerpt: "come back later", error: "HTTP 503", retryAfterMs: 7_000 });
  });

  it("times out a receiver that never answers, within the timeout", async () => {
    const started = performance.now();
    const o = await sendRequest(agent, `${base}/hang`, request, 300);
    expect(o).toMatchObject({ statusCode: 0, error: "timed out after 300 ms" });
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it("ends an answer that drips forever at the total timeout, keeping its status", async () => {
    const started = performance.now();
    const o = await sendRequest(agent, `${base}/drip`, request, 500);
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(o.statusCode).toBe(200);
    expect(o.responseExcerpt).toMatch(/^\.+$/);
  });

  it("reports a reset connection and a refused port as errors", async () => {
    const reset = await sendRequest(agent, `${base}/reset`, request, 2_000);
    expect(reset.statusCode).toBe(0);
    expect(reset.error).toMatch(/ECONNRESET|socket|closed/i);

    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const refused = await sendRequest(agent, `http://127.0.0.1:${port}/`, request, 2_000);
    expect(refused.statusCode).toBe(0);
    expect(refused.error).toContain("ECONNREFUSED");
  });

  it("times out requests queued behind busy connections, and never sends them afterwards", async () => {
    const oneConnection = new Agent({ connections: 1 });
    try {
      const before = received.length;
      // The only connection is held by a hanging request; the second waits in the queue.
      const hanging = sendRequest(oneConnection, `${base}/hang`, request, 800);
      const queued = await sendRequest(oneConnection, `${base}/ok?queued=1`, request, 200);
      expect(queued).toMatchObject({ statusCode: 0, error: "timed out after 200 ms" });
      expect((await hanging).error).toBe("timed out after 800 ms");
      // The connection is free again: a new request goes through, the timed-out one never did.
      expect((await sendRequest(oneConnection, `${base}/ok?after=1`, request, 2_000)).statusCode).toBe(200);
      const paths = received.slice(before).map((r) => r.path);
      expect(paths).toContain("/ok?after=1");
      expect(paths).not.toContain("/ok?queued=1");
    } finally {
      await oneConnection.destroy();
    }
  });

  it("reports a URL it cannot send to as an error, not a throw", async () => {
    const o = await sendRequest(agent, "not a url", request, 1_000);
    expect(o.statusCode).toBe(0);
    expect(o.error).toMatch(/Invalid URL/i);
  });
});
