import type { DescFile } from "@bufbuild/protobuf";
import { type Kysely, sql } from "kysely";
import type { Logger } from "../../logging/logger.js";
import { catalogChannel } from "../../storage/doorbell.js";
import type { Database } from "../../storage/schema.js";
import { CatalogError, type EventCatalog, type EventTypeEntry, eventTypesOf, type RegisteredTypeSource } from "../catalog.js";
import type { FieldViolation } from "../payload-validation.js";
import { type BuildProblem, buildFiles, type FileToBuild } from "./build-files.js";
import { declaredNames, DescriptorSetError, NameConflictError, readDescriptorSet, setField, storedFile, type SubmittedFile } from "./descriptor-set.js";
import { type BreakingChange, wireJsonBreakingChanges } from "./wire-json-compat.js";

/** The set would break existing publishers or subscribers. */
export class BreakingChangeError extends Error {
  constructor(readonly changes: BreakingChange[]) {
    super(`the change would break existing publishers or subscribers: ${changes.map((c) => `${c.rule} ${c.subject}: ${c.description}`).join("; ")}`);
  }
}

export interface RegistrationResult {
  /** The event types the set declares, as the catalog has them now. */
  eventTypes: EventTypeEntry[];
  added: string[];
  changed: string[];
  revision: bigint;
}

interface StoredRow {
  name: string;
  descriptor: Uint8Array;
}

/**
 * The registered event types in the database: one row per .proto file, and a revision that
 * every node's catalog follows (NOTIFY on the catalog channel, and a check whenever something
 * unknown turns up). Registration is checked against the stored state under a lock, never
 * against this node's copy, so two nodes registering at once cannot both pass the checks.
 */
