import { timingSafeEqual } from "node:crypto";
import { type Kysely, type RawBuilder, sql, type Transaction } from "kysely";
import type { Logger } from "../logging/logger.js";
import { integerArrayLiteral, timestampArrayLiteral } from "../storage/array-literals.js";
import { eventsChannel } from "../storage/doorbell.js";
import { preparedMarker } from "../storage/prepared-statements.js";
import type { Database } from "../storage/schema.js";
import type { EventFields } from "./stored-event.js";

/** An event ready to append: validated, payload encoded. */
export interface NewEvent extends EventFields {
  /** The publisher chose the id, so it may collide with a stored one. */
  idChosenByPublisher: boolean;
  idempotencyKey: string | undefined;
  /** SHA-256 of the publish request, for keyed publishes: tells a retry from a different event under the same key. */
  requestHash: Uint8Array | undefined;
}

/** An event as a commit wrote it: what a read of the log would return for it. */
export interface CommittedEvent extends EventFields {
  sequence: bigint;
}

/** What a group's write did: each unit's outcome, and the events written (none if all were duplicates). */
interface GroupWrite {
  outcomes: Array<AppendResult[] | Error>;
  written: CommittedEvent[];
  oneStatement: boolean;
}

export interface AppendResult {
  id: string;
  sequence: bigint;
  time: Date;
  /** The idempotency key had been used by this same request: the original event is returned. */
  duplicate: boolean;
}

