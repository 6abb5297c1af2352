import { type DescField, type DescMessage, type JsonObject, type Message, ScalarType, toBinary } from "@bufbuild/protobuf";
import { isScalarZeroValue } from "@bufbuild/protobuf/reflect";
import { WireType } from "@bufbuild/protobuf/wire";
import { FeatureSet_FieldPresence, isWrapperDesc } from "@bufbuild/protobuf/wkt";
import { encodedStructSize, writeStruct } from "../rpc/struct-encoding.js";
import { scalarWireType } from "./scalar-wire-type.js";
import { uint64Size, varintSize, writeUint64, writeVarint } from "../rpc/varint.js";

/**
 * A payload message in protobuf binary: the bytes protobuf-es's toBinary writes, without its
 * reflection. Every JSON publish encodes its payload once; through toBinary that was a reflective
 * wrapper per message, list and map, and a Struct field converted to Struct and Value messages
 * first, about 6% of what a webhook backlog allocates (a sampling profile of 22,000 deliveries).
 *
 * A plan is made once per message type: its fields in number order (toBinary's order), each with
 * toBinary's presence rule (a field with implicit presence is left out at its zero value) and
 * encoding (packed lists, map entries key-first), measured and then written into one buffer
 * (protobuf-es's BinaryWriter alone took 2.8 µs for two strings). A google.protobuf.Struct field
 * is held as a JSON object and goes through the hand-written Struct encoder, as a subscriber's
 * Struct already does. memory.created encodes in 0.73 µs against toBinary's 2.4–2.6 with two
 * strings, 2.7 against 25–31 with a nested Struct and a list. A type this does not cover (group
 * encoding, legacy required fields, maps whose key is not a string, wrapper types, which
 * protobuf-es unwraps) goes to toBinary, whole; test/payload-encoding.test.ts compares the bytes
 * for every catalog type.
 */
export function encodePayload(desc: DescMessage, message: Message): Uint8Array {
  return encodeWithoutReflection(desc, message) ?? toBinary(desc, message);
}

/** The bytes, or undefined for a message left to toBinary (encodePayload; tests call it to see which path a message takes). */
export function encodeWithoutReflection(desc: DescMessage, message: Message): Uint8Array | undefined {
  const plan = planFor(desc);
  if (plan === undefined) return undefined;
  try {
    const state: EncodeState = { sizes: [], structs: [], size: 0, struct: 0 };
    const size = messageSize(plan, message as unknown as Fields, state);
    const out = size <= scratch.byteLength ? scratch : Buffer.allocUnsafeSlow(size);
    if (writeMessageBody(plan, message as unknown as Fields, state, out, 0) !== size) throw new Error(`${desc.typeName}: encoded size mismatch`);
    // A copy of its own size: the payload is kept with its event (the log tail's window, the
    // dispatcher's recent events), where a slice of a larger buffer would keep all of it alive.
    return out === scratch ? new Uint8Array(scratch.subarray(0, size)) : out;
  } catch (err) {
    if (err === leftToReflection) return undefined;
    throw err;
  }
}

/** Where payloads up to 64 KB are written before their copy (encoding never yields, so one is enough). */
const scratch = Buffer.allocUnsafeSlow(64 * 1024);

/**
 * Thrown when a value is one toBinary would refuse (out of its type's range) or when a nested
 * type, accepted while its recursive parent was being planned, turned out to be one this does
 * not cover: the whole message then goes to toBinary, which encodes it or says what is wrong.
 */
const leftToReflection = new Error("left to toBinary");

/**
 * Two passes, as the Struct encoder does: the first measures every length-delimited part (a
 * nested message, a packed list, a map entry) in pre-order into `sizes`, and each Struct field
 * with the Struct encoder into its own entry of `structs`; the second writes, taking them in the
 * same order.
 */
interface EncodeState {
  sizes: number[];
  structs: number[][];
  /** The write pass's positions in sizes and structs. */
  size: number;
  struct: number;
}

/** Whether encodePayload writes this type itself (tests; false means it hands it to toBinary). */
export function encodesWithoutReflection(desc: DescMessage): boolean {
  return planFor(desc) !== undefined;
}

/** A message's own properties, as encodePayload reads them (by the fields' local names). */
type Fields = Record<string, unknown> & { $unknown?: Array<{ no: number; wireType: WireType; data: Uint8Array }> };
/** One field: its encoded size (the first pass) and its writing (the second); nothing when toBinary leaves it out. */
interface FieldCodec {
  size(m: Fields, state: EncodeState): number;
  write(m: Fields, state: EncodeState, out: Buffer, at: number): number;
}
type Plan = FieldCodec[];

