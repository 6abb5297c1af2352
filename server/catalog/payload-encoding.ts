import { type DescField, type DescMessage, type Message, ScalarType, toBinary } from "@bufbuild/protobuf";
import { isScalarZeroValue } from "@bufbuild/protobuf/reflect";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { FeatureSet_FieldPresence, isWrapperDesc } from "@bufbuild/protobuf/wkt";
import { encodedStructSize, writeStruct } from "../rpc/struct-encoding.js";

/**
 * A payload message in protobuf binary: the bytes protobuf-es's toBinary writes, without its
 * reflection. Every JSON publish encodes its payload once; through toBinary that was a reflective
 * wrapper per message, list and map, and a Struct field converted to Struct and Value messages
 * first, about 6% of what a webhook backlog allocates (a sampling profile of 22,000 deliveries).
 *
 * A plan is made once per message type: its fields in number order (toBinary's order), each with
 * a writer that applies toBinary's presence rules (a field with implicit presence is left out at
 * its zero value) and its encoding (packed lists, map entries key-first). A google.protobuf.Struct
 * field is held as a JSON object and goes through the hand-written Struct encoder, as a
 * subscriber's Struct already does. A type this does not cover (group encoding, legacy required
 * fields, maps whose key is not a string, wrapper types, which protobuf-es unwraps) goes to
 * toBinary, whole; test/payload-encoding.test.ts compares the bytes for every catalog type.
 */
export function encodePayload(desc: DescMessage, message: Message): Uint8Array {
  const plan = planFor(desc);
  if (plan === undefined) return toBinary(desc, message);
  const writer = new BinaryWriter();
  try {
    writeFields(plan, writer, message as unknown as Fields);
  } catch (err) {
    if (err === leftToReflection) return toBinary(desc, message);
    throw err;
  }
  return writer.finish();
}

/**
 * Thrown when a nested type, accepted while its recursive parent was being planned, turned out
 * to be one this does not cover: the whole message then goes to toBinary.
 */
const leftToReflection = new Error("left to toBinary");

/** Whether encodePayload writes this type itself (tests; false means it hands it to toBinary). */
export function encodesWithoutReflection(desc: DescMessage): boolean {
  return planFor(desc) !== undefined;
}

/** A message's own properties, as encodePayload reads them (by the fields' local names). */
type Fields = Record<string, unknown> & { $unknown?: Array<{ no: number; wireType: WireType; data: Uint8Array }> };
type FieldWriter = (writer: BinaryWriter, message: Fields) => void;
type Plan = FieldWriter[];

/** Plans by type; null for a type left to toBinary. A plan under construction is already here (recursive types). */
const plans = new WeakMap<DescMessage, Plan | null>();

function planFor(desc: DescMessage): Plan | undefined {
  const known = plans.get(desc);
  if (known !== undefined) return known ?? undefined;
  const plan: Plan = [];
  plans.set(desc, plan);
  for (const field of [...desc.fields].sort((a, b) => a.number - b.number)) {
    const write = fieldWriter(field);
    if (write === undefined) {
      plans.set(desc, null);
      return undefined;
    }
    plan.push(write);
  }
  return plan;
}

function writeFields(plan: Plan, writer: BinaryWriter, message: Fields): void {
  for (const write of plan) write(writer, message);
  // Unknown fields last, as toBinary writes them.
  const unknown = message.$unknown;
  if (unknown) for (const { no, wireType, data } of unknown) writer.tag(no, wireType).raw(data);
}

/** The field's value if toBinary would write it (protobuf-es's unsafeIsSet), else undefined. */
function presentValue(field: DescField): (message: Fields) => unknown {
  const name = field.localName;
  if (field.oneof) {
    const group = field.oneof.localName;
    return (m) => {
      const selected = m[group] as { case: string | undefined; value?: unknown };
      return selected.case === name ? selected.value : undefined;
    };
  }
  if (field.presence !== FeatureSet_FieldPresence.IMPLICIT) {
    return (m) => (m[name] !== undefined && Object.prototype.hasOwnProperty.call(m, name) ? m[name] : undefined);
  }
  switch (field.fieldKind) {
    case "list":
      return (m) => ((m[name] as unknown[]).length > 0 ? m[name] : undefined);
    case "map":
      return (m) => (Object.keys(m[name] as object).length > 0 ? m[name] : undefined);
    case "scalar": {
      const scalar = field.scalar;
      return (m) => (isScalarZeroValue(scalar, m[name]) ? undefined : m[name]);
    }
    case "enum": {
      const zero = field.enum.values[0]!.number;
      return (m) => (m[name] !== zero ? m[name] : undefined);
    }
    default:
      return (m) => m[name];
  }
}

