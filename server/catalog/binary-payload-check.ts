import { isUtf8 } from "node:buffer";
import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt";
import { fieldRules } from "./catalog.js";
import { startsWithBom } from "./protobuf-text.js";
import { scalarWireType } from "./scalar-wire-type.js";

/**
 * Whether parseBinaryPayload would accept a payload with no violation, found by walking its wire
 * format against the type's descriptor without building a message. Decoding every published
 * payload with fromBinary (and reflecting over it for the checks) only to throw the message away
 * was about a tenth of the server's CPU in PublishBatch.
 *
 * It answers true only when it is sure: every field known, with the wire type its type is
 * written with, text valid UTF-8, varints well formed, no group, no catalog message field twice,
 * and the `required` and `allowed_values` rules met, as checkRules reads them. Anything else
 * (including what is merely unusual, such as a closed enum, a rule on a oneof member or a float)
 * answers false, and the caller runs parseBinaryPayload for the exact violations, if any.
 */
export function binaryPayloadPasses(desc: DescMessage, bytes: Uint8Array): boolean {
  const buf = bytes instanceof Buffer ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return walk(planOf(desc), buf, 0, buf.length, true, 1);
}

/** Deeper than this, fromBinary's recursion limit (100) is near: leave it to the slow path. */
const maxDepth = 64;

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

type Value = "varint32" | "varint64" | "fixed32" | "fixed64" | "string" | "bytes" | "message" | "map";

interface FieldPlan {
  field: DescField;
  value: Value;
  /** The wire type of one value; lists of numbers may also come packed (LEN). */
  wireType: number;
  list: boolean;
  /** The message's plan, for message fields and lists of messages. */
  message?: MessagePlan;
  /** Checked as the payload's own type (not a well-known type): unknown fields and rules apply inside. */
  catalog: boolean;
  /** Map entries: the key's and the value's plan (a synthetic field plan each). */
  mapKey?: FieldPlan;
  mapValue?: FieldPlan;
  rules?: { required: boolean; allowed: readonly string[]; explicitPresence: boolean };
  /** Present at all: this walker cannot judge it (closed enum, rule on a oneof member or a float, group encoding). */
  unsure: boolean;
}

interface MessagePlan {
  byNumber: Map<number, FieldPlan>;
  ruled: FieldPlan[];
}

const plans = new WeakMap<DescMessage, MessagePlan>();

function planOf(desc: DescMessage): MessagePlan {
  let plan = plans.get(desc);
  if (plan) return plan;
  plan = { byNumber: new Map(), ruled: [] };
  plans.set(desc, plan); // before the fields: a type may contain itself
  for (const field of desc.fields) {
    const p = fieldPlan(field);
    plan.byNumber.set(field.number, p);
    if (p.rules) plan.ruled.push(p);
  }
  return plan;
}

function fieldPlan(field: DescField): FieldPlan {
  const rules = fieldRules(field);
  const ruled = rules !== undefined && (rules.required || rules.allowedValues.length > 0);
  const p: FieldPlan = { field, value: "varint32", wireType: WIRE_VARINT, list: false, catalog: false, unsure: false };
  if (ruled) p.rules = { required: rules.required, allowed: rules.allowedValues, explicitPresence: field.fieldKind === "scalar" && field.presence === FeatureSet_FieldPresence.EXPLICIT };
  if (ruled && field.oneof !== undefined) p.unsure = true;
  if ((field as { delimitedEncoding?: boolean }).delimitedEncoding === true) p.unsure = true; // groups
  switch (field.fieldKind) {
    case "scalar":
      setScalar(p, field.scalar, ruled);
      break;
    case "enum":
      if (!field.enum.open) p.unsure = true;
      break;
    case "message":
      setMessage(p, field.message);
      break;
    case "list":
      p.list = true;
      if (field.listKind === "scalar") setScalar(p, field.scalar, ruled);
      else if (field.listKind === "enum") {
        if (!field.enum.open) p.unsure = true;
      } else setMessage(p, field.message);
      break;
    case "map": {
      p.value = "map";
      p.wireType = WIRE_LEN;
      const key: FieldPlan = { field, value: "varint32", wireType: WIRE_VARINT, list: false, catalog: false, unsure: false };
      setScalar(key, field.mapKey, false);
      const value: FieldPlan = { field, value: "varint32", wireType: WIRE_VARINT, list: false, catalog: false, unsure: false };
      if (field.mapKind === "scalar") setScalar(value, field.scalar, false);
      else if (field.mapKind === "enum") value.unsure = !field.enum.open;
      else {
        setMessage(value, field.message);
        value.catalog = false; // map values are not checked for unknown fields or rules
      }
      p.mapKey = key;
      p.mapValue = value;
      break;
    }
  }
  return p;
}

