import { randomUUID } from "node:crypto";
import { type Kysely, sql, type Transaction } from "kysely";
import type { Dispatcher } from "undici";
import type { EventCatalog } from "../catalog/catalog.js";
import { EventReader } from "../event-log/event-reader.js";
import type { CommitRider, NewEvent } from "../event-log/append-queue.js";
import type { StoredEvent } from "../event-log/stored-event.js";
import { BatchWriter } from "../concurrency/batch-writer.js";
import { CoalescingRunner } from "../concurrency/coalescing-runner.js";
import type { Logger } from "../logging/logger.js";
import type { LookupSession } from "../storage/lookup-session.js";
import { type Database, deliveryStatus, type StoredRetryPolicy, type StoredSecret } from "../storage/schema.js";
import { buildDeliveryRequest } from "./delivery-request.js";
import { type SigningSecrets, signingSecrets } from "./signing-secrets.js";
import type { DeliveryRouter, EndpointRow, KnownEvents, LeaseBudget, RoutedDelivery } from "./delivery-router.js";
import { recoverExpiredWindowsStatement, type UnwrittenDelivery, writeUnwrittenStatement } from "./delivery-windows.js";
import { type AttemptOutcome, sendRequest } from "./http-sender.js";
import { retryDelayMs } from "./retry-policy.js";
import { recordSuccessesStatement, type SuccessRow } from "./success-record.js";

export interface DispatcherOptions {
  /** Names this node in leases and attempt records. */
  nodeId: string;
  /** Requests in flight on this node, all endpoints together. */
  maxInFlight: number;
  /** Requests in flight on this node to one endpoint. */
  maxInFlightPerEndpoint: number;
  /** Added to an endpoint's timeout to make the lease: a lease always outlives its request. */
  leaseMarginMs: number;
  /** How often to look for due work when nothing wakes the dispatcher. */
  pollIntervalMs: number;
  /**
   * Committed events this node holds in memory anyway (the log tail's window of recent
   * events), for routing a backlog that reaches further back than the dispatcher's own recent
   * events: read back from the database, every event is fetched and decoded again.
   */
  olderEvents?: KnownEvents;
  /** Where successes are recorded: DatabaseHandle.lookups (see LookupSession). */
  lookups: LookupSession;
  /**
   * How long a routed delivery may go without an outcome before its row is written leased (see
   * #writeAgedWindows): until then only its window records it, and ListDeliveries does not show it.
   */
  unwrittenForMs?: number;
}

/** What the dispatcher reports to /metrics. */
export interface DispatcherMetrics {
  /** An attempt ended: success, failure (to be retried) or dead_letter; how long its request took. */
  attempt(outcome: "success" | "failure" | "dead_letter", seconds: number, deliveries: number): void;
  /** A delivery was taken over after another node's lease ran out mid-attempt. */
  takeover(): void;
  /** Deliveries succeeded: for each, the seconds from its creation to the success being recorded. */
  delivered(latencySeconds: number[]): void;
}

/** Things the dispatcher reports, published as Tidings' own events. */
export interface DispatcherEvents {
  deadLettered(d: { deliveryId: string; webhookId: string; eventId: string; eventType: string; attempts: number; lastStatusCode: number; lastError: string; url: string }): void;
  disabled(w: { webhookId: string; url: string; reason: string; consecutiveFailures: number; lastStatusCode: number; lastError: string }): void;
}

/** What this node's dispatcher has done, for tests and diagnosis. */
export interface DeliveryStats {
  /** Deliveries this node created by routing events. */
  routed: number;
  /** Of those, the ones created in the statement that appended their event (DeliveryRouter.planInCommit). */
  routedInCommit: number;
  /** Of those, the ones leased to this node as they were created (sent without a claim). */
  leasedAsRouted: number;
  /** Deliveries leased by a claim: created without a lease, retried, or taken over. */
  claimed: number;
  /** Events the router read back from the database because they were no longer (or never) in this node's memory. */
  eventsReadBack: number;
  /** Routed deliveries whose rows were written leased because they had no outcome yet after unwrittenForMs (or at stop). */
  writtenUnanswered: number;
  /** Windows of other nodes (or of this node before a restart) whose leases ran out, written as rows for the claim to take over. */
  windowsRecovered: number;
}

/** A claimed delivery and what is needed to send it. */
interface Claimed {
  id: string;
  webhookId: string;
  eventSequence: bigint;
  attempts: number;
  leaseToken: string;
  endpoint: Endpoint;
  /** For a delivery routed in a window: the window, and its event's id and type for the row (see unwrittenRow). */
  routed?: { window: OpenWindow; eventId: string; eventType: string };
}

/**
 * A window of deliveries routed and leased to this node (see delivery-windows.ts), as long as its
 * row exists: until every delivery in it has a row of its own.
 */
interface OpenWindow {
  id: string;
  /** performance.now() when it was routed. */
  routedAt: number;
  /** Its deliveries that have no row yet, as far as this node knows: no statement that wrote one has committed. */
  unwritten: Set<Claimed>;
}

interface Endpoint {
  id: string;
  url: string;
  headers: Record<string, string>;
  secrets: StoredSecret[];
  retryPolicy: StoredRetryPolicy;
  timeoutMs: number;
  batchMaxEvents: number;
  rateLimit: number;
  ordered: boolean;
  contentMode: number;
  maxConsecutiveFailures: number;
  maxFailingMs: number;
  /** The health row recorded failures when this was claimed: a success must reset them. */
  failing: boolean;
  /** The secrets that sign, until the first of them expires (see signingSecrets). */
  signing?: SigningSecrets;
}

/** A group of leased deliveries waiting on this node for a free request slot. */
interface ReadyGroup {
  group: Claimed[];
  events: StoredEvent[];
  /** performance.now() after which the lease is too short to start the request: it is left to expire instead. */
  sendBy: number;
  /** Came from the claim (a retry, an ordered, batching or rate-limited endpoint, overflow): its completion may free more of that work. */
  fromClaim: boolean;
}

/**
 * How many leased deliveries a node holds per request slot (in flight plus ready to send). A
 * pass through the database takes several round trips; holding a few slots' worth keeps
 * requests going while the next pass runs.
 */
const readyDepth = 4;
/**
 * How long recording a success waits for others when no recording is under way. At 500
 * deliveries/s nearly every success found the writer idle and was a statement of its own; a
 * 5 ms wait made PostgreSQL's CPU per event 18% lower (560 -> 460 µs, median of 4 alternated
 * pairs) and the p99 from publish to receiver 12.4 -> 9.7 ms. The request slot is freed at the
 * answer, not at the record, so the wait holds nothing back but the record.
 */
