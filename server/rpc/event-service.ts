import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { create, type DescFile } from "@bufbuild/protobuf";
import {
  durationMs,
  type FileDescriptorProto,
  FileDescriptorSetSchema,
  timestampFromDate,
} from "@bufbuild/protobuf/wkt";
import {
  EventService,
  type GetEventTypeRequest,
  GetEventTypeResponseSchema,
  type ListEventsRequest,
  type PublishBatchRequest,
  type PublishRequest,
  type PublishResponse,
  StartPosition,
  type SubscribeRequest,
  type SubscribeResponse,
  SubscribeResponseSchema,
  type EventType,
  EventTypeSchema,
  type RegisterEventTypesRequest,
} from "../../gen/tidings/v1/event_service_pb.js";
import { PreconditionFailureSchema } from "../../gen/google/rpc/error_details_pb.js";
import { DescriptorSetError, NameConflictError } from "../catalog/registration/descriptor-set.js";
import { BreakingChangeError, type RegisteredTypeStore, type RegistrationResult } from "../catalog/registration/registered-type-store.js";
import type { EventCatalog, EventTypeEntry } from "../catalog/catalog.js";
import { jsonSchemaFor } from "../catalog/json-schema.js";
import type { FieldViolation } from "../catalog/payload-validation.js";
import type { ServerConfig } from "../config/config.js";
import { type AppendQueue, AppendConflictError, type AppendResult, type NewEvent } from "../event-log/append-queue.js";
import type { EventReader } from "../event-log/event-reader.js";
import { uuidV7 } from "../event-log/uuid-v7.js";
import { compileFilter, FilterError, type EventFilter, type FilterLimits, filterLimitsOf } from "../filtering/cel-filter.js";
import { createEventMatcher, type EventMatcher } from "../filtering/event-matcher.js";
import { parseTypePattern, type TypePattern, TypePatternError } from "../filtering/type-pattern.js";
import { maxSequence } from "../storage/schema.js";
import type { LogTail } from "../streaming/log-tail.js";
import { runSubscription, type Subscription, type SubscriptionItem } from "../streaming/subscription.js";
import { nextInTurn, type PollableIterator } from "../concurrency/pollable-iterator.js";
import { connectCodeOf, fieldError, invalidArgument } from "./errors.js";
import { dateOf } from "./timestamps.js";
import { binaryEventResponse, prepareEvent, toApiEvent, withFreshCatalog } from "./event-envelope.js";
import { decodePageToken, fingerprint, pageSizeOf, toPage } from "./page-token.js";
import type { EventAccess } from "../auth/event-access.js";

export interface StreamStats {
  active: number;
  fallbacks: number;
  /** Every open stream, by id (GetStats, /metrics). */
  open: Map<string, OpenStream>;
}

/** An open Subscribe stream as GetStats and /metrics report it. */
export interface OpenStream {
  id: string;
  patterns: readonly string[];
  attributes: Readonly<Record<string, string>>;
  filter: string;
  openedAt: Date;
  cursor(): bigint;
  sent: number;
  fallbacks: number;
}

/** What the event service reports to /metrics. */
export interface PublishMetrics {
  /**
   * A Publish or PublishBatch call answered: how long it took and, when refused, its Connect
   * code and the types of the events it refused (a refused batch stores none of its events).
   */
  publishCall(method: "Publish" | "PublishBatch", seconds: number, refused?: { code: Code; types: string[] }): void;
}

export interface EventServiceDeps {
  catalog: EventCatalog;
  /** Where RegisterEventTypes stores types; it updates `catalog` too. */
  registeredTypes: Pick<RegisteredTypeStore, "register">;
  reader: EventReader;
  appendQueue: AppendQueue;
  tail: LogTail;
  config: Pick<ServerConfig, "maxPayloadBytes" | "maxBatchEntries" | "subscriberBufferEvents" | "heartbeatIntervalMs" | "maxFilterLength" | "maxFilterTerms" | "maxFilterNesting" | "maxFilterSteps">;
  /** Aborts when the server shuts down: streams end with `unavailable` so clients resume elsewhere. */
  shutdownSignal: AbortSignal;
  /** Counts open Subscribe streams, and live subscribers moved back to the log for being slow. */
  streams: StreamStats;
  metrics?: PublishMetrics;
  /** The caller's key: the types it may publish and read, its publish rate and its streams. */
  access: EventAccess;
}

