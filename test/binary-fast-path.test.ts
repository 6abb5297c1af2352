/**
 * Calls in protobuf binary skip Connect's generic pipeline (server/transport/binary-fast-path.ts).
 * These tests speak the wire protocols directly, so they see exactly what any client would: the
 * answers must be the ones Connect itself gives, and whatever the fast path does not take
 * (compression, deadlines, JSON) must still work through Connect.
 */
import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextKey, createContextValues, type HandlerContext, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import {
  EventService,
  type GetEventTypeRequest,
  GetEventTypeRequestSchema,
  GetEventTypeResponseSchema,
  PublishRequestSchema,
  PublishResponseSchema,
  type SubscribeRequest,
  SubscribeRequestSchema,
  type SubscribeResponse,
  SubscribeResponseSchema,
} from "../gen/tidings/v1/event_service_pb.js";
import type { PollableIterator } from "../server/concurrency/pollable-iterator.js";
import { silentLogger } from "../server/logging/logger.js";
import { errorMappingInterceptor } from "../server/rpc/errors.js";
import { createBinaryFastPath } from "../server/transport/binary-fast-path.js";
import { requestHeaderValue } from "../server/transport/fast-call.js";
import { createOnePortServer, type OnePortServer } from "../server/transport/one-port-server.js";
import { eventually, memoryCreated, startTestServer, type TestServer } from "./helpers/test-server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ config: { maxRequestBytes: 64 * 1024 } });
});
afterAll(async () => {
  await t?.close();
});

const probeKey = createContextKey<string>("", { description: "a value the transport puts into every call's context" });
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const publishPath = "/tidings.v1.EventService/Publish";

function publishRequest(memoryId: string, extra: Record<string, unknown> = {}): Uint8Array {
  const e = memoryCreated(memoryId, extra);
  return toBinary(PublishRequestSchema, create(PublishRequestSchema, {
    event: { type: e.type, source: e.source, payload: { case: "data", value: e.data } },
  }));
}

function envelope(message: Uint8Array, flags = 0): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out[0] = flags;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

interface GrpcAnswer {
  status: number;
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  body: Buffer;
}

function grpcCall(path: string, body: Buffer, headers: Record<string, string | string[]> = {}, baseUrl = t.url): Promise<GrpcAnswer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    session.on("error", reject);
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc+proto", te: "trailers", ...headers });
    let responseHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on("response", (h) => (responseHeaders = h));
    req.on("trailers", (h) => (trailers = h));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      session.close();
      resolve({ status: Number(responseHeaders[":status"]), headers: responseHeaders, trailers, body: Buffer.concat(chunks) });
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function connectProtoCall(path: string, body: Uint8Array, headers: Record<string, string> = {}) {
  const res = await fetch(`${t.url}${path}`, { method: "POST", headers: { "content-type": "application/proto", ...headers }, body });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/** The field violations of a gRPC error, as a Connect client reads them from the trailers. */
function grpcViolations(trailers: http2.IncomingHttpHeaders): string[] {
  const headers = new Headers();
  for (const [k, v] of Object.entries(trailers)) if (!k.startsWith(":") && v !== undefined) headers.set(k, String(v));
  const error = findTrailerError(headers);
  return error?.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field)) ?? [];
}