/** Plans by type; null for a type left to toBinary. A plan under construction is already here (recursive types). */
const plans = new WeakMap<DescMessage, Plan | null>();

function planFor(desc: DescMessage): Plan | undefined {
  const known = plans.get(desc);
  if (known !== undefined) return known ?? undefined;
  const plan: Plan = [];
  plans.set(desc, plan);
  for (const field of [...desc.fields].sort((a, b) => a.number - b.number)) {
    const codec = fieldCodec(field);
    if (codec === undefined) {
      plans.set(desc, null);
      return undefined;
    }
    plan.push(codec);
  }
  return plan;
}

/** The plan of a nested type, at encoding time (see leftToReflection). */
function nestedPlan(desc: DescMessage): Plan {
  const plan = planFor(desc);
  if (plan === undefined) throw leftToReflection;
  return plan;
}

function messageSize(plan: Plan, m: Fields, state: EncodeState): number {
  let size = 0;
  for (const field of plan) size += field.size(m, state);
  // Unknown fields last, as toBinary writes them.
  const unknown = m.$unknown;
  if (unknown) for (const { no, wireType, data } of unknown) size += tagSize(no, wireType) + data.byteLength;
  return size;
}

function writeMessageBody(plan: Plan, m: Fields, state: EncodeState, out: Buffer, at: number): number {
  for (const field of plan) at = field.write(m, state, out, at);
  const unknown = m.$unknown;
  if (unknown) {
    for (const { no, wireType, data } of unknown) {
      at = writeTag(no, wireType, out, at);
      out.set(data, at);
      at += data.byteLength;
    }
  }
  return at;
}

/** A nested message's size with its tag and length; its body's size goes to `sizes`. */
function nestedSize(no: number, plan: Plan, v: Fields, state: EncodeState): number {
  const slot = state.sizes.length;
  state.sizes.push(0);
  const body = messageSize(plan, v, state);
  state.sizes[slot] = body;
  return tagSize(no, WireType.LengthDelimited) + varintSize(body) + body;
}

