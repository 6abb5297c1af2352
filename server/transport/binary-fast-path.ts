import type http from "node:http";
import type http2 from "node:http2";
import type { Readable } from "node:stream";
import { type DescMessage, type DescMethod, type DescService, fromBinary, type Message, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues, createServiceImplSpec, type Interceptor, type ServiceImpl, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorToJsonBytes, trailerMux } from "@connectrpc/connect/protocol-connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { isPollable } from "../concurrency/pollable-iterator.js";
import type { RequestHead } from "./request-head.js";
import { requestPath } from "./request-path.js";
import { asMessage, callRequest, composeServerStream, composeUnary, type FastProtocol, plain, ResponseMeta, type ServerStreamingSpec, type StreamFn, type UnaryFn, type UnarySpec } from "./fast-call.js";

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/** A service and its implementation, as given to the Connect router. */
export interface ServiceRegistration {
  service: DescService;
  // Any service's implementation, as ConnectRouter.service takes it.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  impl: Partial<ServiceImpl<any>>;
}

export interface BinaryFastPathOptions {
  services: readonly ServiceRegistration[];
  /** The router's interceptors, run the same way around every call. */
  interceptors: readonly Interceptor[];
  readMaxBytes: number;
  writeMaxBytes: number;
  contextValues?: (req: RequestHead) => ContextValues;
  /** Decoders for request types that have a quicker one than fromBinary (same result). */
  requestDecoders?: ReadonlyMap<DescMessage, (bytes: Uint8Array) => Message>;
  /** Encoders for response types that have a quicker one than toBinary (the same bytes). */
  responseEncoders?: ReadonlyMap<DescMessage, (message: Message) => Uint8Array>;
}

type Protocol = FastProtocol;

/** A method: its implementation, and the call through the interceptors, composed once. */
interface UnaryMethod {
  spec: UnarySpec;
  invoke: UnaryFn;
}
interface StreamMethod {
  spec: ServerStreamingSpec;
  invoke: StreamFn;
}

/**
 * Calls in protobuf binary answered without Connect's generic request pipeline. That pipeline
 * treats every call as a stream of async iterables: envelopes split and joined, web Headers
 * converted both ways, abort signals linked and aborted (a DOMException per call). Profiles
 * showed it as about a third of the server's CPU per Publish, and as most of the CPU of
 * streaming one event to many subscribers. The calls go through the same implementations and
 * interceptors, with the same error encodings (setTrailerStatus, errorToJsonBytes), invoked as
 * Connect's invokeUnaryImplementation and transformInvokeImplementation do, except that a
 * call's headers, signal and response headers are made only when something reads them, and a
 * stream's messages pass through no generators of Connect's (see fast-call.ts): creating them
 * for every Publish, which never reads them, was a tenth of the server's CPU.
 *
 * Only the plainest requests come here: POST, no compression and no deadline; unary calls as
 * `application/grpc[+proto]` over HTTP/2 or `application/proto`, server streams as gRPC.
 * Everything else (JSON, gRPC-Web, Connect streams, GET, compressed bodies, deadlines) goes to
 * Connect, which `take` says by returning false before it reads anything.
 *
 * `takeStream` answers the same unary calls over HTTP/2 from the raw stream, before Node's
 * compatibility layer makes an Http2ServerRequest and an Http2ServerResponse of it (see
 * createOnePortServer). A profile at 1,000 gRPC Publish calls a second put a tenth of the main
 * thread's samples in making those objects and their listeners (onServerStream 4.8%), writing
 * through them (writeHead 3.6%) and the request's socket Proxy (2.9%); alternated runs measured
 * 1–4% less process CPU per event (see docs/PERFORMANCE.md, twenty-second round).
 */
export interface BinaryFastPath {
  take(path: string, req: NodeRequest, res: NodeResponse): boolean;
  takeStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): boolean;
}

