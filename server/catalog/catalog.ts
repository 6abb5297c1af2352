import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  createMutableRegistry,
  createRegistry,
  type DescEnum,
  type DescExtension,
  type DescField,
  type DescFile,
  type DescMessage,
  type DescService,
  getOption,
  hasOption,
  type Registry,
} from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { file_google_rpc_error_details } from "../../gen/google/rpc/error_details_pb.js";
import { file_tidings_v1_event_service } from "../../gen/tidings/v1/event_service_pb.js";
import { file_tidings_v1_webhook_service } from "../../gen/tidings/v1/webhook_service_pb.js";
import { event_type, field as fieldRulesExt, type FieldRules } from "../../gen/tidings/v1/options_pb.js";
import type { TypePattern } from "../filtering/type-pattern.js";

/** One event type of the catalog: its name and the message its payload must be. */
export interface EventTypeEntry {
  name: string;
  description: string;
  message: DescMessage;
  /** `type.googleapis.com/<message full name>`, the type URL of its packed payloads. */
  typeUrl: string;
  /** Dotted paths of required payload fields (nested ones included). */
  requiredFields: string[];
  /** Added at runtime with RegisterEventTypes rather than built into the server. */
  registered: boolean;
}

const typeNamePattern = /^[a-z0-9_]+(\.[a-z0-9_]+)*$/;

export class CatalogError extends Error {}

/** Where the types registered at runtime live (the database), for a catalog to catch up with. */
export interface RegisteredTypeSource {
  /** The revision the source is at now. */
  revision(): Promise<bigint>;
  /** Every registered file, built, and the revision they make up. */
  load(): Promise<{ files: DescFile[]; revision: bigint }>;
}

/**
 * The event types the server accepts: the built-in ones, learned from message options in the
 * generated descriptors, plus the ones registered at runtime (RegisterEventTypes). The
 * registered part is swapped as a whole when another node registers types; readers of the
 * catalog always see one consistent revision.
 */
export class EventCatalog {
  readonly #builtIn: ReadonlyMap<string, EventTypeEntry>;
  readonly #builtInFiles = new Map<string, DescFile>();
  readonly #builtInTypes: Registry;
  #state: CatalogState;
  #source: RegisteredTypeSource | undefined;
  #checking: Promise<boolean> | undefined;
  #queuedCheck: Promise<boolean> | undefined;
  /**
   * Every message the server may have to encode or decode as JSON (catalog and API). A stable
   * object that always answers from the current revision, so it can be handed to Connect once.
   */
  readonly registry: Registry;

