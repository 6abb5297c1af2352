import { Code, type Interceptor } from "@connectrpc/connect";
import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import type { FieldViolation } from "../catalog/payload-validation.js";
import { nulRefused } from "../storage/schema.js";
import { fieldError } from "./errors.js";

/**
 * Refuses U+0000 in every text field of every request, naming the field: PostgreSQL text and
 * jsonb cannot hold it, so a NUL that reached a query (an id looked up, a name stored) was
 * answered `internal`. Checked once here, for every method, rather than by each. JSON payloads
 * (google.protobuf.Struct and Value, an event's `data`) are spared: they are stored as protobuf
 * bytes and may carry NUL. Bytes fields are not text. Only input that arrives outside an RPC
 * still has a check of its own: an incoming webhook's event (prepareEvent), and a filter given
 * to compileFilter.
 */
/**
 * Requests a decoder already found free of U+0000 in every text field this check would visit
 * (publish-request-decoding.ts looks at each string's bytes as it decodes them): walking the
 * message again was about 4% of the server's CPU in PublishBatch.
 */
export const foundFreeOfNul = new WeakSet<object>();

export function nulRefusingInterceptor(): Interceptor {
  const plans = new Map<DescMessage, TextPlan>();
  const planOf = (desc: DescMessage) => {
    let plan = plans.get(desc);
    if (!plan) {
      plan = textPlan(desc, new Map());
      plans.set(desc, plan);
    }
    return plan;
  };
  return (next) => (req) => {
    const plan = planOf(req.method.input);
    if (plan.fields.length === 0) return next(req);
    if (!req.stream) {
      if (!foundFreeOfNul.has(req.message)) refuseNul(req.message, plan);
      return next(req);
    }
    const messages = req.message;
    return next({
      ...req,
      message: (async function* () {
        for await (const message of messages) {
          refuseNul(message, plan);
          yield message;
        }
      })(),
    });
  };
}

/** Where a message's text can be: its string fields, and the messages that hold some. */
interface TextPlan {
  fields: Array<{ field: DescField; nested?: TextPlan }>;
}

/** Messages whose strings are an event's JSON payload, which may carry NUL. */
const payloadMessages = new Set(["google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"]);

function textPlan(desc: DescMessage, seen: Map<DescMessage, TextPlan>): TextPlan {
  const known = seen.get(desc);
  if (known) return known;
  const plan: TextPlan = { fields: [] };
  seen.set(desc, plan); // before the fields: a message may hold itself
  if (payloadMessages.has(desc.typeName)) return plan;
  for (const field of desc.fields) {
    const message = field.fieldKind === "message" ? field.message : field.fieldKind === "list" && field.listKind === "message" ? field.message : field.fieldKind === "map" && field.mapKind === "message" ? field.message : undefined;
    if (message) {
      const nested = textPlan(message, seen);
      if (nested.fields.length > 0 || field.fieldKind === "map") plan.fields.push({ field, nested });
    } else if (isText(field)) {
      plan.fields.push({ field });
    }
  }
  return plan;
}

function isText(field: DescField): boolean {
  switch (field.fieldKind) {
    case "scalar":
    case "list":
      return field.scalar === ScalarType.STRING;
    case "map":
      return true; // its keys are text when they are strings, its values when they are
    default:
      return false;
  }
}

function refuseNul(message: unknown, plan: TextPlan): void {
  const violations: FieldViolation[] = [];
  visit(message as Record<string, unknown>, plan, "", violations);
  if (violations.length > 0) throw fieldError(Code.InvalidArgument, violations);
}

function visit(message: Record<string, unknown>, plan: TextPlan, prefix: string, out: FieldViolation[]): void {
  for (const { field, nested } of plan.fields) {
    const value = field.oneof ? oneofValue(message, field) : message[field.localName];
    if (value === undefined || value === null) continue;
    const path = `${prefix}${field.name}`;
    switch (field.fieldKind) {
      case "scalar":
        if (typeof value === "string" && value.includes("\0")) out.push({ field: path, description: nulRefused });
        break;
      case "message":
        visit(value as Record<string, unknown>, nested!, `${path}.`, out);
        break;
      case "list":
        (value as unknown[]).forEach((item, i) => {
          if (nested) visit(item as Record<string, unknown>, nested, `${path}[${i}].`, out);
          else if (typeof item === "string" && item.includes("\0")) out.push({ field: `${path}[${i}]`, description: nulRefused });
        });
        break;
      case "map":
        for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
          const entry = `${path}["${key.replace(/\0/g, "\\u0000")}"]`;
          if (key.includes("\0")) out.push({ field: entry, description: nulRefused });
          else if (nested && nested.fields.length > 0) visit(item as Record<string, unknown>, nested, `${entry}.`, out);
          else if (typeof item === "string" && item.includes("\0")) out.push({ field: entry, description: nulRefused });
        }
        break;
    }
  }
}

function oneofValue(message: Record<string, unknown>, field: DescField): unknown {
  const oneof = message[field.oneof!.localName] as { case?: string; value?: unknown } | undefined;
  return oneof?.case === field.localName ? oneof.value : undefined;
}
