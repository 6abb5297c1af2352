/**
 * The Tidings TypeScript client: the generated EventService on the transport of your choice.
 * It depends only on @connectrpc/connect(-node) and @bufbuild/protobuf, not on the server.
 */
import { type CallOptions, type Client, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { create, type DescMessage, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { AnySchema, type Any } from "@bufbuild/protobuf/wkt";
import { EventService } from "../gen/tidings/v1/event_service_pb.js";
import { WebhookService } from "../gen/tidings/v1/webhook_service_pb.js";
import { event_type } from "../gen/tidings/v1/options_pb.js";
import { getOption } from "@bufbuild/protobuf";

export { EventService, WebhookService };
export * from "../gen/tidings/v1/webhook_pb.js";
export * from "../gen/tidings/v1/event_pb.js";
export * from "../gen/tidings/v1/event_service_pb.js";
export * from "./webhooks/verify.js";

export type TransportKind = "connect" | "grpc" | "grpc-web";

export interface ClientOptions {
  /** e.g. http://localhost:7233 */
  baseUrl: string;
  /** Wire protocol; Connect by default. All three are served on the same port. */
  transport?: TransportKind;
}

/**
 * A client for EventService. Payloads travel in protobuf binary, so no type registry is needed.
 * Leaving a `for await` over `subscribe` (break, return, throw) cancels the stream on the server.
 */
export function createTidingsClient(options: ClientOptions): Client<typeof EventService> {
  const client = createClient(EventService, transportFor(options.baseUrl, options.transport ?? "connect"));
  return { ...client, subscribe: cancelOnReturn(client.subscribe) };
}

function transportFor(baseUrl: string, kind: TransportKind): Transport {
  switch (kind) {
    case "grpc":
      return createGrpcTransport({ baseUrl });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
    default:
      return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
  }
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

/** A client for WebhookService: endpoints, deliveries, dead letters, replays, stats. */
export function createWebhookClient(options: ClientOptions): Client<typeof WebhookService> {
  return createClient(WebhookService, transportFor(options.baseUrl, options.transport ?? "connect"));
}

/** The event type a catalog message declares, e.g. "memory.created" for MemoryCreatedSchema. */
export function eventTypeOf(schema: DescMessage): string {
  const name = getOption(schema, event_type).name;
  if (!name) throw new Error(`${schema.typeName} is not an event type of the catalog`);
  return name;
}

/** Packs a catalog message for `Event.proto_data`. */
export function packPayload<Desc extends DescMessage>(schema: Desc, init: MessageInitShape<Desc>): Any {
  const message = create(schema, init) as MessageShape<Desc>;
  return create(AnySchema, { typeUrl: `type.googleapis.com/${schema.typeName}`, value: toBinary(schema, message) });
}
