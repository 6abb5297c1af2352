import { Code, ConnectError, type Client, createClient as createConnectClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { create, type DescMessage, getOption, type JsonObject, type Message, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { type Any, AnySchema, anyUnpack, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Event } from "../gen/tidings/v1/event_pb.js";
import { EventService, PayloadFormat, type PublishResponse, StartPosition, type SubscribeRequest, SubscribeRequestSchema } from "../gen/tidings/v1/event_service_pb.js";
import { event_type } from "../gen/tidings/v1/options_pb.js";
import { WebhookService } from "../gen/tidings/v1/webhook_service_pb.js";
import { catalogRegistry } from "./catalog.js";

export type TransportKind = "connect" | "grpc" | "grpc-web";

export interface ClientOptions {
  /** The server, e.g. http://localhost:7233. */
  baseUrl: string;
  /** Wire protocol; Connect by default. The server speaks all three on one port. */
  transport?: TransportKind;
  /** An API key, sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** Extra headers on every call. */
  headers?: Record<string, string>;
  /** Deadline of each unary call, in milliseconds; subscriptions have none. */
  timeoutMs?: number;
  /** The `source` of published events unless a call says otherwise; default "tidings-sdk". */
  source?: string;
  /** Where errors thrown by `on()` handlers (and subscriptions that gave up) are reported. */
  onError?: (error: unknown, context: { pattern?: string[]; event?: ReceivedEvent }) => void;
}

export interface PublishOptions {
  source?: string;
  subject?: string;
  attributes?: Record<string, string>;
  /** Makes a retry safe: the server returns the original event for a key it has seen. */
  idempotencyKey?: string;
  id?: string;
  time?: Date;
}

/** Where a subscription starts: an end of the log, after a sequence (a cursor), or at a time. */
export type StartAt = "latest" | "earliest" | bigint | Date;

export interface SubscribeOptions {
  /** Type patterns: "memory.*", "tidings.**"; empty means every type. */
  patterns?: string[];
  /** A CEL filter, e.g. `data.tier == "hot"`. */
  filter?: string;
  attributes?: Record<string, string>;
  from?: StartAt;
  signal?: AbortSignal;
  /** Reconnection backoff after transport errors: doubled each time, with jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  /**
   * Called each time the stream is established (the first time and after every reconnection),
   * with the cursor it stands at: from then on nothing published is missed.
   */
  onSubscribed?: (cursor: bigint) => void;
  /**
   * Throw if the very first connection fails, instead of retrying: for tools that should say
   * at once that the server is unreachable. Later failures still reconnect.
   */
  failFast?: boolean;
}

/** A received event: the envelope, and the payload unpacked into its generated message. */
export interface ReceivedEvent<M extends Message = Message> {
  id: string;
  type: string;
  source: string;
  subject: string;
  time: Date;
  attributes: Record<string, string>;
  sequence: bigint;
  /** The payload; undefined only for a type this SDK build does not know (see `raw`). */
  data: M | undefined;
  /** The packed payload as it came. */
  raw: Any | undefined;
  /** Narrows the event to one catalog message: `if (e.is(MemoryCreatedSchema)) e.data.memoryId`. */
  is<Desc extends DescMessage>(schema: Desc): this is ReceivedEvent<MessageShape<Desc>> & { data: MessageShape<Desc> };
}

export type EventHandler = (event: ReceivedEvent) => void | Promise<void>;

/** Builds the transport for a kind; the Node and browser entry points differ here. */
export type TransportFactory = (kind: TransportKind, baseUrl: string, interceptors: Interceptor[]) => Transport;

/** Codes after which reconnecting cannot help: the request itself is wrong or not allowed. */
const finalCodes = new Set([Code.InvalidArgument, Code.NotFound, Code.PermissionDenied, Code.Unauthenticated, Code.OutOfRange, Code.FailedPrecondition, Code.Unimplemented, Code.AlreadyExists]);

/**
 * The Tidings client. Typed publish from the generated catalog messages, subscriptions that
 * reconnect and resume from their cursor, callback handlers, and the raw generated clients.
 */
export class TidingsClient {
  /** The generated EventService client, for anything not wrapped here. */
  readonly events: Client<typeof EventService>;
  /** The generated WebhookService client. */
  readonly webhooks: Client<typeof WebhookService>;
  readonly #options: ClientOptions;
  readonly #closed = new AbortController();

  constructor(options: ClientOptions, transports: TransportFactory) {
    this.#options = options;
    const headers = { ...options.headers, ...(options.token ? { authorization: `Bearer ${options.token}` } : {}) };
    const withHeaders: Interceptor = (next) => (req) => {
      for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
      return next(req);
    };
    const base = transports(options.transport ?? "connect", options.baseUrl, [withHeaders]);
    // The default deadline applies to every unary call (the raw clients' too), never to a stream.
    const transport: Transport = {
      unary: (method, signal, timeoutMs, header, input, contextValues) =>
        base.unary(method, signal, timeoutMs ?? options.timeoutMs, header, input, contextValues),
      stream: (method, signal, timeoutMs, header, input, contextValues) =>
        base.stream(method, signal, timeoutMs, header, input, contextValues),
    };
    this.events = createConnectClient(EventService, transport);
    this.webhooks = createConnectClient(WebhookService, transport);
  }

  /** Publishes one event typed by its catalog message: the type name comes from the message. */
  async publish<Desc extends DescMessage>(schema: Desc, data: MessageInitShape<Desc>, options: PublishOptions = {}): Promise<PublishResponse> {
    return this.events.publish(this.#request(eventTypeOf(schema), { case: "protoData", value: pack(schema, data) }, options));
  }

  /** Publishes several typed events atomically: all or none. */
  async publishBatch(entries: ReadonlyArray<{ schema: DescMessage; data: MessageInitShape<DescMessage>; options?: PublishOptions }>): Promise<PublishResponse[]> {
    const res = await this.events.publishBatch(
      { entries: entries.map((e) => this.#request(eventTypeOf(e.schema), { case: "protoData", value: pack(e.schema, e.data) }, e.options ?? {})) },
    );
    return res.results;
  }

  /** Publishes an event given as a type name and a JSON payload (field names as in the .proto). */
  async publishJson(type: string, data: JsonObject, options: PublishOptions = {}): Promise<PublishResponse> {
    return this.events.publish(this.#request(type, { case: "data", value: data }, options));
  }

  /**
   * Streams matching events in sequence order. After a transport error (server restart, network)
   * it reconnects with backoff and jitter and resumes after the last cursor: no gap, no
   * duplicate. It ends on `signal`, `close()`, or `break`; a refusal (bad filter, ...) throws.
   */
  async *subscribe(options: SubscribeOptions = {}): AsyncGenerator<ReceivedEvent> {
    const stop = new AbortController();
    const signal = AbortSignal.any([stop.signal, this.#closed.signal, ...(options.signal ? [options.signal] : [])]);
    const initialMs = options.backoff?.initialMs ?? 100;
    const maxMs = options.backoff?.maxMs ?? 10_000;
    let cursor: bigint | undefined = typeof options.from === "bigint" ? options.from : undefined;
    let failures = 0;
    let everConnected = false;
    try {
      while (!signal.aborted) {
        const request = this.#subscribeRequest(options, cursor);
        let connected = false;
        try {
          for await (const res of this.events.subscribe(request, { signal })) {
            failures = 0;
            cursor = res.cursor;
            if (!connected) {
              // The server's first message (a heartbeat) says the subscription is in place.
              connected = everConnected = true;
              options.onSubscribed?.(res.cursor);
            }
            if (res.message.case === "event") yield received(res.message.value);
          }
        } catch (err) {
          if (signal.aborted) return;
          const code = ConnectError.from(err).code;
          if (finalCodes.has(code) || (options.failFast && !everConnected)) throw err;
          failures++;
        }
        if (signal.aborted) return;
        // Full jitter: clients cut off together do not all come back at the same instant.
        const delay = Math.min(maxMs, initialMs * 2 ** Math.max(0, failures - 1)) * (0.5 + Math.random() / 2);
        await sleep(delay, signal);
      }
    } finally {
      stop.abort(); // `break` in the caller's loop lands here: end the server-side stream too
    }
  }

  /**
   * Calls `handler` for each matching event; returns a function that unsubscribes. Each handler
   * has its own stream: a slow one delays only itself. A throw (or a rejected promise) goes to
   * `onError` and never stops the stream or other handlers.
   */
  on(pattern: string | string[], handler: EventHandler, options: Omit<SubscribeOptions, "patterns"> = {}): () => void {
    const patterns = Array.isArray(pattern) ? pattern : [pattern];
    const stop = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
    const report = (error: unknown, event?: ReceivedEvent) => {
      try {
        (this.#options.onError ?? defaultOnError)(error, { pattern: patterns, event });
      } catch {
        // An onError that throws must not take the stream down either.
      }
    };
    void (async () => {
      try {
        for await (const event of this.subscribe({ ...options, patterns, signal })) {
          try {
            await handler(event);
          } catch (err) {
            report(err, event);
          }
        }
      } catch (err) {
        report(err);
      }
    })();
    return () => stop.abort();
  }

  /** Ends every subscription and handler of this client. */
  close(): void {
    this.#closed.abort();
  }

  #request(type: string, payload: Event["payload"], o: PublishOptions) {
    return {
      idempotencyKey: o.idempotencyKey ?? "",
      event: {
        type,
        id: o.id ?? "",
        source: o.source ?? this.#options.source ?? "tidings-sdk",
        subject: o.subject ?? "",
        attributes: o.attributes ?? {},
        time: o.time ? timestampFromDate(o.time) : undefined,
        payload,
      },
    };
  }

  #subscribeRequest(o: SubscribeOptions, cursor: bigint | undefined): SubscribeRequest {
    const from = o.from ?? "latest";
    const start: SubscribeRequest["start"] =
      cursor !== undefined ? { case: "afterSequence", value: cursor }
      : from instanceof Date ? { case: "startTime", value: timestampFromDate(from) }
      : { case: "position", value: from === "earliest" ? StartPosition.EARLIEST : StartPosition.LATEST };
    return create(SubscribeRequestSchema, {
      patterns: o.patterns ?? [],
      filter: o.filter ?? "",
      attributes: o.attributes ?? {},
      start,
      payloadFormat: PayloadFormat.PROTO,
    });
  }
}

/** The event type a catalog message declares, e.g. "memory.created" for MemoryCreatedSchema. */
export function eventTypeOf(schema: DescMessage): string {
  const name = getOption(schema, event_type).name;
  if (!name) throw new Error(`${schema.typeName} is not an event type of the catalog`);
  return name;
}

/** Packs a catalog message for `Event.proto_data`. */
export function pack<Desc extends DescMessage>(schema: Desc, init: MessageInitShape<Desc>): Any {
  return create(AnySchema, { typeUrl: `type.googleapis.com/${schema.typeName}`, value: toBinary(schema, create(schema, init) as MessageShape<Desc>) });
}

function received(e: Event): ReceivedEvent {
  const raw = e.payload.case === "protoData" ? e.payload.value : undefined;
  const data = raw ? anyUnpack(raw, catalogRegistry) : undefined;
  return {
    id: e.id,
    type: e.type,
    source: e.source,
    subject: e.subject,
    time: e.time ? timestampDate(e.time) : new Date(0),
    attributes: e.attributes,
    sequence: e.sequence,
    data,
    raw,
    is<Desc extends DescMessage>(schema: Desc): this is ReceivedEvent<MessageShape<Desc>> & { data: MessageShape<Desc> } {
      return data !== undefined && data.$typeName === schema.typeName;
    },
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

function defaultOnError(error: unknown, context: { pattern?: string[] }): void {
  console.error(`tidings: handler for ${context.pattern?.join(", ") ?? "events"} failed:`, error);
}