export class RegisteredTypeStore implements RegisteredTypeSource {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly catalog: EventCatalog,
    private readonly logger: Logger,
  ) {}

  async revision(): Promise<bigint> {
    const row = await this.db.selectFrom("tidings_catalog_head").select("revision").executeTakeFirstOrThrow();
    return BigInt(row.revision);
  }

  async load(): Promise<{ files: DescFile[]; revision: bigint }> {
    // One snapshot, so the files and the revision agree.
    const { rows, revision } = await this.db.transaction().setIsolationLevel("repeatable read").execute(async (trx) => {
      const head = await trx.selectFrom("tidings_catalog_head").select("revision").executeTakeFirstOrThrow();
      const rows = await trx.selectFrom("tidings_registered_files").select(["name", "descriptor"]).orderBy("name").execute();
      return { rows, revision: BigInt(head.revision) };
    });
    const { built, problems } = this.#buildStored(rows);
    for (const p of problems) this.logger.warn("a registered file does not build; its types are left out", { file: p.file, problem: p.description });
    return { files: [...built.values()], revision };
  }

  /**
   * Checks a serialized FileDescriptorSet and, unless `validateOnly`, stores its files and bumps
   * the revision. Throws DescriptorSetError (bad set), NameConflictError (a name taken) or
   * BreakingChangeError (incompatible with what is registered).
   */
  async register(bytes: Uint8Array, validateOnly: boolean): Promise<RegistrationResult> {
    const submitted = readDescriptorSet(bytes, this.catalog);
    const outcome = await this.db.transaction().execute(async (trx) => {
      const head = await trx.selectFrom("tidings_catalog_head").select("revision").forUpdate().executeTakeFirstOrThrow();
      const revision = BigInt(head.revision);
      const rows = await trx.selectFrom("tidings_registered_files").select(["name", "descriptor"]).orderBy("name").execute();
      const plan = this.#plan(rows, submitted);
      if (validateOnly || plan.changedFiles.length === 0) return { plan, revision };
      const next = revision + 1n;
      for (const file of plan.changedFiles) {
        await trx
          .insertInto("tidings_registered_files")
          .values({ name: file.proto.name, descriptor: file.bytes, revision: next.toString() })
          .onConflict((oc) => oc.column("name").doUpdateSet({ descriptor: file.bytes, revision: next.toString(), registered_at: sql`now()` }))
          .execute();
      }
      await trx.updateTable("tidings_catalog_head").set({ revision: next.toString() }).execute();
      await sql`SELECT pg_notify(${catalogChannel}, ${next.toString()})`.execute(trx);
      return { plan, revision: next };
    });
    const { plan, revision } = outcome;
    if (!validateOnly && plan.changedFiles.length > 0) {
      this.catalog.install([...plan.after.values()], revision);
      this.logger.info("event types registered", { revision: revision.toString(), added: plan.added, changed: plan.changed, files: plan.changedFiles.map((f) => f.proto.name) });
    }
    return { eventTypes: plan.declared, added: plan.added, changed: plan.changed, revision };
  }

  #buildStored(rows: readonly StoredRow[]) {
    return buildFiles(toFilesToBuild(rows), (name) => this.catalog.builtInFile(name));
  }

  /** What registering `submitted` over the stored `rows` would do, or the reasons it must not. */
  #plan(rows: readonly StoredRow[], submitted: readonly SubmittedFile[]) {
    const storedFiles = toFilesToBuild(rows);
    const before = buildFiles(storedFiles, (name) => this.catalog.builtInFile(name));
    if (before.problems.length > 0) {
      throw new Error(`the registered files do not build: ${before.problems.map((p) => `${p.file}: ${p.description}`).join("; ")}`);
    }
    const submittedNames = new Set(submitted.map((f) => f.proto.name));
    const stored = new Map(rows.map((r) => [r.name, r.descriptor]));
    const kept = storedFiles.filter((f) => !submittedNames.has(f.proto.name));
    const toBuild: FileToBuild[] = [...kept, ...submitted.map((f) => ({ proto: f.proto, at: `${setField}.file[${f.index}]` }))];
    // A message or enum of the set that a registered file (another one) already declares.
    const owners = new Map<string, string>();
    for (const f of kept) for (const n of declaredNames(f.proto)) owners.set(n, f.proto.name);
    const taken: FieldViolation[] = [];
    for (const f of submitted) {
      for (const n of declaredNames(f.proto)) {
        const owner = owners.get(n);
        if (owner) taken.push({ field: `${setField}.file[${f.index}]`, description: `${f.proto.name}: ${n} is already declared by the registered file ${owner}` });
      }
    }
    if (taken.length > 0) throw new NameConflictError(taken);
    const { built: after, problems } = buildFiles(toBuild, (name) => this.catalog.builtInFile(name));
    if (problems.length > 0) throw new DescriptorSetError(problems.map(toViolation));

    // The event types of the new state, by name, with where each comes from.
    const atOf = new Map(toBuild.map((f) => [f.proto.name, f.at]));
    const violations: FieldViolation[] = [];
    const conflicts: FieldViolation[] = [];
    const afterTypes = new Map<string, EventTypeEntry>();
    const declared: EventTypeEntry[] = [];
    for (const file of after.values()) {
      const at = atOf.get(file.proto.name)!;
      let entries: EventTypeEntry[];
      try {
        entries = eventTypesOf(file, true);
      } catch (err) {
        if (!(err instanceof CatalogError)) throw err;
        violations.push({ field: at, description: `${file.proto.name}: ${err.message}` });
        continue;
      }
      for (const entry of entries) {
        const builtIn = this.catalog.builtInEventType(entry.name);
        const other = afterTypes.get(entry.name);
        if (builtIn) {
          conflicts.push({ field: at, description: `${file.proto.name}: event type "${entry.name}" (${entry.message.typeName}) is built into the server, declared by ${builtIn.message.typeName}` });
        } else if (other && submittedNames.has(other.message.file.proto.name) && submittedNames.has(file.proto.name)) {
          violations.push({ field: at, description: `${file.proto.name}: event type "${entry.name}" is declared by both ${other.message.typeName} and ${entry.message.typeName}` });
        } else if (other) {
          const [registered, incoming] = submittedNames.has(file.proto.name) ? [other, entry] : [entry, other];
          conflicts.push({ field: atOf.get(incoming.message.file.proto.name)!, description: `${incoming.message.file.proto.name}: event type "${entry.name}" (${incoming.message.typeName}) is already registered by ${registered.message.typeName} in ${registered.message.file.proto.name}` });
        } else {
          afterTypes.set(entry.name, entry);
        }
        if (submittedNames.has(file.proto.name)) declared.push(entry);
      }
    }
    if (violations.length === 0 && declared.length === 0) {
      violations.push({ field: setField, description: "declares no event type: no message of the set carries the (tidings.v1.event_type) option" });
    }
    if (violations.length > 0) throw new DescriptorSetError(violations);
    if (conflicts.length > 0) throw new NameConflictError(conflicts);

    // Compatibility with what is registered, type by type and field by field.
    const beforeTypes = new Map<string, EventTypeEntry>();
    for (const file of before.built.values()) for (const e of eventTypesOf(file, true)) beforeTypes.set(e.name, e);
    const breaking: BreakingChange[] = [];
    for (const [name, entry] of beforeTypes) {
      const next = afterTypes.get(name);
      if (!next) breaking.push({ rule: "TIDINGS_EVENT_TYPE_NO_DELETE", subject: name, description: `event type "${name}" (${entry.message.typeName}) would no longer be declared by any registered file` });
      else if (next.message.typeName !== entry.message.typeName) {
        breaking.push({ rule: "TIDINGS_EVENT_TYPE_SAME_MESSAGE", subject: name, description: `event type "${name}" would move from ${entry.message.typeName} to ${next.message.typeName}; packed payloads name the message` });
      }
    }
    breaking.push(...wireJsonBreakingChanges([...before.built.values()], [...after.values()]));
    if (breaking.length > 0) throw new BreakingChangeError(breaking);

    const changedFiles = submitted.filter((f) => !sameBytes(stored.get(f.proto.name), f.bytes));
    const changedNames = new Set(changedFiles.map((f) => f.proto.name));
    const added = declared.filter((e) => !beforeTypes.has(e.name)).map((e) => e.name);
    const changed = [...afterTypes.values()]
      .filter((e) => beforeTypes.has(e.name) && dependsOnAny(e.message.file, changedNames))
      .map((e) => e.name);
    return { after, declared, added, changed, changedFiles };
  }
}

/** Stored rows as files to build, each decoded once. */
function toFilesToBuild(rows: readonly StoredRow[]): FileToBuild[] {
  return rows.map((r) => ({ proto: storedFile(r.descriptor), at: `${setField} (registered file ${r.name})` }));
}

function toViolation(p: BuildProblem): FieldViolation {
  return { field: p.at, description: `${p.file}: ${p.description}` };
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && Buffer.compare(a, b) === 0;
}

/** Whether the file or anything it imports (transitively) is one of `names`. */
function dependsOnAny(file: DescFile, names: ReadonlySet<string>, seen = new Set<string>()): boolean {
  if (seen.has(file.proto.name)) return false;
  seen.add(file.proto.name);
  return names.has(file.proto.name) || file.dependencies.some((d) => dependsOnAny(d, names, seen));
}
