import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { PayloadFormat, StartPosition } from "../sdk/index.js";
import { collect, openConnectJsonStream } from "./helpers/stream.js";
import { callJson, eventually, memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

const publish = (t: TestServer, event: object) => callJson(t.url, "Publish", { event }).then((r) => {
  if (r.status !== 200) throw new Error(JSON.stringify(r.body));
  return BigInt(r.body.sequence);
});

async function publishMany(t: TestServer, n: number, run: string, batch = 100, content?: string): Promise<bigint[]> {
  const seqs: bigint[] = [];
  for (let i = 0; i < n; i += batch) {
    const entries = Array.from({ length: Math.min(batch, n - i) }, (_, j) => ({ event: { ...memoryCreated(`${run}-${i + j}`, content ? { content } : {}), attributes: { run } } }));
    const res = await callJson(t.url, "PublishBatch", { entries });
    seqs.push(...res.body.results.map((r: { sequence: string }) => BigInt(r.sequence)));
  }
  return seqs;
}

describe("subscribe", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ config: { subscriberBufferEvents: 50 } });
  });
  afterAll(() => t.close());

  it("delivers only events matching patterns, attributes and the CEL filter, in order", async () => {
    const sub = await collect(t.client(), {
      patterns: ["memory.*", "gap.**"],
      attributes: { project: "p1" },
      filter: 'data.tier == "hot" || type.startsWith("gap.")',
    });
    await publish(t, { ...memoryCreated("a", { tier: "hot" }), attributes: { project: "p1" } });
    await publish(t, { ...memoryCreated("b", { tier: "cold" }), attributes: { project: "p1" } }); // filter
    await publish(t, { ...memoryCreated("c", { tier: "hot" }), attributes: { project: "p2" } }); // attribute
    await publish(t, { type: "dream.started", source: "m", data: { session_id: "s", trigger: "t" }, attributes: { project: "p1" } }); // pattern
    await publish(t, { type: "gap.detected", source: "m", data: { gap_id: "g", query: "q" }, attributes: { project: "p1" } });
    await publish(t, { ...memoryCreated("d", { tier: "hot" }), attributes: { project: "p1" } });
    await sub.waitFor(3);
    await sub.close();
    expect(sub.events.map((e) => e.type)).toEqual(["memory.created", "gap.detected", "memory.created"]);
    const seqs = sub.events.map((e) => e.sequence);
    expect([...seqs].sort((a, b) => (a < b ? -1 : 1))).toEqual(seqs);
  });

  it("starts at latest, earliest, after a sequence, or at a time", async () => {
    const run = `start-${Date.now()}`;
    const old = await publishMany(t, 5, run);
    const time = new Date();
    await new Promise((r) => setTimeout(r, 20));
    const later = await publishMany(t, 3, run);

    const fromEarliest = await collect(t.client(), { attributes: { run }, start: { case: "position", value: StartPosition.EARLIEST } });
    await fromEarliest.waitFor(8);
    expect(fromEarliest.events.map((e) => e.sequence)).toEqual([...old, ...later]);

    const afterSeq = await collect(t.client(), { attributes: { run }, start: { case: "afterSequence", value: old[2]! } });
    await afterSeq.waitFor(5);
    expect(afterSeq.events.map((e) => e.sequence)).toEqual([...old.slice(3), ...later]);

    const atTime = await collect(t.client(), { attributes: { run }, start: { case: "startTime", value: { $typeName: "google.protobuf.Timestamp", seconds: BigInt(Math.floor(time.getTime() / 1000)), nanos: (time.getTime() % 1000) * 1e6 } } });
    await atTime.waitFor(3);
    expect(atTime.events.map((e) => e.sequence)).toEqual(later);

    const latest = await collect(t.client(), { attributes: { run } });
    const fresh = await publishMany(t, 2, run);
    await latest.waitFor(2);
    expect(latest.events.map((e) => e.sequence)).toEqual(fresh);

    for (const s of [fromEarliest, afterSeq, atTime, latest]) await s.close();
    // Nothing was delivered twice to any of them.
    expect(fromEarliest.events).toHaveLength(10);
    expect(afterSeq.events).toHaveLength(7);
  });

  it("hands over from catch-up to live with no gap and no duplicate while publishers keep going", async () => {
    const run = `handover-${Date.now()}`;
    const before = await publishMany(t, 1200, run);
    const publishing = publishMany(t, 800, run, 20); // keeps publishing during catch-up
    const sub = await collect(t.client(), { attributes: { run }, start: { case: "position", value: StartPosition.EARLIEST } });
    const during = await publishing;
    await sub.waitFor(2000, 30_000);
    await new Promise((r) => setTimeout(r, 200));
    await sub.close();
    expect(sub.events.map((e) => e.sequence)).toEqual([...before, ...during]);
  });

  it("sends heartbeats that carry the cursor past events the filter skipped", async () => {
    const sub = await collect(t.client(), { patterns: ["dream.failed"], heartbeatInterval: create(DurationSchema, { seconds: 1n }) });
    const last = (await publishMany(t, 5, `hb-${Date.now()}`)).at(-1)!;
    await eventually(() => (sub.heartbeats.some((c) => c >= last) ? true : undefined), 5000, "a heartbeat at the head");
    await sub.close();
    expect(sub.events).toHaveLength(0);
  });

  it("sends a heartbeat once a heartbeat interval passes without an event, and not while events flow", async () => {
    const run = `hb-gap-${Date.now()}`;
    const abort = new AbortController();
    const seen: Array<{ kind: string | undefined; at: number }> = [];
    const reading = (async () => {
      try {
        for await (const res of t.client().subscribe({ attributes: { run }, heartbeatInterval: create(DurationSchema, { seconds: 1n }) }, { signal: abort.signal })) {
          seen.push({ kind: res.message.case, at: Date.now() });
        }
      } catch (err) {
        if (!abort.signal.aborted) throw err;
      }
    })();
    try {
      await eventually(() => (seen.length > 0 ? true : undefined), 5000, "the first heartbeat");
      // An event every 300 ms for 2.4 s: never a second without one.
      for (let i = 0; i < 8; i++) {
        expect((await callJson(t.url, "Publish", { event: { ...memoryCreated(`${run}-${i}`), attributes: { run } } })).status).toBe(200);
        await new Promise((r) => setTimeout(r, 300));
      }
      await eventually(() => (seen.filter((s) => s.kind === "event").length === 8 ? true : undefined), 5000, "the 8 events");
      const lastEvent = seen.filter((s) => s.kind === "event").at(-1)!.at;
      const firstEvent = seen.find((s) => s.kind === "event")!.at;
      const after = await eventually(() => seen.find((s) => s.kind === "heartbeat" && s.at > lastEvent), 5000, "a heartbeat after the events");
      expect(seen.filter((s) => s.kind === "heartbeat" && s.at >= firstEvent && s.at <= lastEvent)).toEqual([]);
      // A second after the last event, not a second after the heartbeat before the events.
      expect(after.at - lastEvent).toBeGreaterThanOrEqual(900);
    } finally {
      abort.abort();
      await reading;
    }
  });

  it("a subscriber that stops reading never slows publishers or other subscribers, and still gets everything in order", async () => {
    const run = `slow-${Date.now()}`;
    // The slow one reads its first message, then stops reading while ~10 MB of events go by:
    // more than socket buffers hold, so the server's writes block and its buffer (50) overflows.
    const slow = await openConnectJsonStream(t.url, { attributes: { run } });
    const fast = await collect(t.client(), { attributes: { run } });
    try {
      expect((await slow.next()).heartbeat).toBeDefined();
      const fallbacksBefore = t.server.streamStats().fallbacks;

      const started = Date.now();
      const seqs = await publishMany(t, 600, run, 10, "x".repeat(16_000));
      const publishMs = Date.now() - started;
      await fast.waitFor(600);
      expect(fast.events.map((e) => e.sequence)).toEqual(seqs);

      // Now the slow one drains: its blocked write completes, the server finds its buffer
      // overflowed, moves it back to reading the log, and it misses nothing.
      const got: bigint[] = [];
      while (got.length < 600) {
        const message = await slow.next();
        if (message.event) got.push(BigInt(message.event.sequence));
      }
      expect(got).toEqual(seqs);
      expect(t.server.streamStats().fallbacks).toBeGreaterThan(fallbacksBefore);
      expect(publishMs).toBeLessThan(30_000); // bounded loop; the benchmark measures speed
    } finally {
      slow.close();
      await fast.close();
    }
  });

  it("frees everything when subscribers cancel", async () => {
    const subs = await Promise.all(Array.from({ length: 5 }, () => collect(t.client(), { patterns: ["**"] })));
    await eventually(() => (t.server.streamStats().active >= 5 ? true : undefined), 5000, "5 open streams");
    await Promise.all(subs.map((s) => s.close()));
    await eventually(() => (t.server.streamStats().active === 0 ? true : undefined), 5000, "streams to close");
  });

  it("leaving a for-await loop over the SDK's subscribe frees the stream on the server", async () => {
    await publishMany(t, 1, `break-${Date.now()}`);
    // From the earliest event the server has a large backlog to write, so the client usually
    // leaves while a write is blocked: the case that used to leak over HTTP/1.1.
    for (let round = 0; round < 5; round++) {
      for (const transport of ["connect", "grpc", "grpc-web"] as const) {
        for await (const res of t.client(transport).subscribe({ start: { case: "position", value: StartPosition.EARLIEST } })) {
          if (res.message.case === "event") break;
        }
        await eventually(() => (t.server.streamStats().active === 0 ? true : undefined), 5000, `${transport} stream to close`);
      }
    }
  });

  it("a binary stream carries exactly the event GetEvent returns, in either payload format, on every transport", async () => {
    // Binary streams carry each event encoded once per node (binaryEventResponse); decoded, it
    // must be the very message GetEvent builds.
    for (const transport of ["grpc", "connect", "grpc-web"] as const) {
      for (const payloadFormat of [PayloadFormat.JSON, PayloadFormat.PROTO]) {
        const client = t.client(transport);
        const ac = new AbortController();
        const it = client.subscribe({ patterns: ["memory.created"], attributes: { probe: `${transport}-${payloadFormat}` }, payloadFormat }, { signal: ac.signal })[Symbol.asyncIterator]();
        try {
          expect((await it.next()).value.message.case).toBe("heartbeat");
          const published = await callJson(t.url, "Publish", { event: { ...memoryCreated(`bin-${transport}`, { content: "ünïcode ✓" }), attributes: { probe: `${transport}-${payloadFormat}` } } });
          expect(published.status, JSON.stringify(published.body)).toBe(200);
          const got = (await it.next()).value;
          expect(got.message.case).toBe("event");
          expect(got.cursor).toBe(got.message.value.sequence);
          const { event } = await client.getEvent({ id: published.body.id, payloadFormat });
          expect(got.message.value).toEqual(event);
        } finally {
          ac.abort();
          await it.return?.();
        }
      }
    }
  });

  it("streams a payload published as JSON exactly as GetEvent renders it from the log: defaults, 64-bit numbers, Structs, timestamps", async () => {
    // The node that commits a JSON publish streams the payload it parsed (not decoded again from
    // the stored bytes); it must render as the stored bytes do.
    const probe = `json-reuse-${Date.now()}`;
    const payloads: Array<[string, Record<string, unknown>]> = [
      ["activity.logged", { user_id: "9007199254740993", incident_type: "X", severity: "HIGH", description: "d", access_granted: false, user_query: "", details: { n: 0, nested: { list: [1, "two", null, false] }, empty: {} } }],
      ["risk.alert", { alert_id: "a", risk_type: "security", severity: "low", title: "t", affected_resources: [], risk_score: 0, detected_at: "2026-12-03T10:00:00.123456789Z", mitigation_steps: ["m1", ""], metadata: { "ü": -0.5 } }],
      ["file.changed", { file_path: "/tmp/ä", change_type: "modified", size: "0" }],
    ];
    const client = t.client("grpc");
    const ac = new AbortController();
    const it = client.subscribe({ patterns: ["activity.logged", "risk.alert", "file.changed"], attributes: { probe }, payloadFormat: PayloadFormat.JSON }, { signal: ac.signal })[Symbol.asyncIterator]();
    try {
      expect((await it.next()).value.message.case).toBe("heartbeat");
      for (const [type, data] of payloads) {
        const published = await callJson(t.url, "Publish", { event: { type, source: "test/subscribe", data, attributes: { probe } } });
        expect(published.status, JSON.stringify(published.body)).toBe(200);
        let got = (await it.next()).value;
        while (got.message.case === "heartbeat") got = (await it.next()).value;
        const { event } = await client.getEvent({ id: published.body.id, payloadFormat: PayloadFormat.JSON });
        expect(got.message.value, type).toEqual(event);
      }
    } finally {
      ac.abort();
      await it.return?.();
    }
  });

  it("streams JSON to a plain HTTP client using the Connect streaming protocol", async () => {
    const stream = await openConnectJsonStream(t.url, { patterns: ["file.changed"] });
    try {
      expect(stream.status).toBe(200);
      expect((await stream.next()).heartbeat).toBeDefined();
      await publish(t, { type: "file.changed", source: "pm", data: { file_path: "/tmp/a.txt", change_type: "modified", size: 12 } });
      expect((await stream.next()).event).toMatchObject({ type: "file.changed", data: { file_path: "/tmp/a.txt", change_type: "modified", size: "12" } });
    } finally {
      stream.close();
    }
  });
});