export function createBinaryFastPath(options: BinaryFastPathOptions): BinaryFastPath {
  const unary = new Map<string, UnaryMethod>();
  // A stream message's envelope, by the message: an implementation that yields the same message
  // object to many streams (one event to every subscriber) has it encoded once.
  const envelopes = new WeakMap<object, Buffer>();
  const serverStreams = new Map<string, StreamMethod>();
  for (const { service, impl } of options.services) {
    const spec = createServiceImplSpec(service, impl);
    for (const method of service.methods) {
      const m = spec.methods[method.localName]!;
      const path = `/${service.typeName}/${method.name}`;
      if (m.kind === "unary") unary.set(path, { spec: m, invoke: composeUnary(m, options.interceptors) });
      else if (m.kind === "server_streaming") serverStreams.set(path, { spec: m, invoke: composeServerStream(m, options.interceptors) });
    }
  }

  return {
    take(path, req, res) {
      if (req.method !== "POST") return false;
      const unaryMethod = unary.get(path);
      if (unaryMethod) {
        const protocol = protocolOf(req.headers, req.httpVersionMajor);
        if (!protocol) return false;
        void answer(protocol, unaryMethod, req, res, options);
        return true;
      }
      const streamMethod = serverStreams.get(path);
      if (streamMethod && protocolOf(req.headers, req.httpVersionMajor) === "grpc") {
        void stream(streamMethod, req as http2.Http2ServerRequest, res as http2.Http2ServerResponse, options, envelopes);
        return true;
      }
      return false;
    },
    takeStream(h2stream, headers) {
      // 100-continue is the compatibility layer's to answer.
      if (headers[":method"] !== "POST" || headers.expect !== undefined) return false;
      const url = headers[":path"];
      const unaryMethod = url === undefined ? undefined : unary.get(requestPath({ url }));
      if (!unaryMethod) return false;
      const protocol = protocolOf(headers, 2);
      if (!protocol) return false;
      void answerStream(protocol, unaryMethod, h2stream, { headers, url, stream: h2stream }, options);
      return true;
    },
  };
}

function protocolOf(h: http.IncomingHttpHeaders, httpVersionMajor: number): Protocol | undefined {
  const type = h["content-type"];
  if ((type === "application/grpc" || type === "application/grpc+proto") && httpVersionMajor === 2) {
    if (h["grpc-timeout"] !== undefined || (h["grpc-encoding"] !== undefined && h["grpc-encoding"] !== "identity")) return undefined;
    return "grpc";
  }
  if (type === "application/proto") {
    if (h["connect-timeout-ms"] !== undefined || (h["content-encoding"] !== undefined && h["content-encoding"] !== "identity")) return undefined;
    return "connect";
  }
  return undefined;
}

/** The request message: the whole body, unwrapped from its envelope for gRPC, decoded. */
async function readInput(protocol: Protocol, method: DescMethod, req: Readable, options: BinaryFastPathOptions) {
  const bytes = await readBody(req, protocol === "grpc" ? options.readMaxBytes + 5 : options.readMaxBytes);
  const input = protocol === "grpc" ? unwrapEnvelope(bytes, options.readMaxBytes) : bytes;
  try {
    const decode = options.requestDecoders?.get(method.input);
    return decode ? decode(input) : fromBinary(method.input, input);
  } catch (err) {
    throw new ConnectError(`cannot decode message ${method.input.typeName} from binary: ${(err as Error).message}`, Code.InvalidArgument);
  }
}

