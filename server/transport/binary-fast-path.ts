import type http from "node:http";
import type http2 from "node:http2";
import { type DescMethod, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createHandlerContext,
  createServiceImplSpec,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type ServiceImpl,
} from "@connectrpc/connect";
import { createAsyncIterable, invokeUnaryImplementation, transformInvokeImplementation } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorToJsonBytes, trailerMux } from "@connectrpc/connect/protocol-connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";

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
  contextValues?: (req: NodeRequest) => ContextValues;
}

type Protocol = "grpc" | "connect";
type UnarySpec = Extract<MethodImplSpec, { kind: "unary" }>;
type ServerStreamingSpec = Extract<MethodImplSpec, { kind: "server_streaming" }>;

/**
 * Calls in protobuf binary answered without Connect's generic request pipeline. That pipeline
 * treats every call as a stream of async iterables: envelopes split and joined, web Headers
 * converted both ways, abort signals linked and aborted (a DOMException per call). Profiles
 * showed it as about a third of the server's CPU per Publish, and as most of the CPU of
 * streaming one event to many subscribers. The call itself is Connect's own: the same
 * implementation and interceptors (invokeUnaryImplementation, transformInvokeImplementation),
 * and the same error encodings (setTrailerStatus, errorToJsonBytes).
 *
 * Only the plainest requests come here: POST, no compression and no deadline; unary calls as
 * `application/grpc[+proto]` over HTTP/2 or `application/proto`, server streams as gRPC.
 * Everything else (JSON, gRPC-Web, Connect streams, GET, compressed bodies, deadlines) goes to
 * Connect, which `take` says by returning false before it reads anything.
 */
export function createBinaryFastPath(options: BinaryFastPathOptions) {
  const unary = new Map<string, UnarySpec>();
  const serverStreams = new Map<string, ServerStreamingSpec>();
  for (const { service, impl } of options.services) {
    const spec = createServiceImplSpec(service, impl);
    for (const method of service.methods) {
      const m = spec.methods[method.localName]!;
      const path = `/${service.typeName}/${method.name}`;
      if (m.kind === "unary") unary.set(path, m);
      else if (m.kind === "server_streaming") serverStreams.set(path, m);
    }
  }

  return function take(path: string, req: NodeRequest, res: NodeResponse): boolean {
    if (req.method !== "POST") return false;
    const unarySpec = unary.get(path);
    if (unarySpec) {
      const protocol = protocolOf(req);
      if (!protocol) return false;
      void answer(protocol, unarySpec, req, res, options);
      return true;
    }
    const streamSpec = serverStreams.get(path);
    if (streamSpec && protocolOf(req) === "grpc") {
      void stream(streamSpec, req as http2.Http2ServerRequest, res as http2.Http2ServerResponse, options);
      return true;
    }
    return false;
  };
}

function protocolOf(req: NodeRequest): Protocol | undefined {
  const h = req.headers;
  const type = h["content-type"];
  if ((type === "application/grpc" || type === "application/grpc+proto") && req.httpVersionMajor === 2) {
    if (h["grpc-timeout"] !== undefined || (h["grpc-encoding"] !== undefined && h["grpc-encoding"] !== "identity")) return undefined;
    return "grpc";
  }
  if (type === "application/proto") {
    if (h["connect-timeout-ms"] !== undefined || (h["content-encoding"] !== undefined && h["content-encoding"] !== "identity")) return undefined;
    return "connect";
  }
  return undefined;
}

function contextFor(protocol: Protocol, spec: MethodImplSpec, req: NodeRequest, options: BinaryFastPathOptions, requestSignal?: AbortSignal) {
  return createHandlerContext({
    ...spec,
    service: spec.method.parent,
    requestMethod: "POST",
    protocolName: protocol,
    url: `http://${req.headers.host ?? req.headers[":authority"] ?? "localhost"}${req.url}`,
    requestHeader: headersOf(req),
    requestSignal,
    responseHeader: { "content-type": protocol === "grpc" ? "application/grpc+proto" : "application/proto" },
    responseTrailer: protocol === "grpc" ? { "grpc-status": "0" } : {},
    contextValues: options.contextValues?.(req),
  });
}

/** The request message: the whole body, unwrapped from its envelope for gRPC, decoded. */
async function readInput(protocol: Protocol, method: DescMethod, req: NodeRequest, options: BinaryFastPathOptions) {
  const bytes = await readBody(req, protocol === "grpc" ? options.readMaxBytes + 5 : options.readMaxBytes);
  const input = protocol === "grpc" ? unwrapEnvelope(bytes, options.readMaxBytes) : bytes;
  try {
    return fromBinary(method.input, input);
  } catch (err) {
    throw new ConnectError(`cannot decode message ${method.input.typeName} from binary: ${(err as Error).message}`, Code.InvalidArgument);
  }
}