describe("unary calls in protobuf binary", () => {
  it("gRPC: publishes and answers with one envelope and grpc-status 0 in the trailers", async () => {
    const res = await grpcCall(publishPath, envelope(publishRequest("fast-grpc")));
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("application/grpc+proto");
    expect(res.trailers["grpc-status"]).toBe("0");
    expect(res.body.readUInt32BE(1)).toBe(res.body.length - 5);
    const answer = fromBinary(PublishResponseSchema, res.body.subarray(5));
    expect(answer.id).toMatch(uuid);
    expect(answer.sequence).toBeGreaterThan(0n);
  });

  it("gRPC: a refused publish has the exact code, message and field violations in the trailers", async () => {
    const res = await grpcCall(publishPath, envelope(toBinary(PublishRequestSchema, create(PublishRequestSchema, { event: { type: "memory.created" } }))));
    expect(res.status).toBe(200);
    expect(res.trailers["grpc-status"]).toBe("3"); // invalid_argument
    expect(decodeURIComponent(String(res.trailers["grpc-message"]))).toContain("event.source");
    expect(grpcViolations(res.trailers)).toContain("event.source");
    expect(res.body.length).toBe(0);
  });

  it("gRPC: a broken envelope is invalid_argument, an oversized one resource_exhausted, never internal", async () => {
    const message = publishRequest("fast-broken");
    const short = await grpcCall(publishPath, envelope(message).subarray(0, 10));
    expect(short.trailers["grpc-status"]).toBe("3");
    const two = await grpcCall(publishPath, Buffer.concat([envelope(message), envelope(message)]));
    expect(two.trailers["grpc-status"]).toBe("3");
    expect(decodeURIComponent(String(two.trailers["grpc-message"]))).toContain("extra input message");
    const garbage = await grpcCall(publishPath, envelope(Buffer.from([0xff, 0xff, 0xff])));
    expect(garbage.trailers["grpc-status"]).toBe("3");
    const big = await grpcCall(publishPath, envelope(publishRequest("fast-big", { content: "x".repeat(70 * 1024) })));
    expect(big.trailers["grpc-status"]).toBe("8"); // resource_exhausted
  });

  it("gRPC: a compressed request and a request with a deadline still go through Connect", async () => {
    const gz = await grpcCall(publishPath, envelope(gzipSync(publishRequest("fast-gzip")), 1), { "grpc-encoding": "gzip" });
    expect(gz.trailers["grpc-status"]).toBe("0");
    expect(fromBinary(PublishResponseSchema, gz.body.subarray(5)).id).toMatch(uuid);
    const deadline = await grpcCall(publishPath, envelope(publishRequest("fast-deadline")), { "grpc-timeout": "5S" });
    expect(deadline.trailers["grpc-status"]).toBe("0");
  });

  it("Connect: publishes in binary, and a refusal is Connect's JSON error with its HTTP status", async () => {
    const ok = await connectProtoCall(publishPath, publishRequest("fast-connect"));
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toBe("application/proto");
    expect(fromBinary(PublishResponseSchema, ok.body).id).toMatch(uuid);

    const refused = await connectProtoCall(publishPath, toBinary(PublishRequestSchema, create(PublishRequestSchema, { event: { type: "memory.created" } })));
    expect(refused.status).toBe(400);
    expect(refused.headers.get("content-type")).toBe("application/json");
    const error = JSON.parse(refused.body.toString());
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toContain("event.source");
    expect(error.details[0].type).toBe("google.rpc.BadRequest");

    const garbage = await connectProtoCall(publishPath, Buffer.from([0xff, 0xff, 0xff]));
    expect(garbage.status).toBe(400);
    expect(JSON.parse(garbage.body.toString()).code).toBe("invalid_argument");
  });

  it("Connect: a compressed request still goes through Connect; an unknown method is 404", async () => {
    const gz = await connectProtoCall(publishPath, gzipSync(publishRequest("fast-connect-gzip")), { "content-encoding": "gzip" });
    expect(gz.status).toBe(200);
    expect(fromBinary(PublishResponseSchema, gz.body).id).toMatch(uuid);
    const missing = await connectProtoCall("/tidings.v1.EventService/NoSuchMethod", publishRequest("x"));
    expect(missing.status).toBe(404);
  });
});

/** A raw gRPC Subscribe: the envelopes as they arrive, decoded, and the trailers at the end. */
function grpcSubscribe(request: Parameters<typeof create<typeof SubscribeRequestSchema>>[1]) {
  const session = http2.connect(t.url);
  const req = session.request({ ":method": "POST", ":path": "/tidings.v1.EventService/Subscribe", "content-type": "application/grpc+proto", te: "trailers" });
  const messages: Array<ReturnType<typeof fromBinary<typeof SubscribeResponseSchema>>> = [];
  let pending = Buffer.alloc(0);
  req.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
      messages.push(fromBinary(SubscribeResponseSchema, pending.subarray(5, 5 + pending.readUInt32BE(1))));
      pending = pending.subarray(5 + pending.readUInt32BE(1));
    }
  });
  let trailers: http2.IncomingHttpHeaders | undefined;
  req.on("trailers", (h) => (trailers = h));
  const closed = new Promise<void>((r) => req.on("close", () => r()));
  req.on("error", () => {});
  req.end(envelope(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, request))));
  return {
    messages,
    trailers: () => trailers,
    closed,
    cancel: () => req.close(http2.constants.NGHTTP2_CANCEL),
    close: () => session.close(),
  };
}