function writeNested(no: number, plan: Plan, v: Fields, state: EncodeState, out: Buffer, at: number): number {
  at = writeTag(no, WireType.LengthDelimited, out, at);
  at = writeVarint(state.sizes[state.size++]!, out, at);
  return writeMessageBody(plan, v, state, out, at);
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

function fieldCodec(field: DescField): FieldCodec | undefined {
  if (field.presence === FeatureSet_FieldPresence.LEGACY_REQUIRED) return undefined;
  const value = presentValue(field);
  const no = field.number;
  switch (field.fieldKind) {
    case "scalar":
    case "enum": {
      const scalar = field.fieldKind === "scalar" ? field.scalar : ScalarType.INT32;
      const wire = scalarWireType(scalar);
      const tag = tagSize(no, wire);
      return {
        size: (m) => {
          const v = value(m);
          return v === undefined ? 0 : tag + scalarSize(scalar, v);
        },
        write: (m, _s, out, at) => {
          const v = value(m);
          return v === undefined ? at : writeScalar(scalar, v, out, writeTag(no, wire, out, at));
        },
      };
    }
    case "message": {
      if (field.delimitedEncoding || isWrapperDesc(field.message)) return undefined;
      if (field.message.typeName === "google.protobuf.Struct" && field.parent.typeName !== "google.protobuf.Value") {
        // Held as a JSON object (protobuf-es unboxes Struct fields outside Value).
        return {
          size: (m, state) => {
            const v = value(m) as JsonObject | undefined;
            if (v === undefined) return 0;
            const sizes: number[] = [];
            const body = encodedStructSize(v, sizes);
            state.structs.push(sizes);
            return tagSize(no, WireType.LengthDelimited) + varintSize(body) + body;
          },
          write: (m, state, out, at) => {
            const v = value(m) as JsonObject | undefined;
            if (v === undefined) return at;
            // The Struct's own sizes, its body's first (see encodedStructSize).
            const sizes = state.structs[state.struct++]!;
            at = writeVarint(sizes[0]!, out, writeTag(no, WireType.LengthDelimited, out, at));
            return writeStruct(v, sizes, out, at);
          },
        };
      }
      const sub = field.message;
      if (planFor(sub) === undefined) return undefined;
      return {
        size: (m, state) => {
          const v = value(m) as Fields | undefined;
          return v === undefined ? 0 : nestedSize(no, nestedPlan(sub), v, state);
        },
        write: (m, state, out, at) => {
          const v = value(m) as Fields | undefined;
          return v === undefined ? at : writeNested(no, nestedPlan(sub), v, state, out, at);
        },
      };
    }
    case "list": {
      if (field.listKind === "message") {
        const sub = field.message;
        if (field.delimitedEncoding || isWrapperDesc(sub) || sub.typeName === "google.protobuf.Struct" || planFor(sub) === undefined) return undefined;
        return {
          size: (m, state) => {
            const list = value(m) as Fields[] | undefined;
            let size = 0;
            if (list !== undefined) for (const item of list) size += nestedSize(no, nestedPlan(sub), item, state);
            return size;
          },
          write: (m, state, out, at) => {
            const list = value(m) as Fields[] | undefined;
            if (list !== undefined) for (const item of list) at = writeNested(no, nestedPlan(sub), item, state, out, at);
            return at;
          },
        };
      }
      const scalar = field.listKind === "scalar" ? field.scalar : ScalarType.INT32;
      const wire = scalarWireType(scalar);
      if (field.packed) {
        return {
          size: (m, state) => {
            const list = value(m) as unknown[] | undefined;
            if (list === undefined || list.length === 0) return 0;
            let body = 0;
            for (const item of list) body += scalarSize(scalar, item);
            state.sizes.push(body);
            return tagSize(no, WireType.LengthDelimited) + varintSize(body) + body;
          },
          write: (m, state, out, at) => {
            const list = value(m) as unknown[] | undefined;
            if (list === undefined || list.length === 0) return at;
            at = writeVarint(state.sizes[state.size++]!, out, writeTag(no, WireType.LengthDelimited, out, at));
            for (const item of list) at = writeScalar(scalar, item, out, at);
            return at;
          },
        };
      }
      const tag = tagSize(no, wire);
      return {
        size: (m) => {
          const list = value(m) as unknown[] | undefined;
          let size = 0;
          if (list !== undefined) for (const item of list) size += tag + scalarSize(scalar, item);
          return size;
        },
        write: (m, _s, out, at) => {
          const list = value(m) as unknown[] | undefined;
          if (list !== undefined) for (const item of list) at = writeScalar(scalar, item, out, writeTag(no, wire, out, at));
          return at;
        },
      };
    }
    case "map": {
      // Keys other than strings are held as strings and converted by protobuf-es: left to it.
      if (field.mapKey !== ScalarType.STRING) return undefined;
      let valueSize: (v: unknown, state: EncodeState) => number;
      let writeValue: (v: unknown, state: EncodeState, out: Buffer, at: number) => number;
      if (field.mapKind === "message") {
        const sub = field.message;
        if (isWrapperDesc(sub) || sub.typeName === "google.protobuf.Struct" || planFor(sub) === undefined) return undefined;
        valueSize = (v, state) => nestedSize(2, nestedPlan(sub), v as Fields, state);
        writeValue = (v, state, out, at) => writeNested(2, nestedPlan(sub), v as Fields, state, out, at);
      } else {
        // A map entry's value is written even when it is the zero value.
        const scalar = field.mapKind === "scalar" ? field.scalar : ScalarType.INT32;
        const wire = scalarWireType(scalar);
        valueSize = (v) => 1 + scalarSize(scalar, v);
        writeValue = (v, _s, out, at) => writeScalar(scalar, v, out, writeTag(2, wire, out, at));
      }
      const entryTag = tagSize(no, WireType.LengthDelimited);
      return {
        size: (m, state) => {
          const map = value(m) as Record<string, unknown> | undefined;
          if (map === undefined) return 0;
          let size = 0;
          for (const key of Object.keys(map)) {
            const slot = state.sizes.length;
            state.sizes.push(0);
            const entry = 1 + scalarSize(ScalarType.STRING, key) + valueSize(map[key], state);
            state.sizes[slot] = entry;
            size += entryTag + varintSize(entry) + entry;
          }
          return size;
        },
        write: (m, state, out, at) => {
          const map = value(m) as Record<string, unknown> | undefined;
          if (map === undefined) return at;
          for (const key of Object.keys(map)) {
            at = writeVarint(state.sizes[state.size++]!, out, writeTag(no, WireType.LengthDelimited, out, at));
            at = writeScalar(ScalarType.STRING, key, out, writeTag(1, WireType.LengthDelimited, out, at));
            at = writeValue(map[key], state, out, at);
          }
          return at;
        },
      };
    }
  }
}

const tagSize = (no: number, wire: WireType) => varintSize(((no << 3) | wire) >>> 0);
const writeTag = (no: number, wire: WireType, out: Buffer, at: number) => writeVarint(((no << 3) | wire) >>> 0, out, at);

const float32Max = 3.4028234663852886e38;
const int64Min = -(2n ** 63n);
const int64Max = 2n ** 63n - 1n;
const uint64Max = 2n ** 64n - 1n;

/** A 64-bit value as the unsigned varint or fixed64 toBinary writes; out of range goes to toBinary, which refuses it. */
function unsigned64(scalar: ScalarType, v: unknown): bigint {
  const n = typeof v === "bigint" ? v : BigInt(v as string | number);
  const signed = scalar === ScalarType.INT64 || scalar === ScalarType.SINT64 || scalar === ScalarType.SFIXED64;
  if (signed ? n < int64Min || n > int64Max : n < 0n || n > uint64Max) throw leftToReflection;
  if (scalar === ScalarType.SINT64) return BigInt.asUintN(64, (n << 1n) ^ (n >> 63n));
  return BigInt.asUintN(64, n);
}

/** A 32-bit integer toBinary accepts for this type; anything else goes to toBinary, which refuses it. */
function int32Of(scalar: ScalarType, v: unknown): number {
  const n = v as number;
  const unsigned = scalar === ScalarType.UINT32 || scalar === ScalarType.FIXED32;
  if (!Number.isInteger(n) || (unsigned ? n < 0 || n > 0xffffffff : n < -0x80000000 || n > 0x7fffffff)) throw leftToReflection;
  return n;
}

/** A scalar's size as toBinary writes it, without its tag. */
function scalarSize(scalar: ScalarType, v: unknown): number {
  switch (scalar) {
    case ScalarType.STRING: {
      const n = Buffer.byteLength(v as string, "utf8");
      return varintSize(n) + n;
    }
    case ScalarType.BYTES: {
      const n = (v as Uint8Array).byteLength;
      return varintSize(n) + n;
    }
    case ScalarType.BOOL:
      return 1;
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      if (scalar !== ScalarType.DOUBLE) unsigned64(scalar, v);
      return 8;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      if (scalar !== ScalarType.FLOAT) int32Of(scalar, v);
      else if (Number.isFinite(v) && Math.abs(v as number) > float32Max) throw leftToReflection;
      return 4;
    case ScalarType.INT32: {
      const n = int32Of(scalar, v);
      return n < 0 ? 10 : varintSize(n); // a negative int32 is sign-extended to 64 bits
    }
    case ScalarType.UINT32:
      return varintSize(int32Of(scalar, v));
    case ScalarType.SINT32: {
      const n = int32Of(scalar, v);
      return varintSize(((n << 1) ^ (n >> 31)) >>> 0);
    }
    default: // INT64, UINT64, SINT64
      return uint64Size(unsigned64(scalar, v));
  }
}

/** Writes a scalar (after its tag) as toBinary does; returns the end. */
function writeScalar(scalar: ScalarType, v: unknown, out: Buffer, at: number): number {
  switch (scalar) {
    case ScalarType.STRING: {
      const n = Buffer.byteLength(v as string, "utf8");
      at = writeVarint(n, out, at);
      return at + out.write(v as string, at, n, "utf8");
    }
    case ScalarType.BYTES: {
      const bytes = v as Uint8Array;
      at = writeVarint(bytes.byteLength, out, at);
      out.set(bytes, at);
      return at + bytes.byteLength;
    }
    case ScalarType.BOOL:
      out[at] = v ? 1 : 0;
      return at + 1;
    case ScalarType.DOUBLE:
      return out.writeDoubleLE(v as number, at);
    case ScalarType.FLOAT:
      return out.writeFloatLE(v as number, at);
    case ScalarType.FIXED32:
      return out.writeUInt32LE(v as number, at);
    case ScalarType.SFIXED32:
      return out.writeInt32LE(v as number, at);
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return out.writeBigUInt64LE(unsigned64(scalar, v), at);
    case ScalarType.INT32: {
      const n = v as number;
      return n < 0 ? writeUint64(BigInt.asUintN(64, BigInt(n)), out, at) : writeVarint(n, out, at);
    }
    case ScalarType.UINT32:
      return writeVarint(v as number, out, at);
    case ScalarType.SINT32: {
      const n = v as number;
      return writeVarint(((n << 1) ^ (n >> 31)) >>> 0, out, at);
    }
    default: // INT64, UINT64, SINT64
      return writeUint64(unsigned64(scalar, v), out, at);
  }
}
