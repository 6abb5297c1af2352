import type http from "node:http";
import type http2 from "node:http2";
import { create, type DescMessage, type DescMethod, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  createHandlerContext,
  createServiceImplSpec,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type ServiceImpl,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { createAsyncIterable, transformInvokeImplementation } from "@connectrpc/connect/protocol";
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
type UnaryFn = (req: UnaryRequest) => Promise<UnaryResponse>;

/** A unary method: its implementation, and the call through the interceptors, composed once. */
interface UnaryMethod {
  spec: UnarySpec;
  invoke: UnaryFn;
}
type ServerStreamingSpec = Extract<MethodImplSpec, { kind: "server_streaming" }>;

/**
 * Calls in protobuf binary answered without Connect's generic request pipeline. That pipeline
 * treats every call as a stream of async iterables: envelopes split and joined, web Headers
 * converted both ways, abort signals linked and aborted (a DOMException per call). Profiles
 * showed it as about a third of the server's CPU per Publish, and as most of the CPU of
 * streaming one event to many subscribers. The calls go through the same implementations and
 * interceptors, with the same error encodings (setTrailerStatus, errorToJsonBytes). Server
 * streams use Connect's own invocation (transformInvokeImplementation); unary calls are
 * invoked as Connect's invokeUnaryImplementation does, except that a call's headers, signal
 * and response headers are made only when something reads them (see unaryCall): creating them
 * for every Publish, which never reads them, was a tenth of the server's CPU.
 *
 * Only the plainest requests come here: POST, no compression and no deadline; unary calls as
 * `application/grpc[+proto]` over HTTP/2 or `application/proto`, server streams as gRPC.
 * Everything else (JSON, gRPC-Web, Connect streams, GET, compressed bodies, deadlines) goes to
 * Connect, which `take` says by returning false before it reads anything.
 */
export function createBinaryFastPath(options: BinaryFastPathOptions) {
  const unary = new Map<string, UnaryMethod>();
  // A stream message's envelope, by the message: an implementation that yields the same message
  // object to many streams (one event to every subscriber) has it encoded once.
  const envelopes = new WeakMap<object, Buffer>();
  const serverStreams = new Map<string, ServerStreamingSpec>();
  for (const { service, impl } of options.services) {
    const spec = createServiceImplSpec(service, impl);
    for (const method of service.methods) {
      const m = spec.methods[method.localName]!;
      const path = `/${service.typeName}/${method.name}`;
      if (m.kind === "unary") unary.set(path, { spec: m, invoke: withInterceptors(m, options.interceptors) });
      else if (m.kind === "server_streaming") serverStreams.set(path, m);
    }
  }

  return function take(path: string, req: NodeRequest, res: NodeResponse): boolean {
    if (req.method !== "POST") return false;
    const unaryMethod = unary.get(path);
    if (unaryMethod) {
      const protocol = protocolOf(req);
      if (!protocol) return false;
      void answer(protocol, unaryMethod, req, res, options);
      return true;
    }
    const streamSpec = serverStreams.get(path);
    if (streamSpec && protocolOf(req) === "grpc") {
      void stream(streamSpec, req as http2.Http2ServerRequest, res as http2.Http2ServerResponse, options, envelopes);
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
    url: urlOf(req),
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

async function answer(protocol: Protocol, unary: UnaryMethod, req: NodeRequest, res: NodeResponse, options: BinaryFastPathOptions): Promise<void> {
  const method = unary.spec.method as DescMethod;
  const meta = new ResponseMeta(protocol);
  let body: Uint8Array | undefined;
  let error: ConnectError | undefined;
  try {
    const message = await readInput(protocol, method, req, options);
    const response = await unary.invoke(unaryCall(protocol, unary.spec, req, options, message, meta));
    // An interceptor may answer with other headers than the call's own.
    if (response.header !== meta.header) meta.replace(response.header, response.trailer);
    const encoded = toBinary(method.output, response.message);
    if (encoded.byteLength > options.writeMaxBytes) {
      throw new ConnectError(`message size ${encoded.byteLength} is larger than configured writeMaxBytes ${options.writeMaxBytes}`, Code.ResourceExhausted);
    }
    body = encoded;
  } catch (err) {
    error = asConnectError(err);
  }
  if (res.writableEnded || res.destroyed) return; // the client went away
  try {
    write(protocol, meta, res, body, error);
  } catch {
    // The stream closed between the check and the write: nobody is left to answer.
  }
}

/** The response headers and trailers every answer starts with, by protocol. */
const initialHeader: Record<Protocol, Readonly<Record<string, string>>> = {
  grpc: { "content-type": "application/grpc+proto" },
  connect: { "content-type": "application/proto" },
};
const initialTrailer: Record<Protocol, Readonly<Record<string, string>>> = { grpc: { "grpc-status": "0" }, connect: {} };

/**
 * A unary call's response headers and trailers, as web Headers only once something asks for
 * them (an implementation setting a header, an error with metadata); otherwise the answer is
 * written with the protocol's initial ones as they are.
 */
class ResponseMeta {
  #header: Headers | undefined;
  #trailer: Headers | undefined;
  constructor(private readonly protocol: Protocol) {}
  get header(): Headers {
    return (this.#header ??= new Headers(initialHeader[this.protocol]));
  }
  get trailer(): Headers {
    return (this.#trailer ??= new Headers(initialTrailer[this.protocol]));
  }
  replace(header: Headers, trailer: Headers): void {
    this.#header = header;
    this.#trailer = trailer;
  }
  plainHeader(): Record<string, string> {
    return this.#header ? plain(this.#header) : { ...initialHeader[this.protocol] };
  }
  plainTrailer(): Record<string, string> {
    return this.#trailer ? plain(this.#trailer) : { ...initialTrailer[this.protocol] };
  }
  get touched(): boolean {
    return this.#header !== undefined || this.#trailer !== undefined;
  }
}

/**
 * The interceptors around the implementation, composed once per method (Connect composes them
 * per call). The implementation's context is the request's, as Connect's mergeRequest makes it.
 */
function withInterceptors(spec: UnarySpec, interceptors: readonly Interceptor[]): UnaryFn {
  let next = async (req: UnaryRequest): Promise<UnaryResponse> => {
    const meta = responseMetaOf(req);
    const context: HandlerContext = {
      method: spec.method,
      service: req.service,
      requestMethod: req.requestMethod,
      protocolName: protocolNameOf(req),
      timeoutMs: () => undefined,
      values: req.contextValues,
      get url() {
        return req.url;
      },
      get signal() {
        return req.signal;
      },
      get requestHeader() {
        return req.header;
      },
      get responseHeader() {
        return meta.header;
      },
      get responseTrailer() {
        return meta.trailer;
      },
    };
    const output = create(spec.method.output as DescMessage, await spec.impl(req.message, context));
    return responseOf(spec, req.service, output, meta);
  };
  // The first interceptor is the outermost, as applyInterceptors composes them.
  for (const interceptor of [...interceptors].reverse()) next = interceptor(next as never) as never;
  return next;
}

function responseOf(spec: UnarySpec, service: DescService, message: UnaryResponse["message"], meta: ResponseMeta): UnaryResponse {
  return {
    stream: false,
    message,
    method: spec.method,
    service,
    get header() {
      return meta.header;
    },
    get trailer() {
      return meta.trailer;
    },
  } as UnaryResponse;
}

/**
 * Where the implementation finds the call's response headers and protocol: a property of the
 * request that unaryCall sets, keyed by a symbol so that an interceptor passing on a copy of the
 * request (`{ ...req, header }`) passes it on too.
 */
const callMetaKey = Symbol("tidings.fastPathCall");
type CallMeta = { meta: ResponseMeta; protocol: Protocol };
const callMetaOf = (req: UnaryRequest): CallMeta => (req as unknown as { [callMetaKey]: CallMeta })[callMetaKey];
const responseMetaOf = (req: UnaryRequest) => callMetaOf(req).meta;
const protocolNameOf = (req: UnaryRequest) => callMetaOf(req).protocol;

/**
 * The request the interceptors see. Its headers (a web Headers copy of Node's), signal and URL
 * are made on first read: a Publish reads none of them unless API keys are on. The signal never
 * aborts, as for Connect's unary calls without a deadline (the fast path takes no deadlines).
 */
function unaryCall(protocol: Protocol, spec: UnarySpec, req: NodeRequest, options: BinaryFastPathOptions, message: UnaryRequest["message"], meta: ResponseMeta): UnaryRequest {
  let header: Headers | undefined;
  let signal: AbortSignal | undefined;
  const call = {
    stream: false as const,
    message,
    method: spec.method,
    service: spec.method.parent,
    requestMethod: "POST",
    contextValues: options.contextValues?.(req) ?? createContextValues(),
    get url() {
      return urlOf(req);
    },
    get signal() {
      return (signal ??= new AbortController().signal);
    },
    get header() {
      return (header ??= headersOf(req));
    },
    [callMetaKey]: { meta, protocol } satisfies CallMeta,
  };
  return call as unknown as UnaryRequest;
}

function urlOf(req: NodeRequest): string {
  return `http://${req.headers.host ?? req.headers[":authority"] ?? "localhost"}${req.url}`;
}

function write(protocol: Protocol, meta: ResponseMeta, res: NodeResponse, body: Uint8Array | undefined, error: ConnectError | undefined): void {
  if (protocol === "grpc") {
    if (error) setTrailerStatus(meta.trailer, error);
    res.writeHead(200, meta.plainHeader());
    (res as http2.Http2ServerResponse).addTrailers(meta.plainTrailer());
    if (body) res.end(envelope(body));
    else res.end();
    return;
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
  res.writeHead(status, header);
  res.end(body!);
}

/**
 * A gRPC server stream: each message written as its envelope as soon as the implementation
 * yields it, waiting for the client when the stream's buffer is full; the status in trailers.
 * The client going away aborts the call's signal, which ends the implementation.
 */
async function stream(spec: ServerStreamingSpec, req: http2.Http2ServerRequest, res: http2.Http2ServerResponse, options: BinaryFastPathOptions, envelopes: WeakMap<object, Buffer>): Promise<void> {
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
      let framed = envelopes.get(message);
      if (!framed) {
        const encoded = toBinary(method.output, message);
        if (encoded.byteLength > options.writeMaxBytes) {
          throw new ConnectError(`message size ${encoded.byteLength} is larger than configured writeMaxBytes ${options.writeMaxBytes}`, Code.ResourceExhausted);
        }
        framed = envelope(encoded);
        envelopes.set(message, framed);
      }
      sendHeaders();
      if (!res.write(framed)) await drained(res, cancel.signal);
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