describe("server streams in gRPC binary", () => {
  it("Subscribe: a heartbeat, then the events as they are published, each its own envelope", async () => {
    const sub = grpcSubscribe({ patterns: ["memory.created"], attributes: { probe: "fast-stream" } });
    try {
      await eventually(() => (sub.messages.length >= 1 ? true : undefined), 5_000, "the first heartbeat");
      expect(sub.messages[0]!.message.case).toBe("heartbeat");
      for (const id of ["s1", "s2", "s3"]) {
        const e = memoryCreated(id);
        const res = await connectProtoCall(publishPath, toBinary(PublishRequestSchema, create(PublishRequestSchema, {
          event: { type: e.type, source: e.source, attributes: { probe: "fast-stream" }, payload: { case: "data", value: e.data } },
        })));
        expect(res.status).toBe(200);
      }
      const events = await eventually(() => {
        const got = sub.messages.filter((m) => m.message.case === "event");
        return got.length >= 3 ? got : undefined;
      }, 5_000, "three events");
      const sent = events.map((m) => (m.message.case === "event" ? m.message.value : undefined)!);
      expect(sent.map((e) => (e.payload.case === "data" ? e.payload.value["memory_id"] : undefined))).toEqual(["s1", "s2", "s3"]);
      expect(events.map((m) => m.cursor)).toEqual(sent.map((e) => e.sequence));
    } finally {
      sub.close();
    }
  });

  it("Subscribe: a bad request ends with its code in the trailers and nothing sent; a cancel frees the stream", async () => {
    const bad = grpcSubscribe({ patterns: ["a..b"] });
    await bad.closed;
    bad.close();
    expect(bad.trailers()?.["grpc-status"]).toBe("3");
    expect(decodeURIComponent(String(bad.trailers()?.["grpc-message"]))).toContain("patterns");
    expect(bad.messages).toHaveLength(0);

    const before = t.server.streamStats().active;
    const subs = Array.from({ length: 5 }, () => grpcSubscribe({ patterns: ["memory.*"] }));
    await eventually(() => (t.server.streamStats().active === before + 5 ? true : undefined), 5_000, "5 open streams");
    for (const s of subs) s.cancel();
    await eventually(() => (t.server.streamStats().active === before ? true : undefined), 5_000, "the streams freed");
    for (const s of subs) s.close();
  });
});

