import {
  type DescField,
  type DescMessage,
  fromBinary,
  fromJson,
  isFieldSet,
  type JsonValue,
  type Message,
  type Registry,
  ScalarType,
} from "@bufbuild/protobuf";
import { reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt";
import { fieldRules } from "./catalog.js";
import type { FieldRules } from "../../gen/tidings/v1/options_pb.js";

/** One thing wrong with a request, at a dotted field path (google.rpc.BadRequest's shape). */
export interface FieldViolation {
  field: string;
  description: string;
}

/**
 * Parses a JSON payload into `desc`, collecting every violation instead of stopping at the
 * first: unknown fields, wrong JSON types and the catalog's field rules.
 */
export function parseJsonPayload(
  desc: DescMessage,
  json: JsonValue,
  path: string,
  registry: Registry,
): { message?: Message; violations: FieldViolation[] } {
  const violations: FieldViolation[] = [];
  checkJsonMessage(desc, json, path, violations);
  if (violations.length > 0) return { violations };
  let message: Message;
  try {
    message = fromJson(desc, json, { registry });
  } catch (err) {
    // The structural walk above catches what users get wrong; this reports anything it missed.
    return { violations: [{ field: path, description: (err as Error).message }] };
  }
  return { message, violations };
}

/** Decodes a binary payload, refusing unknown fields and applying the field rules. */
export function parseBinaryPayload(
  desc: DescMessage,
  bytes: Uint8Array,
  path: string,
): { message?: Message; violations: FieldViolation[] } {
  let message: Message;
  try {
    message = fromBinary(desc, bytes);
  } catch (err) {
    return { violations: [{ field: path, description: `not a valid ${desc.typeName}: ${(err as Error).message}` }] };
  }
  const violations: FieldViolation[] = [];
  checkUnknownFields(reflect(desc, message), path, violations);
  checkRules(reflect(desc, message), path, violations);
  return violations.length > 0 ? { violations } : { message, violations };
}

/**
 * Checks a JSON value against a message in the proto3 JSON mapping — unknown fields, JSON
 * types, well-known type formats, enum names, and the catalog's field rules — reporting every
 * violation at its path (with the .proto field names). Used for payloads and for requests.
 */
export function checkJsonMessage(desc: DescMessage, json: JsonValue, path: string, out: FieldViolation[]): void {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    out.push({ field: path || "body", description: `must be a JSON object (${desc.typeName})` });
    return;
  }
  for (const [key, value] of Object.entries(json)) {
    const field = desc.fields.find((f) => f.name === key || f.jsonName === key);
    const fieldPath = joinPath(path, field?.name ?? key);
    if (!field) {
      out.push({ field: fieldPath, description: `unknown field: ${desc.typeName} has no field "${key}"` });
      continue;
    }
    if (value === null) continue; // proto3 JSON: null means the default
    checkJsonField(field, value, fieldPath, out);
  }
  checkJsonRules(desc, json, path, out);
}

/**
 * The `required` and `allowed_values` rules, on the JSON itself so they are reported together
 * with type errors. "Present" means what isFieldSet means for the parsed message: for fields
 * without explicit presence, the zero value ("", 0, false, [], {}) counts as absent.
 */
function checkJsonRules(desc: DescMessage, json: { [k: string]: JsonValue }, path: string, out: FieldViolation[]): void {
  for (const field of desc.fields) {
    const rules = fieldRules(field);
    if (!rules) continue;
    const value = json[field.name] ?? json[field.jsonName];
    // Paths are made only for a violation: this runs for every rule of every JSON payload.
    if (rules.required && !jsonPresent(field, value)) {
      out.push({ field: joinPath(path, field.name), description: "is required" });
      continue;
    }
    if (rules.allowedValues.length === 0 || value === undefined || value === null) continue;
    if (!Array.isArray(value)) {
      if (typeof value === "string" && !rules.allowedValues.includes(value)) {
        out.push({ field: joinPath(path, field.name), description: allowedDescription(rules.allowedValues, value) });
      }
      continue;
    }
    value.forEach((v, i) => {
      if (typeof v === "string" && !rules.allowedValues.includes(v)) {
        out.push({ field: `${joinPath(path, field.name)}[${i}]`, description: allowedDescription(rules.allowedValues, v) });
      }
    });
  }
}

