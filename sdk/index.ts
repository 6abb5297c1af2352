/**
 * Tidings for Node: the high-level client (`createClient`), the raw generated clients, and
 * webhook verification. Browsers import `sdk/browser.ts` instead (no Node built-ins).
 */
import { type CallOptions, type Client, createClient as createConnectClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { EventService } from "../gen/tidings/v1/event_service_pb.js";
import { WebhookService } from "../gen/tidings/v1/webhook_service_pb.js";
import { AdminService } from "../gen/tidings/v1/admin_service_pb.js";
import { type ClientOptions, pack, TidingsClient, type TransportFactory, type TransportKind } from "./client.js";
import { WideWindowSessions } from "./stream-window.js";

export { AdminService, EventService, WebhookService };
export * from "../gen/tidings/v1/access_pb.js";
export * from "../gen/tidings/v1/admin_service_pb.js";
export * from "../gen/tidings/v1/event_pb.js";
export * from "../gen/tidings/v1/event_service_pb.js";
export * from "../gen/tidings/v1/webhook_pb.js";
export * from "./webhooks/verify.js";
export * from "./client.js";
export { catalogRegistry } from "./catalog.js";

const nodeTransports: TransportFactory = (kind, baseUrl, interceptors) => {
  switch (kind) {
    case "grpc":
      // Subscriptions share one connection: it gets a receive window for many streams.
      return createGrpcTransport({ baseUrl, interceptors, sessionManager: new WideWindowSessions(baseUrl) });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, interceptors });
    default:
      return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, interceptors });
  }
};

/**
 * The Tidings client for Node: typed publish, resumable subscriptions, handlers.
 *
 *     const tidings = createClient({ baseUrl: "http://localhost:7233", transport: "grpc" });
 *     await tidings.publish(MemoryCreatedSchema, { memoryId: "m-1" }, { attributes: { agent: "helena" } });
 *     for await (const e of tidings.subscribe({ patterns: ["memory.*"] })) if (e.is(MemoryCreatedSchema)) ...
 */
export function createClient(options: ClientOptions): TidingsClient {
  return new TidingsClient(options, nodeTransports);
}

/** Packs a catalog message for `Event.proto_data` (the same as `pack`). */
export const packPayload = pack;

/** Where the raw generated clients below connect, and with which API key. */
export interface RawClientOptions {
  baseUrl: string;
  transport?: TransportKind;
  /** An API key, sent as `Authorization: Bearer <token>`. */
  token?: string;
}

function rawTransport(options: RawClientOptions) {
  const { token } = options;
  const interceptors: Interceptor[] = token
    ? [(next) => (req) => {
        req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      }]
    : [];
  return nodeTransports(options.transport ?? "connect", options.baseUrl, interceptors);
}

/**
 * The raw generated EventService client, for code that wants the wire messages. Leaving a
 * `for await` over its `subscribe` (break, return, throw) cancels the stream on the server.
 */
export function createTidingsClient(options: RawClientOptions): Client<typeof EventService> {
  const client = createConnectClient(EventService, rawTransport(options));
  return { ...client, subscribe: cancelOnReturn(client.subscribe) };
}

/** The raw generated WebhookService client: endpoints, deliveries, dead letters, replays, stats. */
export function createWebhookClient(options: RawClientOptions): Client<typeof WebhookService> {
  return createConnectClient(WebhookService, rawTransport(options));
}

/** The raw generated AdminService client: GetStats and API keys. */
export function createAdminClient(options: RawClientOptions): Client<typeof AdminService> {
  return createConnectClient(AdminService, rawTransport(options));
}

type StreamCall<I, O> = (request: I, options?: CallOptions) => AsyncIterable<O>;

/**
 * Connect leaves the HTTP request open when a consumer stops iterating early; for an endless
 * stream that leaks a server-side subscription. Abort the call when the iterator is returned.
 */
function cancelOnReturn<I, O>(call: StreamCall<I, O>): StreamCall<I, O> {
  return (request, options = {}) => ({
    [Symbol.asyncIterator](): AsyncIterator<O> {
      const stop = new AbortController();
      const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
      const inner = call(request, { ...options, signal })[Symbol.asyncIterator]();
      return {
        next: () => inner.next(),
        async return(value?: unknown): Promise<IteratorResult<O>> {
          stop.abort();
          await inner.return?.().catch(() => undefined);
          return { done: true, value: value as O };
        },
      };
    },
  });
}