  constructor(files: readonly DescFile[], private readonly onConflict: (problem: string) => void = () => {}) {
    const apiFiles = [file_tidings_v1_event_service, file_tidings_v1_webhook_service, file_google_rpc_error_details];
    this.#builtInTypes = createRegistry(...apiFiles, ...files);
    for (const file of [...apiFiles, ...files]) collectFiles(file, this.#builtInFiles);
    const builtIn = new Map<string, EventTypeEntry>();
    for (const file of files) {
      for (const entry of eventTypesOf(file, false)) {
        const existing = builtIn.get(entry.name);
        if (existing) {
          throw new CatalogError(`event type "${entry.name}" is declared by both ${existing.message.typeName} and ${entry.message.typeName}`);
        }
        builtIn.set(entry.name, entry);
      }
    }
    this.#builtIn = builtIn;
    this.#state = newState(builtIn, this.#builtInTypes, [], 0n);
    const current = () => this.#state.registry;
    this.registry = {
      kind: "registry",
      [Symbol.iterator]: () => current()[Symbol.iterator](),
      get: (typeName) => current().get(typeName),
      getMessage: (typeName) => current().getMessage(typeName),
      getEnum: (typeName) => current().getEnum(typeName),
      getExtension: (typeName) => current().getExtension(typeName),
      getExtensionFor: (extendee, no) => current().getExtensionFor(extendee, no),
      getService: (typeName) => current().getService(typeName),
    };
  }

  get(name: string): EventTypeEntry | undefined {
    return this.#state.byName.get(name);
  }

  /** Every type, sorted by name. */
  list(): EventTypeEntry[] {
    return [...this.#state.sorted];
  }

  /** The types matching any of the patterns; every type for an empty list. */
  matching(patterns: readonly TypePattern[]): EventTypeEntry[] {
    const all = this.#state.sorted;
    return patterns.length === 0 ? [...all] : all.filter((e) => patterns.some((p) => p.matches(e.name)));
  }

  /** The revision of the registered types this catalog holds (0: none registered). */
  get revision(): bigint {
    return this.#state.revision;
  }

  /** The registered files this catalog holds, and the built-in event files; the same array until the catalog changes. */
  get files(): readonly DescFile[] {
    return this.#state.files;
  }

  /** A file built into the server (the catalog's, the API's, their imports), by name. */
  builtInFile(name: string): DescFile | undefined {
    return this.#builtInFiles.get(name);
  }

  /** A type (message, enum, ...) built into the server, by full name. */
  builtInType(typeName: string): DescMessage | DescEnum | DescExtension | DescService | undefined {
    return this.#builtInTypes.get(typeName);
  }

  /** A built-in event type, by name. */
  builtInEventType(name: string): EventTypeEntry | undefined {
    return this.#builtIn.get(name);
  }

  /**
   * Replaces the registered types with those of `files` (every registered file, built), at
   * `revision`. Built-in types win over registered ones of the same name, which can only
   * happen when a newer server version ships a type someone had registered; that is reported.
   */
  install(files: readonly DescFile[], revision: bigint): void {
    if (revision <= this.#state.revision) return;
    const registered: DescFile[] = [];
    for (const file of files) {
      if (this.#builtInFiles.has(file.proto.name)) {
        this.onConflict(`registered file ${file.proto.name} is now built into the server; the built-in copy is used`);
        continue;
      }
      registered.push(file);
    }
    this.#state = newState(this.#builtIn, this.#builtInTypes, registered, revision, this.onConflict);
  }

  /** Lets the catalog catch up with types registered on other nodes (see refreshIfStale). */
  attach(source: RegisteredTypeSource): void {
    this.#source = source;
  }

  /**
   * Reloads the registered types if the source has moved past this catalog's revision. Called
   * when something the catalog does not know turns up (an unknown type, a payload that does
   * not validate, a row of an unknown type), so a node never refuses or drops what another
   * node registered a moment ago. Callers compare `revision` from before their own work with
   * the one after: the catalog may also have moved meanwhile because of a NOTIFY.
   */
  async refreshIfStale(): Promise<void> {
    await this.#refresh();
  }

  #refresh(): Promise<boolean> {
    if (!this.#checking) {
      this.#checking = this.#check().finally(() => {
        this.#checking = undefined;
      });
      return this.#checking;
    }
    // The check in progress may have read the revision before the caller's reason to ask
    // was committed: run one more after it (shared by everyone who asks meanwhile).
    this.#queuedCheck ??= this.#checking.catch(() => false).then(() => {
      this.#queuedCheck = undefined;
      return this.#refresh();
    });
    return this.#queuedCheck;
  }

  async #check(): Promise<boolean> {
    const source = this.#source;
    if (!source) return false;
    if ((await source.revision()) <= this.#state.revision) return false;
    const loaded = await source.load();
    if (loaded.revision <= this.#state.revision) return false;
    this.install(loaded.files, loaded.revision);
    return true;
  }
}

interface CatalogState {
  byName: Map<string, EventTypeEntry>;
  sorted: EventTypeEntry[];
  registry: Registry;
  files: DescFile[];
  revision: bigint;
}