function jsonPresent(field: DescField, value: JsonValue | undefined): boolean {
  if (value === undefined || value === null) return false;
  if (field.fieldKind === "list") return !Array.isArray(value) || value.length > 0;
  if (field.fieldKind === "map") return typeof value !== "object" || Object.keys(value).length > 0;
  if (field.fieldKind === "message" || field.presence === FeatureSet_FieldPresence.EXPLICIT) return true;
  return !(value === "" || value === 0 || value === "0" || value === false);
}

function allowedDescription(allowed: readonly string[], got: string): string {
  return `must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}, got ${JSON.stringify(got)}`;
}

function checkJsonField(field: DescField, value: JsonValue, path: string, out: FieldViolation[]): void {
  switch (field.fieldKind) {
    case "list":
      if (!Array.isArray(value)) {
        out.push({ field: path, description: "must be a JSON array" });
        return;
      }
      value.forEach((v, i) => checkJsonSingle(field.listKind, field, v, `${path}[${i}]`, out));
      return;
    case "map":
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        out.push({ field: path, description: "must be a JSON object (map)" });
        return;
      }
      for (const [k, v] of Object.entries(value)) {
        checkJsonSingle(field.mapKind, field, v, `${path}["${k}"]`, out);
      }
      return;
    default:
      checkJsonSingle(field.fieldKind, field, value, path, out);
  }
}

function checkJsonSingle(kind: "scalar" | "enum" | "message", field: DescField, value: JsonValue, path: string, out: FieldViolation[]): void {
  if (kind === "scalar") {
    const problem = scalarProblem((field as { scalar: ScalarType }).scalar, value);
    if (problem) out.push({ field: path, description: problem });
  } else if (kind === "enum") {
    const e = field.enum!;
    const ok = typeof value === "number" ? Number.isInteger(value) : typeof value === "string" && e.values.some((v) => v.name === value);
    if (!ok) out.push({ field: path, description: `must be one of ${e.values.map((v) => v.name).join(", ")}` });
  } else {
    const m = field.message!;
    const wkt = wellKnownJsonProblem(m.typeName, value);
    if (wkt !== undefined) {
      if (wkt) out.push({ field: path, description: wkt });
      return;
    }
    checkJsonMessage(m, value, path, out);
  }
}

function scalarProblem(type: ScalarType, value: JsonValue): string | undefined {
  switch (type) {
    case ScalarType.STRING:
      return typeof value === "string" ? undefined : "must be a string";
    case ScalarType.BOOL:
      return typeof value === "boolean" ? undefined : "must be a boolean";
    case ScalarType.BYTES:
      return typeof value === "string" && /^[A-Za-z0-9+/_-]*={0,2}$/.test(value) ? undefined : "must be a base64 string";
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      if (typeof value === "number") return undefined;
      if (typeof value === "string" && (["NaN", "Infinity", "-Infinity"].includes(value) || value.trim() !== "" && !Number.isNaN(Number(value)))) return undefined;
      return "must be a number";
    default: {
      const unsigned = [ScalarType.UINT32, ScalarType.UINT64, ScalarType.FIXED32, ScalarType.FIXED64].includes(type);
      const is64 = [ScalarType.INT64, ScalarType.UINT64, ScalarType.SINT64, ScalarType.FIXED64, ScalarType.SFIXED64].includes(type);
      const n = typeof value === "number" ? value : typeof value === "string" && /^-?\d+$/.test(value) ? Number(value) : NaN;
      if (!Number.isInteger(n)) return is64 ? "must be an integer (a number or a string of digits)" : "must be an integer";
      if (unsigned && n < 0) return "must not be negative";
      if (!is64 && (n > (unsigned ? 4294967295 : 2147483647) || n < -2147483648)) return "is out of range for a 32-bit integer";
      return undefined;
    }
  }
}