function asConnectError(err: unknown): ConnectError {
  return err instanceof ConnectError ? err : new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

async function answer(protocol: Protocol, spec: UnarySpec, req: NodeRequest, res: NodeResponse, options: BinaryFastPathOptions): Promise<void> {
  const method = spec.method as DescMethod;
  const context = contextFor(protocol, spec, req, options);
  let body: Uint8Array | undefined;
  let error: ConnectError | undefined;
  try {
    const message = await readInput(protocol, method, req, options);
    const output = await invokeUnaryImplementation(spec, context, message, options.interceptors as Interceptor[]);
    const encoded = toBinary(method.output, output);
    if (encoded.byteLength > options.writeMaxBytes) {
      throw new ConnectError(`message size ${encoded.byteLength} is larger than configured writeMaxBytes ${options.writeMaxBytes}`, Code.ResourceExhausted);
    }
    body = encoded;
  } catch (err) {
    error = asConnectError(err);
  }
  if (res.writableEnded || res.destroyed) return; // the client went away
  try {
    write(protocol, context, res, body, error);
  } catch {
    // The stream closed between the check and the write: nobody is left to answer.
  }
}

function write(protocol: Protocol, context: HandlerContext, res: NodeResponse, body: Uint8Array | undefined, error: ConnectError | undefined): void {
  if (protocol === "grpc") {
    if (error) setTrailerStatus(context.responseTrailer, error);
    res.writeHead(200, plain(context.responseHeader));
    (res as http2.Http2ServerResponse).addTrailers(plain(context.responseTrailer));
    if (body) res.end(envelope(body));
    else res.end();
    return;
  }
  let status = 200;
  if (error) {
    status = codeToHttpStatus(error.code);
    context.responseHeader.set("content-type", "application/json");
    error.metadata.forEach((value, key) => context.responseHeader.set(key, value));
    body = errorToJsonBytes(error, {});
  }
  const header = trailerMux(context.responseHeader, context.responseTrailer);
  header.set("content-length", String(body!.byteLength));
  res.writeHead(status, plain(header));
  res.end(body!);
}

/**
 * A gRPC server stream: each message written as its envelope as soon as the implementation
 * yields it, waiting for the client when the stream's buffer is full; the status in trailers.
 * The client going away aborts the call's signal, which ends the implementation.
 */
async function stream(spec: ServerStreamingSpec, req: http2.Http2ServerRequest, res: http2.Http2ServerResponse, options: BinaryFastPathOptions): Promise<void> {
  const method = spec.method as DescMethod;
  const cancel = new AbortController();
  let finished = false;
  res.once("close", () => {
    if (!finished) cancel.abort(new ConnectError("the client cancelled the stream", Code.Canceled));
  });
  const context = contextFor("grpc", spec, req, options, cancel.signal);
  let error: ConnectError | undefined;
  let headersSent = false;
  const sendHeaders = () => {
    if (headersSent) return;
    headersSent = true;
    res.writeHead(200, plain(context.responseHeader));
  };
  try {
    const input = await readInput("grpc", method, req, options);
    const output = transformInvokeImplementation(spec, context, options.interceptors as Interceptor[])(createAsyncIterable([input]));
    for await (const message of output) {
      if (cancel.signal.aborted) break;
      const encoded = toBinary(method.output, message);
      if (encoded.byteLength > options.writeMaxBytes) {
        throw new ConnectError(`message size ${encoded.byteLength} is larger than configured writeMaxBytes ${options.writeMaxBytes}`, Code.ResourceExhausted);
      }
      sendHeaders();
      if (!res.write(envelope(encoded))) await drained(res, cancel.signal);
    }
  } catch (err) {
    error = asConnectError(err);
  }
  finished = true;
  if (cancel.signal.aborted || res.writableEnded || res.destroyed) return;
  try {
    sendHeaders();
    if (error) setTrailerStatus(context.responseTrailer, error);
    res.addTrailers(plain(context.responseTrailer));
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

function headersOf(req: NodeRequest): Headers {
  const out = new Headers();
  for (const [key, value] of Object.entries(req.headers)) {
    if (key.startsWith(":") || value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out.append(key, v);
    else out.set(key, value);
  }
  return out;
}

function plain(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, key) => (out[key] = value));
  return out;
}

/** The whole body, refused with resource_exhausted past `limit` bytes. */
function readBody(req: NodeRequest, limit: number): Promise<Uint8Array> {
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
