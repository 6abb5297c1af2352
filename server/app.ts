import type http from "node:http";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import type { Kysely } from "kysely";
import type http2 from "node:http2";
import { EventService } from "../gen/tidings/v1/event_service_pb.js";
import { WebhookService } from "../gen/tidings/v1/webhook_service_pb.js";
import { AdminService } from "../gen/tidings/v1/admin_service_pb.js";
import { createAdminService, emptyCounters } from "./admin/admin-service.js";
import { type EventCatalog, loadCatalog } from "./catalog/catalog.js";
import type { ServerConfig } from "./config/config.js";
import { AppendQueue } from "./event-log/append-queue.js";
import { EventReader } from "./event-log/event-reader.js";
import { TimeSummary } from "./event-log/time-summary.js";
import type { Logger } from "./logging/logger.js";
import { RegisteredTypeStore } from "./catalog/registration/registered-type-store.js";
import { addReflection } from "./reflection/reflection-service.js";
import { requiredRequestFields } from "./rpc/required-fields.js";
import { createConnectHandler } from "./transport/connect-handler.js";
import { codeName, errorMappingInterceptor } from "./rpc/errors.js";
import { createEventService, type StreamStats } from "./rpc/event-service.js";
import { nulRefusingInterceptor } from "./rpc/nul-refusal.js";
import { openDatabase } from "./storage/open-database.js";
import { LogTail } from "./streaming/log-tail.js";
import { createOnePortServer } from "./transport/one-port-server.js";
import { healthRoutes } from "./health/health-routes.js";
import { CoalescingRunner } from "./concurrency/coalescing-runner.js";
import { RetentionSweeper } from "./retention/retention-sweeper.js";
import { ServerMetrics } from "./observability/metrics.js";
import { ingestHandler } from "./ingest/ingest-route.js";
import { openapiHandler } from "./openapi/openapi-route.js";
import { DeliveryDispatcher, type DeliveryStats } from "./webhooks/delivery-dispatcher.js";
import { DeliveryRouter } from "./webhooks/delivery-router.js";
import { createAddressPolicy } from "./webhooks/http/address-policy.js";
import { createGuardedAgent } from "./webhooks/http/guarded-agent.js";
import { publishRequestDecoders } from "./rpc/publish-request-decoding.js";
import { publishResponseEncoders } from "./rpc/publish-response-encoding.js";
import { createSystemEvents, systemPublisher } from "./webhooks/system-events.js";
import { createContextValues } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { AccessRuleSchema, Scope } from "../gen/tidings/v1/access_pb.js";
import { filterLimitsOf } from "./filtering/cel-filter.js";
import { clientAddressKey } from "./auth/access-gate.js";
import { startAuth } from "./auth/start-auth.js";
import { createWebhookService } from "./webhooks/webhook-service.js";
import { requestPath } from "./transport/request-path.js";
import { clientAddressOf } from "./transport/request-head.js";

export interface RunningServer {
  /** http://host:port */
  url: string;
  port: number;
  databaseKind: "postgres" | "pglite";
  /** Subscribe streams open now, and how often a slow one was moved back to reading the log. */
  streamStats(): Readonly<StreamStats>;
  /** Publish transactions committed by this node, the events they held, how many were one statement, and how many were sent while another was being written. */
  commitStats(): Readonly<{ commits: number; events: number; oneStatementCommits: number; pipelinedCommits: number }>;
  /** Webhook deliveries this node routed, those of them it leased to itself as it routed them, those it leased by a claim, and the events its router read back from the database. */
  deliveryStats(): Readonly<DeliveryStats>;
  /** Graceful shutdown: stop accepting, end streams (clients resume elsewhere), close the pool. */
  close(): Promise<void>;
}

export interface StartOptions {
  logger: Logger;
  /** The catalog; loaded from gen/ when not given. */
  catalog?: EventCatalog;
  /** Fault injection for tests: runs inside each publish transaction before it commits. */
  beforeCommit?: () => Promise<void>;
}