/** For well-known types: undefined if `typeName` is not one, "" if the value is fine, else the problem. */
function wellKnownJsonProblem(typeName: string, value: JsonValue): string | undefined {
  switch (typeName) {
    case "google.protobuf.Timestamp":
      return typeof value === "string" && !Number.isNaN(Date.parse(value)) ? "" : "must be an RFC 3339 timestamp string, e.g. 2026-01-28T12:00:00Z";
    case "google.protobuf.Duration":
      return typeof value === "string" && /^-?\d+(\.\d+)?s$/.test(value) ? "" : 'must be a duration string such as "1.5s"';
    case "google.protobuf.Struct":
      return typeof value === "object" && value !== null && !Array.isArray(value) ? "" : "must be a JSON object";
    case "google.protobuf.ListValue":
      return Array.isArray(value) ? "" : "must be a JSON array";
    case "google.protobuf.Value":
      return "";
    case "google.protobuf.FieldMask":
      return typeof value === "string" && /^([a-z][a-zA-Z0-9]*(\.[a-z][a-zA-Z0-9]*)*(,[a-z][a-zA-Z0-9]*(\.[a-z][a-zA-Z0-9]*)*)*)?$/.test(value)
        ? ""
        : 'must be a string of comma-separated lowerCamelCase field names, e.g. "retryPolicy,enabled"';
    case "google.protobuf.StringValue":
      return typeof value === "string" ? "" : "must be a string";
    case "google.protobuf.BoolValue":
      return typeof value === "boolean" ? "" : "must be a boolean";
    case "google.protobuf.DoubleValue":
    case "google.protobuf.FloatValue":
      return typeof value === "number" ? "" : "must be a number";
    case "google.protobuf.Int32Value":
    case "google.protobuf.UInt32Value":
    case "google.protobuf.Int64Value":
    case "google.protobuf.UInt64Value":
      return Number.isInteger(typeof value === "string" ? Number(value) : value) ? "" : "must be an integer";
    default:
      // Any, FieldMask, Empty, BytesValue: fromJson checks them.
      return typeName.startsWith("google.protobuf.") ? "" : undefined;
  }
}

/**
 * What checking a message type involves: the fields with rules, and the fields that hold
 * catalog messages to descend into. Worked out once per type, since every published payload
 * is checked and most fields need nothing.
 */
interface CheckPlan {
  ruled: Array<{ field: DescField; rules: FieldRules }>;
  nested: DescField[];
}

const plans = new WeakMap<DescMessage, CheckPlan>();

function planOf(desc: DescMessage): CheckPlan {
  let plan = plans.get(desc);
  if (!plan) {
    plan = { ruled: [], nested: [] };
    for (const field of desc.fields) {
      const rules = fieldRules(field);
      if (rules && (rules.required || rules.allowedValues.length > 0)) plan.ruled.push({ field, rules });
      const holds = field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message");
      if (holds && !field.message!.typeName.startsWith("google.protobuf.")) plan.nested.push(field);
    }
    plans.set(desc, plan);
  }
  return plan;
}

/** Applies `required` and `allowed_values` from the .proto to a decoded binary message. */
function checkRules(msg: ReflectMessage, path: string, out: FieldViolation[]): void {
  const plan = planOf(msg.desc);
  for (const { field, rules } of plan.ruled) {
    const fieldPath = `${path}.${field.name}`;
    if (!isFieldSet(msg.message, field)) {
      if (rules.required) out.push({ field: fieldPath, description: "is required" });
      continue;
    }
    if (rules.allowedValues.length > 0) {
      const values = field.fieldKind === "list" ? [...msg.get(field)] : [msg.get(field)];
      values.forEach((v, i) => {
        if (typeof v === "string" && !rules.allowedValues.includes(v)) {
          const at = field.fieldKind === "list" ? `${fieldPath}[${i}]` : fieldPath;
          out.push({ field: at, description: allowedDescription(rules.allowedValues, v) });
        }
      });
    }
  }
  for (const field of plan.nested) {
    if (isFieldSet(msg.message, field)) forEachNested(msg, field, `${path}.${field.name}`, (nested, nestedPath) => checkRules(nested, nestedPath, out));
  }
}

function checkUnknownFields(msg: ReflectMessage, path: string, out: FieldViolation[]): void {
  for (const u of msg.getUnknown() ?? []) {
    out.push({ field: path, description: `unknown field number ${u.no}: ${msg.desc.typeName} has no such field` });
  }
  for (const field of planOf(msg.desc).nested) {
    if (isFieldSet(msg.message, field)) forEachNested(msg, field, `${path}.${field.name}`, (nested, nestedPath) => checkUnknownFields(nested, nestedPath, out));
  }
}

/** Calls `visit` for each set catalog message (not well-known types) in a field. */
function forEachNested(msg: ReflectMessage, field: DescField, path: string, visit: (m: ReflectMessage, path: string) => void): void {
  if (field.fieldKind === "message") {
    visit(msg.get(field) as ReflectMessage, path);
  } else if (field.fieldKind === "list" && field.listKind === "message") {
    let i = 0;
    for (const item of msg.get(field)) visit(item as ReflectMessage, `${path}[${i++}]`);
  }
}

function joinPath(path: string, name: string): string {
  return path ? `${path}.${name}` : name;
}