/** An append refused because an event collides with a stored one; nothing of its unit was written. */
export class AppendConflictError extends Error {
  constructor(
    /** Index of the event within its unit. */
    readonly index: number,
    /** "event.id" or "idempotency_key". */
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

interface Unit {
  events: NewEvent[];
  resolve(results: AppendResult[]): void;
  reject(err: unknown): void;
}

interface PriorEvent {
  id: string;
  sequence: bigint;
  time: Date;
  idempotencyKey: string | null;
  requestHash: Uint8Array | null;
}

/**
 * More work for a plain group's one statement (AppendQueueOptions.commitRider): committed with
 * the events, or not at all.
 */
export interface CommitRider {
  /**
   * CTEs added after the statement's own, each written `, name AS (…)`. They may read `head`,
   * one row whose `base` is the sequence before the group's first event (the group's events
   * are base + 1, base + 2, … in order). They must not be able to fail the statement: a
   * publish must not fail for them.
   */
  ctes: RawBuilder<unknown>;
  /** What the statement returns for the rider (as column `rider`). */
  result: RawBuilder<boolean>;
  /** Called once with the statement's outcome (undefined if it failed), before onCommitted. */
  settle(outcome: { result: boolean; base: bigint } | undefined): void;
}

export interface AppendQueueOptions {
  maxEventsPerCommit: number;
  /** Called after each commit (once it is durable) with the new head and the events it wrote, in sequence order. */
  onCommitted(head: bigint, events: readonly CommittedEvent[]): void;
  logger: Logger;
  /**
   * Runs inside each transaction just before it commits. A fault-injection hook for tests
   * (random commit delays for the ordering invariant); unset in production. Setting it turns
   * the one-statement path off, so every group goes through the explicit transaction.
   */
  beforeCommit?: () => Promise<void>;
  /**
   * Write groups with neither idempotency keys nor publisher-chosen ids as one statement (one
   * round trip instead of six), each sent while the one before it is still being written (see
   * AppendQueue#oneStatements). PostgreSQL only: PGlite has no round trips to save, and one
   * connection.
   */
  oneStatementAppends?: boolean;
  /**
   * This node's listener (Doorbell.listenerId): a commit then rings (NOTIFY) only when another
   * listener is registered in tidings_event_listeners, since this node learns of its own
   * commits without it (onCommitted). Unset: every commit rings.
   */
  listenerId?: string;
  /**
   * Asked as a plain group is written as one statement, with the sequence expected before its
   * first event (the head after every group sent so far; other nodes' appends can make it
   * wrong, which the rider's statement must check): more work to do in that statement, or
   * undefined (the webhook dispatcher routes the group's deliveries there: DeliveryRouter.planInCommit).
   */
  commitRider?: (events: readonly NewEvent[], base: bigint) => CommitRider | undefined;
}

/** Groups being written at once: the one holding the head row, and the next one waiting for it. */
const maxGroupsWriting = 2;

/** A unit with neither idempotency keys nor publisher-chosen ids: nothing in it can conflict, so it needs no reads. */
function isPlain(unit: Unit): boolean {
  return unit.events.every((e) => e.idempotencyKey === undefined && !e.idChosenByPublisher);
}

/**
 * Appends events with group commit: publishes that arrive while a transaction is in flight wait
 * and go together in the next one, so concurrent publishers share a commit instead of paying
 * one each. Each append (a Publish, or a whole PublishBatch) is a unit that is written entirely
 * or not at all.
 *
 * Sequence numbers come from the single `tidings_log_head` row, locked for the length of the
 * transaction: transactions of all nodes commit in sequence order, so a reader of
 * `sequence > cursor` never misses an event that commits later with a smaller sequence.
 *
 * On PostgreSQL the next group may be sent while one is being written (#oneStatements): it waits
 * for the head row inside PostgreSQL, as another node's would. At 1,000 publishes a second
 * that took publish-to-subscriber p50 from 2.4–4.2 ms to 1.4–1.8 ms.
 */
export class AppendQueue {
  /**
   * Transactions committed and events they wrote (events/commits is the group-commit factor),
   * those written as one statement, and groups sent while the one before was being written.
   */
  readonly stats = { commits: 0, events: 0, oneStatementCommits: 0, pipelinedCommits: 0 };
  #queue: Unit[] = [];
  #flushing: Promise<void> | undefined;
  #commitInFlight: Promise<unknown> | undefined;
  /** Set while the drain waits with a group in flight: an append wakes it to send beside it. */
  #arrived: (() => void) | undefined;
  #closed = false;
  /**
   * The head once every group sent so far has committed, as far as this node knows: from the
   * latest answer, plus the events of groups sent since. Undefined until an answer says, or
   * while a group whose size is not known in advance (duplicates) is being written.
   */
  #expectedHead: bigint | undefined;
  /** Groups sent so far: tells whether an answer is the latest group's. */
  #sentCount = 0;

  /** Whether a commit rings the other nodes (see AppendQueueOptions.listenerId): true, or a check of the listeners. */
  readonly #othersListen;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly options: AppendQueueOptions,
  ) {
    // Evaluated in the committing statement itself: a node registered before the statement
    // began is rung. One registering meanwhile may miss that ring, and finds the commit by
    // its poll, as it does any lost notification.
    this.#othersListen = options.listenerId === undefined
      ? sql<boolean>`true`
      : sql<boolean>`EXISTS (SELECT 1 FROM tidings_event_listeners WHERE id <> ${options.listenerId} AND listening_until > now())`;
  }

  /** Appends the events atomically; resolves once they are committed. */
  append(events: NewEvent[]): Promise<AppendResult[]> {
    if (this.#closed) return Promise.reject(new AppendQueueClosedError());
    return new Promise((resolve, reject) => {
      this.#queue.push({ events, resolve, reject });
      this.#arrived?.();
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#flushing) return;
    // Start after the current event-loop turn, so publishes already read from other sockets
    // join this transaction (PGlite answers without yielding to I/O, so otherwise none would).
    this.#flushing = new Promise<void>((r) => setImmediate(r))
      .then(() => this.#drain())
      .finally(() => {
        this.#flushing = undefined;
        // A unit queued after the drain's last look at the queue must not wait forever.
        if (this.#queue.length > 0) this.#schedule();
      });
  }

  /** The latest group commit under way, if any: settles (never rejects) once its outcome, and every earlier group's, is known and reported. */
  get commitInFlight(): Promise<unknown> | undefined {
    return this.#commitInFlight;
  }

  /** Stops taking appends and waits for those already taken. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#flushing;
  }

  async #drain(): Promise<void> {
    // Groups written but not yet reported, oldest first: at most two, and two only when the
    // second is a single statement sent beside the first (see #oneStatements).
    const writing: Array<Promise<void>> = [];
    while (this.#queue.length > 0 || writing.length > 0) {
      if (writing.length > 0) {
        const beside = this.#oneStatements() && writing.length < maxGroupsWriting;
        if (beside && this.#queue.length === 0) {
          // Wait for the oldest group, or for an append that can be sent beside it.
          const arrived = await Promise.race([writing[0]!.then(() => false), new Promise<boolean>((r) => (this.#arrived = () => r(true)))]);
          this.#arrived = undefined;
          if (!arrived) writing.shift();
          // As in #schedule: publishes read from other sockets in this turn join the group.
          else await new Promise<void>((r) => setImmediate(r));
          continue;
        }
        if (!beside || !isPlain(this.#queue[0]!)) {
          // Otherwise a group is taken once the one before it is done, with all that came meanwhile.
          await writing.shift();
          continue;
        }
      }
      const group = this.#takeGroup(writing.length > 0);
      const write = this.#fitsOneStatement(group) ? this.#commitOneStatement(group) : this.db.transaction().execute((trx) => this.#commit(trx, group));
      if (writing.length > 0) this.stats.pipelinedCommits++;
      writing.push(this.#report(group, write, writing[writing.length - 1]));
    }
  }

  /**
   * Reports a group's outcome once the group before it has been reported, so commits reach
   * onCommitted and publishers in sequence order. The answers come in that order anyway (the
   * later statement cannot commit before the earlier one lets go of the head row); the chain
   * keeps the order from depending on the order this process reads its sockets in.
   */
  async #report(group: Unit[], write: Promise<GroupWrite>, before: Promise<void> | undefined): Promise<void> {
    let settled!: () => void;
    const reported = new Promise<void>((r) => (settled = r));
    this.#commitInFlight = reported;
    let outcome: { ok: true; value: GroupWrite } | { ok: false; err: unknown };
    try {
      outcome = { ok: true, value: await write };
    } catch (err) {
      outcome = { ok: false, err };
    }
    await before;
    try {
      if (!outcome.ok) throw outcome.err;
      const { outcomes, written, oneStatement } = outcome.value;
      if (written.length > 0) {
        // Only now is it committed: readers woken from here see the rows.
        this.stats.commits++;
        if (oneStatement) this.stats.oneStatementCommits++;
        this.stats.events += written.length;
        this.options.onCommitted(written[written.length - 1]!.sequence, written);
      }
      outcomes.forEach((o, i) => (o instanceof Error ? group[i]!.reject(o) : group[i]!.resolve(o)));
    } catch (err) {
      this.options.logger.warn("group commit failed", { err, units: group.length });
      group.forEach((u) => u.reject(err));
    } finally {
      if (this.#commitInFlight === reported) this.#commitInFlight = undefined;
      settled();
    }
  }

  /**
   * Whether plain groups are written as one statement (not with the test hook, which needs the
   * explicit transaction). Such a group may also be sent while the one before it is still being
   * written: it then waits in PostgreSQL for the head row, which the earlier statement holds
   * until it commits, and starts the moment it is released, so PostgreSQL need not wait for
   * this process to take in one answer and send the next statement. READ COMMITTED re-reads the
   * head row after the wait, so sequences still follow commit order.
   */
  #oneStatements(): boolean {
    return this.options.oneStatementAppends === true && !this.options.beforeCommit;
  }

  /** The queue's first units, up to maxEventsPerCommit events; only plain ones (isPlain) if `plainOnly`. */
  #takeGroup(plainOnly: boolean): Unit[] {
    const group: Unit[] = [];
    let events = 0;
    while (this.#queue.length > 0) {
      const next = this.#queue[0]!;
      if (group.length > 0 && events + next.events.length > this.options.maxEventsPerCommit) break;
      if (plainOnly && !isPlain(next)) break;
      group.push(this.#queue.shift()!);
      events += next.events.length;
    }
    return group;
  }

  async #commit(trx: Transaction<Database>, group: Unit[]): Promise<GroupWrite> {
    // How many events it writes depends on what it finds: the next one-statement answer tells.
    this.#sentCount++;
    this.#expectedHead = undefined;
    const head = await sql<{ last_sequence: string }>`
      SELECT last_sequence FROM tidings_log_head WHERE id = 1 FOR UPDATE`.execute(trx);
    let next = BigInt(head.rows[0]!.last_sequence);
    const prior = await this.#findPrior(trx, group);
    const rows: Array<NewEvent & { sequence: bigint }> = [];

    const outcomes = group.map((unit) => {
      // Keys and ids claimed by this unit, merged into `prior` only if the whole unit is accepted.
      const claimed = { byKey: new Map<string, PriorEvent>(), byId: new Set<string>() };
      const results: AppendResult[] = [];
      const unitRows: Array<NewEvent & { sequence: bigint }> = [];
      let sequence = next;
      for (const [index, ev] of unit.events.entries()) {
        const earlier = ev.idempotencyKey === undefined ? undefined : claimed.byKey.get(ev.idempotencyKey) ?? prior.byKey.get(ev.idempotencyKey);
        if (earlier) {
          if (!sameHash(earlier.requestHash, ev.requestHash)) {
            return new AppendConflictError(index, "idempotency_key", `idempotency key "${ev.idempotencyKey}" was already used for a different event (${earlier.id})`);
          }
          results.push({ id: earlier.id, sequence: earlier.sequence, time: earlier.time, duplicate: true });
          continue;
        }
        if (ev.idChosenByPublisher && (prior.byId.has(ev.id) || claimed.byId.has(ev.id))) {
          return new AppendConflictError(index, "event.id", `an event with id "${ev.id}" already exists`);
        }
        sequence += 1n;
        claimed.byId.add(ev.id);
        if (ev.idempotencyKey !== undefined) {
          claimed.byKey.set(ev.idempotencyKey, { id: ev.id, sequence, time: ev.time, idempotencyKey: ev.idempotencyKey, requestHash: ev.requestHash ?? null });
        }
        results.push({ id: ev.id, sequence, time: ev.time, duplicate: false });
        unitRows.push({ ...ev, sequence });
      }
      // Accepted: claim its sequences, keys and ids.
      rows.push(...unitRows);
      next = sequence;
      claimed.byKey.forEach((v, k) => prior.byKey.set(k, v));
      claimed.byId.forEach((id) => prior.byId.add(id));
      return results;
    });

    if (rows.length > 0) {
      await this.#insert(trx, rows);
      await trx.updateTable("tidings_log_head").set({ last_sequence: next.toString() }).where("id", "=", 1).execute();
      // A doorbell for other nodes, delivered at commit. It carries no event data.
      await sql`SELECT pg_notify(${eventsChannel}, ${next.toString()}) WHERE ${this.#othersListen}`.execute(trx);
    }
    await this.options.beforeCommit?.();
    return { outcomes, written: rows, oneStatement: false };
  }

  #fitsOneStatement(group: readonly Unit[]): boolean {
    return this.#oneStatements() && group.every(isPlain);
  }

  /**
   * The common case: no idempotency key and no publisher-chosen id, so nothing can conflict and
   * every unit is accepted. One statement is its own transaction: the UPDATE locks the head row
   * until the statement commits, exactly as the explicit transaction does, so commit order
   * still equals sequence order. The NOTIFY, if another node listens, is delivered at that commit.
   */
  async #commitOneStatement(group: readonly Unit[]): Promise<GroupWrite> {
    const events = group.flatMap((u) => u.events);
    const count = events.length;
    const payloads = concatenated(events.map((e) => e.payload));
    // The text columns and the attributes travel as one JSON array of rows, not as four text[]
    // and a jsonb[] parameter: pg writes each array element out quoted and escaped (the
    // attributes' JSON escaped again), which was about a tenth of the server's CPU in PublishBatch.
    // The text is well-formed Unicode (requests with a lone surrogate are refused when decoded,
    // JSON or binary), so JSON.stringify writes no \ud800 escape, which jsonb would refuse.
    const rows = JSON.stringify(events.map((e) => [e.id, e.type, e.source, e.subject, e.attributes]));
    const sent = ++this.#sentCount;
    const expectedBase = this.#expectedHead;
    if (expectedBase !== undefined) this.#expectedHead = expectedBase + BigInt(count);
    const rider = expectedBase === undefined ? undefined : this.options.commitRider?.(events, expectedBase);
    let result;
    try {
      result = await sql<{ base: string; rider?: boolean }>`${sql.raw(preparedMarker)}
      WITH head AS (
        UPDATE tidings_log_head SET last_sequence = last_sequence + ${count} WHERE id = 1
        RETURNING last_sequence - ${count} AS base
      ), inserted AS (
        INSERT INTO tidings_events (sequence, id, type, source, subject, time, attributes, payload)
        SELECT head.base + e.ord, e.row->>0, e.row->>1, e.row->>2, e.row->>3, (${timestampArrayLiteral(events.map((e) => e.time))}::timestamptz[])[e.ord], e.row->4, p.payload
        FROM head, jsonb_array_elements(${rows}::jsonb) WITH ORDINALITY AS e(row, ord)
        -- The payloads travel as one binary parameter, cut apart here: an array of bytea would
        -- be sent as text, every payload written out in hex by the client and read back.
        CROSS JOIN LATERAL (SELECT substring(${payloads.blob}::bytea FROM (${integerArrayLiteral(payloads.offsets)}::int[])[e.ord] + 1 FOR (${integerArrayLiteral(payloads.lengths)}::int[])[e.ord]) AS payload) p
      )${rider ? rider.ctes : sql``}
      SELECT base, CASE WHEN ${this.#othersListen} THEN pg_notify(${eventsChannel}, (base + ${count})::text) END${rider ? sql`, ${rider.result} AS rider` : sql``} FROM head`.execute(this.db);
    } catch (err) {
      // The head is not known now: the next answer tells.
      this.#expectedHead = undefined;
      rider?.settle(undefined);
      throw err;
    }
    const base = BigInt(result.rows[0]!.base);
    // The latest group's answer says where the head is; an earlier group's can only say that
    // what was expected is off (another node appended in between, or a group failed).
    if (sent === this.#sentCount) this.#expectedHead = base + BigInt(count);
    else if (base !== expectedBase) this.#expectedHead = undefined;
    rider?.settle({ result: result.rows[0]!.rider === true, base });
    // Written out field by field: a spread of each event (with the fields only the append
    // needs) was 4% of the server's CPU in PublishBatch.
    const written: CommittedEvent[] = [];
    const outcomes = group.map((unit) => unit.events.map((e) => {
      const sequence = base + BigInt(written.length + 1);
      written.push({ sequence, id: e.id, type: e.type, source: e.source, subject: e.subject, time: e.time, attributes: e.attributes, payload: e.payload, decoded: e.decoded });
      return { id: e.id, sequence, time: e.time, duplicate: false };
    }));
    return { outcomes, written, oneStatement: true };
  }

  async #findPrior(trx: Transaction<Database>, group: Unit[]) {
    const keys = new Set<string>();
    const ids = new Set<string>();
    for (const unit of group) {
      for (const ev of unit.events) {
        if (ev.idempotencyKey !== undefined) keys.add(ev.idempotencyKey);
        if (ev.idChosenByPublisher) ids.add(ev.id);
      }
    }
    const byKey = new Map<string, PriorEvent>();
    const byId = new Set<string>();
    if (keys.size === 0 && ids.size === 0) return { byKey, byId };
    const found = await trx
      .selectFrom("tidings_events")
      .select(["id", "sequence", "time", "idempotency_key", "request_hash"])
      .where((eb) =>
        eb.or([
          ...(keys.size > 0 ? [eb("idempotency_key", "in", [...keys])] : []),
          ...(ids.size > 0 ? [eb("id", "in", [...ids])] : []),
        ]),
      )
      .execute();
    for (const r of found) {
      byId.add(r.id);
      if (r.idempotency_key !== null) {
        byKey.set(r.idempotency_key, {
          id: r.id,
          sequence: BigInt(r.sequence),
          time: r.time,
          idempotencyKey: r.idempotency_key,
          requestHash: r.request_hash,
        });
      }
    }
    return { byKey, byId };
  }

  async #insert(trx: Transaction<Database>, rows: Array<NewEvent & { sequence: bigint }>): Promise<void> {
    // 10 parameters a row; stay well under PostgreSQL's 65535 bind parameters.
    const chunk = 5000;
    for (let i = 0; i < rows.length; i += chunk) {
      await trx
        .insertInto("tidings_events")
        .values(
          rows.slice(i, i + chunk).map((r) => ({
            sequence: r.sequence.toString(),
            id: r.id,
            type: r.type,
            source: r.source,
            subject: r.subject,
            time: r.time,
            attributes: JSON.stringify(r.attributes),
            payload: r.payload,
            idempotency_key: r.idempotencyKey ?? null,
            request_hash: r.requestHash ?? null,
          })),
        )
        .execute();
    }
  }
}

/** Byte strings end to end in one buffer, with where each begins. */
function concatenated(parts: readonly Uint8Array[]): { blob: Buffer; offsets: number[]; lengths: number[] } {
  const offsets: number[] = [];
  const lengths: number[] = [];
  let length = 0;
  for (const part of parts) {
    offsets.push(length);
    lengths.push(part.byteLength);
    length += part.byteLength;
  }
  const blob = Buffer.allocUnsafe(length);
  parts.forEach((part, i) => blob.set(part, offsets[i]));
  return { blob, offsets, lengths };
}

export class AppendQueueClosedError extends Error {
  constructor() {
    super("the server is shutting down");
  }
}

function sameHash(a: Uint8Array | null, b: Uint8Array | undefined): boolean {
  return a !== null && b !== undefined && a.length === b.length && timingSafeEqual(a, b);
}