function fieldWriter(field: DescField): FieldWriter | undefined {
  if (field.presence === FeatureSet_FieldPresence.LEGACY_REQUIRED) return undefined;
  const value = presentValue(field);
  const no = field.number;
  switch (field.fieldKind) {
    case "scalar":
    case "enum": {
      const scalar = field.fieldKind === "scalar" ? field.scalar : ScalarType.INT32;
      const wire = wireTypeOf(scalar);
      return (w, m) => {
        const v = value(m);
        if (v !== undefined) writeScalar(w.tag(no, wire), scalar, v);
      };
    }
    case "message": {
      if (field.delimitedEncoding || isWrapperDesc(field.message)) return undefined;
      if (field.message.typeName === "google.protobuf.Struct" && field.parent.typeName !== "google.protobuf.Value") {
        // Held as a JSON object (protobuf-es unboxes Struct fields outside Value).
        return (w, m) => {
          const v = value(m) as Parameters<typeof encodedStructSize>[0] | undefined;
          if (v !== undefined) w.tag(no, WireType.LengthDelimited).bytes(structBytes(v));
        };
      }
      const sub = field.message;
      if (planFor(sub) === undefined) return undefined;
      return (w, m) => {
        const v = value(m) as Fields | undefined;
        if (v !== undefined) writeMessage(w, no, sub, v);
      };
    }
    case "list": {
      if (field.listKind === "message") {
        const sub = field.message;
        if (field.delimitedEncoding || isWrapperDesc(sub) || sub.typeName === "google.protobuf.Struct" || planFor(sub) === undefined) return undefined;
        return (w, m) => {
          const list = value(m) as Fields[] | undefined;
          if (list !== undefined) for (const item of list) writeMessage(w, no, sub, item);
        };
      }
      const scalar = field.listKind === "scalar" ? field.scalar : ScalarType.INT32;
      const wire = wireTypeOf(scalar);
      if (field.packed) {
        return (w, m) => {
          const list = value(m) as unknown[] | undefined;
          if (list === undefined || list.length === 0) return;
          w.tag(no, WireType.LengthDelimited).fork();
          for (const item of list) writeScalar(w, scalar, item);
          w.join();
        };
      }
      return (w, m) => {
        const list = value(m) as unknown[] | undefined;
        if (list !== undefined) for (const item of list) writeScalar(w.tag(no, wire), scalar, item);
      };
    }
    case "map": {
      // Keys other than strings are held as strings and converted by protobuf-es: left to it.
      if (field.mapKey !== ScalarType.STRING) return undefined;
      if (field.mapKind === "message") {
        const sub = field.message;
        if (isWrapperDesc(sub) || sub.typeName === "google.protobuf.Struct" || planFor(sub) === undefined) return undefined;
        return (w, m) => {
          const map = value(m) as Record<string, Fields> | undefined;
          if (map === undefined) return;
          for (const [key, item] of Object.entries(map)) {
            w.tag(no, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(key);
            writeMessage(w, 2, sub, item);
            w.join();
          }
        };
      }
      const scalar = field.mapKind === "scalar" ? field.scalar : ScalarType.INT32;
      const wire = wireTypeOf(scalar);
      return (w, m) => {
        const map = value(m) as Record<string, unknown> | undefined;
        if (map === undefined) return;
        for (const [key, item] of Object.entries(map)) {
          w.tag(no, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(key);
          writeScalar(w.tag(2, wire), scalar, item);
          w.join();
        }
      };
    }
  }
}

function writeMessage(w: BinaryWriter, no: number, desc: DescMessage, message: Fields): void {
  const plan = planFor(desc);
  if (plan === undefined) throw leftToReflection;
  w.tag(no, WireType.LengthDelimited).fork();
  writeFields(plan, w, message);
  w.join();
}

function structBytes(json: Parameters<typeof encodedStructSize>[0]): Uint8Array {
  const sizes: number[] = [];
  const out = Buffer.allocUnsafe(encodedStructSize(json, sizes));
  writeStruct(json, sizes, out, 0);
  return out;
}

function wireTypeOf(scalar: ScalarType): WireType {
  switch (scalar) {
    case ScalarType.BYTES:
    case ScalarType.STRING:
      return WireType.LengthDelimited;
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return WireType.Bit64;
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
    case ScalarType.FLOAT:
      return WireType.Bit32;
    default:
      return WireType.Varint;
  }
}

/** A scalar's value as toBinary writes it (the same BinaryWriter methods). */
function writeScalar(w: BinaryWriter, scalar: ScalarType, v: unknown): void {
  switch (scalar) {
    case ScalarType.STRING:
      w.string(v as string);
      break;
    case ScalarType.BOOL:
      w.bool(v as boolean);
      break;
    case ScalarType.DOUBLE:
      w.double(v as number);
      break;
    case ScalarType.FLOAT:
      w.float(v as number);
      break;
    case ScalarType.INT32:
      w.int32(v as number);
      break;
    case ScalarType.INT64:
      w.int64(v as bigint | string);
      break;
    case ScalarType.UINT64:
      w.uint64(v as bigint | string);
      break;
    case ScalarType.FIXED64:
      w.fixed64(v as bigint | string);
      break;
    case ScalarType.BYTES:
      w.bytes(v as Uint8Array);
      break;
    case ScalarType.FIXED32:
      w.fixed32(v as number);
      break;
    case ScalarType.SFIXED32:
      w.sfixed32(v as number);
      break;
    case ScalarType.SFIXED64:
      w.sfixed64(v as bigint | string);
      break;
    case ScalarType.SINT64:
      w.sint64(v as bigint | string);
      break;
    case ScalarType.UINT32:
      w.uint32(v as number);
      break;
    case ScalarType.SINT32:
      w.sint32(v as number);
      break;
  }
}
