import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  createRegistry,
  type DescField,
  type DescFile,
  type DescMessage,
  getOption,
  hasOption,
  type Registry,
} from "@bufbuild/protobuf";
import { file_google_rpc_error_details } from "../../gen/google/rpc/error_details_pb.js";
import { file_tidings_v1_event_service } from "../../gen/tidings/v1/event_service_pb.js";
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
}

const typeNamePattern = /^[a-z0-9_]+(\.[a-z0-9_]+)*$/;

export class CatalogError extends Error {}

/** The event types the server accepts, learned from message options in the descriptors. */
export class EventCatalog {
  readonly #byName = new Map<string, EventTypeEntry>();
  /** Every message the server may have to encode or decode as JSON (catalog and API). */
  readonly registry: Registry;

  constructor(files: readonly DescFile[]) {
    this.registry = createRegistry(file_tidings_v1_event_service, file_google_rpc_error_details, ...files);
    for (const file of files) {
      for (const message of allMessages(file.messages)) {
        if (!hasOption(message, event_type)) continue;
        const opts = getOption(message, event_type);
        if (!typeNamePattern.test(opts.name)) {
          throw new CatalogError(`${message.typeName}: event type name "${opts.name}" is not dotted lowercase segments of [a-z0-9_]`);
        }
        const existing = this.#byName.get(opts.name);
        if (existing) {
          throw new CatalogError(`event type "${opts.name}" is declared by both ${existing.message.typeName} and ${message.typeName}`);
        }
        this.#byName.set(opts.name, {
          name: opts.name,
          description: opts.description,
          message,
          typeUrl: `type.googleapis.com/${message.typeName}`,
          requiredFields: requiredPaths(message, "", new Set()),
        });
      }
    }
  }

  get(name: string): EventTypeEntry | undefined {
    return this.#byName.get(name);
  }

  /** Every type, sorted by name. */
  list(): EventTypeEntry[] {
    return [...this.#byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The types matching any of the patterns; every type for an empty list. */
  matching(patterns: readonly TypePattern[]): EventTypeEntry[] {
    const all = this.list();
    return patterns.length === 0 ? all : all.filter((e) => patterns.some((p) => p.matches(e.name)));
  }
}

/** The rules a payload field carries, or undefined. */
export function fieldRules(field: DescField): FieldRules | undefined {
  return hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
}

function* allMessages(messages: readonly DescMessage[]): Iterable<DescMessage> {
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
export async function loadCatalog(dir: string = generatedCatalogDir): Promise<EventCatalog> {
  const files: DescFile[] = [];
  for (const path of await findGeneratedModules(dir)) {
    const mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
    for (const value of Object.values(mod)) {
      if (isDescFile(value)) files.push(value);
    }
  }
  return new EventCatalog(files);
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