const successLingerMs = 5;
/**
 * Under a steady load, success statements start at most this often (unless half the successes
 * that may wait unrecorded are queued): back to back, each took whatever the one before left,
 * about 45 successes. Every statement is a round trip and a wake-up of the server and a
 * PostgreSQL backend. At most one every 10 ms, a backlog of 22,000 deliveries to one endpoint
 * took 234 statements instead of 459, and the server's CPU per delivery was 0–8% lower and
 * PostgreSQL's 2–11% (three series of three alternated runs of 40,000 deliveries: 92 -> 88
 * and 48 -> 45 µs, 105 -> 97 and 52 -> 49, 86 -> 86 and 46 -> 45). 15 ms did no better; 30 ms
 * held deliveries back on the unrecorded bound. The wait delays only the record: the request
 * slot is already free.
 */
const successPaceMs = 10;
/**
 * Pacing starts once a statement carries this many successes (a backlog's carry about 45). At a
 * steady 500 deliveries/s (a few a statement) pacing every statement left the publish-to-receiver
 * p99 about 2 ms higher (medians of five alternated runs, 8.80 against 6.92 ms, in a noisy
 * range), so low rates keep the linger alone.
 */
const successPaceAbove = 16;
/** Successes answered but not yet recorded, per request slot, before a delivery waits for its record (see #deliver). */
const unrecordedPerSlot = 4;

/**
 * Room a routing pass waits for (or half the node's capacity, if less): a pass costs about the
 * same for 1 delivery or 32, and routing makes only as many deliveries as there is room for.
 */
const minRouteRoom = 32;

/**
 * This node's committed events kept for the router, so it need not read back what it just
 * wrote: at least 10,000 and at most twice that, and at most 64 MB of payloads (as many as the
 * log tail keeps). A webhook backlog is routed as it is sent, so the router falls behind the
 * head by as much as is published meanwhile: with 2,000 kept, about 16,000 of a 20,000-event
 * backlog were read back from the database and their payloads decoded again. The log tail's
 * window is no substitute: with no subscriber, a poll that runs while events commit makes the
 * tail forget it.
 */
const recentLimit = 10_000;
const recentMaxBytes = 64 * 1024 * 1024;

/** See DispatcherOptions.unwrittenForMs. */
const defaultUnwrittenForMs = 1_000;
/** Expired windows made rows per statement (see recoverExpiredWindowsStatement). */
const recoverWindowsPerStatement = 100;
/**
 * Windows this node deletes between two VACUUMs of their table (see #vacuumWindows). Each window
 * is a row inserted and deleted within a second or so; without VACUUM their space is never used
 * again (PostgreSQL reuses a page's space once VACUUM records it in the free space map), and with
 * autovacuum off, or on PGlite, which has none, 10,000 windows of 64 deliveries left 78 MB.
 */
const vacuumWindowsEvery = 1_000;

/**
 * Sends due deliveries. Each pass routes new events (DeliveryRouter), which leases the new
 * deliveries this node has room for as it creates them, then, when there may be other due
 * work (retries, overflow, ordered, batching or rate-limited endpoints, a crashed node's
 * deliveries), claims it with FOR UPDATE SKIP LOCKED. Every lease is longer than the request
 * timeout, so several nodes never send the same attempt, and a crashed node's work is taken
 * over when its lease runs out. The attempt record and the delivery's new state are written
 * in one transaction, fenced by the lease token: a node whose lease was taken over writes
 * nothing. Leased deliveries wait in per-endpoint queues for a request slot; a request that
 * ends starts the next one at once, without a pass.
 */