const defaultPageSize = 100;
const maxPageSize = 1000;
const catchUpPageSize = 500;
const heartbeatBounds = { minMs: 1000, maxMs: 300_000 };

export function createEventService(deps: EventServiceDeps): ServiceImpl<typeof EventService> {
  const { catalog, reader } = deps;

  const filterLimits: FilterLimits = filterLimitsOf(deps.config);
  const append = async (events: NewEvent[], pathOf: (index: number, field: string) => string): Promise<AppendResult[]> => {
    try {
      return await deps.appendQueue.append(events);
    } catch (err) {
      if (err instanceof AppendConflictError) throw fieldError(Code.AlreadyExists, [{ field: pathOf(err.index, err.field), description: err.message }]);
      throw err;
    }
  };

  const publish = async (req: PublishRequest, ctx: HandlerContext) => {
    if (req.event) deps.access.checkPublishTypes(ctx, [{ type: req.event.type, field: "event.type" }]);
    const prepared = await withFreshCatalog(catalog, () => prepareEvent(req.event, req.idempotencyKey, "event", catalog, deps.config.maxPayloadBytes, "idempotency_key"));
    if (!prepared.ok) throw fieldError(prepared.tooLarge ? Code.ResourceExhausted : Code.InvalidArgument, prepared.violations);
    deps.access.takePublish(ctx, 1, "event");
    const [result] = await append([prepared.event], (_i, field) => field);
    return toPublishResponse(result!);
  };

  const publishBatch = async (req: PublishBatchRequest, ctx: HandlerContext) => {
    if (req.entries.length === 0) throw invalidArgument("entries", "must hold at least one event");
    if (req.entries.length > deps.config.maxBatchEntries) {
      throw fieldError(Code.ResourceExhausted, [{ field: "entries", description: `holds ${req.entries.length} events, more than the limit of ${deps.config.maxBatchEntries}` }]);
    }
    deps.access.checkPublishTypes(ctx, req.entries.map((entry, i) => ({ type: entry.event?.type ?? "", field: `entries[${i}].event.type` })));
    const prepared = await withFreshCatalog(catalog, () => {
      const violations: FieldViolation[] = [];
      let tooLarge = false;
      const events: NewEvent[] = [];
      req.entries.forEach((entry, i) => {
        const one = prepareEvent(entry.event, entry.idempotencyKey, `entries[${i}].event`, catalog, deps.config.maxPayloadBytes, `entries[${i}].idempotency_key`);
        if (one.ok) events.push(one.event);
        else {
          violations.push(...one.violations);
          tooLarge ||= one.tooLarge;
        }
      });
      return { ok: violations.length === 0, violations, tooLarge, events };
    });
    if (!prepared.ok) throw fieldError(prepared.tooLarge ? Code.ResourceExhausted : Code.InvalidArgument, prepared.violations);
    const events = prepared.events;
    deps.access.takePublish(ctx, events.length, "entries");
    const results = await append(events, (i, field) => `entries[${i}].${field}`);
    return { results: results.map(toPublishResponse) };
  };

  /**
   * Runs a publish call and reports its time and, when refused, its code and the refused
   * events' types: a type the catalog does not know is reported as "unknown", so a client
   * sending made-up types cannot grow the metric's label set without bound.
   */
  const measured = async <T>(method: "Publish" | "PublishBatch", types: () => string[], call: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      const result = await call();
      deps.metrics?.publishCall(method, (performance.now() - started) / 1000);
      return result;
    } catch (err) {
      const refusedTypes = types().map((type) => (catalog.get(type) ? type : "unknown"));
      deps.metrics?.publishCall(method, (performance.now() - started) / 1000, { code: connectCodeOf(err), types: refusedTypes });
      throw err;
    }
  };

  /**
   * Subscribe's responses: runSubscription's items, each mapped to its response. A plain
   * iterator rather than an async generator around runSubscription: every message of every
   * stream passes through here, and a generator's yield and for-await cost promises, result
   * objects and a resumption per message; with 100 subscribers the two generators of this
   * path made over half of what the server allocated (a sampling profile at 1,000 events/s).
   * Without this one, the p50 at 100 subscribers was 4.89 ms against 6.01 and the p99 18.0
   * against 20.8 (medians of three alternated runs). runSubscription is no generator either
   * (see Subscription): the items of a batch are at hand at once (poll()), so each of them costs
   * one promise here, not one for the item and one for its response, and none for a consumer
   * that polls too (PollableIterator: the gRPC fast path). Like a generator, it
   * checks the request and opens the subscription at the first next() (or fill()), and a
   * refusal or a failure reaches the consumer where a generator's would; a consumer's throw()
   * (Connect's, when a write fails) or return() ends it.
   */
  function subscriptionResponses(req: SubscribeRequest, ctx: HandlerContext): AsyncIterable<SubscribeResponse> {
    let items: Subscription | undefined;
    let last = 0n;
    let binary = true;
    let stream: OpenStream | undefined;
    let releaseSlot: (() => void) | undefined;
    let ended = false;
    const open = async (): Promise<Subscription> => {
      const patterns = deps.access.readPatterns(ctx, req.patterns);
      const matcher = buildMatcher(patterns, req.attributes, req.filter, catalog, filterLimits);
      let heartbeatMs = deps.config.heartbeatIntervalMs;
      if (req.heartbeatInterval) {
        heartbeatMs = durationMs(req.heartbeatInterval);
        if (heartbeatMs < heartbeatBounds.minMs || heartbeatMs > heartbeatBounds.maxMs) {
          throw invalidArgument("heartbeat_interval", "must be between 1s and 300s");
        }
      }
      const cursor = await startCursor(req, reader);
      last = cursor;
      const signal = AbortSignal.any([ctx.signal, deps.shutdownSignal]);
      const opened: OpenStream = {
        id: `sub_${uuidV7()}`, patterns: [...patterns], attributes: { ...req.attributes }, filter: req.filter, openedAt: new Date(),
        cursor: () => last, sent: 0, fallbacks: 0,
      };
      const subscription = runSubscription({
        reader,
        tail: deps.tail,
        matcher,
        cursor,
        bufferEvents: deps.config.subscriberBufferEvents,
        heartbeatMs,
        pageSize: catchUpPageSize,
        signal,
        onFallback: () => {
          deps.streams.fallbacks++;
          opened.fallbacks++;
        },
      });
      // gRPC, gRPC-Web and Connect streams in protobuf binary get the event encoded once per node.
      binary = !/json/i.test(ctx.requestHeader.get("content-type") ?? "");
      stream = opened;
      releaseSlot = deps.access.openSubscription(ctx);
      deps.streams.active++;
      deps.streams.open.set(opened.id, opened);
      return subscription;
    };
    /** The stream's own cleanup: once, however it ends. */
    const close = () => {
      if (ended) return;
      ended = true;
      if (stream === undefined) return;
      deps.streams.active--;
      deps.streams.open.delete(stream.id);
      releaseSlot?.();
    };
    const respond = (result: IteratorResult<SubscriptionItem>): IteratorResult<SubscribeResponse> => {
      if (result.done === true) {
        close();
        if (deps.shutdownSignal.aborted && !ctx.signal.aborted) {
          throw new ConnectError(`the server is shutting down; resume with after_sequence=${last}`, Code.Unavailable);
        }
        return { done: true, value: undefined };
      }
      const item = result.value;
      last = item.cursor;
      if (item.kind === "heartbeat") {
        return { done: false, value: create(SubscribeResponseSchema, { message: { case: "heartbeat", value: { time: timestampFromDate(new Date()) } }, cursor: item.cursor }) };
      }
      stream!.sent++;
      return {
        done: false,
        value: binary
          ? binaryEventResponse(item.event, req.payloadFormat, catalog, item.cursor)
          : create(SubscribeResponseSchema, { message: { case: "event", value: toApiEvent(item.event, req.payloadFormat, catalog) }, cursor: item.cursor }),
      };
    };
    const failed = (err: unknown): never => {
      close();
      throw err;
    };
    /** The consumer stopped early: runSubscription's own cleanup, then ours. */
    const stop = async () => {
      try {
        await items?.return();
      } finally {
        close();
      }
    };
    /** The request refused or the subscription failed to open, for the next poll() to throw. */
    let refused: { error: unknown } | undefined;
    /** What is at hand (see PollableIterator): the rest of a batch or a page, answered with no wait. */
    const poll = (): IteratorResult<SubscribeResponse> | undefined => {
      if (ended) return { done: true, value: undefined };
      if (refused !== undefined) failed(refused.error);
      let ready: IteratorResult<SubscriptionItem> | undefined;
      try {
        ready = items?.poll();
      } catch (err) {
        failed(err);
      }
      return ready === undefined ? undefined : respond(ready);
    };
    /** Until poll() may have something; the subscription opens at the first wait. Never rejects (see PollableIterator). */
    const fill = (): Promise<void> => {
      if (ended || refused !== undefined) return Promise.resolve();
      if (items !== undefined) return items.fill();
      return open().then(
        (opened) => {
          items = opened;
          return opened.fill();
        },
        (err: unknown) => {
          refused = { error: err };
        },
      );
    };
    // An item made with the ones before it is answered at once: one promise per message, not
    // one for the item and one for the response.
    const next = nextInTurn({ poll, fill });
    return {
      [Symbol.asyncIterator]: (): PollableIterator<SubscribeResponse> => ({
        next,
        poll,
        fill,
        return: async (): Promise<IteratorResult<SubscribeResponse>> => {
          await stop();
          return { done: true, value: undefined };
        },
        // An error thrown in by the consumer (a failed write) ends the stream, as at a generator's yield.
        throw: async (err?: unknown): Promise<IteratorResult<SubscribeResponse>> => {
          await stop();
          throw err;
        },
      }),
    };
  }

  return {
    publish: (req: PublishRequest, ctx: HandlerContext) => measured("Publish", () => [req.event?.type ?? ""], () => publish(req, ctx)),
    publishBatch: (req: PublishBatchRequest, ctx: HandlerContext) =>
      measured("PublishBatch", () => req.entries.map((entry) => entry.event?.type ?? ""), () => publishBatch(req, ctx)),

    subscribe(req: SubscribeRequest, ctx: HandlerContext): AsyncIterable<SubscribeResponse> {
      return subscriptionResponses(req, ctx);
    },

    async getEvent(req, ctx) {
      if (!req.id) throw invalidArgument("id", "is required");
      const stored = await reader.getById(req.id);
      if (!stored) throw fieldError(Code.NotFound, [{ field: "id", description: `no event with id "${req.id}"` }]);
      deps.access.checkReadType(ctx, stored.type, "id");
      return { event: toApiEvent(stored, req.payloadFormat, catalog) };
    },

    async listEvents(req: ListEventsRequest, ctx: HandlerContext) {
      const matcher = buildMatcher(deps.access.readPatterns(ctx, req.patterns), req.attributes, req.filter, catalog, filterLimits);
      const pageSize = pageSizeOf(req.pageSize, defaultPageSize, maxPageSize);
      const startTime = req.startTime ? dateOf(req.startTime, "start_time") : undefined;
      const endTime = req.endTime ? dateOf(req.endTime, "end_time") : undefined;
      if (startTime && endTime && endTime <= startTime) throw invalidArgument("end_time", "must be after start_time");
      // Sequences are PostgreSQL bigints: a larger uint64 could never be one (and failed the query).
      if (req.afterSequence > maxSequence) throw invalidArgument("after_sequence", `must be at most ${maxSequence}`);
      const queryPrint = fingerprint([req.patterns, Object.entries(req.attributes).sort(), req.filter, startTime, endTime, req.afterSequence.toString(), req.descending]);
      const resumeAt = req.pageToken ? BigInt(decodePageToken(req.pageToken, queryPrint)) : undefined;
      const rows = await reader.page({
        patterns: matcher.patterns,
        attributes: matcher.attributes,
        startTime,
        endTime,
        after: req.descending ? req.afterSequence : (resumeAt ?? req.afterSequence),
        before: req.descending ? resumeAt : undefined,
        limit: pageSize + 1,
        descending: req.descending,
      });
      // The CEL filter runs on the page, so a page can hold fewer than page_size events.
      const { items, nextPageToken } = toPage(rows, pageSize, queryPrint, (e) => e.sequence.toString(), (e) => e);
      return { events: items.filter((e) => matcher.matches(e)).map((e) => toApiEvent(e, req.payloadFormat, catalog)), nextPageToken };
    },

    async listEventTypes(req) {
      const patterns = parsePatterns(req.patterns);
      await catalog.refreshIfStale(); // a listing shows what another node registered a moment ago
      return { eventTypes: catalog.matching(patterns).map(toApiEventType) };
    },

    async getEventType(req: GetEventTypeRequest) {
      if (!req.name) throw invalidArgument("name", "is required");
      let entry = catalog.get(req.name);
      if (!entry) {
        await catalog.refreshIfStale();
        entry = catalog.get(req.name);
      }
      if (!entry) throw fieldError(Code.NotFound, [{ field: "name", description: `unknown event type "${req.name}"; ListEventTypes lists the catalog` }]);
      return create(GetEventTypeResponseSchema, {
        eventType: toApiEventType(entry),
        descriptorSet: create(FileDescriptorSetSchema, { file: fileWithImports(entry.message.file) }),
        jsonSchema: jsonSchemaFor(entry.message, entry.description),
      });
    },

    async registerEventTypes(req: RegisterEventTypesRequest) {
      let result: RegistrationResult;
      try {
        result = await deps.registeredTypes.register(req.descriptorSet, req.validateOnly);
      } catch (err) {
        if (err instanceof DescriptorSetError) throw fieldError(Code.InvalidArgument, err.violations);
        if (err instanceof NameConflictError) throw fieldError(Code.AlreadyExists, err.violations);
        if (err instanceof BreakingChangeError) throw breakingChangeError(err);
        throw err;
      }
      return {
        eventTypes: result.eventTypes.map(toApiEventType),
        added: result.added,
        changed: result.changed,
        catalogRevision: result.revision,
      };
    },
  };
}