function setScalar(p: FieldPlan, scalar: ScalarType, ruled: boolean): void {
  p.wireType = scalarWireType(scalar);
  switch (scalar) {
    case ScalarType.STRING:
      p.value = "string";
      return;
    case ScalarType.BYTES:
      p.value = "bytes";
      return;
    case ScalarType.INT32:
    case ScalarType.UINT32:
    case ScalarType.SINT32:
      p.value = "varint32";
      return;
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.BOOL:
      p.value = "varint64";
      return;
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
    case ScalarType.FLOAT:
      p.value = "fixed32";
      if (ruled) p.unsure = zeroMatters(p);
      return;
    default:
      p.value = "fixed64";
      if (ruled) p.unsure = zeroMatters(p);
  }
}

/**
 * A rule on a single number without explicit presence depends on whether it is zero, which for
 * a float (-0, NaN) is not worth judging from bytes here.
 */
function zeroMatters(p: FieldPlan): boolean {
  return !p.list && p.rules?.explicitPresence !== true;
}

function setMessage(p: FieldPlan, desc: DescMessage): void {
  p.value = "message";
  p.wireType = WIRE_LEN;
  p.catalog = !desc.typeName.startsWith("google.protobuf.");
  // Planned on first use: a type may refer to itself.
  Object.defineProperty(p, "message", { get: () => planOf(desc), enumerable: true });
}

/** What the walk saw of one ruled field. */
interface Seen {
  count: number;
  /** The last value was not the zero value (implicit presence: "set"). */
  nonZero: boolean;
  lastString: string;
}

/**
 * Walks one message's bytes [pos, end). `checked`: the payload's own types, where unknown
 * fields are violations and rules apply; below a well-known type or in a map value, neither.
 */
function walk(plan: MessagePlan, buf: Buffer, pos: number, end: number, checked: boolean, depth: number): boolean {
  if (depth > maxDepth) return false;
  const seen = checked && plan.ruled.length > 0 ? new Map<FieldPlan, Seen>() : undefined;
  let messagesSeen: Set<FieldPlan> | undefined;
  while (pos < end) {
    // The tag.
    let tag = 0;
    let b: number;
    let shift = 0;
    do {
      if (pos >= end || shift > 28) return false;
      b = buf[pos++]!;
      tag += (b & 0x7f) * 2 ** shift;
      shift += 7;
    } while (b >= 0x80);
    const wireType = tag % 8;
    const fieldNo = Math.floor(tag / 8);
    const p = plan.byNumber.get(fieldNo);
    if (p === undefined) {
      if (checked) return false; // an unknown field: a violation
      pos = skip(buf, pos, end, wireType);
      if (pos < 0) return false;
      continue;
    }
    if (p.unsure) return false;
    if (p.value === "message" && !p.list) {
      // A message field twice is merged by fromBinary: judged on the merged message, not here.
      messagesSeen ??= new Set();
      if (messagesSeen.has(p)) return false;
      messagesSeen.add(p);
    }
    const s = seen && p.rules ? (seen.get(p) ?? newSeen(seen, p)) : undefined;
    if (wireType === WIRE_LEN && p.wireType !== WIRE_LEN) {
      // A packed list of numbers.
      if (!p.list) return false;
      const to = lengthEnd(buf, pos, end);
      if (to < 0) return false;
      pos = lengthStart;
      while (pos < to) {
        const next = readValue(p, buf, pos, to, s);
        if (next < 0) return false;
        pos = next;
      }
      continue;
    }
    if (wireType !== p.wireType) return false;
    if (p.value === "message" || p.value === "map") {
      const to = lengthEnd(buf, pos, end);
      if (to < 0) return false;
      const ok = p.value === "map" ? walkMapEntry(p, buf, lengthStart, to, depth) : walk(p.message!, buf, lengthStart, to, checked && p.catalog, depth + 1);
      if (!ok) return false;
      if (s) {
        s.count++;
        s.nonZero = true;
      }
      pos = to;
      continue;
    }
    pos = readValue(p, buf, pos, end, s);
    if (pos < 0) return false;
  }
  if (pos !== end) return false;
  return seen === undefined || rulesMet(plan, seen);
}

function newSeen(seen: Map<FieldPlan, Seen>, p: FieldPlan): Seen {
  const s: Seen = { count: 0, nonZero: false, lastString: "" };
  seen.set(p, s);
  return s;
}

/** checkRules on what the walk saw: isFieldSet, then allowed_values for text. */
function rulesMet(plan: MessagePlan, seen: Map<FieldPlan, Seen>): boolean {
  for (const p of plan.ruled) {
    const s = seen.get(p);
    const rules = p.rules!;
    const set = s !== undefined && (p.list || p.value === "map" || p.value === "message" || rules.explicitPresence ? s.count > 0 : s.nonZero);
    if (!set) {
      if (rules.required) return false;
      continue;
    }
    // Lists had each element checked as it was read.
    if (rules.allowed.length > 0 && !p.list && p.value === "string" && !rules.allowed.includes(s.lastString)) return false;
  }
  return true;
}