export class DeliveryDispatcher {
  readonly stats: DeliveryStats = { routed: 0, routedInCommit: 0, leasedAsRouted: 0, claimed: 0, eventsReadBack: 0, writtenUnanswered: 0, windowsRecovered: 0 };
  /** This node's open windows, oldest first (a Map keeps insertion order). */
  readonly #windows = new Map<string, OpenWindow>();
  /** Windows deleted since the last VACUUM of their table, and whether one runs (see #vacuumWindows). */
  #windowsClosed = 0;
  #vacuuming = false;
  /** performance.now() of the last look for expired windows (see #claimAndSend). */
  #recoveredAt = Number.NEGATIVE_INFINITY;
  readonly #inFlight = new Map<Promise<void>, string>();
  /** Successes answered but not yet recorded (see #deliver). */
  readonly #recording = new Set<Promise<void>>();
  /** Requests in flight per endpoint. */
  readonly #sending = new Map<string, number>();
  /** Leased groups per endpoint, waiting for a request slot. */
  readonly #ready = new Map<string, ReadyGroup[]>();
  /** Groups held per endpoint: in flight plus ready. */
  readonly #held = new Map<string, number>();
  #heldTotal = 0;
  /** New events may be unrouted. */
  #routeWanted = true;
  /** Events may have been committed that this node did not commit itself (see DeliveryRouter.routeOnce's onlyKnown). */
  #foreignEvents = true;
  /** Due work may be waiting for a claim. */
  #claimWanted = true;
  /** The last claim took everything it could: ask the database when the next retry is due. */
  #claimCameBackShort = false;
  /** Deliveries the last routing pass made per event (the endpoints an event goes to), at least 1: sizes the next pass's read. */
  #deliveriesPerEvent = 1;
  /** Deliveries planned into appends' statements and not yet answered (see commitRider): room they will take. */
  #riding = 0;
  /** This node's latest committed events, consecutive (see eventsArrived), and their payload bytes. */
  #recent: StoredEvent[] = [];
  #recentBytes = 0;
  /** Endpoints of routed deliveries, by their router state's row (see #routedEndpoint). */
  readonly #routedEndpoints = new WeakMap<EndpointRow, Endpoint>();
  /** When this node last wrote last_success_at per endpoint (see #completeSuccess). */
  readonly #successWrittenAt = new Map<string, number>();
  readonly #successes: BatchWriter<{ group: Claimed[]; outcome: AttemptOutcome }>;
  readonly #passes = new CoalescingRunner(
    () => this.#pass(),
    (err) => this.logger.warn("dispatcher pass failed; retrying on the next poll", { err }),
    () => this.#schedule(),
  );
  #timer: NodeJS.Timeout | undefined;
  /** Stopped, and the grace period is over: requests still running are not recorded. */
  #abandoned = false;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly catalog: EventCatalog,
    private readonly router: DeliveryRouter,
    private readonly agent: Dispatcher,
    private readonly events: DispatcherEvents,
    private readonly options: DispatcherOptions,
    private readonly logger: Logger,
    private readonly metrics?: DispatcherMetrics,
  ) {
    // Paced writes wait for at most half the successes that may wait unrecorded (see #deliver).
    const enoughItems = Math.max(1, Math.floor((options.maxInFlight * unrecordedPerSlot) / 2));
    this.#successes = new BatchWriter((items) => this.#writeSuccesses(items), 500, successLingerMs, { intervalMs: successPaceMs, enoughItems, busyItems: successPaceAbove });
  }

  start(): void {
    this.wake();
  }

  /** Runs a pass soon that routes and claims: deliveries were created, redriven or changed. */
  wake = (): void => {
    this.#routeWanted = true;
    this.#claimWanted = true;
    this.#foreignEvents = true;
    this.#passes.run();
  };

  /**
   * New events were committed (here, or rung in by another node): route them. This node's own
   * commits come with their events, which the router then need not read back.
   */
  eventsArrived = (committed?: readonly StoredEvent[]): void => {
    if (committed && committed.length > 0) {
      // With no endpoint there is nothing to route them to: the router skips to the head.
      if (this.router.idle) this.#forgetRecent();
      else this.#remember(committed);
    } else this.#foreignEvents = true;
    this.#routeWanted = true;
    this.#passes.run();
  };

  /** Keeps the latest run of consecutive committed events, within recentLimit and recentMaxBytes. */
  #remember(committed: readonly StoredEvent[]): void {
    const lastKnown = this.#recent[this.#recent.length - 1];
    if (lastKnown === undefined || committed[0]!.sequence !== lastKnown.sequence + 1n) this.#forgetRecent();
    this.#recent.push(...committed);
    for (const e of committed) this.#recentBytes += e.payload.byteLength;
    if (this.#recent.length <= 2 * recentLimit && this.#recentBytes <= recentMaxBytes) return;
    // Drop the oldest, down to recentLimit events and half the bytes, in one slice.
    let drop = Math.max(0, this.#recent.length - recentLimit);
    for (let i = 0; i < drop; i++) this.#recentBytes -= this.#recent[i]!.payload.byteLength;
    while (drop < this.#recent.length - 1 && this.#recentBytes > recentMaxBytes / 2) this.#recentBytes -= this.#recent[drop++]!.payload.byteLength;
    this.#recent = this.#recent.slice(drop);
  }

  #forgetRecent(): void {
    this.#recent = [];
    this.#recentBytes = 0;
  }

  /** The router's KnownEvents: what #recent holds from after + 1 on, else what options.olderEvents has. */
  readonly #known = (after: bigint, upTo: bigint, limit: number): StoredEvent[] | undefined =>
    this.#fromRecent(after, upTo, limit) ?? this.options.olderEvents?.(after, upTo, limit);

  #fromRecent(after: bigint, upTo: bigint, limit: number): StoredEvent[] | undefined {
    const first = this.#recent[0];
    if (first === undefined) return undefined;
    const from = Number(after + 1n - first.sequence);
    if (from === this.#recent.length) return [];
    if (from < 0 || from > this.#recent.length) return undefined;
    const out: StoredEvent[] = [];
    for (let i = from; i < this.#recent.length && out.length < limit && this.#recent[i]!.sequence <= upTo; i++) out.push(this.#recent[i]!);
    return out;
  }

  /** An endpoint was created or changed on this node: route and claim again at once. */
  endpointsChanged = (): void => {
    this.router.endpointsChanged();
    this.wake();
  };

  /**
   * Stops claiming and waits, at most `graceMs`, for the requests in flight to finish and be
   * recorded. Deliveries leased but not started are released for any node to take. Whatever is
   * still running after the grace period is abandoned: its leases expire and another node (or
   * this one, restarted) sends it again.
   */
  async stop(graceMs = Number.POSITIVE_INFINITY): Promise<void> {
    clearTimeout(this.#timer);
    await this.#passes.stop();
    await this.#releaseReady();
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((r) => (timer = setTimeout(r, Math.min(graceMs, 2_147_483_647))));
    const finished = Promise.allSettled([...this.#inFlight.keys()]).then(() => Promise.allSettled([...this.#recording]));
    await Promise.race([finished, grace]);
    clearTimeout(timer);
    // Whatever still runs is left to its leases: its answer, if it comes, is not recorded. Its
    // rows are written leased now, so they show and are taken over as their leases run out,
    // without waiting for their windows' (the longest lease of each).
    this.#abandoned = true;
    await this.#writeAgedWindows(Number.POSITIVE_INFINITY);
  }

  get #capacity(): number {
    return this.options.maxInFlight * readyDepth;
  }

  async #pass(): Promise<void> {
    await this.#writeAgedWindows(performance.now() - (this.options.unwrittenForMs ?? defaultUnwrittenForMs));
    if (this.#routeWanted) {
      this.#routeWanted = false;
      let onlyKnown = !this.#foreignEvents;
      this.#foreignEvents = false;
      while (!this.#passes.stopped) {
        const room = this.#capacity - this.#heldTotal - this.#riding;
        if (room < Math.max(1, Math.min(minRouteRoom, this.#capacity / 2))) {
          // Full, or nearly: a request that ends wakes a pass once half the room is free (see
          // #send), and another node may route meanwhile.
          this.#routeWanted = true;
          break;
        }
        const budget = this.#budget(room);
        const leasedAt = performance.now();
        // Deliveries to fill the room (budget.maxDeliveries), from about as many events as make
        // them: events read from the database beyond those routed are read again next pass.
        const routed = await this.router.routeOnce(budget, Math.ceil(budget.maxDeliveries / this.#deliveriesPerEvent), this.#known, onlyKnown);
        const made = routed.leased.length + routed.unleased;
        this.stats.routed += made;
        this.stats.leasedAsRouted += routed.leased.length;
        this.stats.eventsReadBack += routed.eventsReadBack;
        // A pass whose events went nowhere says nothing of the fan-out: the estimate stays.
        if (made > 0) this.#deliveriesPerEvent = Math.max(1, made / routed.eventsRouted);
        // Whatever was foreign has been read now; later foreign events raise the flag again.
        onlyKnown = true;
        if (routed.unleased > 0) this.#claimWanted = true;
        this.#holdRouted(routed.leased, leasedAt);
        if (routed.eventsRouted === 0) break;
      }
    }
    if (this.#nothingCanBeDue) {
      this.#claimWanted = false;
      return;
    }
    if (this.#claimWanted && !this.#passes.stopped) await this.#claimAndSend();
  }

  /**
   * Room for `room` new deliveries, at most maxInFlightPerEndpoint × readyDepth held per endpoint.
   * Slots taken are only counted here: the caller holds what it was given (#holdRouted).
   */
  #budget(room: number): LeaseBudget {
    const taken = new Map<string, number>();
    let takenTotal = 0;
    return {
      nodeId: this.options.nodeId,
      maxDeliveries: room,
      take: (webhookId) => {
        const mine = (this.#held.get(webhookId) ?? 0) + (taken.get(webhookId) ?? 0);
        if (this.#heldTotal + this.#riding + takenTotal >= this.#capacity || mine >= this.options.maxInFlightPerEndpoint * readyDepth) return false;
        taken.set(webhookId, (taken.get(webhookId) ?? 0) + 1);
        takenTotal++;
        return true;
      },
      leaseMs: (timeoutMs) => timeoutMs + this.options.leaseMarginMs,
    };
  }

  /**
   * The endpoint a routed delivery goes to, made once per row of the router's state, which every
   * delivery routed with that state shares: not a copy per delivery, with its signing secrets
   * worked out again for each.
   */
  #routedEndpoint(row: EndpointRow): Endpoint {
    let endpoint = this.#routedEndpoints.get(row);
    if (endpoint === undefined) {
      endpoint = toEndpoint(row.id, row);
      this.#routedEndpoints.set(row, endpoint);
    }
    return endpoint;
  }

  /** Deliveries routed and leased to this node: each waits in its endpoint's queue for a request slot. */
  #holdRouted(leased: readonly RoutedDelivery[], leasedAt: number): void {
    const claimed = this.#openWindows(leased, leasedAt);
    for (let i = 0; i < leased.length; i++) {
      this.#hold({ group: [claimed[i]!], events: [leased[i]!.event], sendBy: leasedAt + this.options.leaseMarginMs / 2, fromClaim: false });
    }
    this.#pump();
  }

  /** The deliveries as Claimed, each in its OpenWindow (registered here: routing committed it). */
  #openWindows(leased: readonly RoutedDelivery[], routedAt: number): Claimed[] {
    return leased.map((r) => {
      let window = this.#windows.get(r.windowId);
      if (window === undefined) {
        window = { id: r.windowId, routedAt, unwritten: new Set() };
        this.#windows.set(r.windowId, window);
      }
      const claimed: Claimed = {
        id: r.id, webhookId: r.endpoint.id, eventSequence: r.event.sequence, attempts: 1, leaseToken: r.leaseToken, endpoint: this.#routedEndpoint(r.endpoint),
        routed: { window, eventId: r.event.id, eventType: r.event.type },
      };
      window.unwritten.add(claimed);
      return claimed;
    });
  }

  /** The deliveries of `claimed` that may have no row yet (see #openWindows). */
  #unwritten(claimed: readonly Claimed[]): Claimed[] {
    return claimed.filter((c) => c.routed?.window.unwritten.has(c));
  }

  /** Inserts the rows of `deliveries` leased, as in flight, and deletes the windows `closing` (writeUnwrittenStatement). */
  async #writeRows(executor: Kysely<Database>, deliveries: readonly Claimed[], closing: readonly OpenWindow[] = []): Promise<void> {
    if (deliveries.length === 0 && closing.length === 0) return;
    await executor.executeQuery(writeUnwrittenStatement(this.db, deliveries.map(unwrittenRow), closing.map((w) => w.id), this.options.nodeId));
  }

  /** Rows of `written` were committed: they leave their windows' unwritten sets; `closed` windows are gone. */
  #written(written: readonly Claimed[], closed: readonly OpenWindow[] = []): void {
    for (const c of written) c.routed!.window.unwritten.delete(c);
    for (const w of closed) this.#windows.delete(w.id);
    this.#windowsClosed += closed.length;
    if (this.#windowsClosed >= vacuumWindowsEvery && !this.#vacuuming && !this.#passes.stopped) void this.#vacuumWindows();
  }

  /**
   * VACUUMs the windows' table, so that the space of deleted windows is used again (see
   * vacuumWindowsEvery), in the background. SKIP_LOCKED: if another node's VACUUM runs, this one
   * is not needed.
   */
  async #vacuumWindows(): Promise<void> {
    this.#vacuuming = true;
    this.#windowsClosed = 0;
    try {
      await sql`VACUUM (SKIP_LOCKED) tidings_delivery_windows`.execute(this.db);
    } catch (err) {
      this.logger.warn("could not vacuum the delivery windows' table; trying again later", { err });
    } finally {
      this.#vacuuming = false;
    }
  }

  /**
   * Writes the rows of deliveries in windows routed before `routedBefore` (performance.now())
   * that still have none, leased as they stand, and deletes those windows: a delivery that has
   * waited that long for an outcome (a slow endpoint) shows in ListDeliveries and the stats, as
   * every delivery in flight did before windows. At stop, every window. If it fails, the next
   * pass tries again; at worst the windows' leases run out and any node writes them.
   */
  async #writeAgedWindows(routedBefore: number): Promise<void> {
    const aged: OpenWindow[] = [];
    for (const w of this.#windows.values()) {
      if (w.routedAt >= routedBefore) break;
      aged.push(w);
    }
    if (aged.length === 0) return;
    const unwritten = aged.flatMap((w) => [...w.unwritten]);
    try {
      await this.#writeRows(this.db, unwritten, aged);
      this.#written(unwritten, aged);
      this.stats.writtenUnanswered += unwritten.length;
    } catch (err) {
      this.logger.warn("could not write the rows of deliveries in flight; trying again on the next pass", { err, deliveries: unwritten.length });
    }
  }

  /**
   * The append queue's commitRider: routes a plain group of events in the statement that appends
   * them, when the router is caught up and this node has room for every delivery (see
   * DeliveryRouter.planInCommit). The leased deliveries are held once the statement answers, so
   * the pass that the commit then wakes finds nothing to route and runs no statement.
   */
  readonly commitRider = (events: readonly NewEvent[], base: bigint): CommitRider | undefined => {
    if (this.#passes.stopped) return undefined;
    const plan = this.router.planInCommit(events, base, this.#budget(this.#capacity - this.#heldTotal - this.#riding));
    if (!plan) return undefined;
    const riding = plan.leased.length;
    this.#riding += riding;
    const leasedAt = performance.now();
    return {
      ...plan.rider,
      settle: (outcome) => {
        this.#riding -= riding;
        plan.rider.settle(outcome);
        if (outcome?.result !== true) return;
        this.stats.routed += riding;
        this.stats.routedInCommit += riding;
        this.stats.leasedAsRouted += riding;
        if (riding === 0) return;
        // Stopping: leases given back now are sent by any node at once, instead of when they run out.
        if (this.#passes.stopped) void this.#giveBack(this.#openWindows(plan.leased, leasedAt));
        else this.#holdRouted(plan.leased, leasedAt);
      },
    };
  };

  /** No enabled endpoint and nothing held: no delivery can be claimable. */
  get #nothingCanBeDue(): boolean {
    return this.router.idle && this.#heldTotal === 0;
  }

  #hold(ready: ReadyGroup): void {
    const id = ready.group[0]!.webhookId;
    const queue = this.#ready.get(id);
    if (queue) queue.push(ready);
    else this.#ready.set(id, [ready]);
    this.#held.set(id, (this.#held.get(id) ?? 0) + 1);
    this.#heldTotal++;
  }

  #release(webhookId: string): void {
    const left = (this.#held.get(webhookId) ?? 1) - 1;
    if (left > 0) this.#held.set(webhookId, left);
    else this.#held.delete(webhookId);
    this.#heldTotal--;
  }

  /** Starts ready requests while there are free slots, per endpoint and in all. */
  #pump(): void {
    if (this.#passes.stopped) return;
    const tooLate: Claimed[] = [];
    for (const [webhookId, queue] of this.#ready) {
      if (this.#inFlight.size >= this.options.maxInFlight) break;
      const limit = queue[0]!.group[0]!.endpoint.ordered ? 1 : this.options.maxInFlightPerEndpoint;
      while (queue.length > 0 && this.#inFlight.size < this.options.maxInFlight && (this.#sending.get(webhookId) ?? 0) < limit) {
        const ready = queue.shift()!;
        if (performance.now() > ready.sendBy) {
          // Waited so long that the request could outlive its lease: give the lease back, so
          // that a claim (here or on another node) sends it with a fresh one.
          tooLate.push(...ready.group);
          this.#release(webhookId);
          continue;
        }
        this.#send(ready);
      }
      if (queue.length === 0) this.#ready.delete(webhookId);
    }
    if (tooLate.length > 0) {
      this.logger.warn("leased deliveries waited too long for a request slot; their leases are given back", { deliveries: tooLate.length });
      this.#claimWanted = true;
      void this.#giveBack(tooLate).then(() => this.#passes.run());
    }
  }

  #send(ready: ReadyGroup): void {
    const { group, events } = ready;
    const webhookId = group[0]!.webhookId;
    this.#sending.set(webhookId, (this.#sending.get(webhookId) ?? 0) + 1);
    const p: Promise<void> = this.#deliver(group, events)
      .catch((err) => this.logger.error("delivery failed unexpectedly; its lease will expire and it will be retried", { err, webhook: webhookId }))
      .finally(() => {
        this.#inFlight.delete(p);
        const sending = (this.#sending.get(webhookId) ?? 1) - 1;
        if (sending > 0) this.#sending.set(webhookId, sending);
        else this.#sending.delete(webhookId);
        this.#release(webhookId);
        if (ready.fromClaim) this.#claimWanted = true;
        this.#pump();
        // A pass only when there is work it could take and room for a good part of it.
        if ((this.#routeWanted || this.#claimWanted) && this.#heldTotal <= this.#capacity / 2) this.#passes.run();
      });
    this.#inFlight.set(p, webhookId);
  }

  /** Gives back leases of deliveries that were never started (on stop), so any node can send them at once. */
  async #releaseReady(): Promise<void> {
    const claimed = [...this.#ready.values()].flat().flatMap((g) => g.group);
    this.#ready.clear();
    await this.#giveBack(claimed);
  }

  /**
   * Ends leases of deliveries whose requests never started, and takes back the attempt each
   * lease counted: no attempt was made. Fenced by the lease token like every completion. If it
   * fails, the leases simply run out.
   */
  async #giveBack(claimed: readonly Claimed[]): Promise<void> {
    if (claimed.length === 0) return;
    // Routed deliveries without a row get one first (leased, as in flight), in the same transaction.
    const unwritten = this.#unwritten(claimed);
    try {
      await this.db.transaction().execute(async (trx) => {
        await this.#writeRows(trx, unwritten);
        await sql`
          UPDATE tidings_deliveries d
          SET attempts = d.attempts - 1, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
          FROM unnest(${claimed.map((c) => c.id)}::text[], ${claimed.map((c) => c.leaseToken)}::text[]) AS c(id, token)
          WHERE d.id = c.id AND d.lease_token = c.token AND d.status + 0 = 1`.execute(trx); // + 0: see recordSuccessesStatement
      });
      this.#written(unwritten);
    } catch (err) {
      this.logger.warn("could not give back leased deliveries; they will be sent when their leases expire", { err, deliveries: claimed.length });
    }
  }

  #schedule(): void {
    if (this.#passes.stopped) return;
    const onTimer = () => {
      this.#timer = undefined;
      this.wake();
    };
    const arm = (ms: number) => {
      clearTimeout(this.#timer);
      this.#timer = setTimeout(onTimer, ms);
      this.#timer.unref();
    };
    if (!this.#claimCameBackShort) {
      // Idle, or busy (requests that end wake us): the poll timer is enough.
      if (this.#timer === undefined) arm(this.options.pollIntervalMs);
      return;
    }
    this.#claimCameBackShort = false;
    void this.#nextDueInMs().then((ms) => {
      if (this.#passes.stopped) return;
      // Overdue work that the last claim could not take is blocked (endpoint disabled, ordered
      // mode waiting, per-endpoint cap, no rate token): an ending request or a publish wakes
      // us, so wait for the poll interval rather than spin.
      const wait = ms <= 0 ? this.options.pollIntervalMs : ms;
      arm(Math.max(10, Math.min(wait, this.options.pollIntervalMs)));
    }, () => arm(this.options.pollIntervalMs));
  }

  async #nextDueInMs(): Promise<number> {
    const row = await sql<{ ms: number | null }>`
      SELECT extract(epoch FROM (min(next_attempt_at) - now())) * 1000 AS ms
      FROM tidings_deliveries WHERE status = 1`.execute(this.db);
    const ms = row.rows[0]?.ms;
    return ms === null || ms === undefined ? this.options.pollIntervalMs : Number(ms);
  }

  async #claimAndSend(): Promise<void> {
    const free = this.#capacity - this.#heldTotal;
    if (free <= 0) return;
    this.#claimWanted = false;
    // Windows whose node died become rows with lapsed leases, which this claim then takes over.
    // At most once a poll interval: leases last the request timeout and more, and the statement
    // reads the whole (small) table, dead rows included until the next VACUUM.
    if (performance.now() - this.#recoveredAt >= this.options.pollIntervalMs) {
      this.#recoveredAt = performance.now();
      const recovered = await this.db.executeQuery(recoverExpiredWindowsStatement(this.db, recoverWindowsPerStatement));
      const windows = recovered.rows[0]?.windows ?? 0;
      if (windows > 0) {
        this.stats.windowsRecovered += windows;
        this.logger.warn("leases of routed deliveries ran out before they were recorded; they are sent again", { windows });
        // More may have expired: look again on the next claim.
        if (windows >= recoverWindowsPerStatement) this.#recoveredAt = Number.NEGATIVE_INFINITY;
      }
    }
    const reports: Report[] = [];
    const blocked = { any: false };
    const leasedAt = performance.now();
    const groups = await this.db.transaction().execute((trx) => this.#claim(trx, free, reports, blocked));
    reports.forEach((r) => r());
    // More may be claimable as soon as slots free up: a full claim, or work held back by a cap.
    if (groups.length >= free || blocked.any) this.#claimWanted = true;
    else this.#claimCameBackShort = true;
    if (groups.length === 0) return;
    const claimed = groups.flat();
    this.stats.claimed += claimed.length;
    // The events of every claimed delivery in one read, not one per request.
    const events = await new EventReader(this.db, this.catalog).bySequences([...new Set(claimed.map((c) => c.eventSequence))]);
    const bySequence = new Map(events.map((e) => [e.sequence, e]));
    for (const group of groups) {
      this.#hold({ group, events: group.flatMap((c) => bySequence.get(c.eventSequence) ?? []), sendBy: leasedAt + this.options.leaseMarginMs / 2, fromClaim: true });
    }
    this.#pump();
  }

  /** Claims up to `free` requests' worth of due deliveries, grouped per request. */
  async #claim(trx: Transaction<Database>, free: number, reports: Report[], blocked: { any: boolean }): Promise<Claimed[][]> {
    // The enabled endpoints first (a small table), so the claim below reads deliveries alone in
    // the order of their index and stops after LIMIT rows. Joined in one query, the planner
    // sorted every due delivery on every pass, spilling to disk at 20,000.
    const enabled = await trx.selectFrom("tidings_webhooks").select(["id", "ordered"]).where("enabled", "=", true).execute();
    if (enabled.length === 0) return [];
    const due = await sql<DueRow>`
      SELECT d.id, d.webhook_id, d.event_sequence, d.attempts, d.lease_owner,
             w.url, w.headers, w.secrets, w.retry_policy, w.timeout_ms, w.batch_max_events, w.rate_limit,
             w.ordered, w.content_mode, w.max_consecutive_failures, w.max_failing_ms,
             (w.consecutive_failures > 0 OR w.failing_since IS NOT NULL) AS failing
      FROM (
        SELECT d.id, d.webhook_id, d.event_sequence, d.attempts, d.lease_owner, d.next_attempt_at
        FROM tidings_deliveries d
        WHERE d.status = 1 AND d.next_attempt_at <= now()
          AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now())
          AND d.webhook_id = ANY(${enabled.map((w) => w.id)}::text[])
          AND (NOT d.webhook_id = ANY(${enabled.filter((w) => w.ordered).map((w) => w.id)}::text[]) OR NOT EXISTS (
            SELECT 1 FROM tidings_deliveries e
            WHERE e.webhook_id = d.webhook_id AND e.status = 1 AND e.event_sequence < d.event_sequence))
        ORDER BY d.next_attempt_at, d.event_sequence
        LIMIT ${free * 4}
        FOR UPDATE OF d SKIP LOCKED
      ) d JOIN tidings_webhooks w ON w.id = d.webhook_id
      ORDER BY d.next_attempt_at, d.event_sequence`.execute(trx);

    const groups: DueRow[][] = [];
    const taken = new Map<string, number>();
    for (const row of due.rows) {
      if (groups.length >= free) break;
      const held = (this.#held.get(row.webhook_id) ?? 0) + (taken.get(row.webhook_id) ?? 0);
      if (held >= (row.ordered ? 1 : this.options.maxInFlightPerEndpoint * readyDepth) || (row.batch_max_events > 0 && groups.some((g) => g[0]!.webhook_id === row.webhook_id))) {
        blocked.any = true;
        continue;
      }
      if (row.rate_limit > 0 && !(await this.#takeRateToken(trx, row.webhook_id, row.rate_limit))) {
        blocked.any = true;
        continue;
      }
      const group = row.batch_max_events > 0 && !row.ordered ? await this.#fillBatch(trx, row) : [row];
      groups.push(group);
      taken.set(row.webhook_id, (taken.get(row.webhook_id) ?? 0) + 1);
    }

    const claimed: Claimed[][] = [];
    const leases: Array<{ id: string; token: string; ms: number }> = [];
    for (const group of groups) {
      const out: Claimed[] = [];
      for (const row of group) {
        const endpoint = toEndpoint(row.webhook_id, row);
        if (row.lease_owner !== null) {
          // The previous holder's lease ran out mid-attempt (crashed or stopped): record that.
          this.metrics?.takeover();
          await this.#recordAttempt(trx, row.id, row.webhook_id, row.attempts, {
            startedAt: new Date(), durationMs: 0, statusCode: 0, responseExcerpt: "", retryAfterMs: undefined,
            error: `no result: the lease of node ${row.lease_owner} expired during the attempt`,
          });
          if (row.attempts >= endpoint.retryPolicy.maxAttempts) {
            await this.#deadLetter(trx, row.id, endpoint, row.attempts, 0, "the last attempt never finished", reports);
            continue;
          }
        }
        const leaseToken = randomUUID();
        leases.push({ id: row.id, token: leaseToken, ms: endpoint.timeoutMs + this.options.leaseMarginMs });
        out.push({ id: row.id, webhookId: row.webhook_id, eventSequence: BigInt(row.event_sequence), attempts: row.attempts + 1, leaseToken, endpoint });
      }
      if (out.length > 0) claimed.push(out);
    }
    if (leases.length > 0) {
      // Every lease of the pass in one statement.
      await sql`
        UPDATE tidings_deliveries d
        SET attempts = d.attempts + 1, lease_owner = ${this.options.nodeId}, lease_token = c.token,
            lease_expires_at = now() + c.ms * interval '1 millisecond', updated_at = now()
        FROM unnest(${leases.map((l) => l.id)}::text[], ${leases.map((l) => l.token)}::text[], ${leases.map((l) => l.ms)}::int[]) AS c(id, token, ms)
        WHERE d.id = c.id`.execute(trx);
    }
    return claimed;
  }

  /** The rest of a batch: the endpoint's other pending deliveries, due or not, up to max_events. */
  async #fillBatch(trx: Transaction<Database>, first: DueRow): Promise<DueRow[]> {
    const more = await sql<DueRow>`
      SELECT d.id, d.webhook_id, d.event_sequence, d.attempts, d.lease_owner
      FROM tidings_deliveries d
      WHERE d.webhook_id = ${first.webhook_id} AND d.status = 1 AND d.id <> ${first.id}
        AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now())
      ORDER BY d.event_sequence
      LIMIT ${first.batch_max_events - 1}
      FOR UPDATE SKIP LOCKED`.execute(trx);
    return [first, ...more.rows.map((r) => ({ ...first, ...r }))];
  }

  /**
   * A token bucket shared by all nodes, kept in the endpoint's row: each request reserves
   * 1/rate seconds; up to one second's worth may be saved up.
   */
  async #takeRateToken(trx: Transaction<Database>, webhookId: string, rate: number): Promise<boolean> {
    const res = await sql<{ ok: boolean }>`
      UPDATE tidings_webhooks
      SET rate_next_at = greatest(coalesce(rate_next_at, now()), now() - interval '1 second')
                         + ${`${1000 / rate} milliseconds`}::interval
      WHERE id = ${webhookId}
        AND greatest(coalesce(rate_next_at, now()), now() - interval '1 second') <= now()
      RETURNING true AS ok`.execute(trx);
    return res.rows.length > 0;
  }

  async #deliver(group: Claimed[], events: StoredEvent[]): Promise<void> {
    const endpoint = group[0]!.endpoint;
    const now = new Date();
    const secrets = signingSecrets(endpoint, now.getTime());
    const asBatch = endpoint.batchMaxEvents > 0;
    // Receivers de-duplicate on webhook-id: the event id, or for a batch its first delivery.
    const messageId = asBatch ? `batch_${group[0]!.id}` : events[0]?.id ?? group[0]!.id;
    const outcome = events.length === 0
      ? { startedAt: now, durationMs: 0, statusCode: 0, responseExcerpt: "", error: "the event is no longer in the log", retryAfterMs: undefined }
      : await sendRequest(this.agent, endpoint.url, buildDeliveryRequest({ contentMode: endpoint.contentMode, headers: endpoint.headers, secrets }, events, this.catalog, messageId, asBatch, now), endpoint.timeoutMs);
    if (this.#abandoned) return;
    if (outcome.statusCode >= 200 && outcome.statusCode < 300) {
      // The request slot is freed once the answer is in, not once the success is recorded:
      // slots were a limit on a slow machine (64 sent 1,800/s to one endpoint, 128 sent
      // 2,600/s), and holding one through the group write's commit kept it idle. The delivery
      // stays leased meanwhile, so nobody sends it again; if the write fails, the lease runs
      // out and it is sent again, as after a crash. Successes waiting for their write are
      // bounded: past unrecordedPerSlot per slot, a delivery holds its slot until recorded.
      const recording = this.#completeSuccess(group, outcome).then(
        () => this.metrics?.attempt("success", outcome.durationMs / 1000, group.length),
        (err) => this.logger.error("recording a success failed; the delivery's lease will expire and it will be sent again", { err, webhook: endpoint.id }),
      );
      this.#recording.add(recording);
      void recording.finally(() => this.#recording.delete(recording));
      if (this.#recording.size > this.options.maxInFlight * unrecordedPerSlot) await recording;
      return;
    }
    const reports: Report[] = [];
    // A routed delivery's row is written first (leased, as in flight), then completed as any claimed one.
    const unwritten = this.#unwritten(group);
    await this.db.transaction().execute(async (trx) => {
      await this.#writeRows(trx, unwritten);
      await this.#complete(trx, group, outcome, reports);
    });
    this.#written(unwritten);
    reports.forEach((r) => r()); // only what committed is reported
  }

  /**
   * A success, the common case: the deliveries whose lease this node still holds are marked
   * succeeded and their attempts recorded, atomically and fenced by the lease token like the
   * general path. Successes finishing at the same time share one statement (and one commit):
   * a commit per delivery kept most database time waiting for WAL flushes.
   */
  async #completeSuccess(group: Claimed[], outcome: AttemptOutcome): Promise<void> {
    await this.#successes.add({ group, outcome });
    const endpoint = group[0]!.endpoint;
    // The health row only when it recorded failures, or at most once a second for
    // last_success_at: a write per delivery would queue every completion of an endpoint on it.
    const now = Date.now();
    if (endpoint.failing || now - (this.#successWrittenAt.get(endpoint.id) ?? 0) >= 1_000) {
      this.#successWrittenAt.set(endpoint.id, now);
      await this.db.updateTable("tidings_webhooks").set({ consecutive_failures: 0, failing_since: null, last_success_at: new Date(now) }).where("id", "=", endpoint.id).execute();
    }
  }

  async #writeSuccesses(items: Array<{ group: Claimed[]; outcome: AttemptOutcome }>): Promise<void> {
    const inserting: Claimed[] = [];
    const rows = items.flatMap(({ group, outcome: o }) => group.map((c): SuccessRow => {
      const row: SuccessRow = { deliveryId: c.id, leaseToken: c.leaseToken, statusCode: o.statusCode, startedAt: o.startedAt, durationMs: o.durationMs, responseExcerpt: o.responseExcerpt };
      if (c.routed?.window.unwritten.has(c)) {
        inserting.push(c);
        row.unwritten = unwrittenRow(c);
      }
      return row;
    }));
    // A window goes with the statement that writes the last of its deliveries without a row:
    // every one it inserts is among them, so the window closes when it inserts as many.
    const inserted = new Map<OpenWindow, number>();
    for (const c of inserting) inserted.set(c.routed!.window, (inserted.get(c.routed!.window) ?? 0) + 1);
    const closing = [...inserted].filter(([w, n]) => n === w.unwritten.size).map(([w]) => w);
    // On the lookup session: prepared on a pooled connection it kept the sequential scan it
    // chose while the table was small, and planned at every execution it cost PostgreSQL more
    // than it ran (see LookupSession and recordSuccessesStatement).
    const done = await this.options.lookups.run(recordSuccessesStatement(this.db, rows, this.options.nodeId, closing.map((w) => w.id)));
    this.#written(inserting, closing);
    this.metrics?.delivered(done.map((r) => Number(r.latency)));
    if (done.length < rows.length) {
      const recorded = new Set(done.map((r) => r.delivery_id));
      for (const r of rows) if (!recorded.has(r.deliveryId)) this.logger.warn("lease lost before the attempt finished; another node owns the delivery now", { delivery: r.deliveryId });
    }
  }


  /** Records the attempt and moves each delivery on, unless its lease was taken over. */
  async #complete(trx: Transaction<Database>, group: Claimed[], outcome: AttemptOutcome, reports: Report[]): Promise<void> {
    const endpoint = group[0]!.endpoint;
    const success = outcome.statusCode >= 200 && outcome.statusCode < 300;
    const gone = outcome.statusCode === 410;
    let recorded = 0;
    for (const c of group) {
      const still = await sql`
        UPDATE tidings_deliveries SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
          last_status_code = ${outcome.statusCode}, last_error = ${outcome.error}, updated_at = now()
        WHERE id = ${c.id} AND lease_token = ${c.leaseToken} AND status = 1`.execute(trx);
      if (Number(still.numAffectedRows ?? 0) === 0) {
        this.logger.warn("lease lost before the attempt finished; another node owns the delivery now", { delivery: c.id });
        continue;
      }
      recorded++;
      await this.#recordAttempt(trx, c.id, c.webhookId, c.attempts, outcome);
      const kind = success ? "success" : gone || c.attempts >= endpoint.retryPolicy.maxAttempts ? "dead_letter" : "failure";
      reports.push(() => this.metrics?.attempt(kind, outcome.durationMs / 1000, 1));
      if (success) {
        await trx.updateTable("tidings_deliveries").set({ status: deliveryStatus.succeeded }).where("id", "=", c.id).execute();
      } else if (kind === "dead_letter") {
        await this.#deadLetter(trx, c.id, endpoint, c.attempts, outcome.statusCode, outcome.error, reports);
      } else {
        const delay = retryDelayMs(endpoint.retryPolicy, c.attempts, outcome.retryAfterMs);
        await sql`UPDATE tidings_deliveries SET next_attempt_at = now() + ${`${Math.round(delay)} milliseconds`}::interval WHERE id = ${c.id}`.execute(trx);
      }
    }
    if (recorded > 0) await this.#updateHealth(trx, endpoint, success, gone, outcome, reports);
  }

  async #deadLetter(trx: Transaction<Database>, id: string, endpoint: Endpoint, attempts: number, statusCode: number, error: string, reports: Report[]): Promise<void> {
    const row = await trx.updateTable("tidings_deliveries").set({ status: deliveryStatus.dead, lease_owner: null, lease_token: null, lease_expires_at: null, updated_at: new Date() })
      .where("id", "=", id).returning(["event_id", "event_type"]).executeTakeFirst();
    if (!row) return;
    reports.push(() => this.events.deadLettered({ deliveryId: id, webhookId: endpoint.id, eventId: row.event_id, eventType: row.event_type, attempts, lastStatusCode: statusCode, lastError: error, url: endpoint.url }));
  }

  async #recordAttempt(trx: Transaction<Database>, deliveryId: string, webhookId: string, number: number, o: AttemptOutcome): Promise<void> {
    await trx.insertInto("tidings_delivery_attempts").values({
      delivery_id: deliveryId,
      webhook_id: webhookId,
      number,
      started_at: o.startedAt,
      duration_ms: o.durationMs,
      status_code: o.statusCode,
      response_excerpt: o.responseExcerpt,
      error: o.error,
      node: this.options.nodeId,
    }).execute();
  }

  /** Success resets the failure count; 410 or failing for too long disables the endpoint. */
  async #updateHealth(trx: Transaction<Database>, endpoint: Endpoint, success: boolean, gone: boolean, outcome: AttemptOutcome, reports: Report[]): Promise<void> {
    if (success) {
      await trx.updateTable("tidings_webhooks").set({ consecutive_failures: 0, failing_since: null, last_success_at: new Date() }).where("id", "=", endpoint.id).execute();
      return;
    }
    const row = await sql<{ consecutive_failures: number; failing_ms: number; enabled: boolean }>`
      UPDATE tidings_webhooks
      SET consecutive_failures = consecutive_failures + 1, failing_since = coalesce(failing_since, now()), last_failure_at = now()
      WHERE id = ${endpoint.id}
      RETURNING consecutive_failures, extract(epoch FROM (now() - failing_since)) * 1000 AS failing_ms, enabled`.execute(trx);
    const h = row.rows[0];
    if (!h?.enabled) return;
    const reason = gone
      ? "the endpoint answered 410 Gone"
      : h.consecutive_failures >= endpoint.maxConsecutiveFailures
        ? `${h.consecutive_failures} attempts failed in a row`
        : Number(h.failing_ms) >= endpoint.maxFailingMs
          ? `every attempt failed for ${Math.round(Number(h.failing_ms) / 1000)} s`
          : undefined;
    if (!reason) return;
    await trx.updateTable("tidings_webhooks").set({ enabled: false, disabled_reason: reason, updated_at: new Date() }).where("id", "=", endpoint.id).execute();
    this.logger.warn("webhook disabled", { webhook: endpoint.id, reason });
    reports.push(() => this.events.disabled({ webhookId: endpoint.id, url: endpoint.url, reason, consecutiveFailures: h.consecutive_failures, lastStatusCode: outcome.statusCode, lastError: outcome.error }));
  }
}