function newState(
  builtIn: ReadonlyMap<string, EventTypeEntry>,
  builtInTypes: Registry,
  registered: readonly DescFile[],
  revision: bigint,
  onConflict: (problem: string) => void = () => {},
): CatalogState {
  const byName = new Map(builtIn);
  const types = createMutableRegistry(builtInTypes);
  for (const file of registered) {
    for (const type of nestedTypes(file)) {
      if (builtInTypes.get(type.typeName)) onConflict(`registered type ${type.typeName} is built into the server; the built-in one is used`);
      else types.add(type);
    }
    let entries: EventTypeEntry[];
    try {
      entries = eventTypesOf(file, true);
    } catch (err) {
      // Registration checks names, so only a row edited by hand gets here: skip the file, not the node.
      onConflict(`registered file ${file.proto.name} is skipped: ${(err as Error).message}`);
      continue;
    }
    for (const entry of entries) {
      const existing = byName.get(entry.name);
      if (existing) onConflict(`event type "${entry.name}" is declared by ${existing.message.typeName} and by registered ${entry.message.typeName}; ${existing.message.typeName} is used`);
      else byName.set(entry.name, entry);
    }
  }
  const sorted = [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  const files = [...new Set(sorted.map((e) => e.message.file))];
  return { byName, sorted, registry: types, files, revision };
}

/** The event types a file declares: its messages (nested ones too) with the event_type option. */
export function eventTypesOf(file: DescFile, registered: boolean): EventTypeEntry[] {
  const entries: EventTypeEntry[] = [];
  for (const message of allMessages(file.messages)) {
    if (!hasOption(message, event_type)) continue;
    const opts = getOption(message, event_type);
    if (!typeNamePattern.test(opts.name)) {
      throw new CatalogError(`${message.typeName}: event type name "${opts.name}" is not dotted lowercase segments of [a-z0-9_]`);
    }
    entries.push({
      name: opts.name,
      description: opts.description,
      message,
      typeUrl: `type.googleapis.com/${message.typeName}`,
      requiredFields: requiredPaths(message, "", new Set()),
      registered,
    });
  }
  return entries;
}

function collectFiles(file: DescFile, into: Map<string, DescFile>): void {
  if (into.has(file.proto.name)) return;
  into.set(file.proto.name, file); // DescFile.name has no ".proto"; lookups use the real file name
  for (const dep of file.dependencies) collectFiles(dep, into);
}

/** The rules a payload field carries, or undefined. */
export function fieldRules(field: DescField): FieldRules | undefined {
  // Validation asks for every field of every payload; decoding the option each time showed in profiles.
  if (rulesByField.has(field)) return rulesByField.get(field);
  const rules = hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
  rulesByField.set(field, rules);
  return rules;
}

const rulesByField = new WeakMap<DescField, FieldRules | undefined>();

export function* allMessages(messages: readonly DescMessage[]): Iterable<DescMessage> {
  for (const m of messages) {
    yield m;
    yield* allMessages(m.nestedMessages);
  }
}

function requiredPaths(message: DescMessage, prefix: string, seen: Set<string>): string[] {
  if (seen.has(message.typeName)) return [];
  seen.add(message.typeName);
  const paths: string[] = [];
  for (const f of message.fields) {
    const path = prefix + f.name;
    if (fieldRules(f)?.required) paths.push(path);
    if (f.fieldKind === "message" && !f.message.typeName.startsWith("google.protobuf.")) {
      paths.push(...requiredPaths(f.message, path + ".", new Set(seen)));
    }
  }
  return paths;
}

/** Where `buf generate` writes the catalog's code. */
export const generatedCatalogDir = fileURLToPath(new URL("../../gen/tidings/events/", import.meta.url));

/**
 * Imports every generated `*_pb` module under `dir` and builds the catalog from the files they
 * export, so adding a .proto and regenerating adds its types with no other code.
 */
export async function loadCatalog(dir: string = generatedCatalogDir, onConflict?: (problem: string) => void): Promise<EventCatalog> {
  const files: DescFile[] = [];
  for (const path of await findGeneratedModules(dir)) {
    const mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
    for (const value of Object.values(mod)) {
      if (isDescFile(value)) files.push(value);
    }
  }
  return new EventCatalog(files, onConflict);
}

async function findGeneratedModules(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && /_pb\.(ts|js)$/.test(e.name) && !e.name.endsWith(".d.ts"))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

function isDescFile(value: unknown): value is DescFile {
  return typeof value === "object" && value !== null && (value as { kind?: unknown }).kind === "file";
}
