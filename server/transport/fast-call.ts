import { create, type DescMessage, isMessage } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type StreamRequest,
  type StreamResponse,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import type { RequestHead } from "./request-head.js";

export type FastProtocol = "grpc" | "connect";
export type UnarySpec = Extract<MethodImplSpec, { kind: "unary" }>;
export type ServerStreamingSpec = Extract<MethodImplSpec, { kind: "server_streaming" }>;
export type UnaryFn = (req: UnaryRequest) => Promise<UnaryResponse>;
export type StreamFn = (req: StreamRequest) => Promise<StreamResponse>;

/** The response headers and trailers every answer starts with, by protocol. */
const initialHeader: Record<FastProtocol, Readonly<Record<string, string>>> = {
  grpc: { "content-type": "application/grpc+proto" },
  connect: { "content-type": "application/proto" },
};
const initialTrailer: Record<FastProtocol, Readonly<Record<string, string>>> = { grpc: { "grpc-status": "0" }, connect: {} };

/**
 * A call's response headers and trailers, as web Headers only once something asks for them (an
 * implementation setting a header, an error with metadata); otherwise the answer is written
 * with the protocol's initial ones as they are.
 */
export class ResponseMeta {
  #header: Headers | undefined;
  #trailer: Headers | undefined;
  constructor(private readonly protocol: FastProtocol) {}
  get header(): Headers {
    return (this.#header ??= new Headers(initialHeader[this.protocol]));
  }
  get trailer(): Headers {
    return (this.#trailer ??= new Headers(initialTrailer[this.protocol]));
  }
  /** Takes the headers of a response an interceptor made in place of the call's own. */
  adopt(response: UnaryResponse | StreamResponse, request: UnaryRequest | StreamRequest): void {
    if (response === stateOf(request).response) return; // ours: whatever was set went through this
    this.#header = response.header;
    this.#trailer = response.trailer;
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
 * What a call carries besides Connect's request fields: its response headers, its protocol,
 * and the response object the implementation's side made. A property keyed by a symbol, so an
 * interceptor that passes on a copy of the request (`{ ...req, header }`) passes it on too.
 */
const stateKey = Symbol("tidings.fastCall");
interface CallState {
  meta: ResponseMeta;
  protocol: FastProtocol;
  response?: object;
  /** The request the call's headers come from, and the call object callRequest made of it. */
  request: RequestHead;
  call?: object;
  /** The call's headers as web Headers, once something read `header`. */
  header?: Headers;
  /** The call's signal: the one it was given, or one made on first read. */
  signal?: AbortSignal;
}
const stateOf = (req: UnaryRequest | StreamRequest): CallState => (req as unknown as { [stateKey]: CallState })[stateKey];

/**
 * Getters for objects made per call (the request, the handler context, the response), each
 * function shared by every object it is put on: the object reads its call through a symbol.
 *
 * Not getters in an object literal, which are new closures for every object (and make it a
 * dictionary-mode object holding them). With those, nearly everything a call made (its
 * request, stream, message, response: about 4 KB) outlived two young-generation collections
 * (scavenges), long after the call ended, and was moved to the old generation, to be freed
 * only by a full collection; a heap snapshot, taken after one, never showed it. Measured with a
 * test server that read each request, made its call object and answered, calling none of the
 * getters: 2 MB promoted per scavenge at 1,000 calls a second with the literal, 1 KB with
 * these. For Tidings at 1,000 publishes a second with no subscriber (npm run bench:gc): 1.43
 * against 0.49 MB, and scavenge pauses of 7.5 against 4 ms (medians). Which V8 path kept them
 * alive was not found: the same literal in a plain Node loop does not (docs/PERFORMANCE.md,
 * twenty-third round).
 */
function sharedGetters<T>(getters: Record<string, (this: T) => unknown>): PropertyDescriptorMap {
  const descriptors: PropertyDescriptorMap = {};
  // Enumerable and configurable, as an object literal's getters are: a spread copy
  // (`{ ...req, header }`) reads them into plain values, as it did.
  for (const [name, get] of Object.entries(getters)) descriptors[name] = { get, enumerable: true, configurable: true };
  return descriptors;
}

type WithCallState = { [stateKey]: CallState };

const requestGetters = sharedGetters<WithCallState>({
  url() {
    return urlOf(this[stateKey].request);
  },
  signal() {
    const state = this[stateKey];
    return (state.signal ??= new AbortController().signal);
  },
  header() {
    const state = this[stateKey];
    return (state.header ??= headersOf(state.request));
  },
});

/**
 * The request the interceptors see. Its headers (a web Headers copy of Node's), signal and URL
 * are made on first read: a Publish reads none of them unless API keys are on. Without a
 * `signal`, the call's signal never aborts, as for Connect's unary calls without a deadline
 * (the fast path takes no deadlines).
 */
export function callRequest<T extends UnaryRequest | StreamRequest>(
  spec: UnarySpec | ServerStreamingSpec,
  protocol: FastProtocol,
  req: RequestHead,
  contextValues: ((req: RequestHead) => ContextValues) | undefined,
  message: T["message"],
  meta: ResponseMeta,
  signal?: AbortSignal,
): T {
  const state: CallState = { meta, protocol, request: req, signal };
  const call = {
    stream: spec.kind === "server_streaming",
    message,
    method: spec.method,
    service: spec.method.parent,
    requestMethod: "POST",
    contextValues: contextValues?.(req) ?? createContextValues(),
    [stateKey]: state,
  };
  Object.defineProperties(call, requestGetters);
  state.call = call;
  return call as unknown as T;
}

/**
 * One request header, as `req.header.get(name)` answers it. For a fast call whose headers
 * nobody has read or replaced, straight from the Node request: with API keys on, copying every
 * header into web Headers to read two of them (the key and the user agent) was 2.7% of the
 * server's CPU per Publish. Otherwise (Connect's own calls, headers already made, or a request
 * an interceptor copied) from `req.header` itself.
 */
export function requestHeaderValue(req: UnaryRequest | StreamRequest, name: string): string | null {
  const state = (req as unknown as { [stateKey]?: CallState })[stateKey];
  if (state?.call !== req || state.header !== undefined) return req.header.get(name);
  const value = state.request.headers[name];
  if (value === undefined) return null;
  // As Headers keeps it: repeated values joined, surrounding HTTP whitespace trimmed.
  return (Array.isArray(value) ? value.join(", ") : value).replace(httpWhitespaceAround, "");
}

const httpWhitespaceAround = /^[\t\n\r ]+|[\t\n\r ]+$/g;

/**
 * The request a handler context was made from (maybe an interceptor's copy, whose headers it
 * reads): its getters read through it, and the call's response headers through its state.
 */
const contextKey = Symbol("tidings.fastCall.context");
type WithContext = { [contextKey]: UnaryRequest | StreamRequest };

const contextGetters = sharedGetters<WithContext>({
  url() {
    return this[contextKey].url;
  },
  signal() {
    return this[contextKey].signal;
  },
  requestHeader() {
    return this[contextKey].header;
  },
  responseHeader() {
    return stateOf(this[contextKey]).meta.header;
  },
  responseTrailer() {
    return stateOf(this[contextKey]).meta.trailer;
  },
});

/** A response's headers are its call's (the response carries the call's state, as the request does). */
const responseGetters = sharedGetters<WithCallState>({
  header() {
    return this[stateKey].meta.header;
  },
  trailer() {
    return this[stateKey].meta.trailer;
  },
});

const noTimeout = () => undefined;

/** The implementation's context: the request's fields, as Connect's mergeRequest makes it, read when read. */
function contextOf(spec: UnarySpec | ServerStreamingSpec, req: UnaryRequest | StreamRequest): HandlerContext {
  const { protocol } = stateOf(req);
  const context = {
    method: spec.method,
    service: req.service,
    requestMethod: req.requestMethod,
    protocolName: protocol,
    timeoutMs: noTimeout,
    values: req.contextValues,
    [contextKey]: req,
  };
  return Object.defineProperties(context, contextGetters) as unknown as HandlerContext;
}

/** A response whose headers are the call's own, remembered as the implementation side's answer. */
function ownResponse<T extends UnaryResponse | StreamResponse>(req: UnaryRequest | StreamRequest, fields: Omit<T, "header" | "trailer">): T {
  const state = stateOf(req);
  const response = Object.defineProperties({ ...fields, [stateKey]: state }, responseGetters);
  state.response = response;
  return response as unknown as T;
}

/** Wraps `inner` in the interceptors, the first outermost, as Connect's applyInterceptors does (once per method, not per call). */
function intercepted<F>(inner: F, interceptors: readonly Interceptor[]): F {
  let next = inner;
  for (const interceptor of [...interceptors].reverse()) next = interceptor(next as never) as F;
  return next;
}

/** A unary method through its interceptors, as Connect's invokeUnaryImplementation calls it. */
export function composeUnary(spec: UnarySpec, interceptors: readonly Interceptor[]): UnaryFn {
  return intercepted<UnaryFn>(async (req) => {
    const output = create(spec.method.output as DescMessage, await spec.impl(req.message, contextOf(spec, req)));
    return ownResponse<UnaryResponse>(req, { stream: false, message: output, method: spec.method, service: req.service } as Omit<UnaryResponse, "header" | "trailer">);
  }, interceptors);
}

/**
 * A server-streaming method through its interceptors. The implementation's messages come out
 * as it yields them, with no generator of Connect's in between (invokeStreamImplementation and
 * normalizeIterable each added one per message): the caller makes a message of what is not one.
 */
export function composeServerStream(spec: ServerStreamingSpec, interceptors: readonly Interceptor[]): StreamFn {
  return intercepted<StreamFn>(async (req) => {
    const input = await onlyMessage(req.message);
    const output = spec.impl(input, contextOf(spec, req));
    return ownResponse<StreamResponse>(req, { stream: true, message: output, method: spec.method, service: req.service } as Omit<StreamResponse, "header" | "trailer">);
  }, interceptors);
}

/** A stream message as the wire needs it: Connect's normalize, for an implementation that yields a plain object. */
export function asMessage(desc: DescMessage, message: object) {
  return isMessage(message, desc) ? message : create(desc, message as Record<string, unknown>);
}

/** The one request message of a server stream (Connect's ensureSingle). */
async function onlyMessage<T>(messages: AsyncIterable<T>): Promise<T> {
  const it = messages[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done === true) throw new ConnectError("protocol error: missing input message for server-streaming method", Code.Unimplemented);
  const second = await it.next();
  if (second.done !== true) throw new ConnectError("protocol error: received extra input message for server-streaming method", Code.Unimplemented);
  return first.value;
}

function urlOf(req: RequestHead): string {
  return `http://${req.headers.host ?? req.headers[":authority"] ?? "localhost"}${req.url}`;
}

function headersOf(req: RequestHead): Headers {
  const out = new Headers();
  for (const [key, value] of Object.entries(req.headers)) {
    if (key.startsWith(":") || value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out.append(key, v);
    else out.set(key, value);
  }
  return out;
}

export function plain(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, key) => (out[key] = value));
  return out;
}