/** The endpoint columns that sending needs, as the claim and the router read them. */
type EndpointFields = Pick<EndpointRow, "url" | "headers" | "secrets" | "retry_policy" | "timeout_ms" | "batch_max_events" | "rate_limit" | "ordered" | "content_mode" | "max_consecutive_failures" | "max_failing_ms" | "failing">;

interface DueRow extends EndpointFields {
  id: string;
  webhook_id: string;
  event_sequence: string;
  attempts: number;
  lease_owner: string | null;
}

/** The row a routed delivery's window stands for, to insert while it has none of its own. */
function unwrittenRow(c: Claimed): UnwrittenDelivery {
  const { window, eventId, eventType } = c.routed!;
  return { id: c.id, webhookId: c.webhookId, eventSequence: c.eventSequence, eventId, eventType, windowId: window.id, leaseToken: c.leaseToken };
}

function toEndpoint(webhookId: string, row: EndpointFields): Endpoint {
  return {
    id: webhookId,
    url: row.url,
    headers: row.headers,
    secrets: row.secrets,
    retryPolicy: row.retry_policy,
    timeoutMs: row.timeout_ms,
    batchMaxEvents: row.batch_max_events,
    rateLimit: row.rate_limit,
    ordered: row.ordered,
    contentMode: row.content_mode,
    maxConsecutiveFailures: row.max_consecutive_failures,
    maxFailingMs: Number(row.max_failing_ms),
    failing: row.failing,
  };
}

/** A report to make once its transaction has committed. */
type Report = () => void;