function asConnectError(err: unknown): ConnectError {
  return err instanceof ConnectError ? err : new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

/** A unary call's answer: the response message encoded, or the error. */
interface UnaryResult {
  meta: ResponseMeta;
  body?: Uint8Array;
  error?: ConnectError;
}

/** Reads the request from `input`, runs the call through the interceptors, encodes the answer. */
async function unaryResult(protocol: Protocol, unary: UnaryMethod, input: Readable, head: RequestHead, options: BinaryFastPathOptions): Promise<UnaryResult> {
  const method = unary.spec.method as DescMethod;
  const meta = new ResponseMeta(protocol);
  try {
    const message = await readInput(protocol, method, input, options);
    const call = callRequest<UnaryRequest>(unary.spec, protocol, head, options.contextValues, message, meta);
    const response = await unary.invoke(call);
    meta.adopt(response, call);
    const encode = options.responseEncoders?.get(method.output);
    const encoded = encode ? encode(response.message as Message) : toBinary(method.output, response.message);
    if (encoded.byteLength > options.writeMaxBytes) {
      throw new ConnectError(`message size ${encoded.byteLength} is larger than configured writeMaxBytes ${options.writeMaxBytes}`, Code.ResourceExhausted);
    }
    return { meta, body: encoded };
  } catch (err) {
    return { meta, error: asConnectError(err) };
  }
}

async function answer(protocol: Protocol, unary: UnaryMethod, req: NodeRequest, res: NodeResponse, options: BinaryFastPathOptions): Promise<void> {
  const result = await unaryResult(protocol, unary, req, req, options);
  if (res.writableEnded || res.destroyed) return; // the client went away
  try {
    const a = httpAnswer(protocol, result);
    res.writeHead(a.status, a.header);
    if (a.trailer) (res as http2.Http2ServerResponse).addTrailers(a.trailer);
    if (a.body) res.end(a.body);
    else res.end();
  } catch {
    // The stream closed between the check and the write: nobody is left to answer.
  }
}

const ignore = () => {};

/** `answer` for a raw HTTP/2 stream (see BinaryFastPath.takeStream). */
async function answerStream(protocol: Protocol, unary: UnaryMethod, stream: http2.ServerHttp2Stream, head: RequestHead, options: BinaryFastPathOptions): Promise<void> {
  // A stream the client resets with an error code is destroyed with an error, which with no
  // listener would be thrown. readBody hears it while it reads; this covers the stream's whole
  // life, as Node's compatibility layer's own listener does for its streams.
  stream.on("error", ignore);
  const result = await unaryResult(protocol, unary, stream, head, options);
  if (stream.destroyed || stream.closed || stream.headersSent) return; // the client went away
  try {
    const a = httpAnswer(protocol, result);
    // httpAnswer's headers are a fresh object (plainHeader, plain): the status joins them, no copy.
    const header: http2.OutgoingHttpHeaders = a.header;
    header[":status"] = a.status;
    const trailer = a.trailer;
    if (trailer) {
      stream.respond(header, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers(trailer));
    } else {
      stream.respond(header);
    }
    if (a.body) stream.end(a.body);
    else stream.end();
  } catch {
    // The stream closed between the check and the write: nobody is left to answer.
  }
}

/** An answer as HTTP: status, headers, body and (gRPC) trailers. */
function httpAnswer(protocol: Protocol, { meta, body, error }: UnaryResult): { status: number; header: Record<string, string>; body?: Uint8Array; trailer?: Record<string, string> } {
  if (protocol === "grpc") {
    if (error) setTrailerStatus(meta.trailer, error);
    return { status: 200, header: meta.plainHeader(), body: body && envelope(body), trailer: meta.plainTrailer() };
  }
  let status = 200;
  if (error) {
    status = codeToHttpStatus(error.code);
    meta.header.set("content-type", "application/json");
    error.metadata.forEach((value, key) => meta.header.set(key, value));
    body = errorToJsonBytes(error, {});
  }
  // Connect sends trailers as headers prefixed with trailer-; with nothing set, there are none.
  const header = meta.touched ? plain(trailerMux(meta.header, meta.trailer)) : meta.plainHeader();
  header["content-length"] = String(body!.byteLength);
  return { status, header, body };
}

/**
 * A gRPC server stream: each message written as its envelope as soon as the implementation
 * yields it, waiting for the client when the stream's buffer is full; the status in trailers.
 * The client going away aborts the call's signal, which ends the implementation.
 */
async function stream(streamMethod: StreamMethod, req: http2.Http2ServerRequest, res: http2.Http2ServerResponse, options: BinaryFastPathOptions, envelopes: WeakMap<object, Buffer>): Promise<void> {
  const method = streamMethod.spec.method as DescMethod;
  const cancel = new AbortController();
  let finished = false;
  /** The client went away (cancel.signal.aborted, without a native call per message). */
  let cancelled = false;
  res.once("close", () => {
    if (finished) return;
    cancelled = true;
    cancel.abort(new ConnectError("the client cancelled the stream", Code.Canceled));
  });
  const meta = new ResponseMeta("grpc");
  let error: ConnectError | undefined;
  let headersSent = false;
  const sendHeaders = () => {
    if (headersSent) return;
    headersSent = true;
    res.writeHead(200, meta.plainHeader());
  };
  /** Writes a message's envelope; a promise (to wait for) only when the stream's buffer is full. */
  const send = (message: object): Promise<void> | undefined => {
    let framed = envelopes.get(message);
    if (!framed) {
      const encoded = toBinary(method.output, asMessage(method.output, message));
      if (encoded.byteLength > options.writeMaxBytes) {
        throw new ConnectError(`message size ${encoded.byteLength} is larger than configured writeMaxBytes ${options.writeMaxBytes}`, Code.ResourceExhausted);
      }
      framed = envelope(encoded);
      envelopes.set(message, framed);
    }
    sendHeaders();
    return res.write(framed) ? undefined : drained(res, cancel.signal);
  };
  try {
    const input = await readInput("grpc", method, req, options);
    const call = callRequest<StreamRequest>(streamMethod.spec, "grpc", req, options.contextValues, createAsyncIterable([input]), meta, cancel.signal);
    const response = await streamMethod.invoke(call);
    meta.adopt(response, call);
    const messages = response.message[Symbol.asyncIterator]();
    // Messages at hand are taken with no promise each (see PollableIterator): with many
    // subscribers, each event's message passes here once per stream.
    const pollable = isPollable(messages) ? messages : undefined;
    let iteratorEnded = false;
    try {
      for (;;) {
        const result = pollable ? pollable.poll() : await messages.next();
        if (result === undefined) {
          await pollable!.fill();
          continue;
        }
        if (result.done === true) {
          iteratorEnded = true;
          break;
        }
        if (cancelled) break;
        const full = send(result.value);
        if (full) await full;
      }
    } finally {
      // As for-await does: an iterator left before its end (a cancel, a failed write) is told so.
      if (!iteratorEnded) await messages.return?.().catch(() => {});
    }
  } catch (err) {
    error = asConnectError(err);
  }
  finished = true;
  const gone = cancel.signal.aborted || res.writableEnded || res.destroyed;
  // The call's signal ends with the call, as Connect's does.
  cancel.abort(new ConnectError("the stream ended", Code.Canceled));
  if (gone) return;
  try {
    sendHeaders();
    if (error) setTrailerStatus(meta.trailer, error);
    res.addTrailers(meta.plainTrailer());
    res.end();
  } catch {
    // The stream closed between the check and the write: nobody is left to answer.
  }
}

/** Resolves when the response can take more, or the call was cancelled. */
function drained(res: http2.Http2ServerResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    res.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** The whole body, refused with resource_exhausted past `limit` bytes. */
function readBody(req: Readable, limit: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    req.on("data", (chunk: Buffer) => {
      length += chunk.length;
      if (length > limit) {
        req.removeAllListeners("data");
        req.resume();
        reject(new ConnectError(`message size is larger than configured readMaxBytes ${limit}`, Code.ResourceExhausted));
        return;
      }
      chunks.push(chunk);
    });
    req.once("end", () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, length)));
    req.once("error", (err) => reject(new ConnectError(`reading the request failed: ${err.message}`, Code.Aborted)));
  });
}

/** The one message of a gRPC request: one uncompressed envelope, nothing after it. */
function unwrapEnvelope(bytes: Uint8Array, readMaxBytes: number): Uint8Array {
  if (bytes.length < 5) throw new ConnectError("protocol error: missing input message for unary method", Code.InvalidArgument);
  const flags = bytes[0]!;
  const length = ((bytes[1]! << 24) >>> 0) + (bytes[2]! << 16) + (bytes[3]! << 8) + bytes[4]!;
  if (flags !== 0) throw new ConnectError("protocol error: received a compressed or flagged message without grpc-encoding", Code.InvalidArgument);
  if (length > readMaxBytes) throw new ConnectError(`message size ${length} is larger than configured readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted);
  if (bytes.length !== 5 + length) {
    throw new ConnectError(bytes.length < 5 + length ? "protocol error: incomplete envelope" : "protocol error: received extra input message for unary method", Code.InvalidArgument);
  }
  return bytes.subarray(5);
}

function envelope(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.byteLength);
  out[0] = 0;
  out.writeUInt32BE(message.byteLength, 1);
  out.set(message, 5);
  return out;
}