/** FAILED_PRECONDITION with a google.rpc.PreconditionFailure: one violation per break, typed by its rule. */
function breakingChangeError(err: BreakingChangeError): ConnectError {
  const detail = create(PreconditionFailureSchema, {
    violations: err.changes.map((c) => ({ type: c.rule, subject: c.subject, description: c.description })),
  });
  return new ConnectError(err.message, Code.FailedPrecondition, undefined, [{ desc: PreconditionFailureSchema, value: detail }]);
}

/**
 * The message create(PublishResponseSchema, ...) and timestampFromDate make, as literals:
 * create() walks the schema for every result, which showed in profiles of PublishBatch.
 */
function toPublishResponse(r: AppendResult): PublishResponse {
  const ms = r.time.getTime();
  const seconds = Math.floor(ms / 1000);
  return {
    $typeName: "tidings.v1.PublishResponse",
    id: r.id,
    sequence: r.sequence,
    time: { $typeName: "google.protobuf.Timestamp", seconds: BigInt(seconds), nanos: (ms - seconds * 1000) * 1_000_000 },
    duplicate: r.duplicate,
  };
}

function toApiEventType(entry: EventTypeEntry): EventType {
  return create(EventTypeSchema, {
    name: entry.name,
    messageType: entry.message.typeName,
    description: entry.description,
    requiredFields: entry.requiredFields,
    registered: entry.registered,
  });
}