/** Set by lengthEnd: where the length-delimited bytes start. */
let lengthStart = 0;

/** The end of the length-delimited bytes at `pos` (their start in lengthStart), or -1. */
function lengthEnd(buf: Buffer, pos: number, end: number): number {
  let length = 0;
  let shift = 0;
  let b: number;
  do {
    if (pos >= end || shift > 28) return -1;
    b = buf[pos++]!;
    length += (b & 0x7f) * 2 ** shift;
    shift += 7;
  } while (b >= 0x80);
  const to = pos + length;
  if (to > end) return -1;
  lengthStart = pos;
  return to;
}

/** Reads one scalar value at `pos`; returns the position after it, or -1. */
function readValue(p: FieldPlan, buf: Buffer, pos: number, end: number, s: Seen | undefined): number {
  switch (p.value) {
    case "varint32":
    case "varint64": {
      // At most 10 bytes, as fromBinary reads them; zero when the bits the type keeps are zero.
      let low = 0;
      let high = 0;
      let i = 0;
      let b: number;
      do {
        if (pos >= end || i >= 10) return -1;
        b = buf[pos++]!;
        if (i < 4) low |= (b & 0x7f) << (7 * i);
        else if (i === 4) {
          low |= (b & 0x0f) << 28;
          high |= (b & 0x70) >> 4;
        } else high |= (b & 0x7f) << (7 * i - 32);
        i++;
      } while (b >= 0x80);
      if (s) {
        s.count++;
        s.nonZero = p.value === "varint32" ? low !== 0 : low !== 0 || high !== 0;
      }
      return pos;
    }
    case "fixed32":
      if (pos + 4 > end) return -1;
      if (s) s.count++;
      return pos + 4;
    case "fixed64":
      if (pos + 8 > end) return -1;
      if (s) s.count++;
      return pos + 8;
    default: {
      const to = lengthEnd(buf, pos, end);
      if (to < 0) return -1;
      const from = lengthStart;
      if (p.value === "string") {
        let ascii = true;
        for (let i = from; i < to; i++) {
          if (buf[i]! >= 0x80) {
            ascii = false;
            break;
          }
        }
        // A leading U+FEFF is dropped when decoded (fromBinary's TextDecoder): what the rules see differs.
        if (!ascii && (!isUtf8(buf.subarray(from, to)) || startsWithBom(buf, from, to))) return -1;
        if (s) {
          s.count++;
          s.nonZero = to > from;
          if (p.rules!.allowed.length > 0) {
            const text = buf.toString("utf8", from, to);
            if (p.list && !p.rules!.allowed.includes(text)) return -1;
            s.lastString = text;
          }
        }
      } else if (s) {
        s.count++;
        s.nonZero = to > from;
      }
      return to;
    }
  }
}

/** One map entry: key = 1 and value = 2, each at most once, with their wire types. */
function walkMapEntry(p: FieldPlan, buf: Buffer, pos: number, end: number, depth: number): boolean {
  const key = p.mapKey!;
  const value = p.mapValue!;
  if (key.unsure || value.unsure) return false;
  let seenKey = false;
  let seenValue = false;
  while (pos < end) {
    const tag = buf[pos++]!;
    if (tag === ((1 << 3) | key.wireType) && !seenKey) {
      seenKey = true;
      pos = readValue(key, buf, pos, end, undefined);
    } else if (tag === ((2 << 3) | value.wireType) && !seenValue) {
      seenValue = true;
      if (value.value === "message") {
        const to = lengthEnd(buf, pos, end);
        if (to < 0 || !walk(value.message!, buf, lengthStart, to, false, depth + 2)) return false;
        pos = to;
      } else pos = readValue(value, buf, pos, end, undefined);
    } else return false;
    if (pos < 0) return false;
  }
  return pos === end;
}

/** Skips an unknown field's value (outside checked types); -1 for groups and anything malformed. */
function skip(buf: Buffer, pos: number, end: number, wireType: number): number {
  switch (wireType) {
    case WIRE_VARINT:
      for (let i = 0; i < 10; i++) {
        if (pos >= end) return -1;
        if (buf[pos++]! < 0x80) return pos;
      }
      return -1;
    case WIRE_FIXED64:
      return pos + 8 <= end ? pos + 8 : -1;
    case WIRE_FIXED32:
      return pos + 4 <= end ? pos + 4 : -1;
    case WIRE_LEN:
      return lengthEnd(buf, pos, end);
    default:
      return -1;
  }
}