// Twice: unary gRPC calls answered through Node's Http2ServerRequest and Http2ServerResponse,
// and from the raw HTTP/2 stream (takeStream, as the server runs); everything else goes the
// first way in both.
describe.each([
  { how: "through request and response objects", raw: false },
  { how: "unary gRPC from the raw HTTP/2 stream", raw: true },
])("what interceptors and implementations see on the fast path, $how", ({ raw }) => {
  // A server of its own, with interceptors and an implementation that read and write what a
  // Connect handler context offers; the answers must carry what they set, as Connect's would.
  let server: OnePortServer;
  /** Streams takeStream answered itself. */
  let rawTaken = 0;
  let url: string;
  const seen: Array<Record<string, unknown>> = [];
  const headerReads: Array<Record<string, unknown>> = [];
  /** The request, handler context and response of each call (see the shared getters test). */
  const kept: Array<{ req?: object; ctx?: object; res?: object }> = [];
  beforeAll(async () => {
    const keepingInterceptor: Interceptor = (next) => async (req) => {
      const res = await next(req);
      if (!req.stream) kept.push({ req, res });
      return res;
    };
    const copyingInterceptor: Interceptor = (next) => (req) => {
      // An interceptor may pass a copy of the request on, with headers of its own.
      const header = new Headers(req.header);
      header.set("x-added-by-interceptor", "yes");
      return next({ ...req, header });
    };
    // Reads headers as the access gate does (requestHeaderValue), before anything made them
    // web Headers, then as req.header; and once more after the copying interceptor.
    const headerReading: Interceptor = (next) => (req) => {
      const names = ["x-probe", "x-spaced", "x-repeated", "x-absent", "user-agent"];
      const raw = names.map((n) => requestHeaderValue(req, n));
      headerReads.push({ raw, viaHeaders: names.map((n) => req.header.get(n)) });
      return next(req);
    };
    const afterCopy: Interceptor = (next) => (req) => {
      headerReads.push({ afterCopy: requestHeaderValue(req, "x-added-by-interceptor") });
      return next(req);
    };
    const answeringInterceptor: Interceptor = (next) => async (req) => {
      const res = await next(req);
      res.header.set("x-interceptor-saw", res.stream ? "a stream" : res.message.$typeName);
      return res;
    };
    const impl: Partial<ServiceImpl<typeof EventService>> = {
      async getEventType(req: GetEventTypeRequest, ctx: HandlerContext) {
        if (req.name === "slow") await new Promise((r) => setTimeout(r, 100));
        if (req.name.startsWith("kept")) kept.push({ ctx });
        seen.push({
          name: req.name,
          probe: ctx.requestHeader.get("x-probe"),
          added: ctx.requestHeader.get("x-added-by-interceptor"),
          protocol: ctx.protocolName,
          url: ctx.url,
          aborted: ctx.signal.aborted,
          timeout: ctx.timeoutMs(),
          value: ctx.values.get(probeKey),
        });
        if (req.name === "refuse") throw new ConnectError("refused on purpose", Code.FailedPrecondition, { "x-error-meta": "m" });
        ctx.responseHeader.set("x-answer", `for ${req.name}`);
        ctx.responseTrailer.set("x-trailer", "t");
        return create(GetEventTypeResponseSchema, {});
      },
      subscribe(req: SubscribeRequest, ctx: HandlerContext) {
        return req.patterns[0]?.startsWith("polled") ? polledMessages(req.patterns[0], ctx) : generatedMessages(req, ctx);
      },
    };
    async function* generatedMessages(req: SubscribeRequest, ctx: HandlerContext) {
      const mode = req.patterns[0];
      seen.push({ mode, probe: ctx.requestHeader.get("x-probe"), added: ctx.requestHeader.get("x-added-by-interceptor"), protocol: ctx.protocolName, value: ctx.values.get(probeKey) });
      ctx.responseHeader.set("x-stream-answer", `for ${mode}`);
      yield create(SubscribeResponseSchema, { cursor: 1n });
      // A plain object is made a message, as Connect normalizes what an implementation yields.
      yield { cursor: 2n } as SubscribeResponse;
      if (mode === "fail") throw new ConnectError("failed on purpose", Code.DataLoss);
      if (mode === "wait") {
        await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
        seen.push({ mode, aborted: ctx.signal.aborted });
        return;
      }
      ctx.responseTrailer.set("x-stream-trailer", "done");
    }
    /**
     * A stream that can be polled (PollableIterator), as Subscribe's is: two messages at hand,
     * two more after a wait, then the end, or (polled-fail) a wait that fails with a database
     * error, thrown by the poll() after it. Its next() fails the stream: the fast path must
     * poll, through the interceptors.
     */
    function polledMessages(mode: string, ctx: HandlerContext): AsyncIterable<SubscribeResponse> {
      const atHand = [create(SubscribeResponseSchema, { cursor: 1n }), create(SubscribeResponseSchema, { cursor: 2n })];
      let fills = 0;
      let polls = 0;
      let failure: Error | undefined;
      const report = (how: string) => seen.push({ mode, how, polls, fills, aborted: ctx.signal.aborted });
      const iterator: PollableIterator<SubscribeResponse> = {
        next: () => Promise.reject(new ConnectError("next() was called", Code.FailedPrecondition)),
        poll: () => {
          polls++;
          if (failure) throw failure;
          const message = atHand.shift();
          if (message) return { done: false, value: message };
          return fills === 2 ? { done: true, value: undefined } : undefined;
        },
        fill: async () => {
          fills++;
          await new Promise((r) => setTimeout(r, 10));
          if (mode === "polled-fail") failure = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
          if (fills === 1) atHand.push(create(SubscribeResponseSchema, { cursor: 3n }), create(SubscribeResponseSchema, { cursor: 4n }));
          // fills === 2: nothing new; poll() then answers the end.
        },
        return: async () => {
          report("return");
          return { done: true, value: undefined };
        },
      };
      return { [Symbol.asyncIterator]: () => iterator };
    }
    const fastPath = createBinaryFastPath({
      services: [{ service: EventService, impl }],
      interceptors: [errorMappingInterceptor(silentLogger), keepingInterceptor, headerReading, answeringInterceptor, copyingInterceptor, afterCopy],
      readMaxBytes: 1024,
      writeMaxBytes: 1024,
      contextValues: () => createContextValues().set(probeKey, "from the transport"),
    });
    const takeStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      const taken = fastPath.takeStream(stream, headers);
      if (taken) rawTaken++;
      return taken;
    };
    server = createOnePortServer((req, res) => {
      if (!fastPath.take(req.url ?? "", req, res)) {
        res.writeHead(404);
        res.end();
      }
    }, raw ? { takeStream } : {});
    url = `http://127.0.0.1:${await server.listen(0, "127.0.0.1")}`;
  });
  afterAll(async () => {
    await server?.close(0);
  });
  const body = (name: string) => toBinary(GetEventTypeRequestSchema, create(GetEventTypeRequestSchema, { name }));
  const path = "/tidings.v1.EventService/GetEventType";

  it("a header read straight from the request (requestHeaderValue) is what req.header.get answers, and sees an interceptor's copy", async () => {
    headerReads.length = 0;
    // (Surrounding whitespace never arrives: HTTP/2 and fetch drop or trim it before it is sent.)
    const headers = { "x-probe": "p0", "x-spaced": "padded", "x-repeated": ["one", "two"], "user-agent": "probe/1" };
    const answer = await grpcCall(path, envelope(body("h")), { "content-type": "application/grpc", ...headers }, url);
    expect(answer.trailers["grpc-status"]).toBe("0");
    await fetch(`${url}${path}`, { method: "POST", headers: { "content-type": "application/proto", "x-probe": "p0", "x-spaced": "padded", "x-repeated": "one, two", "user-agent": "probe/1" }, body: body("h") });
    expect(headerReads).toHaveLength(4);
    for (const read of [headerReads[0]!, headerReads[2]!]) {
      expect(read.raw).toEqual(read.viaHeaders);
      expect(read.raw).toEqual(["p0", "padded", "one, two", null, "probe/1"]);
    }
    expect(headerReads[1]).toEqual({ afterCopy: "yes" });
    expect(headerReads[3]).toEqual({ afterCopy: "yes" });
  });

  it("every call's request, handler context and response get their getters from one set of functions", async () => {
    // Getters in an object literal are new functions for every call's objects, which kept each
    // call's whole graph alive through young-generation collections (fast-call.ts,
    // sharedGetters): every call's objects must carry the same getter functions.
    kept.length = 0;
    for (const name of ["kept-1", "kept-2"]) {
      const answer = await grpcCall(path, envelope(body(name)), { "content-type": "application/grpc" }, url);
      expect(answer.trailers["grpc-status"]).toBe("0");
    }
    const contexts = kept.flatMap((k) => (k.ctx ? [k.ctx] : []));
    const calls = kept.filter((k) => k.req !== undefined);
    expect(contexts).toHaveLength(2);
    expect(calls).toHaveLength(2);
    const getters = (o: object, names: string[]) => names.map((n) => Object.getOwnPropertyDescriptor(o, n)?.get);
    const pairs: Array<[object, object, string[]]> = [
      [calls[0]!.req!, calls[1]!.req!, ["url", "signal", "header"]],
      [contexts[0]!, contexts[1]!, ["url", "signal", "requestHeader", "responseHeader", "responseTrailer"]],
      [calls[0]!.res!, calls[1]!.res!, ["header", "trailer"]],
    ];
    for (const [first, second, names] of pairs) {
      const a = getters(first, names);
      expect(a.every((g) => typeof g === "function")).toBe(true);
      expect(getters(second, names)).toEqual(a);
      // Own and enumerable, as an object literal's getters: a spread copy reads them into values.
      for (const n of names) expect(Object.getOwnPropertyDescriptor(second, n)?.enumerable).toBe(true);
    }
  });

  it("Connect: request headers, context values, the interceptors' copy; response headers and trailers", async () => {
    seen.length = 0;
    const res = await fetch(`${url}${path}`, { method: "POST", headers: { "content-type": "application/proto", "x-probe": "p1" }, body: body("c") });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/proto");
    expect(res.headers.get("x-answer")).toBe("for c");
    expect(res.headers.get("x-interceptor-saw")).toBe("tidings.v1.GetEventTypeResponse");
    expect(res.headers.get("trailer-x-trailer")).toBe("t");
    expect(seen).toEqual([{ name: "c", probe: "p1", added: "yes", protocol: "connect", url: `${url}${path}`, aborted: false, timeout: undefined, value: "from the transport" }]);
    const refused = await fetch(`${url}${path}`, { method: "POST", headers: { "content-type": "application/proto" }, body: body("refuse") });
    expect(refused.status).toBe(400);
    expect(refused.headers.get("x-error-meta")).toBe("m");
    expect(await refused.json()).toEqual({ code: "failed_precondition", message: "refused on purpose" });
  });

  it("gRPC: the same, with the trailers as HTTP/2 trailers", async () => {
    seen.length = 0;
    const takenBefore = rawTaken;
    const answer = await grpcCall(path, envelope(body("g")), { "content-type": "application/grpc", "x-probe": "p2" }, url);
    expect(answer.status).toBe(200);
    expect(answer.headers["content-type"]).toBe("application/grpc+proto");
    expect(answer.headers["x-answer"]).toBe("for g");
    expect(answer.headers["x-interceptor-saw"]).toBe("tidings.v1.GetEventTypeResponse");
    expect(answer.trailers["grpc-status"]).toBe("0");
    expect(answer.trailers["x-trailer"]).toBe("t");
    expect(answer.body.subarray(5)).toEqual(Buffer.from(toBinary(GetEventTypeResponseSchema, create(GetEventTypeResponseSchema, {}))));
    expect(seen).toEqual([{ name: "g", probe: "p2", added: "yes", protocol: "grpc", url: `${url}${path}`, aborted: false, timeout: undefined, value: "from the transport" }]);

    const refused = await grpcCall(path, envelope(body("refuse")), { "content-type": "application/grpc" }, url);
    expect(refused.status).toBe(200);
    expect(refused.body).toHaveLength(0);
    expect(refused.trailers["grpc-status"]).toBe(String(Code.FailedPrecondition));
    expect(decodeURIComponent(String(refused.trailers["grpc-message"]))).toBe("refused on purpose");
    expect(refused.trailers["x-error-meta"]).toBe("m");
    // Which way the calls went: the raw stream only where offered.
    expect(rawTaken - takenBefore).toBe(raw ? 2 : 0);
  });

  it("Connect over HTTP/2: the same answers as over HTTP/1.1, the refusal as Connect's JSON error with its HTTP status", async () => {
    seen.length = 0;
    const takenBefore = rawTaken;
    const ok = await grpcCall(path, Buffer.from(body("c2")), { "content-type": "application/proto", "x-probe": "p3" }, url);
    expect(ok.status).toBe(200);
    expect(ok.headers["content-type"]).toBe("application/proto");
    expect(ok.headers["content-length"]).toBe(String(ok.body.length));
    expect(ok.headers["x-answer"]).toBe("for c2");
    expect(ok.headers["trailer-x-trailer"]).toBe("t");
    expect(ok.body).toEqual(Buffer.from(toBinary(GetEventTypeResponseSchema, create(GetEventTypeResponseSchema, {}))));
    expect(seen).toEqual([{ name: "c2", probe: "p3", added: "yes", protocol: "connect", url: `${url}${path}`, aborted: false, timeout: undefined, value: "from the transport" }]);
    const refused = await grpcCall(path, Buffer.from(body("refuse")), { "content-type": "application/proto" }, url);
    expect(refused.status).toBe(400);
    expect(refused.headers["content-type"]).toBe("application/json");
    expect(refused.headers["x-error-meta"]).toBe("m");
    expect(JSON.parse(refused.body.toString())).toEqual({ code: "failed_precondition", message: "refused on purpose" });
    expect(rawTaken - takenBefore).toBe(raw ? 2 : 0);
  });

  it("gRPC: a client that resets its call, mid-request or while it runs, leaves the server answering the next", async () => {
    seen.length = 0;
    const resetAfter = async (sent: Buffer, end: boolean) => {
      const session = http2.connect(url);
      session.on("error", () => {});
      const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
      req.on("error", () => {});
      const closed = new Promise((r) => req.on("close", r));
      if (end) req.end(sent);
      else req.write(sent);
      await new Promise((r) => setTimeout(r, 20));
      // A reset that is an error, not a cancel: the server's stream is destroyed with it.
      req.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      await closed;
      session.close();
    };
    await resetAfter(envelope(body("reset")).subarray(0, 7), false); // half an envelope
    await resetAfter(envelope(body("slow")), true); // answered 100 ms later, to nobody
    await new Promise((r) => setTimeout(r, 150));
    expect(seen.map((s) => s["name"])).toEqual(["slow"]);
    const answer = await grpcCall(path, envelope(body("after")), { "content-type": "application/grpc" }, url);
    expect(answer.trailers["grpc-status"]).toBe("0");
  });
  /** A raw gRPC Subscribe to this test's server: the envelopes, headers and trailers. */
  function subscribeTo(mode: string, onOpen?: (cancel: () => void) => void) {
    return new Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; cursors: bigint[] }>((resolve, reject) => {
      const session = http2.connect(url);
      session.on("error", reject);
      const req = session.request({ ":method": "POST", ":path": "/tidings.v1.EventService/Subscribe", "content-type": "application/grpc", te: "trailers", "x-probe": mode });
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      const cursors: bigint[] = [];
      let pending = Buffer.alloc(0);
      req.on("response", (h) => (headers = h));
      req.on("trailers", (h) => (trailers = h));
      req.on("data", (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
          cursors.push(fromBinary(SubscribeResponseSchema, pending.subarray(5, 5 + pending.readUInt32BE(1))).cursor);
          pending = pending.subarray(5 + pending.readUInt32BE(1));
          if (cursors.length === 2) onOpen?.(() => req.close(http2.constants.NGHTTP2_CANCEL));
        }
      });
      req.on("close", () => {
        session.close();
        resolve({ headers, trailers, cursors });
      });
      req.on("error", () => {});
      req.end(envelope(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { patterns: [mode] }))));
    });
  }

  it("gRPC streams: the request and its copy, response headers and trailers, plain objects made messages", async () => {
    seen.length = 0;
    const ok = await subscribeTo("ok");
    expect(ok.cursors).toEqual([1n, 2n]);
    expect(ok.headers["x-stream-answer"]).toBe("for ok");
    expect(ok.headers["x-interceptor-saw"]).toBe("a stream");
    expect(ok.trailers["grpc-status"]).toBe("0");
    expect(ok.trailers["x-stream-trailer"]).toBe("done");
    expect(seen).toEqual([{ mode: "ok", probe: "ok", added: "yes", protocol: "grpc", value: "from the transport" }]);
  });

  it("gRPC streams: an error after some messages ends the stream with its code; a cancel aborts the call's signal", async () => {
    const failed = await subscribeTo("fail");
    expect(failed.cursors).toEqual([1n, 2n]);
    expect(failed.trailers["grpc-status"]).toBe(String(Code.DataLoss));
    expect(decodeURIComponent(String(failed.trailers["grpc-message"]))).toBe("failed on purpose");
    seen.length = 0;
    await subscribeTo("wait", (cancel) => cancel());
    await eventually(async () => (seen.some((s) => s["aborted"] === true) ? true : undefined), 5_000, "the implementation to see its signal abort");
  });

  it("gRPC streams that can be polled: messages at hand written with no wait, fill() when none, through the error-mapping interceptor", async () => {
    seen.length = 0;
    const ok = await subscribeTo("polled");
    expect(ok.cursors).toEqual([1n, 2n, 3n, 4n]);
    expect(ok.trailers["grpc-status"]).toBe("0");
    // Ended by itself: nobody had to tell it to stop (return()).
    expect(seen.filter((s) => s["mode"] === "polled")).toEqual([]);

    // A failure, thrown by the poll() after a wait: mapped as for next() (a database error is
    // unavailable), and the iterator told to stop, as for-await tells one it leaves early.
    const failed = await subscribeTo("polled-fail");
    expect(failed.cursors).toEqual([1n, 2n]);
    expect(failed.trailers["grpc-status"]).toBe(String(Code.Unavailable));
    expect(seen.filter((s) => s["mode"] === "polled-fail")).toEqual([{ mode: "polled-fail", how: "return", polls: 4, fills: 1, aborted: false }]);
  });
});