/** Opens the database, starts the log tail and serves every protocol on one port. */
export async function startServer(config: ServerConfig, options: StartOptions): Promise<RunningServer> {
  const { logger } = options;
  // Checked before anything opens: a bad allow-list entry is a configuration error.
  const addressPolicy = createAddressPolicy(config.webhookAllowList);
  const catalog = options.catalog ?? (await loadCatalog(undefined, (problem) => logger.warn("event catalog conflict", { problem })));
  // GET /openapi.json and /docs, from the document `buf generate` wrote; read once, here.
  const openapi = await openapiHandler();
  const database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: config.poolSize, logger });
  // Types registered at runtime: loaded now, and followed as other nodes register more. PGlite
  // belongs to this process alone, so there is nobody else to follow (and a query from inside
  // one of its transactions would wait for itself).
  const registeredTypes = new RegisteredTypeStore(database.db, catalog, logger.child({ component: "catalog" }));
  const registered = await registeredTypes.load();
  catalog.install(registered.files, registered.revision);
  if (database.kind === "postgres") catalog.attach(registeredTypes);
  database.doorbell.onCatalogChange(() => {
    catalog.refreshIfStale().catch((err) => logger.warn("could not reload the registered event types", { err }));
  });
  const timeSummary = new TimeSummary(database.db, logger);
  const reader = new EventReader(database.db, catalog, { timeSummary });
  // The latest events stay in memory for subscribers that fall behind: 10,000 or 64 MB of payloads.
  const tail = new LogTail(reader, { pollIntervalMs: config.pollIntervalMs, readLimit: 1000, recentEvents: 10_000, recentBytes: 64 * 1024 * 1024, logger });
  await tail.start();
  let committedHere = 0n;
  const streams: StreamStats = { active: 0, fallbacks: 0, open: new Map() };
  const counters = emptyCounters();
  const startedAt = new Date();
  const metrics = new ServerMetrics({
    db: database.db,
    activeStreams: () => streams.active,
    streamLags: () => [...streams.open.values()].map((s) => Number(tail.position - s.cursor())),
    pool: () => database.poolStats(),
  }, logger);
  const appendQueue = new AppendQueue(database.db, { maxEventsPerCommit: config.groupCommitMaxEvents, onCommitted: (head, written) => {
    if (head > committedHere) committedHere = head;
    // One StoredEvent per event for both: they cache the decoded payload and its renderings.
    const events = reader.fromCommitted(written);
    metrics.countPublished(events);
    counters.eventsPublished += events.length;
    tail.offerCommitted(events);
    dispatcher.eventsArrived(events);
  }, logger, beforeCommit: options.beforeCommit, oneStatementAppends: database.kind === "postgres", listenerId: database.doorbell.listenerId,
  // A plain group's webhook deliveries are routed in the statement that appends it, when they can be.
  commitRider: (events, base) => dispatcher.commitRider(events, base) });
  const agent = createGuardedAgent({ policy: addressPolicy, connections: config.dispatcherMaxInFlightPerEndpoint });
  const publishSystemEvent = systemPublisher(catalog, appendQueue, logger);
  const systemEvents = createSystemEvents(publishSystemEvent);
  const auth = await startAuth(config, database.db, database.doorbell, logger.child({ component: "auth" }), {
    publish: publishSystemEvent,
    counted: (reason) => metrics.authFailures.inc({ reason }),
  });
  const dispatcher = new DeliveryDispatcher(database.db, catalog, new DeliveryRouter(database.db, catalog, logger, 500, config.dispatcherPollIntervalMs, filterLimitsOf(config)), agent, systemEvents, {
    nodeId: config.nodeId,
    maxInFlight: config.dispatcherMaxInFlight,
    maxInFlightPerEndpoint: config.dispatcherMaxInFlightPerEndpoint,
    leaseMarginMs: config.deliveryLeaseMarginMs,
    pollIntervalMs: config.dispatcherPollIntervalMs,
    unwrittenForMs: config.deliveryUnwrittenMs,
    olderEvents: (after, upTo, limit) => tail.recent(after, upTo, limit),
    lookups: database.lookups,
  }, logger.child({ component: "dispatcher" }), {
    attempt: (outcome, seconds, deliveries) => {
      metrics.deliveries.inc({ outcome }, deliveries);
      if (outcome === "success") counters.deliveriesSucceeded += deliveries;
      else if (outcome === "failure") counters.deliveryFailures += deliveries;
      else counters.deliveriesDeadLettered += deliveries;
      metrics.attemptSeconds.observe({ outcome }, seconds);
    },
    delivered: (latencySeconds) => {
      for (const seconds of latencySeconds) metrics.deliveryLatency.observe(seconds);
    },
    takeover: () => metrics.leaseTakeovers.inc(),
  });
  // New events (committed here, or rung in by another node): stream them and route them.
  const newEvents = () => {
    tail.wake();
    dispatcher.eventsArrived();
  };
  // A ring for a head this node has already committed past is its own NOTIFY coming back (or
  // an older commit, which the wake for our own commit reads too): waking again would only
  // repeat the same queries. Our own NOTIFY often arrives before the answer to the commit that
  // sent it, so a ring during a commit is judged once that commit's answer is in.
  const onRing = (head: bigint | undefined) => {
    if (head === undefined || head > committedHere) newEvents();
  };
  database.doorbell.onRing((head) => {
    const committing = appendQueue.commitInFlight;
    if (committing && head !== undefined) void committing.then(() => onRing(head));
    else onRing(head);
  });
  dispatcher.start();
  const retention = new RetentionSweeper(database.db, {
    eventsMs: config.eventRetentionHours * 3_600_000,
    deliveriesMs: config.deliveryRetentionHours * 3_600_000,
    deadLettersMs: config.deadLetterRetentionHours * 3_600_000,
    batchSize: 1000,
  }, logger.child({ component: "retention" }), timeSummary);
  const sweeps = new CoalescingRunner(
    async () => {
      await retention.sweepOnce(new Date(), () => sweeps.stopped);
    },
    (err) => logger.warn("retention sweep failed; trying again at the next interval", { err }),
  );
  const sweepTimer = setInterval(sweeps.run, config.retentionIntervalMs);
  sweepTimer.unref();
  sweeps.run();
  const shutdown = new AbortController();

  const ingest = ingestHandler({
    secrets: config.ingestSecrets, maxBodyBytes: config.maxRequestBytes, maxPayloadBytes: config.maxPayloadBytes, catalog, appendQueue, logger,
    refused: (caller) => auth.reporter.authFailed("bad_ingest_signature", caller, { prefix: "" }),
  });
  const connectHandler = createConnectHandler({
    services: [
      { service: EventService, impl: createEventService({
        catalog, registeredTypes, reader, appendQueue, tail, config, shutdownSignal: shutdown.signal, streams, access: auth.eventAccess,
        metrics: {
          publishCall: (method, seconds, refused) => {
            metrics.publishSeconds.observe({ method }, seconds);
            if (refused !== undefined) {
              const code = codeName(refused.code);
              metrics.rejected.inc({ method, code });
              for (const type of refused.types) metrics.rejectedEvents.inc({ type, code });
              counters.publishErrors++;
            }
          },
        },
      }) },
      { service: WebhookService, impl: createWebhookService({ db: database.db, catalog, agent, addressPolicy, events: systemEvents, wakeDispatcher: dispatcher.wake, endpointsChanged: dispatcher.endpointsChanged,
        filterLimits: filterLimitsOf(config) }) },
      { service: AdminService, impl: createAdminService({ db: database.db, nodeId: config.nodeId, startedAt, counters, streams, tail, keys: { store: auth.store, ring: auth.ring } }) },
    ],
    routes: (router) => addReflection(router, [EventService, WebhookService, AdminService], () => catalog.files),
    // The error mapping is outermost, so a refusal by the gate passes through it unchanged.
    // NUL in text is refused after the key is checked: a caller without a valid key learns that first.
    interceptors: [errorMappingInterceptor(logger), auth.gate.interceptor(), nulRefusingInterceptor()],
    contextValues: (req) => createContextValues().set(clientAddressKey, clientAddressOf(req)),
    gate: auth.gate,
    // What connectNodeAdapter accepts by default: compressed requests from gRPC and Connect clients.
    acceptCompression: [compressionGzip, compressionBrotli],
    readMaxBytes: config.maxRequestBytes,
    writeMaxBytes: config.maxRequestBytes * 4,
    // Unknown fields are an error, not silently dropped: a typo must not lose data.
    jsonOptions: { registry: catalog.registry, ignoreUnknownFields: false },
    maxJsonBodyBytes: config.maxRequestBytes,
    requiredFields: requiredRequestFields,
    requestDecoders: publishRequestDecoders,
    responseEncoders: publishResponseEncoders,
    logger,
  });
  const health = healthRoutes({ db: database.db as Kysely<unknown>, logger });
  const metricsRoute = metrics.route();
  const handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
    if (health(req, res)) return;
    if (requestPath(req) === "/metrics") {
      void auth.gate.allowHttp(req, res, adminOnly).then((ok) => ok && metricsRoute(req, res));
      return;
    }
    if (openapi(req, res)) return;
    if (ingest(req, res)) return;
    void connectHandler(req, res);
  };
  // Plain gRPC and Connect binary unary calls over HTTP/2 are answered from the raw stream.
  const transport = createOnePortServer(handler, { takeStream: connectHandler.takeStream });
  let port: number;
  try {
    port = await transport.listen(config.port, config.host);
  } catch (err) {
    clearInterval(sweepTimer);
    auth.stop();
    await sweeps.stop();
    await dispatcher.stop();
    await tail.stop();
    await agent.close();
    await database.close();
    throw err;
  }
  const url = `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${port}`;
  logger.info("tidings listening", { url, database: database.kind, eventTypes: catalog.list().length, auth: auth.mode });
  timeSummary.start();

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    databaseKind: database.kind,
    streamStats: () => ({ ...streams }),
    commitStats: () => ({ ...appendQueue.stats }),
    deliveryStats: () => ({ ...dispatcher.stats }),
    close() {
      closing ??= (async () => {
        logger.info("shutting down");
        shutdown.abort();
        // Requests in flight finish and are recorded (their reports may still publish events),
        // or are abandoned to their leases after the grace period.
        clearInterval(sweepTimer);
        auth.stop();
        await sweeps.stop();
        await dispatcher.stop(config.shutdownGraceMs);
        await appendQueue.close();
        await transport.close(config.shutdownGraceMs);
        await tail.stop();
        await timeSummary.stop();
        // The dispatcher has had its grace period: requests still running are cut off.
        await agent.destroy();
        await database.close();
        logger.info("stopped");
      })();
      return closing;
    },
  };
}

const adminOnly = create(AccessRuleSchema, { scope: Scope.ADMIN });
