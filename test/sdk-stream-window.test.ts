/**
 * The SDK's gRPC connections take a 16 MiB receive window (sdk/stream-window.ts): Node's
 * default of 64 KiB for the whole connection made a server with many streams to one client
 * wait on flow control. Checked on a real connection to a real server.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectionWindowBytes, WideWindowSessions } from "../sdk/stream-window.js";
import { createTidingsClient } from "../sdk/index.js";
import { memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

describe("the SDK's HTTP/2 receive window", () => {
  it("every connection the session manager opens has the wide window, set once", async () => {
    const sessions = new WideWindowSessions(t.url);
    const call = async () => {
      const stream = await sessions.request("POST", "/tidings.v1.EventService/ListEventTypes", { "content-type": "application/grpc", te: "trailers" }, {});
      const session = stream.session!;
      const closed = new Promise<void>((r) => stream.on("close", () => r()));
      stream.on("data", () => {});
      stream.end(Buffer.from([0, 0, 0, 0, 0])); // one empty message
      await closed;
      return session;
    };
    const first = await call();
    expect(first.state.localWindowSize).toBeGreaterThanOrEqual(connectionWindowBytes - 65_535);
    // The connection is reused, and its window is not set again.
    expect(await call()).toBe(first);
    first.close();
  });

  it("the SDK's gRPC client works through it: many subscriptions on one connection get every event", async () => {
    const client = createTidingsClient({ baseUrl: t.url, transport: "grpc" });
    const streams = 20;
    const events = 50;
    const controllers = Array.from({ length: streams }, () => new AbortController());
    const received = await Promise.all(controllers.map(async (ac, i) => {
      const got: string[] = [];
      const opened = client.subscribe({ patterns: ["memory.created"] }, { signal: ac.signal });
      const it = opened[Symbol.asyncIterator]();
      await it.next(); // the first heartbeat: subscribed
      return { i, it, got };
    }));
    for (let n = 0; n < events; n++) await client.publish({ event: { type: "memory.created", source: "window", payload: { case: "data", value: memoryCreated(`w${n}`).data } } });
    await Promise.all(received.map(async (r) => {
      while (r.got.length < events) {
        const next = await r.it.next();
        if (next.done) break;
        if (next.value.message.case === "event") r.got.push(next.value.message.value.id);
      }
    }));
    controllers.forEach((c) => c.abort());
    for (const r of received) expect(r.got).toHaveLength(events);
  });
});