/** The file and everything it imports, dependencies first, as protoc orders a descriptor set. */
function fileWithImports(file: DescFile, seen = new Set<string>()): FileDescriptorProto[] {
  if (seen.has(file.name)) return [];
  seen.add(file.name);
  return [...file.dependencies.flatMap((d) => fileWithImports(d, seen)), file.proto];
}

function parsePatterns(sources: readonly string[]): TypePattern[] {
  const violations: FieldViolation[] = [];
  const patterns: TypePattern[] = [];
  sources.forEach((source, i) => {
    try {
      patterns.push(parseTypePattern(source));
    } catch (err) {
      if (!(err instanceof TypePatternError)) throw err;
      violations.push({ field: `patterns[${i}]`, description: err.message });
    }
  });
  if (violations.length > 0) throw fieldError(Code.InvalidArgument, violations);
  return patterns;
}

function buildMatcher(patternSources: readonly string[], attributes: Record<string, string>, filter: string, catalog: EventCatalog, limits: FilterLimits): EventMatcher {
  const patterns = parsePatterns(patternSources);
  let compiled: EventFilter | undefined;
  if (filter !== "") {
    try {
      compiled = compileFilter(filter, catalog.registry, limits);
    } catch (err) {
      if (err instanceof FilterError) throw invalidArgument("filter", err.message);
      throw err;
    }
  }
  return createEventMatcher(patterns, attributes, compiled);
}

async function startCursor(req: SubscribeRequest, reader: EventReader): Promise<bigint> {
  const start = req.start;
  switch (start.case) {
    case "afterSequence": {
      const head = await reader.headSequence();
      if (start.value > head) {
        throw fieldError(Code.OutOfRange, [{ field: "after_sequence", description: `${start.value} is beyond the end of the log (${head})` }]);
      }
      return start.value;
    }
    case "startTime":
      return reader.cursorBeforeTime(dateOf(start.value, "start_time"));
    case "position":
      if (start.value === StartPosition.EARLIEST) return 0n;
      return reader.headSequence();
    default:
      return reader.headSequence();
  }
}
